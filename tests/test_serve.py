"""The local server (avatar.serve): loopback only, tokens, origins, the input endpoint's wire format, and bad
input (malformed, oversized, wrongly rated, too fast) answered with a clear error while the server keeps going."""
from __future__ import annotations

import io
import json
import os
import socket
import time
import urllib.error
import urllib.request
import wave

import numpy as np
import pytest

from avatar.audio import SAMPLE_RATE
from avatar.serve.guard import host_ok, page_origin_ok, program_origin_ok, token_ok
from avatar.serve.push import (MAX_CHUNK_BYTES, PcmFormat, PcmStream, PushError, PushMixer, decode_pcm, decode_wav,
                               pcm_format)
from avatar.serve.server import WS_HARD_LIMIT, LocalServer

ws_client = pytest.importorskip("websockets.sync.client")
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402


def listening(pid: int | None = None) -> list[tuple[str, int]]:
    """(address, port) of the TCP sockets this process listens on (from /proc: its fds' socket inodes)."""
    pid = pid or os.getpid()
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, width in (("tcp", 8), ("tcp6", 32)):
        with open(f"/proc/{pid}/net/{table}") as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                    addr, port = cols[1].split(":")
                    raw = bytes.fromhex(addr)
                    ip = socket.inet_ntop(socket.AF_INET, raw[::-1]) if width == 8 else addr
                    found.append((ip, int(port, 16)))
    return found


@pytest.fixture
def server():
    texts: list[str] = []
    s = LocalServer(PushMixer(), lambda: None, port=0, speak_text=texts.append)
    s.browser_on = s.input_on = True
    s.start()
    s.texts = texts
    yield s
    s.stop()


def http(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            body = r.read()
            return r.status, json.loads(body) if r.headers.get_content_type() == "application/json" else body
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def base(s) -> str:
    return f"http://127.0.0.1:{s.port}"


def tone(rate: int, seconds: float, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    mono = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.repeat(mono[:, None], channels, axis=1)


def s16(audio: np.ndarray) -> bytes:
    return (audio * 32767).astype("<i2").tobytes()


# -- the guard's rules ------------------------------------------------------------------------------------


def test_guard_rules():
    assert token_ok("abc", "abc") and not token_ok("abc", "abd") and not token_ok("abc", None)
    assert not token_ok("", "")  # no token set: nothing gets in
    assert host_ok("127.0.0.1:8000", 8000) and host_ok("localhost:8000", 8000)
    assert not host_ok("evil.example:8000", 8000) and not host_ok("127.0.0.1:8001", 8000) and not host_ok(None, 1)
    assert page_origin_ok("http://127.0.0.1:8000", 8000) and not page_origin_ok(None, 8000)
    assert not page_origin_ok("http://evil.example", 8000)
    assert program_origin_ok(None, 8000) and not program_origin_ok("https://evil.example", 8000)


# -- binding --------------------------------------------------------------------------------------------


def test_it_listens_on_loopback_only_and_not_at_all_once_stopped():
    s = LocalServer(PushMixer(), lambda: None, port=0)
    before = set(listening())
    port = s.start()
    try:
        mine = set(listening()) - before
        assert mine == {("127.0.0.1", port)}  # not 0.0.0.0, not ::
        others = [a for a in _own_addresses() if not a.startswith("127.")]
        for address in others:  # the machine's other addresses do not reach it
            with pytest.raises(OSError):
                socket.create_connection((address, port), timeout=2).close()
    finally:
        s.stop()
    assert ("127.0.0.1", port) not in listening()


def _own_addresses() -> list[str]:
    try:
        return sorted({i[4][0] for i in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)})
    except OSError:
        return []


def test_a_taken_port_falls_back_to_a_free_one():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        s = LocalServer(PushMixer(), lambda: None, port=taken.getsockname()[1])
        port = s.start()
        assert port != taken.getsockname()[1] and ("127.0.0.1", port) in listening()
        s.stop()
    finally:
        taken.close()


# -- who may come in --------------------------------------------------------------------------------------


def test_the_token_is_required_everywhere(server):
    for path in ("/source", "/input/status"):
        assert http(base(server) + path)[0] == 401
        assert http(base(server) + path + "?token=wrong")[0] == 401
    assert http(base(server) + "/source?token=" + server.input_token)[0] == 401  # one feature's token only
    status, reply = http(base(server) + "/input/status", headers={"Authorization": f"Bearer {server.input_token}"})
    assert status == 200 and reply["queued_seconds"] == 0
    with pytest.raises(InvalidStatus) as refused:
        ws_client.connect(f"ws://127.0.0.1:{server.port}/input").close()
    assert refused.value.response.status_code == 401
    assert "token" in server.messages[-1]


def test_a_foreign_host_or_origin_is_refused(server):
    url = f"{base(server)}/input/status?token={server.input_token}"
    assert http(url, headers={"Host": f"evil.example:{server.port}"})[0] == 403  # DNS rebinding
    assert http(url, headers={"Origin": "https://evil.example"})[0] == 403  # a web page may not push
    with pytest.raises(InvalidStatus) as refused:
        ws_client.connect(server.input_url, origin="https://evil.example").close()
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as refused:  # the page's frames: its own origin only (none is refused too)
        ws_client.connect(f"ws://127.0.0.1:{server.port}/source/ws?token={server.view_token}").close()
    assert refused.value.response.status_code == 403


def test_turning_a_feature_off_closes_its_connections_and_stopping_is_prompt(server):
    with ws_client.connect(f"ws://127.0.0.1:{server.port}/source/ws?token={server.view_token}",
                           origin=f"http://127.0.0.1:{server.port}") as page:
        with ws_client.connect(server.input_url) as ws:
            server.input_on = False
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=5)
            assert closed.value.rcvd.code == 1001 and "input endpoint off" in closed.value.rcvd.reason
        start = time.monotonic()
        server.stop()
        assert time.monotonic() - start < 1.0
        with pytest.raises(ConnectionClosed):
            while True:
                page.recv(timeout=5)  # frames may be on their way; then the close


