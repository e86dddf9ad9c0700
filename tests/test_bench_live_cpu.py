"""`avatar bench live-cpu`: its CPU accounting (/proc, per process and per thread) and its command line."""
import os
import threading
import time

import pytest

from avatar.bench.live_cpu import CpuWindow, ThreadTime, format_window, measure, thread_cpu_seconds
from avatar.live.pipeline import name_os_thread

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")


def _spin(stop: threading.Event, used: list) -> None:
    name_os_thread("busy-test")
    start = time.thread_time()
    while not stop.is_set():
        sum(range(1000))
    used.append(time.thread_time() - start)


def _sleep(stop: threading.Event) -> None:
    name_os_thread("sleepy-test")
    stop.wait()


def test_a_busy_thread_counts_as_its_own_cpu_time_and_a_sleeping_one_as_none():
    stop, used = threading.Event(), []
    busy = threading.Thread(target=_spin, args=(stop, used))
    sleepy = threading.Thread(target=_sleep, args=(stop,))
    busy.start(), sleepy.start()
    time.sleep(0.1)  # both named
    try:
        window = measure(os.getpid(), 1.0)
    finally:
        stop.set()
        busy.join(), sleepy.join()
    by_name = {name: (tid, percent) for name, tid, percent in window.threads}
    assert by_name["busy-test"][0] == busy.native_id and by_name["sleepy-test"][0] == sleepy.native_id
    # the busy thread ran the whole window, apart from what the (possibly loaded) machine took from it: the
    # measure agrees with the thread's own clock, which covers the window and the 0.1 s before it
    assert by_name["busy-test"][1] / 100 <= used[0] + 0.02
    assert by_name["busy-test"][1] > 30.0
    assert by_name["sleepy-test"][1] < 2.0
    # the process line includes every thread
    assert window.process_percent >= by_name["busy-test"][1] - 2.0
    assert window.threads[0][0] == "busy-test"  # largest first


def test_window_arithmetic_counts_threads_born_inside_it_and_names_the_main_thread():
    before = {1: ThreadTime(1, "main", 1.0), 2: ThreadTime(2, "render-worker", 5.0)}
    after = {1: ThreadTime(1, "main", 1.5), 2: ThreadTime(2, "render-worker", 5.25), 3: ThreadTime(3, "new", 1.0)}
    w = CpuWindow.between(6.0, before, 9.0, after, seconds=10.0)
    assert w.process_percent == pytest.approx(30.0)
    assert [(name, round(p, 3)) for name, _, p in w.threads] == [("new", 10.0), ("main", 5.0),
                                                                  ("render-worker", 2.5)]
    lines = format_window("idle", w)
    assert lines[0] == "idle: 30.0 % of one core"
    assert "render-worker" in lines[3] and "2.5 %" in lines[3]
    assert thread_cpu_seconds(os.getpid())[os.getpid()].name == "main"


def test_cli_registers_live_cpu_with_its_options():
    from avatar.cli import build_parser

    args = build_parser().parse_args(["bench", "live-cpu", "--seconds", "5", "--size", "768", "--fps", "30"])
    assert (args.seconds, args.size, args.fps) == (5.0, 768, 30)
    assert args.conditions == ["idle", "speaking"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "live-cpu", "--fps", "45"])


def test_the_speech_feed_plays_into_the_sound_server_it_is_given(tmp_path):
    """The bench brings up its own PulseAudio when none is reachable: the feed must reach that one (its paplay ran
    in the bench's own environment, so 'speaking' measured a silent microphone)."""
    from avatar.bench.soak import LoopedFeed

    fake = tmp_path / "bin"
    fake.mkdir()
    seen = tmp_path / "seen.txt"
    (fake / "paplay").write_text(f'#!/bin/sh\necho "$PULSE_SERVER $*" >> {seen}\nsleep 0.05\n')
    (fake / "paplay").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ.get('PATH', '')}", "PULSE_SERVER": "unix:/tmp/bench-pulse"}
    feed = LoopedFeed(tmp_path / "speech.wav", "vmic_out", env)
    try:
        deadline = time.monotonic() + 10
        while not (seen.is_file() and seen.read_text().count("\n") >= 2) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        feed.stop()
    lines = seen.read_text().splitlines()
    assert len(lines) >= 2  # played again and again
    assert lines[0] == f"unix:/tmp/bench-pulse -d vmic_out {tmp_path / 'speech.wav'}"
