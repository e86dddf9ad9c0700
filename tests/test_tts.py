"""Text to speech (avatar.tts, avatar.live.speech, Controller.speak, the window's Speak bar) with the real Piper
`joe` voice and the shipped live lip-sync model: the spoken text opens the mouth. Skips with the reason where the
[tts] extra is not installed."""
import sys
import time

import numpy as np
import pytest

from avatar.controller import SOURCE_SILENCE, SOURCE_SPEECH, Controller, SpeechError
from avatar.preferences import Preferences
from avatar.tts import MAX_TEXT_CHARS, PACKAGE_HINT, check_text, split_first_clause, unavailable
from avatar.visemes import PARAM_NAMES
from tests.conftest import SimpleFrames

JAW = PARAM_NAMES.index("jaw_open")
PRESS = PARAM_NAMES.index("lip_press")
OPEN = 0.4  # jaw_open the live model reaches on the voice's vowels (measured 0.67-0.82 on short sentences)
CLOSED = 0.1
needs_piper = pytest.mark.skipif(unavailable() is not None, reason=f"Piper is not installed: {unavailable()}")


def wait_until(condition, timeout=20.0):
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


@pytest.fixture
def live_engine_factory(tmp_path, monkeypatch):
    from avatar.engine import create_engine, live_model_path

    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path / "cache"))
    return lambda backend: create_engine("onnxruntime", live_model_path())


@pytest.fixture
def speaking(live_engine_factory, tmp_path):
    """A started controller on the shipped live model; each frame's (time, jaw_open) and the messages said."""
    frames, told = [], []
    c = Controller(Preferences(output_folder=str(tmp_path), fps=30), live_engine_factory,
                   lambda photo, prefs, landmarks=None: SimpleFrames(64),
                   on_error=lambda message, title: told.append(message), on_event=told.append,
                   on_frame=lambda frame: frames.append((time.monotonic(), float(frame.params[JAW]))))
    c.frames, c.told = frames, told
    c.start()
    wait_until(lambda: frames)
    yield c
    c.close()


def jaw_since(frames, t0):
    return np.array([jaw for t, jaw in frames if t >= t0])


# -- the text ------------------------------------------------------------------------------------------

def test_empty_text_is_refused_with_a_message():
    for text in ("", "   \n\t"):
        with pytest.raises(SpeechError, match="nothing to say"):
            check_text(text)


def test_too_long_text_is_refused_with_the_limit():
    with pytest.raises(SpeechError, match=f"{MAX_TEXT_CHARS + 1} characters long; at most {MAX_TEXT_CHARS}"):
        check_text("a" * (MAX_TEXT_CHARS + 1))
    assert check_text("  " + "a" * MAX_TEXT_CHARS + "  ") == "a" * MAX_TEXT_CHARS


def test_without_piper_speak_says_what_to_install(monkeypatch, live_engine_factory, tmp_path):
    monkeypatch.setitem(sys.modules, "piper", None)  # import fails as if the extra were not installed
    assert PACKAGE_HINT in unavailable()
    c = Controller(Preferences(output_folder=str(tmp_path)), live_engine_factory,
                   lambda photo, prefs, landmarks=None: SimpleFrames(64))
    assert PACKAGE_HINT in c.speech_unavailable
    with pytest.raises(SpeechError, match=r"pip install 'talking-avatar\[tts\]'"):
        c.speak("Hello.")
    assert c.source_kind == SOURCE_SILENCE


def test_a_long_first_sentence_has_its_first_clause_made_on_its_own():
    assert split_first_clause("Hello there, how are you today?") == ["Hello there,", "how are you today?"]
    assert split_first_clause("Well, then.") == ["Well, then."]  # too short to split
    assert split_first_clause("No break here. Later, there is one.") == ["No break here. Later, there is one."]
    assert split_first_clause("Item one; item two, and more.") == ["Item one;", "item two, and more."]
    assert split_first_clause("3,000 people came here today") == ["3,000 people came here today"]  # not a break


# -- the voice -----------------------------------------------------------------------------------------