def test_a_feature_turned_off_answers_404(server):
    server.input_on = False
    status, reply = http(f"{base(server)}/input/status?token={server.input_token}")
    assert status == 404 and "turned off" in reply["error"]
    assert http(f"{base(server)}/source?token={server.view_token}")[0] == 200


# -- the input endpoint: its wire format ----------------------------------------------------------------


def test_pcm_chunks_at_any_common_rate_arrive_resampled_to_16k(server):
    audio = tone(22050, 1.0, channels=2)
    with ws_client.connect(server.input_url) as ws:
        ws.send(json.dumps({"type": "start", "rate": 22050, "channels": 2, "format": "s16le"}))
        assert json.loads(ws.recv())["type"] == "started"
        for chunk in np.array_split(audio, 10):
            reply = json.loads(ws.recv() if ws.send(s16(chunk)) is None else None)
            assert reply["type"] == "queued"
        ws.send(json.dumps({"type": "end"}))
        assert abs(json.loads(ws.recv())["queued_seconds"] - 1.0) < 0.01
    played = server.mixer.mix(np.zeros(SAMPLE_RATE, np.float32))
    spectrum = np.abs(np.fft.rfft(played[1000:]))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / len(played[1000:]) - 440) < 3
    assert abs(np.sqrt(np.mean(played[1000:-1000] ** 2)) - 0.5 / np.sqrt(2)) < 0.01


def test_float32_and_wav_and_raw_posts(server):
    with ws_client.connect(server.input_url) as ws:
        ws.send(json.dumps({"type": "start", "rate": 48000, "format": "f32le"}))
        ws.recv()
        ws.send(tone(48000, 0.5)[:, 0].astype("<f4").tobytes())
        assert abs(json.loads(ws.recv())["seconds"] - 0.5) < 0.01
    wav = io.BytesIO()
    with wave.open(wav, "wb") as w:
        w.setnchannels(2), w.setsampwidth(2), w.setframerate(44100)
        w.writeframes(s16(tone(44100, 0.5, channels=2)))
    token = {"X-Avatar-Token": server.input_token}
    status, reply = http(f"{base(server)}/input/wav", wav.getvalue(), token)
    assert status == 200 and abs(reply["seconds"] - 1.0) < 0.01
    status, reply = http(f"{base(server)}/input/pcm?rate=8000&channels=1&format=s16le", s16(tone(8000, 0.25)), token)
    assert status == 200 and abs(reply["seconds"] - 1.25) < 0.01


def test_text_is_handed_to_the_speech_callback(server):
    with ws_client.connect(server.input_url) as ws:
        ws.send(json.dumps({"type": "text", "text": "Hello from the assistant"}))
        assert json.loads(ws.recv()) == {"type": "speaking", "chars": 24}
    status, _ = http(f"{base(server)}/input/text", json.dumps({"text": "And by HTTP"}).encode(),
                     {"X-Avatar-Token": server.input_token})
    assert status == 200
    time.sleep(0.2)  # the callback runs off the event loop
    assert server.texts == ["Hello from the assistant", "And by HTTP"]


