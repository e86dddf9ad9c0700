"""What the app does, without Qt: the live pipeline, its audio source and renderer, recording, export, settings.

The window (avatar.gui.window) holds widgets and signals and calls these operations; tests drive them directly.
Everything here runs on the caller's thread except where a method says it is slow (build_renderer,
finish_recording, export: call those on a worker thread). Observable state for the window and the tests:
`source_kind`, `source_name`, `microphone`, `playing`, `level_db`, `renderer`, `recording`, `backend_text`,
`backend_choice`, `last_error`, `last_recording`, `last_export`, `prefs`.

Every message meant for the user goes through `report_error`, which records it as `last_error` and hands it to
`on_error(message, title)` (the window shows a dialog); pipeline messages from its worker threads arrive through
`on_event(message)`, on those threads (the window forwards them to the GUI thread, then to `report_error`).
"""
from __future__ import annotations

from dataclasses import fields, replace
from datetime import datetime
import logging
from pathlib import Path
import tempfile
import threading
from typing import Callable

import numpy as np

from avatar.audio import load_audio
from avatar.face import NoFaceError, PhotoError, detect_faces, fit_template, load_photo
from avatar.devices import (SoundInput, default_microphone, find_saved, list_microphones, prepare_open,
                            server_inputs)
from avatar.mic import MicError
from avatar.face.assemble import liveliness_config
from avatar.face.expressions import check_expression
from avatar.face.landmarks import face_boxes
from avatar.face.pose import turn_warning
from avatar.face.video_avatar import is_avatar_path
from avatar.face.video_avatar.build import build as build_video_avatar
from avatar.live.offline import Cancelled, render_offline
from avatar.live.pipeline import LivePipeline, Stats
from avatar.live.sources import FileSource, MicSource, SilenceSource
from avatar.live.speech import SpeechSource
from avatar.live.virtual_camera import VirtualCamera, VirtualCameraError, frame_sink
from avatar.preferences import GATE_RANGE_DB, Preferences
from avatar.record import RecordError
from avatar.serve.push import PushMixer
# SpeechError: what speak() raises, imported from here by its callers
from avatar.tts import PiperSpeech, SpeechError, check_text, unavailable as speech_unavailable  # noqa: F401

log = logging.getLogger(__name__)

# what `source_kind` says is feeding the mouth
SOURCE_SILENCE = "silence"
SOURCE_MICROPHONE = "microphone"
SOURCE_FILE = "file"
SOURCE_SPEECH = "speech"  # text spoken with Piper (speak)
SOURCE_OTHER = "other"  # a source handed to the pipeline directly (tests, tools)
GATE_OFF_AT_DB = -80  # a gate at or below this is off (the slider's leftmost position)
GATE_OFF_DB = GATE_RANGE_DB[0]  # how "gate off" is stored in the preferences
CLIP_LEVEL_DB = -3.0  # the meter's level is RMS: a full-scale sine is -3 dBFS, so at or above this the input clips
BLANK_GREY = 24  # the plain square shown until the first photo's rig is built
APP_TITLE = "Talking Avatar"
BACKEND_NAMES = {"tensorrt": "TensorRT", "onnxruntime": "ONNX Runtime", "torch": "PyTorch"}


class BlankRenderer:
    """What the view shows until the first photo's rig is built (and exports without a photo): a dark square."""

    def __init__(self, size: int):
        self._frame = np.full((size, size, 3), BLANK_GREY, np.uint8)

    def render(self, params, t):
        return self._frame


class FaceChoiceNeeded(Exception):
    """A photo with several faces and none picked in it yet: the loaded `image` and its `faces` (landmarks, the
    largest first) for a face picker; build_renderer(photo, face_index=i) then builds the rig on the one picked."""

    def __init__(self, image: np.ndarray, faces: list[np.ndarray]):
        super().__init__(f"This photo has {len(faces)} faces: pick the one to animate.")
        self.image = image
        self.faces = faces


def error_sentence(error: BaseException) -> str:
    """An exception as the sentence a dialog shows (its class name when it carries no message)."""
    return str(error) or type(error).__name__


def backend_text(engine) -> str:
    """The status bar's words for an engine: which backend on which device."""
    if engine is None:
        return "no model (mouth stays closed)"
    name = getattr(engine, "name", "?")
    device = getattr(engine, "device", "cpu")
    return f"{BACKEND_NAMES.get(name, name)}, {'CPU' if device == 'cpu' else 'GPU ' + device}"


def liveliness_switches(switches: dict | None) -> dict[str, bool]:
    """The renderer's on/off liveliness options (the bool fields of avatar.face.LivelinessConfig) with the user's
    choices applied: avatar.face.assemble.liveliness_config is the one place the choices meet the defaults."""
    config = liveliness_config(switches)
    return {f.name: getattr(config, f.name) for f in fields(config) if isinstance(getattr(config, f.name), bool)}


