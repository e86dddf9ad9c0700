"""`avatar bench live-cpu`: how much of one core the real app window uses, idle and while speaking.

Starts the desktop app (`python -m avatar`, default face, fresh settings with the given size and display rate) on an
X display with the PulseAudio virtual microphone as its default input (.ci/av-env.sh brings both up when none is
reachable), lets it settle, then reads the process's CPU time (user + system, all threads, /proc) over a window per
condition: `idle` (nothing fed: the microphone hears silence) and `speaking` (vowel bursts played into the virtual
microphone in a loop). One line per condition, then the threads that used the most.

`--tree DIR` (repeatable) runs the app from other checkouts of the package, one after the other in the same run, so
a change is measured before and after side by side on the same machine load.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from avatar.bench.soak import LoopedFeed, _write_wav, feed_signal
from avatar.preferences import DISPLAY_RATES, SIZE_RANGE
from avatar.render_cli import int_in

REPO_ROOT = Path(__file__).resolve().parents[2]
AV_ENV = REPO_ROOT / ".ci" / "av-env.sh"
DEFAULT_SECONDS = 30.0  # the window per condition (the measure: process CPU time over 30 s)
DEFAULT_WARMUP_SECONDS = 15.0  # model, face landmarks and the first frames: start-up work is not the idle cost
SPEECH_SETTLE_SECONDS = 2.0  # after the feed starts: the first bursts reach the app before the window opens
THREADS_SHOWN = 8  # per-thread lines printed under each condition
CONDITIONS = ("idle", "speaking")



@dataclass(frozen=True)
class ThreadTime:
    tid: int
    name: str  # the OS thread name (/proc/PID/task/TID/comm); the process's main thread is called "main"
    seconds: float  # user + system CPU time so far


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def _stat_cpu_seconds(stat_text: str) -> float:
    """utime + stime (fields 14 and 15 of /proc/.../stat) in seconds; the name field may hold spaces and ')'."""
    fields = stat_text[stat_text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _clock_ticks()


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of all threads of `pid` so far, those already ended included."""
    with open(f"/proc/{pid}/stat") as f:
        return _stat_cpu_seconds(f.read())