# -- bad input: a clear error reply, and the connection and the server go on -----------------------------


@pytest.mark.parametrize("message, words", [
    ("{not json", "Malformed JSON"),
    ("[1, 2]", "JSON object"),
    (json.dumps({"type": "start", "rate": 44000}), "Unsupported rate 44000"),
    (json.dumps({"type": "start", "rate": 96000}), "Unsupported rate"),
    (json.dumps({"type": "start", "rate": 16000, "channels": 6}), "Unsupported channels"),
    (json.dumps({"type": "start", "rate": 16000, "format": "mp3"}), "Unsupported format"),
    (json.dumps({"type": "dance"}), "Unknown message type"),
    (json.dumps({"type": "text", "text": ""}), "non-empty"),
    (json.dumps({"type": "text", "text": "x" * 6000}), "at most 5000"),
])
def test_bad_messages_get_an_error_reply_and_the_stream_goes_on(server, message, words):
    with ws_client.connect(server.input_url) as ws:
        ws.send(message)
        reply = json.loads(ws.recv())
        assert reply["type"] == "error" and words in reply["error"], reply
        ws.send(json.dumps({"type": "start", "rate": 16000}))  # the same connection still works
        assert json.loads(ws.recv())["type"] == "started"


def test_bad_chunks_get_an_error_reply(server):
    with ws_client.connect(server.input_url) as ws:
        ws.send(b"\x00\x01" * 100)
        assert "header first" in json.loads(ws.recv())["error"]
        ws.send(json.dumps({"type": "start", "rate": 16000, "channels": 2}))
        ws.recv()
        ws.send(b"\x00" * 6)  # 1.5 stereo frames
        assert "whole number" in json.loads(ws.recv())["error"]
        ws.send(b"\x00" * (MAX_CHUNK_BYTES + 4))
        assert "too big" in json.loads(ws.recv())["error"]
        ws.send(b"\x00" * 400)
        assert json.loads(ws.recv())["type"] == "queued"
    with ws_client.connect(server.input_url, max_size=None) as ws:  # past the hard limit: closed with 1009
        ws.send(json.dumps({"type": "start", "rate": 16000}))
        ws.recv()
        ws.send(b"\x00" * (WS_HARD_LIMIT + 2))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv()
        assert closed.value.rcvd.code == 1009
    assert http(f"{base(server)}/input/status?token={server.input_token}")[0] == 200  # the server goes on


def test_pushing_faster_than_real_time_is_refused_past_the_queue_limit(server):
    with ws_client.connect(server.input_url) as ws:
        ws.send(json.dumps({"type": "start", "rate": 16000}))
        ws.recv()
        replies = []
        for _ in range(25):  # 25 s pushed at once: the queue holds 20
            ws.send(s16(tone(16000, 1.0)))
            replies.append(json.loads(ws.recv()))
    assert [r["type"] for r in replies[:20]] == ["queued"] * 20
    assert all(r["type"] == "error" and "Too fast" in r["error"] for r in replies[20:])
    assert abs(server.mixer.queued_seconds - 20.0) < 0.01  # what was queued plays on


def test_bad_http_posts(server):
    token = {"X-Avatar-Token": server.input_token}
    status, reply = http(f"{base(server)}/input/wav", b"RIFF....not a wav", token)
    assert status == 400 and "WAV" in reply["error"]
    status, reply = http(f"{base(server)}/input/pcm?rate=1234", b"\x00\x00", token)
    assert status == 400 and "Unsupported rate" in reply["error"]
    status, reply = http(f"{base(server)}/input/text", b"{oops", token)
    assert status == 400 and "Malformed JSON" in reply["error"]
    status, reply = http(f"{base(server)}/input/wav", b"\x00" * (33 << 20), token)
    assert status == 413 and "too big" in reply["error"]
    assert http(f"{base(server)}/input/status?token={server.input_token}")[0] == 200


def test_text_without_text_to_speech_says_so():
    s = LocalServer(PushMixer(), lambda: None, port=0)
    s.input_on = True
    s.start()
    try:
        with ws_client.connect(s.input_url) as ws:
            ws.send(json.dumps({"type": "text", "text": "hi"}))
            assert "not available" in json.loads(ws.recv())["error"]
    finally:
        s.stop()


def test_one_program_pushes_at_a_time(server):
    with ws_client.connect(server.input_url) as a, ws_client.connect(server.input_url) as b:
        a.send(json.dumps({"type": "start", "rate": 16000}))
        assert json.loads(a.recv())["type"] == "started"
        b.send(json.dumps({"type": "start", "rate": 16000}))
        assert "Another program" in json.loads(b.recv())["error"]
        a.send(json.dumps({"type": "end"}))
        a.recv()
        b.send(json.dumps({"type": "start", "rate": 16000}))
        assert json.loads(b.recv())["type"] == "started"