def folder_problem(folder) -> str | None:
    """Why recordings cannot be written to `folder` (None when they can): missing, not a folder, or read-only.
    Writability is tried with a real file: it meets what the file system says (a read-only mount, an ACL)
    where os.access guesses from the mode bits."""
    folder = Path(folder)
    if not folder.exists():
        return f"The folder {folder} does not exist."
    if not folder.is_dir():
        return f"{folder} is not a folder."
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        return f"Recordings cannot be written to {folder}: {e.strerror or e}."
    return None


def existing_ancestor(folder) -> Path:
    """`folder` itself or the nearest folder above it that exists (where a folder dialog can start)."""
    folder = Path(folder).expanduser()
    for candidate in (folder, *folder.parents):
        if candidate.is_dir():
            return candidate
    return Path.home()


def clean_name_prefix(text: str) -> str:
    """The start of recordings' file names: letters, digits, space, - and _ only ("" when nothing is left)."""
    return "".join(c for c in text.strip() if c.isalnum() or c in " -_").strip()


class Controller:
    """The app's operations on a live pipeline with the user's `prefs`; `save_prefs(prefs)` stores them (the window
    passes avatar.gui.settings.save_preferences).

    engine_factory(backend) -> engine for the live view (a failure at start leaves a closed mouth and a message);
    offline_engine_factory(backend) for exports (default: engine_factory);
    renderer_factory(photo_path, prefs, landmarks=None) -> renderer."""

    def __init__(self, prefs: Preferences, engine_factory, renderer_factory, offline_engine_factory=None, *,
                 save_prefs: Callable[[Preferences], None] = lambda prefs: None,
                 on_error: Callable[[str, str], None] | None = None,
                 on_event: Callable[[str], None] | None = None,
                 on_frame: Callable[[object], None] | None = None):
        self.prefs = prefs
        self.engine_factory = engine_factory
        self.offline_engine_factory = offline_engine_factory or engine_factory
        self.renderer_factory = renderer_factory
        self._save = save_prefs
        self.on_error = on_error or (lambda message, title: None)
        self.last_error: str | None = None  # the last message said to the user
        self.last_recording: Path | None = None  # the last recording finished (or the file a failure left)
        self.last_export: Path | None = None  # the last export finished
        self.last_avatar_note = ""  # what the last video avatar made says of its mouth (BuildReport.mouth_note)
        self.renderer = None  # the photo's renderer once one is built (the pipeline shows a blank square before)
        # hand-placed landmarks by photo (photo pixels): a photo whose face was placed by hand keeps its points when
        # its renderer is built again (a new size or frame, an export), where finding the face would fail again
        self._placed: dict[str, np.ndarray] = {}
        self.microphone: str | None = None  # the microphone last opened (restored when a played file ends)
        self._playing = None  # the FileSource started by play_file while it may still be playing
        self._paused = None  # the FileSource of a paused playback (closed; resumed from its position)
        self._dropped_base = 0  # the pipeline's dropped-frame count when the view last restarted
        self._inputs: dict[str, SoundInput] = {}  # the last microphone list, by name
        # observers of each new frame, on the render thread (the window, the virtual camera, ...): a tuple that is
        # replaced, never changed, so the render thread can go through it while another thread adds one
        self._frame_sinks: tuple = (on_frame,) if on_frame is not None else ()
        self.virtual_camera: VirtualCamera | None = None  # the virtual camera while one runs
        self.server = None  # the local server (avatar.serve) while the browser source or input endpoint is on
        self.push_mixer = PushMixer()  # other programs' sound (the input endpoint) into the mouth
        self.engine, self.backend_choice, startup_error = self._first_engine()
        self.pipeline = LivePipeline(self.engine, BlankRenderer(prefs.size), fps=prefs.fps, on_event=on_event,
                                     on_frame=self._frame_ready)
        if startup_error:
            self.report_error(startup_error)

    def _first_engine(self):
        """(engine, the backend choice it runs as, a message or None). A saved backend that cannot run here
        (TensorRT with no GPU today) hands over to "auto" for this run and says so; the saved choice stays. When
        nothing runs: no engine (the window still opens: a live face with a closed mouth) and the reason."""
        wanted = self.prefs.backend
        try:
            return self.engine_factory(wanted), wanted, None
        except Exception as e:  # missing library, no GPU, model not convertible: said, never fatal
            failure = e
        if wanted != "auto":
            try:
                engine = self.engine_factory("auto")
            except Exception as e:
                failure = e
            else:
                return engine, "auto", (f"The {wanted} backend cannot run here ({failure}); using "
                                        f"{backend_text(engine)} for now.")
        return None, wanted, f"The lip-sync model could not be started ({wanted}): {failure}"

    def start(self) -> "Controller":
        self.pipeline.start()
        return self

    def close(self) -> None:
        """Finish a recording (raises nothing: a failure is reported), stop the threads, store the settings."""
        recording = self.detach_recording()
        if recording is not None:
            try:
                self.finish_recording(recording)
            except RecordError as e:
                self.report_error(error_sentence(e), "Recording stopped")
        self.stop_virtual_camera()
        self._stop_server()
        self.pipeline.stop()
        self.save_prefs()

    def save_prefs(self) -> None:
        self._save(self.prefs)

    def report_error(self, message: str, title: str = APP_TITLE) -> None:
        """Say something went wrong: remembered as `last_error`, shown by `on_error`."""
        log.info("%s: %s", title, message)
        self.last_error = message
        self.on_error(message, title)

    # -- frame observers and the virtual camera (avatar.live.virtual_camera) ----------------------------

    def _frame_ready(self, frame) -> None:  # on the render thread
        for sink in self._frame_sinks:
            sink(frame)

    def add_frame_sink(self, sink: Callable[[object], None]) -> None:
        """Call `sink(frame)` (avatar.live.pipeline.Frame) on the render thread with each new frame; it must not
        wait (queue the frame and return). It gets the face on show at once: a still face draws no new frame
        (StillFrames) until it moves, and an output that repeats its last frame (the virtual camera, the browser
        source) would otherwise show nothing until then (never, with idle motion off)."""
        self._frame_sinks = (*self._frame_sinks, sink)
        if self.pipeline.latest is not None:
            sink(self.pipeline.latest)

    def remove_frame_sink(self, sink) -> None:
        self._frame_sinks = tuple(s for s in self._frame_sinks if s is not sink)

    def start_virtual_camera(self, backend: str | None = None, device: str | None = None) -> bool:
        """Send the view (its size and frame rate, its background) to a virtual camera; False with a message that
        says what to install when there is none. `backend` / `device`: pyvirtualcam's (None: the first found)."""
        if self.virtual_camera is not None and self.virtual_camera.running:
            return True
        self.stop_virtual_camera()
        frame = self.pipeline.latest
        if frame is None:
            self.report_error("The avatar is not showing yet; try again in a moment.", "No virtual camera")
            return False
        height, width = frame.image.shape[:2]
        try:
            camera = VirtualCamera(width, height, self.prefs.fps, backend, device, on_event=self.pipeline.on_event)
        except VirtualCameraError as e:
            self.report_error(str(e), "No virtual camera")
            return False
        self.virtual_camera, self._camera_sink = camera, frame_sink(camera)
        self.add_frame_sink(self._camera_sink)
        self._outputs_changed()
        return True

    def stop_virtual_camera(self) -> None:
        camera, self.virtual_camera = self.virtual_camera, None
        if camera is not None:
            self.remove_frame_sink(self._camera_sink)
            camera.close()
        self._outputs_changed()

    def _outputs_changed(self) -> None:
        """Outputs beside the view (the virtual camera, the browser source) want frames while the window is
        hidden or minimised too."""
        browser = self.server is not None and self.server.browser_on
        self.pipeline.frames_wanted = int(self.virtual_camera is not None) + int(browser)

    # -- what feeds the mouth -------------------------------------------------------------------------

    @property
    def source_kind(self) -> str:
        """SOURCE_SILENCE, SOURCE_MICROPHONE, SOURCE_FILE (or SOURCE_OTHER)."""
        source = self.pipeline.source
        if isinstance(source, SilenceSource):
            return SOURCE_SILENCE
        if isinstance(source, MicSource):
            return SOURCE_MICROPHONE
        if isinstance(source, FileSource):
            return SOURCE_FILE
        if isinstance(source, SpeechSource):
            return SOURCE_SPEECH
        return SOURCE_OTHER

    @property
    def source_name(self) -> str:
        """The microphone's device name, the file's name, or "silence"."""
        return self.pipeline.source.name

    @property
    def level_db(self) -> float:
        """The input level (after gain, before the gate) for the meter."""
        return float(self.pipeline.source.level_db)

    def microphones(self) -> list[SoundInput]:
        """The inputs (the sound server's sources where one runs, see avatar.devices), looked for again (a
        microphone in use is let go first: PortAudio cannot rescan with a stream open; a file or speech playing
        plays on, and PortAudio's part of the list is then the one it saw last). [] with a message when the
        sound system cannot be asked."""
        if self.source_kind == SOURCE_MICROPHONE:
            self.use_silence()
        try:
            inputs = list_microphones()
        except Exception as e:  # PortAudio/sounddevice failures: the avatar runs on silence
            self.report_error(f"Could not list the microphones: {e}")
            return []
        self._inputs = {d.name: d for d in inputs}
        return inputs

    def sources_changed(self) -> list[SoundInput] | None:
        """The sound server's sources changed (plugged, unplugged): its list again, asked of the server alone, so
        the microphone in use keeps running. A microphone that was missing and is back is opened again: the saved
        one in place of the stand-in used meanwhile, or the one in use before it was lost. None where the list
        does not come from a sound server (PortAudio's: look again by hand)."""
        if self._inputs and not any(d.pulse_source for d in self._inputs.values()):
            return None
        inputs = server_inputs()
        if inputs is None:
            return None
        self._inputs = {d.name: d for d in inputs}
        if self.playing or self.paused:
            return inputs  # the file plays on; the microphone in use before comes back after it
        saved = find_saved(self.prefs.device, inputs) if self.prefs.device else None
        kind = self.source_kind
        if saved is not None and kind == SOURCE_MICROPHONE and self.microphone != saved:
            self.use_microphone(saved)  # the saved microphone is back: it replaces the stand-in
        elif self.microphone is not None and kind == SOURCE_SILENCE and self.microphone in self._inputs:
            self.use_microphone(self.microphone, remember=False)  # the one lost is back
        elif kind == SOURCE_MICROPHONE and self.microphone not in self._inputs:
            # unplugged: the sound server moves its stream to another source unasked; say so and show which
            gone, stand_in = self.source_name, self.preferred_microphone(inputs)
            if stand_in is not None and self.use_microphone(stand_in, remember=False):
                self.pipeline.on_event(f"The microphone '{gone}' was unplugged; listening to "
                                       f"'{self.source_name}' until it is back.")
        return inputs

    def preferred_microphone(self, devices: list[SoundInput]) -> str | None:
        """Which of `devices` to open: the one used last time, else the system default, else the first."""
        if not devices:
            return None
        names = [d.name for d in devices]
        saved = find_saved(self.prefs.device, devices) if self.prefs.device else None
        if saved is not None:
            return saved
        default = default_microphone(devices)
        return default if default in names else names[0]

    def missing_saved_microphone(self, devices: list[SoundInput]) -> str | None:
        """The microphone saved last time when it is not among `devices` (unplugged, renamed), else None."""
        if not self.prefs.device or find_saved(self.prefs.device, devices) is not None:
            return None
        return self.prefs.device

    def open_preferred_microphone(self, devices: list[SoundInput]) -> str | None:
        """Open the preferred of `devices` (see preferred_microphone) and return its name (None: runs on silence).
        A saved microphone that is absent is said, and stays the saved choice: it is picked again once it is
        back; the stand-in opened meanwhile is not remembered."""
        name = self.preferred_microphone(devices)
        if name is None:
            return None
        missing = self.missing_saved_microphone(devices)
        if missing is not None:
            self.report_error(f"The microphone '{missing}' used last time is not connected; using '{name}' for "
                              "now (it is picked again once it is back).", "Microphone not found")
        return name if self.use_microphone(name, remember=missing is None) else None

    def use_microphone(self, name: str, remember: bool = True) -> bool:
        """Listen to the named input (a name from microphones(), or a PortAudio device name; remembered for next
        time unless `remember` is False); False with a message when it cannot open, and the avatar runs on
        silence."""
        self.use_silence()  # release the old device before opening the new one
        choice = self._inputs.get(name) or SoundInput(name, name, name)
        try:
            source = MicSource(prepare_open(choice), self.prefs.gain_db, self.gate_threshold)
        except MicError as e:
            self.report_error(str(e).replace(f"'{choice.device}'", f"'{choice.label}'"))
            return False
        source.name = choice.label  # what the user knows it as (messages, the status bar), not "pulse"
        self.pipeline.set_source(source)
        self.microphone = name
        if remember:
            self.prefs.device = name
            self.save_prefs()
        return True

    def use_silence(self) -> None:
        """No input (the user's choice): nothing is restored after a file either."""
        self._playing = self._paused = None
        self.microphone = None
        self.pipeline.use_silence()

    def play_file(self, path) -> bool:
        """Play an audio file (heard through the speakers, the mouth following); False with a message when the
        file cannot be read, and what ran before runs on. When it ends (or stop_playback) the microphone in use
        before comes back (see poll)."""
        try:
            source = FileSource(path)
        except Exception as e:  # unreadable, missing, no audio track: a sentence, the app runs on
            self.report_error(f"Cannot play {Path(path).name}: {e}")
            return False
        microphone = self.microphone  # use_microphone/set_source below must not forget it
        self.pipeline.set_source(source)  # the old source (a microphone) is closed: its device is free again
        self.microphone = microphone
        self._playing = source
        return True

    # -- text to speech (avatar.tts, avatar.live.speech) ----------------------------------------------

    _speech = None  # the Piper voice once speak() or prepare_speech() needed it
    _speech_lock = threading.Lock()  # one voice made, when the preparing thread and speak() meet
    _speak_lock = threading.Lock()  # one speak() at a time: texts said together are queued, not raced

    @property
    def speech_unavailable(self) -> str | None:
        """Why speak() cannot run here (what to install), None when it can."""
        return speech_unavailable()

    def _speech_voice(self) -> PiperSpeech:
        with self._speech_lock:
            if self._speech is None:
                self._speech = PiperSpeech()  # raises SpeechError naming what to install
            return self._speech

    def prepare_speech(self) -> None:
        """Load the voice on a worker thread now (about a second, more on a busy machine), so that the first
        speak() is heard sooner; nothing when Piper is not installed."""
        if self.speech_unavailable is None:
            threading.Thread(target=lambda: self._speech_voice().voice(), name="speech-load", daemon=True).start()

    def speak(self, text: str) -> None:
        """Say `text` aloud with the Piper voice, the mouth following; returns at once (the voice is made on a
        worker thread, sentence by sentence, the first heard while the rest is made). Said while speech runs, it
        is spoken after it. Raises SpeechError (empty, longer than avatar.tts.MAX_TEXT_CHARS, Piper not
        installed). Like a played file it ends by itself (the microphone in use before comes back, see poll) or
        with stop_playback. May be called from any thread."""
        text = check_text(text)
        speech = self._speech_voice()
        with self._speak_lock:  # speak() may come from another thread too (a local endpoint)
            running = self._playing if isinstance(self._playing, SpeechSource) and self.playing else None
            if running is not None and running.say(speech.chunks(text), speech.sample_rate):
                return
            source = SpeechSource()
            source.say(speech.chunks(text), speech.sample_rate)
            microphone = self.microphone  # set_source below must not forget it
            self.pipeline.set_source(source)
            self.microphone = microphone
            self._playing = source
            if source.playback_note:
                log.info("%s", source.playback_note)

    @property
    def playing(self) -> bool:
        """Whether a file started by play_file (or speech started by speak) is playing now."""
        return self._playing is not None and self.pipeline.source is self._playing

    @property
    def paused(self) -> bool:
        """Whether a played file is paused (pause_playback): the face idles on silence meanwhile."""
        return self._paused is not None

    def pause_playback(self) -> bool:
        """Pause the file playing: its sound stops, the face idles (on silence, not the microphone) until
        resume_playback. False when no file is playing."""
        if not self.playing:
            return False
        source, self._playing = self._playing, None
        if not self.pipeline.set_source(SilenceSource(), replacing=source):
            return False  # it ended (or was replaced) just now
        self._paused = source
        return True

    def resume_playback(self) -> bool:
        """Go on playing a paused file from where it was paused. False when none is paused."""
        paused, self._paused = self._paused, None
        if paused is None:
            return False
        source = paused.resumed()
        self.pipeline.set_source(source)
        self._playing = source
        return True

    def stop_playback(self) -> None:
        """Stop the file playing or paused (if any) and go back to what ran before it."""
        if self.paused:  # on silence already: poll below brings the microphone back
            self._playing, self._paused = self._paused, None
        elif self.playing:
            self.pipeline.use_silence()
        self.poll()

    def poll(self) -> bool:
        """Call now and then (the window's status timer): once a played file has ended, reopen the microphone that
        was in use before it. True when the source changed here."""
        if self._paused is not None or self._playing is None or self.pipeline.source is self._playing:
            return False
        self._playing = None
        if self.microphone is None or self.source_kind != SOURCE_SILENCE:
            return False  # nothing to restore, or something else was chosen meanwhile
        return self.use_microphone(self.microphone, remember=False)

    # -- the local server (avatar.serve): OBS browser source, input endpoint; nothing listens until turned on -

    def set_browser_source(self, on: bool) -> str | None:
        """Serve the avatar to a browser source (OBS) on 127.0.0.1; its URL (with the token), None when off or
        it could not start (said)."""
        return self.server.browser_url if self._serve("browser_on", on) else None

    def set_input_endpoint(self, on: bool) -> str | None:
        """Take other programs' sound and text on 127.0.0.1 (avatar.serve.server); the WebSocket URL with the
        token, None when off or it could not start (said)."""
        self.pipeline.mix_in = self.push_mixer.mix if on else None
        if not on:
            self.push_mixer.clear()
        return self.server.input_url if self._serve("input_on", on) else None

    def renew_token(self, feature: str) -> str | None:
        """A new token for "browser" (the browser source) or "input" (the input endpoint), kept: the old URL stops
        working (a URL that was seen on stream); the new URL, None when that feature is off."""
        server = self.server
        if server is None or not getattr(server, f"{feature}_on"):
            return None
        server.renew_token(feature)
        self.prefs.view_token, self.prefs.input_token = server.view_token, server.input_token
        self.save_prefs()
        return server.browser_url if feature == "browser" else server.input_url

    def _stop_server(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            self.remove_frame_sink(self._server_sink)
            server.stop()

    def _serve(self, feature: str, on: bool) -> bool:
        if on and self.server is None:
            from avatar.serve.server import LocalServer, ServeError  # aiohttp: only once the user turns one on

            prefs = self.prefs
            server = LocalServer(self.push_mixer, lambda: self.pipeline.renderer, prefs.serve_port,
                                 getattr(self, "speak", None), prefs.view_token or None, prefs.input_token or None)
            try:
                server.start()
            except ServeError as e:
                self.pipeline.mix_in = None
                self.report_error(str(e))
                return False
            prefs.view_token, prefs.input_token = server.view_token, server.input_token
            self.save_prefs()
            self.server, self._server_sink = server, server.offer  # the browser source takes every frame
            self.add_frame_sink(self._server_sink)
        if self.server is not None:
            setattr(self.server, feature, on)
            if not (self.server.browser_on or self.server.input_on):
                self._stop_server()
        self._outputs_changed()
        return on and self.server is not None

    # -- input gain and gate --------------------------------------------------------------------------

    @property
    def gate_threshold(self) -> float | None:
        """The microphone's gate in dB, None when off."""
        return None if self.prefs.gate_db <= GATE_OFF_AT_DB else float(self.prefs.gate_db)

    def set_gain(self, db: float) -> None:
        self.prefs.gain_db = float(db)
        self._apply_conditioning()

    def set_gate(self, db: float) -> None:
        """The noise gate's threshold; at or below GATE_OFF_AT_DB the gate is off."""
        self.prefs.gate_db = float(db) if db > GATE_OFF_AT_DB else GATE_OFF_DB
        self._apply_conditioning()

    def _apply_conditioning(self) -> None:
        """Hand gain and gate to the microphone between two audio steps: the audio worker reads them while it
        conditions a block (MicSource.read -> InputConditioner.process reads gate_db twice), so a change landing
        mid-block could compare the level with None."""
        self.pipeline.set_conditioning(self.prefs.gain_db, self.gate_threshold)

    # -- the photo ------------------------------------------------------------------------------------

    def build_renderer(self, photo, landmarks=None, face_index: int | None = None):
        """Slow (finds the faces, builds the rig): call on a worker thread. Raises PhotoError / NoFaceError.

        The face is `face_index` (0 = the largest), else the one picked in this photo before; a photo with several
        faces and neither raises FaceChoiceNeeded. The faces are looked for once, here: the renderer factory gets
        the chosen face's landmarks."""
        if is_avatar_path(photo):  # a video avatar (avatar make-avatar): no faces to find, no rig
            return self.renderer_factory(photo, self.prefs, landmarks=None)
        warning, placed = None, landmarks is not None and face_index is None
        if landmarks is None:
            landmarks = self._placed.get(str(photo))
        if landmarks is None:
            landmarks = self._chosen_landmarks(photo, face_index)
            # found here, not by the rig: its three-quarter sentence (photo_warning) is said from here too
            warning = turn_warning(landmarks) if landmarks is not None else None
        renderer = self.renderer_factory(photo, self.prefs, landmarks=landmarks)
        if placed:
            self._placed[str(photo)] = np.asarray(landmarks)
        rig = getattr(renderer, "rig", None)
        if warning and rig is not None:
            rig.turn_warning = warning
        return renderer

    def faces_in(self, photo) -> tuple[np.ndarray, list[np.ndarray]]:
        """Slow (finds the faces): the loaded photo and its faces' landmarks, the largest first. Raises PhotoError."""
        image = load_photo(photo)
        return image, detect_faces(image)

    def chosen_face(self, photo) -> int | None:
        """The face picked in `photo` before (0 = the largest), None when none was."""
        return self.prefs.face_choices.get(str(photo))

    def choose_face(self, photo, index: int) -> None:
        """Remember the face picked in a photo; choices are kept for the recent photos only."""
        keep = set(self.prefs.recent_photos) | {str(photo)}
        choices = {**self.prefs.face_choices, str(photo): int(index)}
        self.prefs.face_choices = {p: i for p, i in choices.items() if p in keep}
        self.save_prefs()

    def _chosen_landmarks(self, photo, face_index: int | None):
        try:
            image, faces = self.faces_in(photo)
        except PhotoError:
            return None  # the renderer factory reads the photo again and says why it cannot be used
        if not faces:
            return None  # the factory raises NoFaceError with the image: manual placement
        index = self.chosen_face(photo) if face_index is None else face_index
        if index is None or not 0 <= index < len(faces):
            if len(faces) > 1:
                raise FaceChoiceNeeded(image, faces)
            index = 0
        return faces[index]  # build_renderer judges its turn (a profile raises FaceTurnedError, as build_rig does)

    def use_renderer(self, photo, renderer) -> None:
        """Show `renderer` (built from `photo`) from the next frame on, and remember the photo."""
        self.set_expression(self.expression, renderer, ease=False)  # a rebuilt face keeps its expression
        self.renderer = renderer
        self.pipeline.renderer = renderer
        self.restart_view_stats()
        self.prefs.photo = str(photo)
        self.prefs.add_recent(str(photo))
        self.save_prefs()

    @property
    def photo_warning(self) -> str | None:
        """A sentence about the photo in use worth saying when it loads (a three-quarter face: see
        avatar.face.pose.turn_warning), None when there is nothing to say."""
        return getattr(getattr(self.renderer, "rig", None), "turn_warning", None)

    @staticmethod
    def needs_placement(error: BaseException) -> bool:
        """Whether a photo failed only because no face was found: the face can then be placed by hand."""
        return isinstance(error, NoFaceError) and getattr(error, "image", None) is not None

    @staticmethod
    def likely_face(image: np.ndarray):
        """Slow (runs the face detector): the largest face box in a photo where FaceMesh found none (it may still
        see a drawn or blurred face), for manual placement to start at; None when it sees none either."""
        boxes = face_boxes(image)
        return boxes[0] if boxes else None

    @staticmethod
    def landmarks_from_handles(handles: dict[str, tuple[float, float]]) -> np.ndarray:
        """The landmarks for build_renderer from hand-placed points (raises ValueError with a message)."""
        return fit_template(handles)

    # -- expressions (avatar.face.expressions) --------------------------------------------------------

    expression = "neutral"  # the expression asked for last; kept when the photo's renderer is rebuilt

    def set_expression(self, name: str, renderer=None, ease: bool = True) -> None:
        """Ease the face into expression `name` (neutral, smile, surprise, frown, sad), one at a time, the mouth
        still talking; on `renderer` (default: the one shown). Raises ValueError for an unknown name."""
        renderer = self.pipeline.renderer if renderer is None else renderer
        set_on = getattr(renderer, "set_expression", None)  # the blank square and stand-ins have no face
        if set_on is not None:
            set_on(name, ease)
            self.pipeline.wake()  # the easing starts at the next tick, not after ticks the idle face slept through
        else:
            check_expression(name)
        self.expression = name

    # -- settings -------------------------------------------------------------------------------------

    def liveliness_switches(self) -> dict[str, bool]:
        return liveliness_switches(self.prefs.liveliness)

    def set_liveliness(self, name: str, on: bool) -> None:
        """Remember a liveliness switch; it reaches the face with the next build_renderer."""
        self.prefs.liveliness = {**self.prefs.liveliness, name: bool(on)}
        self.save_prefs()

    def set_display_rate(self, fps: int) -> None:
        self.prefs.fps = fps
        self.pipeline.fps = fps
        self.restart_view_stats()
        self.save_prefs()

    def set_background(self, key: str, colour: str | None = None) -> None:
        """"photo", "color" (with `colour` "#rrggbb", or the last one) or "green"; reaches the face with the next
        build_renderer."""
        if colour is not None:
            self.prefs.background_color = colour
        self.prefs.background = key
        self.save_prefs()

    def set_size(self, size: int, frame: str = "square") -> None:
        """The render size (and shape: "square" or "16:9", size pixels high); reaches the face with the next
        build_renderer."""
        self.prefs.size = size
        self.prefs.frame = frame
        self.save_prefs()

    def set_backend(self, backend: str) -> bool:
        """Run the live model on another backend; False with a message when it cannot run here (the old runs on)."""
        try:
            engine = self.engine_factory(backend)
        except Exception as e:  # missing library, no GPU, model not convertible: said, never fatal
            self.report_error(f"The {backend} backend cannot run here: {e}")
            return False
        self.prefs.backend = self.backend_choice = backend
        self.save_prefs()
        self.engine = engine
        self.pipeline.set_engine(engine)
        self.restart_view_stats()
        return True

    @property
    def backend_text(self) -> str:
        return backend_text(self.engine)

    def set_output_folder(self, folder: str) -> bool:
        """Record into `folder` from now on; False with the reason when recordings could not be written there
        (missing, read-only), and the old folder stays."""
        problem = folder_problem(folder)
        if problem is not None:
            self.report_error(f"{problem} Choose another folder.", "Cannot record there")
            return False
        self.prefs.output_folder = str(folder)
        self.save_prefs()
        return True

    def folder_dialog_start(self) -> str:
        """Where the recording-folder dialog opens: the output folder, or the nearest folder above it that exists
        (a dialog started in a missing folder offers nothing to choose)."""
        return str(existing_ancestor(self.prefs.output_folder))

    def ensure_output_folder(self) -> bool:
        """Make the output folder when it is missing but the folder above it exists (the first recording into
        the default …/Videos); False with a message when it cannot be made or written."""
        folder = Path(self.prefs.output_folder)
        if not folder.exists() and folder.parent.is_dir():
            try:
                folder.mkdir()
            except OSError as e:
                self.report_error(f"The output folder {folder} does not exist and cannot be made: "
                                  f"{e.strerror or e}. Choose another with File → Recording folder.",
                                  "Cannot record")
                return False
            log.info("made the output folder %s", folder)
        problem = folder_problem(folder)
        if problem is not None:
            self.report_error(f"{problem} Choose another with File → Recording folder.", "Cannot record")
            return False
        return True

    def set_name_prefix(self, text: str) -> bool:
        """Remember the start of recordings' file names (letters, digits, space, - and _ only)."""
        clean = clean_name_prefix(text)
        if not clean:
            self.report_error("A recording name needs at least one letter or digit.")
            return False
        self.prefs.name_prefix = clean
        self.save_prefs()
        return True

    # -- recording ------------------------------------------------------------------------------------

    def next_recording_path(self) -> Path:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        return Path(self.prefs.output_folder) / f"{self.prefs.name_prefix}-{stamp}.mp4"

    @property
    def recording(self):
        """The recording in progress (avatar.live.recording.LiveRecording: path, seconds, error) or None."""
        return self.pipeline.recording

    def start_recording(self) -> bool:
        """Record the view and the sound to a new file in the output folder; False with a message when it cannot."""
        if self.pipeline.recording is not None:
            return True
        if not self.ensure_output_folder():
            return False
        try:
            self.pipeline.start_recording(self.next_recording_path(), fps=self.prefs.record_fps)
        except RecordError as e:
            self.report_error(str(e), "Cannot record")
            return False
        return True

    def detach_recording(self):
        """Stop feeding the recording and hand it over for finish_recording (None when none runs)."""
        return self.pipeline.detach_recording()

    def finish_recording(self, recording) -> Path:
        """Slow (the encoder drains, the file is rewritten): call on a worker thread, or while closing.
        Raises RecordError when writing failed; `last_recording` is the file either way (it keeps what was
        written)."""
        try:
            path = recording.close()
        except BaseException:
            self.last_recording = recording.path
            raise
        self.last_recording = path
        return path

    @property
    def recordings_folder(self) -> Path | None:
        """The output folder when it exists (to open in the file manager), else None."""
        folder = Path(self.prefs.output_folder)
        return folder if folder.is_dir() else None

    @property
    def playable_recording(self) -> Path | None:
        """The last recording finished in this session when its file is still there (to play), else None."""
        path = self.last_recording
        return path if path is not None and path.is_file() else None

    def set_always_on_top(self, on: bool) -> None:
        self.prefs.always_on_top = bool(on)
        self.save_prefs()

    def set_view_visible(self, visible: bool) -> None:
        """The window was minimised or hidden (False) or shown again: while it is not seen and nothing records,
        no frames are rendered (the audio, the clock and the mouth's state run on)."""
        self.pipeline.view_hidden = not visible

    def set_global_hotkeys(self, on: bool) -> None:
        self.prefs.global_hotkeys = bool(on)
        self.save_prefs()

    # -- export ---------------------------------------------------------------------------------------

    def export(self, audio_path, out_path, progress: Callable[[float], None] | None = None,
               cancelled: Callable[[], bool] | None = None) -> Path | None:
        """Render an audio file to an MP4 with the current photo and settings, on its own engine and renderer (the
        live view keeps going). Slow: call on a worker thread. None when `cancelled()` turned True (the partial
        file is removed); raises AudioError / RecordError / PhotoError with a message otherwise."""
        prefs, photo = self.prefs, self.prefs.photo
        audio = load_audio(audio_path)
        engine = self.offline_engine_factory(prefs.backend)
        renderer = self.build_renderer(photo) if photo else BlankRenderer(prefs.size)  # the face picked in it
        try:
            path = render_offline(audio, engine, renderer, out_path, fps=prefs.record_fps, progress=progress,
                                  cancelled=cancelled)
        except Cancelled:
            return None
        self.last_export = path
        return path

    def make_avatar(self, video_path, out_path, progress: Callable[[float], None] | None = None,
                    cancelled: Callable[[], bool] | None = None) -> Path | None:
        """Make a video avatar file from a video of one person (avatar.face.video_avatar.build); slow: call on a
        worker thread. None when `cancelled()` turned True (nothing is written); raises VideoAvatarError with a
        message (no face, too short, a cut, several people, unreadable)."""
        report = lambda done, total, stage: progress(done / max(total, 1)) if progress else None  # noqa: E731
        try:
            built = build_video_avatar(video_path, out_path, progress=report, cancelled=cancelled)
        except InterruptedError:
            return None
        self.last_avatar_note = built.mouth_note  # whether the mouth's width is the person's own (the window says it)
        return Path(out_path)

    # -- the display ----------------------------------------------------------------------------------

    @property
    def latest_frame(self):
        """The newest frame the render worker made (avatar.live.pipeline.Frame), None before the first."""
        return self.pipeline.latest

    def restart_view_stats(self) -> None:
        """Count dropped frames from now on (a new photo, rate, size or backend: the frames dropped while it was
        being built are not the new view's)."""
        self._dropped_base = self.pipeline.dropped_frames

    def stats(self) -> Stats:
        """The pipeline's figures, with dropped frames counted since restart_view_stats."""
        stats = self.pipeline.stats()
        return replace(stats, dropped_frames=max(0, stats.dropped_frames - self._dropped_base))

    @property
    def shows_latency(self) -> bool:
        """Whether a capture→screen latency means anything now: only with a microphone feeding the mouth."""
        return self.source_kind == SOURCE_MICROPHONE

    @property
    def clipping(self) -> bool:
        """Whether the input is loud enough to clip (after gain)."""
        return self.source_kind == SOURCE_MICROPHONE and self.level_db >= CLIP_LEVEL_DB