@needs_piper
def test_the_voice_makes_a_sentence_at_a_time_at_its_own_rate():
    from avatar.tts import PiperSpeech

    speech = PiperSpeech()
    assert speech.sample_rate == 22050
    chunks = list(speech.chunks("Hello there. How are you today?"))
    assert len(chunks) == 2  # one per sentence: the first can play while the second is made
    for chunk in chunks:
        assert chunk.dtype == np.float32 and 0.3 * 22050 < len(chunk) < 4 * 22050
        assert np.sqrt(np.mean(chunk ** 2)) > 0.02  # sound, not silence
    assert list(speech.chunks("...")) == []  # nothing pronounceable: nothing made


# -- speaking through the live pipeline ------------------------------------------------------------------

@needs_piper
def test_spoken_text_opens_the_mouth_and_then_silence_returns(speaking):
    c = speaking
    time.sleep(0.5)
    assert jaw_since(c.frames, 0).max() < CLOSED  # silence: closed
    t0 = time.monotonic()
    c.speak("Hello there, how are you doing today?")
    assert c.source_kind == SOURCE_SPEECH and c.playing
    wait_until(lambda: c.source_kind == SOURCE_SILENCE, timeout=30)  # ends by itself
    jaw = jaw_since(c.frames, t0)
    assert jaw.max() > OPEN
    opened = np.flatnonzero(jaw > OPEN)
    # the mouth moves with the words: it opens and closes again several times (syllables), not once
    assert np.count_nonzero(np.diff((jaw > OPEN).astype(int)) == 1) >= 3
    assert jaw[opened[-1]:].min() < CLOSED  # and it is closed after the speech
    assert not [m for m in c.told if "Could not" in m or "Nothing" in m]


@needs_piper
def test_a_second_text_is_spoken_after_the_first(speaking):
    c = speaking
    c.speak("One.")
    source = c.pipeline.source
    c.speak("Two, three.")
    assert c.pipeline.source is source  # queued on the same speech, not cutting it off
    wait_until(lambda: c.source_kind == SOURCE_SILENCE, timeout=30)
    assert source.spoken == 2


@needs_piper
def test_texts_said_from_two_threads_at_once_are_both_spoken_in_turn(speaking):
    import threading

    c = speaking
    c.speak("Ready.")  # the voice loaded, speech running
    wait_until(lambda: c.pipeline.source.first_speech_index is not None)
    source = c.pipeline.source
    callers = [threading.Thread(target=c.speak, args=(text,)) for text in ("One.", "Two.")]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(10)
    assert c.pipeline.source is source
    wait_until(lambda: c.source_kind == SOURCE_SILENCE, timeout=30)
    assert source.spoken == 3


@needs_piper
def test_text_with_nothing_to_pronounce_is_a_message_and_the_app_runs_on(speaking):
    c = speaking
    c.speak("...")
    wait_until(lambda: any("Nothing in the text could be spoken" in m for m in c.told))
    wait_until(lambda: c.source_kind == SOURCE_SILENCE)
    n = len(c.frames)
    wait_until(lambda: len(c.frames) > n + 5)  # still rendering


@needs_piper
def test_stop_playback_stops_the_speech(speaking):
    c = speaking
    c.speak("This is a rather long sentence that would take several seconds to say out loud, if it were let be.")
    wait_until(lambda: c.pipeline.source.first_speech_index is not None)
    c.stop_playback()
    assert c.source_kind == SOURCE_SILENCE and not c.playing


# -- the window ----------------------------------------------------------------------------------------

@pytest.fixture
def speak_window(qtbot, qsettings, tmp_path, live_engine_factory):
    from avatar.gui import main_window
    from avatar.gui.settings import load_preferences

    prefs = load_preferences()
    prefs.size, prefs.fps, prefs.output_folder, prefs.liveliness = 192, 30, str(tmp_path), {"enabled": False}
    w = main_window(prefs, engine_factory=live_engine_factory)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.controller.renderer is not None and w.controller.latest_frame is not None
                    and w.controller.latest_frame.image.shape[0] == 192, timeout=20000)
    yield w
    w.close()