# -- the pushed sound in the mouth's input -------------------------------------------------------------


def test_the_mixer_replaces_or_mixes_the_source_and_plays_in_real_time():
    mixer = PushMixer()
    mic = np.full(160, 0.25, np.float32)
    assert mixer.mix(mic) is None  # nothing pushed: the block is left alone
    mixer.push(np.full(200, 0.5, np.float32))
    out = mixer.mix(mic)
    assert np.all(out == 0.5)  # replaces the microphone while it plays
    out = mixer.mix(mic)
    assert np.all(out[:40] == 0.5) and np.all(out[40:] == 0.0)  # the rest of the block: no microphone either
    mixer.mix_with_input = True
    mixer.push(np.full(100, 0.5, np.float32))
    out = mixer.mix(mic)
    assert np.allclose(out[:100], 0.75) and np.allclose(out[100:], 0.25)
    mixer.push(np.ones(100, np.float32))
    mixer.clear()
    assert mixer.mix(mic) is None and mixer.queued_seconds == 0


def test_decoders_reject_what_they_cannot_read():
    with pytest.raises(PushError, match="NaN"):
        decode_pcm(np.array([np.nan], "<f4").tobytes(), PcmFormat(16000, 1, "f32le"))
    with pytest.raises(PushError):
        decode_wav(b"")
    with pytest.raises(PushError):
        pcm_format({"rate": "16000"})
    out = PcmStream(pcm_format({"rate": 8000})).decode(s16(tone(8000, 1.0)), last=True)
    assert 0 <= len(out) - SAMPLE_RATE < 64  # the filter's tail (its delay) is flushed at the end


# -- through the app's controller ---------------------------------------------------------------------------


@pytest.fixture
def controller(loudness_engine, tmp_path):
    from avatar.controller import Controller
    from avatar.preferences import Preferences
    from tests.conftest import SimpleFrames

    saved = []
    c = Controller(Preferences(output_folder=str(tmp_path), serve_port=0), lambda backend: loudness_engine,
                   lambda photo, prefs, landmarks=None: SimpleFrames(128), save_prefs=lambda p: saved.append(p))
    c.use_renderer("face.png", c.build_renderer("face.png"))
    c.start()
    c.saved = saved
    assert _wait_for(lambda: c.latest_frame is not None)
    yield c
    c.close()


def test_nothing_listens_until_the_user_turns_a_feature_on(controller):
    others = set(listening())  # anything another test of this session left listening (nothing, normally)
    assert controller.server is None
    url = controller.set_input_endpoint(True)
    assert url.startswith("ws://127.0.0.1:") and url.endswith(controller.prefs.input_token)
    assert set(listening()) - others == {("127.0.0.1", controller.server.port)}
    page = controller.set_browser_source(True)
    assert page.endswith(controller.prefs.view_token) and controller.prefs.view_token != controller.prefs.input_token
    assert controller.saved  # the tokens are kept: OBS's URL stays valid next time
    controller.set_input_endpoint(False)
    assert set(listening()) - others == {("127.0.0.1", controller.server.port)}  # the page still needs it
    controller.set_browser_source(False)
    assert controller.server is None and set(listening()) - others == set()


def test_pushed_sound_opens_the_mouth_and_bad_input_leaves_the_app_running(controller):
    from avatar.bench.signals import tone_bursts
    from avatar.visemes import PARAM_NAMES

    jaw = PARAM_NAMES.index("jaw_open")
    url = controller.set_input_endpoint(True)
    with ws_client.connect(url) as ws:
        for bad in ("{", json.dumps({"type": "start", "rate": 7}), json.dumps({"type": "text", "text": " "})):
            ws.send(bad)
            assert json.loads(ws.recv())["type"] == "error"
        seq = controller.latest_frame.seq
        assert controller.latest_frame.params[jaw] < 0.2  # silence: closed
        ws.send(json.dumps({"type": "start", "rate": 24000, "channels": 1, "format": "s16le"}))
        ws.recv()
        audio = tone_bursts([0.0], 1.0, sr=24000, length=1.0)
        for chunk in np.array_split(audio, 25):  # 40 ms chunks, as a TTS streams them
            ws.send(s16(chunk))
            ws.recv()
    opened = _wait_for(lambda: controller.latest_frame.params[jaw] > 0.8)
    assert opened and controller.latest_frame.seq > seq  # the render thread went on through all of it
    closed = _wait_for(lambda: controller.latest_frame.params[jaw] < 0.2, timeout=5)
    assert closed  # the pushed sound played out in real time, then silence closed the mouth
    assert not controller.pipeline.errors