def thread_cpu_seconds(pid: int) -> dict[int, ThreadTime]:
    """CPU time of each live thread of `pid`, by thread id."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            name = (task / "comm").read_text().strip()
        except OSError:  # ended between the listing and the read
            continue
        tid = int(task.name)
        out[tid] = ThreadTime(tid, "main" if tid == pid else name, _stat_cpu_seconds(stat))
    return out


@dataclass
class CpuWindow:
    """CPU used over one measured window, as % of one core."""
    seconds: float  # wall-clock length of the window
    process_percent: float
    threads: list[tuple[str, int, float]]  # (name, tid, % of one core), largest first

    @staticmethod
    def between(before_total: float, before: dict[int, ThreadTime], after_total: float,
                after: dict[int, ThreadTime], seconds: float) -> "CpuWindow":
        threads = []
        for tid, t in after.items():
            used = t.seconds - (before[tid].seconds if tid in before else 0.0)  # a thread born in the window
            threads.append((t.name, tid, 100.0 * used / seconds))
        threads.sort(key=lambda row: -row[2])
        return CpuWindow(seconds, 100.0 * (after_total - before_total) / seconds, threads)


def measure(pid: int, seconds: float) -> CpuWindow:
    """Process and per-thread CPU of `pid` over the next `seconds` of wall time."""
    # the process total is read first at the start and last at the end, so its window holds every thread's (reading
    # many threads' stat files takes a while on a loaded machine: read the other way, a busy thread outran it)
    t0, total0, threads0 = time.monotonic(), process_cpu_seconds(pid), thread_cpu_seconds(pid)
    time.sleep(seconds)
    threads1 = thread_cpu_seconds(pid)
    total1 = process_cpu_seconds(pid)
    return CpuWindow.between(total0, threads0, total1, threads1, time.monotonic() - t0)


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


class _AvEnvironment:
    """A display and the virtual microphone: the ones already reachable, or brought up by .ci/av-env.sh."""

    def __init__(self, display: str):
        self.env = dict(os.environ)
        self._dirs: list[str] = []
        if not _pulse_reachable(self.env):
            self._up("pulse", {})
        if not _display_reachable(self.env):
            self._up("x", {"XDISP": display})

    def _up(self, part: str, extra: dict) -> None:
        if not AV_ENV.is_file():
            raise RuntimeError(f"no {part} environment reachable and {AV_ENV} is missing (a source checkout has it)")
        folder = tempfile.mkdtemp(prefix=f"avatar-cpu-{part}-")
        env = {**self.env, "AV_DIR": folder, **extra}
        out = subprocess.run(["bash", str(AV_ENV), "up", part], env=env, capture_output=True, text=True, timeout=60)
        self._dirs.append(folder)
        if out.returncode != 0:
            raise RuntimeError(f"av-env.sh up {part} failed: {out.stderr.strip()}")
        for line in out.stdout.splitlines():
            if line.startswith("export "):
                for pair in line[len("export "):].split():
                    key, _, value = pair.partition("=")
                    self.env[key] = value

    def down(self) -> None:
        for folder in reversed(self._dirs):
            subprocess.run(["bash", str(AV_ENV), "down"], env={**self.env, "AV_DIR": folder},
                           capture_output=True, timeout=60)


def _pulse_reachable(env: dict) -> bool:
    if not env.get("PULSE_SERVER") or shutil.which("pactl") is None:
        return False
    out = subprocess.run(["pactl", "list", "short", "sources"], env=env, capture_output=True, text=True, timeout=5)
    return out.returncode == 0 and "\tvmic\t" in out.stdout


def _display_reachable(env: dict) -> bool:
    if not env.get("DISPLAY") or shutil.which("xdpyinfo") is None:
        return False
    return subprocess.run(["xdpyinfo"], env=env, capture_output=True, timeout=5).returncode == 0


def _app_env(base: dict, tree: Path, home: Path) -> dict:
    """A fresh user (settings, caches) running the package from `tree`."""
    env = {**base, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_CACHE_HOME": str(home / ".cache"), "PYTHONPATH": str(tree)}
    env.pop("QT_QPA_PLATFORM", None)  # the real window on the display, not offscreen
    return env


def _extra_env(pairs: list[str] | None) -> dict:
    """`--env KEY=VALUE` pairs: settings to try on the app (e.g. a thread-pool size) without editing it."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--env wants KEY=VALUE, not {pair!r}")
        out[key] = value
    return out


def _write_settings(env: dict, size: int, fps: int) -> None:
    code = ("from avatar.gui.settings import load_preferences, save_preferences\n"
            f"p = load_preferences(); p.size = {size}; p.fps = {fps}; save_preferences(p)\n")
    subprocess.run([sys.executable, "-c", code], env={**env, "QT_QPA_PLATFORM": "offscreen"}, check=True,
                   timeout=120, capture_output=True)


def run_app_conditions(tree: Path, env: dict, args, feed_wav: Path) -> dict[str, CpuWindow]:
    """Start the app from `tree`, measure each condition, stop it."""

    results = {}
    with tempfile.TemporaryDirectory(prefix="avatar-cpu-home-") as home:
        app_env = {**_app_env(env, tree, Path(home)), **_extra_env(args.env)}
        _write_settings(app_env, args.size, args.fps)
        log = open(Path(home) / "app.log", "w")
        app = subprocess.Popen([sys.executable, "-m", "avatar"], env=app_env, cwd=home, stdout=log,
                               stderr=subprocess.STDOUT)
        try:
            time.sleep(args.warmup)
            if app.poll() is not None:
                raise RuntimeError(f"the app exited ({app.returncode}): "
                                   + (Path(home) / "app.log").read_text()[-2000:])
            for condition in args.conditions:
                feed = None
                if condition == "speaking":
                    # into the sound server the app hears (the one brought up here when none was reachable)
                    feed = LoopedFeed(feed_wav, args.sink, env)
                    time.sleep(SPEECH_SETTLE_SECONDS)
                try:
                    results[condition] = measure(app.pid, args.seconds)
                finally:
                    if feed is not None:
                        feed.stop()
        finally:
            app.terminate()
            try:
                app.wait(timeout=15)
            except subprocess.TimeoutExpired:
                app.kill()
                app.wait()
            log.close()
    return results