@needs_piper
def test_the_speak_box_makes_the_face_say_it(speak_window, qtbot):
    from PySide6.QtCore import Qt

    from avatar.face.shapes import DEFAULT_SHAPES

    w = speak_window
    jaws, images = [], []
    # the jaw a frame draws: pressed lips (the "m" of "morning", which the jaw may already be leaving) shut it
    # (avatar.face.shapes.rig_weights), so the frame picked below must not be one of those
    drawn = lambda p: float(p[JAW]) if p[PRESS] < DEFAULT_SHAPES.press_closes_from else 0.0  # noqa: E731
    w.controller.add_frame_sink(lambda frame: (jaws.append(drawn(frame.params)), images.append(frame.image)))
    qtbot.wait(300)
    closed = w.controller.latest_frame.image.copy()  # the face on show (a still face draws no new frame)
    qtbot.keyClicks(w.speak_box, "Good morning, everyone.")
    qtbot.mouseClick(w.speak_button, Qt.LeftButton)
    assert w.speak_box.text() == ""  # taken
    qtbot.waitUntil(lambda: max(jaws) > OPEN, timeout=20000)
    opened = images[int(np.argmax(jaws))].astype(int)
    mx0, my0, mx1, my1 = (int(v) for v in w.controller.renderer.rig.mouth_box)
    diff = np.abs(opened - closed.astype(int)).sum(axis=2)
    assert (diff[my0 - 5:my1 + 10, mx0 - 5:mx1 + 5] > 60).mean() > 0.05  # the picture's mouth opened
    # the speech ends by itself and what ran before comes back (silence, or a microphone hot-plug opened meanwhile)
    qtbot.waitUntil(lambda: w.controller.source_kind != SOURCE_SPEECH, timeout=30000)
    qtbot.waitUntil(lambda: not w.stop_playback_action.isEnabled(), timeout=2000)


@needs_piper
def test_the_speak_box_says_why_an_empty_text_is_not_spoken(speak_window, qtbot):
    from PySide6.QtCore import Qt

    w = speak_window
    before = w.controller.source_kind  # silence, or a microphone the sound server made appear (hot-plug)
    qtbot.mouseClick(w.speak_button, Qt.LeftButton)
    assert "nothing to say" in w.controller.last_error
    assert w.controller.source_kind == before and w.controller.source_kind != SOURCE_SPEECH  # nothing started


def test_without_piper_the_speak_bar_says_what_to_install(monkeypatch, speak_window_without_piper):
    w = speak_window_without_piper
    assert not w.speak_box.isEnabled() and PACKAGE_HINT in w.speak_box.placeholderText()
    assert "talking-avatar[tts]" in w.speak_action.text()
    w.speak_action.trigger()
    assert PACKAGE_HINT in w.controller.last_error


@pytest.fixture
def speak_window_without_piper(monkeypatch, qtbot, qsettings, tmp_path, live_engine_factory):
    from avatar.gui.window import MainWindow
    from avatar.gui.settings import load_preferences

    monkeypatch.setitem(sys.modules, "piper", None)
    prefs = load_preferences()
    prefs.output_folder = str(tmp_path)
    w = MainWindow(prefs, live_engine_factory, lambda photo, prefs, landmarks=None: SimpleFrames(64))
    qtbot.addWidget(w)
    yield w
    w.close()


@needs_piper
def test_the_speech_is_heard_on_the_default_output(virtual_mic, speaking, tmp_path):
    """Through the sound server (the test daemon's default sink is the virtual microphone's): what is said comes
    out of the default output, the mouth moving with it."""
    import shutil
    import subprocess

    if shutil.which("parec") is None:
        pytest.skip("parec (pulseaudio-utils) is not installed to listen to the output")
    c = speaking
    raw = tmp_path / "heard.raw"
    with open(raw, "wb") as out:
        listener = subprocess.Popen(["parec", "-d", "vmic", "--raw", "--rate=16000", "--channels=1",
                                     "--format=s16le", "--latency-msec=20"], stdout=out)
        try:
            time.sleep(0.5)
            c.speak("Good morning, everyone.")
            source = c.pipeline.source
            assert source.stream is not None, source.playback_note  # it plays: there is an output here
            wait_until(lambda: c.source_kind == SOURCE_SILENCE, timeout=30)
            time.sleep(0.5)
        finally:
            listener.terminate()
            listener.wait(5)
    heard = np.frombuffer(raw.read_bytes(), "<i2").astype(np.float32) / 32768
    rms = np.sqrt(np.convolve(heard ** 2, np.ones(800) / 800, "valid"))  # 50 ms windows
    assert rms[:4000].max() < 0.003  # silence before speaking
    assert rms.max() > 0.03 and (rms > 0.01).sum() > 0.5 * 16000  # then about a second of speech
    assert source.spoken == 1 and max(jaw for _, jaw in c.frames) > OPEN