def test_text_reaches_the_controllers_speech(controller):
    spoken = []
    controller.speak = spoken.append  # any speak(text) the controller has is what the endpoint calls
    url = controller.set_input_endpoint(True)
    with ws_client.connect(url) as ws:
        ws.send(json.dumps({"type": "text", "text": "Hello"}))
        assert json.loads(ws.recv())["type"] == "speaking"
    assert _wait_for(lambda: spoken == ["Hello"])


def test_pushed_text_is_spoken_by_piper_and_opens_the_mouth(controller):
    from avatar.visemes import PARAM_NAMES

    if controller.speech_unavailable:
        pytest.skip(controller.speech_unavailable)
    jaw = PARAM_NAMES.index("jaw_open")
    url = controller.set_input_endpoint(True)
    with ws_client.connect(url) as ws:
        ws.send(json.dumps({"type": "text", "text": "x" * 3000}))  # under the endpoint's cap, over the voice's
        refusal = json.loads(ws.recv())
        assert refusal["type"] == "error" and "refused" in refusal["error"]
        assert controller.latest_frame.params[jaw] < 0.2
        ws.send(json.dumps({"type": "text", "text": "Hello there, how are you today?"}))
        assert json.loads(ws.recv(timeout=30))["type"] == "speaking"
    assert _wait_for(lambda: controller.latest_frame.params[jaw] > 0.5, timeout=30)
    assert not controller.pipeline.errors


def _wait_for(condition, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_the_example_client_streams_a_wav(server, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "speech.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(22050)
        w.writeframes(s16(tone(22050, 0.3)))
    example = Path(__file__).resolve().parent.parent / "examples" / "push_audio.py"
    out = subprocess.run([sys.executable, str(example), server.input_url, str(path)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert '"started"' in out.stdout and '"ended"' in out.stdout
    assert abs(server.mixer.queued_seconds - 0.3) < 0.05  # nothing plays it here (no pipeline): all queued


def test_the_matte_of_a_photo_on_its_own_background_is_made_like_the_green_screens():
    from avatar.face.assemble import open_renderer
    from avatar.paths import default_photo
    from avatar.serve.frames import person_alpha

    photo_bg = person_alpha(open_renderer(default_photo(), 128, liveliness={"enabled": False}))
    green = person_alpha(open_renderer(default_photo(), 128, background=(0, 255, 0), liveliness={"enabled": False}))
    assert photo_bg.shape == green.shape == (128, 128) and photo_bg.dtype == np.uint8
    assert (photo_bg == 0).mean() > 0.2 and (photo_bg == 255).mean() > 0.2  # a person and a background
    assert np.abs(photo_bg.astype(int) - green).mean() < 3  # the same segmentation of the same photo
    assert person_alpha(object()) is None  # no face (the blank square): opaque


def test_a_recording_gets_the_pushed_sound(controller):
    from tests.conftest import decode_mp4

    url = controller.set_input_endpoint(True)
    assert controller.start_recording()
    time.sleep(0.3)
    with ws_client.connect(url) as ws:
        ws.send(json.dumps({"type": "start", "rate": 32000}))
        ws.recv()
        ws.send(s16(tone(32000, 0.6, freq=700.0)))
        ws.recv()
    time.sleep(1.2)
    path = controller.finish_recording(controller.detach_recording())
    info = decode_mp4(path)
    audio, rate = info["audio"], info["sample_rate"]
    loud = np.abs(audio) > 0.1
    assert 0.4 < loud.sum() / rate < 0.7  # the 0.6 s pushed (a sine is above 0.1 for 87 % of it), no more
    first = np.argmax(loud)
    spectrum = np.abs(np.fft.rfft(audio[first:first + rate // 2]))
    assert abs(np.argmax(spectrum) * 2 - 700) < 5  # its tone (0.5 s window: 2 Hz a bin)


def test_a_new_token_shuts_the_old_one_out(server):
    old = server.input_url
    with ws_client.connect(old) as ws:
        server.renew_token("input")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd.code == 1001 and "new token" in closed.value.rcvd.reason
    with pytest.raises(InvalidStatus) as refused:
        ws_client.connect(old).close()
    assert refused.value.response.status_code == 401
    with ws_client.connect(server.input_url) as ws:
        ws.send(json.dumps({"type": "start", "rate": 16000}))
        assert json.loads(ws.recv())["type"] == "started"