def format_window(condition: str, window: CpuWindow) -> list[str]:
    lines = [f"{condition}: {window.process_percent:.1f} % of one core"]
    for name, tid, percent in window.threads[:THREADS_SHOWN]:
        if percent >= 0.5:
            lines.append(f"    {name:<16} (tid {tid}) {percent:5.1f} %")
    return lines


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # unwinds: the app, the feed and the display/sound server started are stopped


def bench_live_cpu(args) -> int:

    signal.signal(signal.SIGTERM, _exit_on_sigterm)

    trees = [Path(t).resolve() for t in (args.tree or [REPO_ROOT])]
    for tree in trees:
        if not (tree / "avatar" / "__init__.py").is_file():
            print(f"bench live-cpu: {tree} holds no avatar package", file=sys.stderr)
            return 2
    try:
        environment = _AvEnvironment(args.display)
    except (RuntimeError, subprocess.SubprocessError) as e:
        print(f"bench live-cpu: {e}", file=sys.stderr)
        return 1
    try:
        with tempfile.TemporaryDirectory(prefix="avatar-cpu-feed-") as tmp:
            feed_wav = Path(tmp) / "speech.wav"
            _write_wav(feed_wav, feed_signal())
            for tree in trees:
                load = load_average()
                try:
                    results = run_app_conditions(tree, environment.env, args, feed_wav)
                except (RuntimeError, subprocess.SubprocessError) as e:
                    print(f"bench live-cpu: {e}", file=sys.stderr)
                    return 1
                where = "" if len(trees) == 1 else f" [{tree}]"
                print(f"live-cpu{where}: the app window, {args.size}², {args.fps} fps, {args.seconds:g} s per "
                      f"condition, {os.cpu_count()} cores, load average before {load}, after {load_average()}")
                for condition, window in results.items():
                    print("\n".join(format_window(condition, window)), flush=True)
    finally:
        environment.down()
    return 0


def add_cli(bench_subparsers) -> None:
    """`avatar bench live-cpu`."""
    p = bench_subparsers.add_parser("live-cpu", help="CPU the app window uses (%% of one core), idle and speaking")
    p.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="window per condition (default %(default)g)")
    p.add_argument("--size", type=int_in(*SIZE_RANGE), default=512, help="avatar size in pixels (default 512)")
    p.add_argument("--fps", type=int, choices=DISPLAY_RATES, default=60, help="display rate (default 60)")
    p.add_argument("--warmup", type=float, default=DEFAULT_WARMUP_SECONDS,
                   help="seconds after start before measuring (default %(default)g)")
    p.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=list(CONDITIONS))
    p.add_argument("--tree", action="append", metavar="DIR",
                   help="run the package from this checkout (repeat to compare, one after the other)")
    p.add_argument("--env", action="append", metavar="KEY=VALUE", help="extra environment for the app (repeatable)")
    p.add_argument("--display", default=os.environ.get("AVATAR_TEST_DISPLAY", ":93"),
                   help="X display for Xvfb when none is reachable (default $AVATAR_TEST_DISPLAY or :93)")
    p.add_argument("--sink", default="vmic_out", help="PulseAudio sink that feeds the virtual microphone")
    p.set_defaults(func=bench_live_cpu)
