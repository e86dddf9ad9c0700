"""The main window: microphone, photo, live view, recording, audio-file demo and export.

All model and rendering work happens in `avatar.pipeline` threads (or a worker QThread for slow one-off jobs:
building a rig, exporting a video); this module only wires widgets to them and turns errors into dialogs.
"""
from __future__ import annotations

from datetime import datetime
import logging
from pathlib import Path
import time

from PySide6.QtCore import QObject, Qt, QThread, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QColor, QKeySequence
from PySide6.QtWidgets import (QColorDialog, QComboBox, QFileDialog, QLabel, QMainWindow, QMessageBox,
                               QProgressBar, QProgressDialog, QPushButton, QSlider, QToolBar, QToolButton,
                               QVBoxLayout, QWidget)

from avatar.gui.settings import DISPLAY_RATES, SIZES, Preferences, save_preferences
from avatar.gui.view import AvatarView

log = logging.getLogger(__name__)

PHOTO_FILTER = "Images (*.jpg *.jpeg *.png *.bmp *.webp *.tif *.tiff)"
AUDIO_FILTER = "Audio (*.wav *.mp3 *.flac *.ogg *.m4a *.aac *.opus)"
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
AUDIO_SUFFIXES = {".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac", ".opus"}
STATUS_INTERVAL_MS = 250
METER_FLOOR_DB = -60
GATE_OFF_DB = -100
SILENCE = "No microphone (silence)"
BACKEND_CHOICES = ("auto", "tensorrt", "onnxruntime-cuda", "onnxruntime", "torch")


class Worker(QThread):
    """Runs one slow call off the GUI thread; `done(result)` or `failed(exception)` arrive on the GUI thread."""

    done = Signal(object)
    failed = Signal(object)
    progress = Signal(float)

    def __init__(self, fn, parent=None):
        super().__init__(parent)
        self._fn = fn
        self.cancel_requested = False

    def run(self):
        try:
            self.done.emit(self._fn(self))
        except Exception as e:  # every failure becomes a sentence for a dialog
            log.debug("worker failed", exc_info=True)
            self.failed.emit(e)


class _Events(QObject):
    """Carries pipeline messages and new frames from worker threads to the GUI thread."""

    message = Signal(str)
    frame = Signal()


class MainWindow(QMainWindow):
    def __init__(self, prefs: Preferences, engine_factory, renderer_factory, offline_engine_factory=None):
        """engine_factory(backend) -> StatefulEngine for the live view; offline_engine_factory(backend) for
        exports (default: engine_factory); renderer_factory(photo_path, prefs) -> renderer."""
        super().__init__()
        from avatar.live.pipeline import LivePipeline

        self.prefs = prefs
        self.engine_factory = engine_factory
        self.offline_engine_factory = offline_engine_factory or engine_factory
        self.renderer_factory = renderer_factory
        self.setWindowTitle("Talking Avatar")
        self.setAcceptDrops(True)
        self._events = _Events()
        self._events.message.connect(self._pipeline_event)
        self._workers: set[Worker] = set()
        self._last_seq = -1
        self._shown_times: list[float] = []
        self._view_latencies: list[float] = []

        self.view = AvatarView()
        self.engine = engine_factory(prefs.backend)
        self.renderer = None
        # each frame is painted as soon as the render worker has it (no second timer between it and the screen)
        self._events.frame.connect(self._show_latest)
        self.pipeline = LivePipeline(self.engine, _Blank(prefs.size), fps=prefs.fps,
                                     on_event=self._events.message.emit,
                                     on_frame=lambda frame: self._events.frame.emit())
        self._build_ui()
        self.pipeline.start()

        self.status_timer = QTimer(self)
        self.status_timer.timeout.connect(self._update_status)
        self.status_timer.start(STATUS_INTERVAL_MS)

    # -- layout ---------------------------------------------------------------------------------------

    def _build_ui(self):
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view)
        self.setCentralWidget(central)

        record_bar = QToolBar("Recording")
        record_bar.setObjectName("recordbar")
        self.addToolBar(record_bar)
        self.record_button = QPushButton("● Record")
        self.record_button.setCheckable(True)
        self.record_button.setToolTip("Start/stop recording (Ctrl+R)")
        self.record_button.toggled.connect(self._record_toggled)
        record_bar.addWidget(self.record_button)
        self.elapsed = QLabel("")
        self.elapsed.setMinimumWidth(48)
        record_bar.addWidget(self.elapsed)
        self.addToolBarBreak()

        bar = QToolBar("Microphone")
        bar.setObjectName("micbar")
        self.addToolBar(bar)
        self.device_box = QComboBox()
        self.device_box.setMinimumWidth(200)
        self.device_box.setToolTip("Microphone")
        bar.addWidget(self.device_box)
        rescan = QToolButton(text="↻", toolTip="Look for microphones again")
        rescan.clicked.connect(self.refresh_devices)
        bar.addWidget(rescan)
        self.meter = QProgressBar(minimum=METER_FLOOR_DB, maximum=0, textVisible=False, toolTip="Input level")
        self.meter.setFixedWidth(90)
        bar.addWidget(self.meter)
        bar.addWidget(QLabel(" Gain "))
        self.gain = QSlider(Qt.Horizontal, minimum=-20, maximum=30, value=int(self.prefs.gain_db),
                            toolTip="Input gain (dB)")
        self.gain.setFixedWidth(80)
        self.gain.valueChanged.connect(self._gain_changed)
        bar.addWidget(self.gain)
        bar.addWidget(QLabel(" Gate "))
        self.gate = QSlider(Qt.Horizontal, minimum=-80, maximum=-20, toolTip="Noise gate (dB); leftmost = off")
        self.gate.setValue(max(-80, int(self.prefs.gate_db)))
        self.gate.setFixedWidth(80)
        self.gate.valueChanged.connect(self._gate_changed)
        bar.addWidget(self.gate)

        self.backend_label, self.fps_label, self.latency_label, self.dropped_label = (QLabel() for _ in range(4))
        for w in (self.backend_label, self.fps_label, self.latency_label, self.dropped_label):
            self.statusBar().addPermanentWidget(w)
        self.backend_label.setText(f"Backend: {_backend_text(self.engine)}")

        self._build_menus()
        self.refresh_devices()
        self.device_box.currentIndexChanged.connect(self._device_chosen)

    def _build_menus(self):
        m = self.menuBar().addMenu("&File")
        self._action(m, "&Open photo…", QKeySequence.Open, self.choose_photo)
        self.recent_menu = m.addMenu("Recent photos")
        self._fill_recent()
        m.addSeparator()
        self._action(m, "&Play audio file…", "Ctrl+P", self.choose_audio_file)
        self._action(m, "&Export video from audio file…", "Ctrl+E", self.choose_export)
        m.addSeparator()
        self._action(m, "Recording &folder…", None, self.choose_output_folder)
        self._action(m, "Recording &name…", None, self.choose_name_prefix)
        self.record_action = self._action(m, "&Record", "Ctrl+R", self.record_button.toggle)
        m.addSeparator()
        self._action(m, "&Quit", QKeySequence.Quit, self.close)

        v = self.menuBar().addMenu("&View")
        self._choices(v, [(f"{rate} fps", rate) for rate in DISPLAY_RATES], self.prefs.fps, self.set_display_rate)
        v.addSeparator()
        self._choices(v, [("Background: photo", "photo"), ("Background: solid colour…", "color"),
                          ("Background: green screen", "green")], self.prefs.background, self.set_background)
        v.addSeparator()
        self.liveliness_menu = v.addMenu("Liveliness")
        self._fill_liveliness()

        s = self.menuBar().addMenu("&Settings")
        self._choices(s.addMenu("Inference backend"), [(b, b) for b in BACKEND_CHOICES], self.prefs.backend,
                      self.set_backend)
        self._choices(s.addMenu("Render size"), [(f"{n} × {n}", n) for n in SIZES], self.prefs.size, self.set_size)

    def _choices(self, menu, items, current, slot) -> None:
        """Mutually exclusive checkable actions, one per (text, value); choosing one calls slot(value)."""
        group = QActionGroup(self)
        for text, value in items:
            a = self._action(menu, text, None, lambda _=False, v=value: slot(v))
            a.setCheckable(True)
            a.setChecked(value == current)
            group.addAction(a)

    def _action(self, menu, text, shortcut, slot) -> QAction:
        a = QAction(text, self)
        if shortcut is not None:
            a.setShortcut(QKeySequence(shortcut))
        a.triggered.connect(slot)
        menu.addAction(a)
        return a

    def _fill_recent(self):
        self.recent_menu.clear()
        for path in self.prefs.recent_photos:
            self._action(self.recent_menu, path, None, lambda _=False, p=path: self.open_photo(p))
        self.recent_menu.setEnabled(bool(self.prefs.recent_photos))

    def _fill_liveliness(self):
        self.liveliness_menu.clear()
        for name, on in _liveliness_switches(self.prefs).items():
            a = self._action(self.liveliness_menu, name.replace("_", " "), None,
                             lambda checked=False, n=name: self.set_liveliness(n, checked))
            a.setCheckable(True)
            a.setChecked(on)
        self.liveliness_menu.setEnabled(bool(self.liveliness_menu.actions()))

    # -- errors ---------------------------------------------------------------------------------------

    def show_error(self, message: str, title: str = "Talking Avatar") -> None:
        self.statusBar().showMessage(message, 10000)
        box = QMessageBox(QMessageBox.Warning, title, message, QMessageBox.Ok, self)
        box.setAttribute(Qt.WA_DeleteOnClose)
        box.open()  # non-blocking: the view keeps running while the message is up
        self.last_error = message

    def _pipeline_event(self, message: str) -> None:
        """A message from the pipeline's workers (e.g. the microphone was lost): say it, show what runs now."""
        from avatar.live.sources import SilenceSource

        if isinstance(self.pipeline.source, SilenceSource):
            self.device_box.blockSignals(True)
            self.device_box.setCurrentIndex(0)
            self.device_box.blockSignals(False)
        self.show_error(message)

    def _run(self, fn, on_done, on_failed=None) -> Worker:
        worker = Worker(fn, self)
        self._workers.add(worker)
        worker.done.connect(on_done)
        worker.failed.connect(on_failed or (lambda e: self.show_error(_sentence(e))))
        worker.finished.connect(lambda: self._workers.discard(worker))
        worker.start()
        return worker

    # -- microphone -----------------------------------------------------------------------------------

    def refresh_devices(self):
        from avatar.mic import list_input_devices, rescan_devices

        if self.pipeline.source is not None and hasattr(self.pipeline.source, "mic"):
            self.pipeline.use_silence()  # PortAudio cannot rescan with a stream open
        try:
            rescan_devices()
            devices = list_input_devices()
        except Exception as e:
            devices = []
            self.show_error(f"Could not list the microphones: {e}")
        self.device_box.blockSignals(True)
        self.device_box.clear()
        self.device_box.addItem(SILENCE, None)
        for d in devices:
            self.device_box.addItem(d.label, d.name)
        self.device_box.blockSignals(False)
        if not devices:
            self.statusBar().showMessage("No microphone found: the avatar runs on silence.", 10000)
            return
        wanted = self.prefs.device
        index = next((i for i in range(1, self.device_box.count()) if self.device_box.itemData(i) == wanted), None)
        if index is None:
            from avatar.mic import default_input_device

            default = default_input_device()
            index = next((i for i in range(1, self.device_box.count())
                          if default is not None and self.device_box.itemData(i) == default.name), 1)
        self.device_box.setCurrentIndex(index)
        self._device_chosen(index)

    def _device_chosen(self, index: int):
        name = self.device_box.itemData(index)
        if name is None:
            self.pipeline.use_silence()
            return
        self.open_microphone(name)

    def open_microphone(self, name: str) -> bool:
        from avatar.mic import MicError
        from avatar.live.sources import MicSource

        self.pipeline.use_silence()  # release the old device before opening the new one
        try:
            source = MicSource(name, self.prefs.gain_db, self._gate_threshold())
        except MicError as e:
            self.show_error(str(e))
            return False
        self.pipeline.set_source(source)
        self.prefs.device = name
        save_preferences(self.prefs)
        self.statusBar().showMessage(f"Listening to {name}", 5000)
        return True

    def _gate_threshold(self):
        return None if self.prefs.gate_db <= -80 else float(self.prefs.gate_db)

    def _gain_changed(self, value):
        self.prefs.gain_db = float(value)
        conditioner = getattr(self.pipeline.source, "conditioner", None)
        if conditioner is not None:
            conditioner.gain_db = self.prefs.gain_db

    def _gate_changed(self, value):
        self.prefs.gate_db = float(value) if value > -80 else GATE_OFF_DB
        conditioner = getattr(self.pipeline.source, "conditioner", None)
        if conditioner is not None:
            conditioner.gate_db = self._gate_threshold()

    # -- photo ----------------------------------------------------------------------------------------

    def choose_photo(self):
        path, _ = QFileDialog.getOpenFileName(self, "Open photo", str(Path(self.prefs.photo).parent), PHOTO_FILTER)
        if path:
            self.open_photo(path)

    def open_photo(self, path: str, on_ready=None, landmarks=None) -> Worker:
        """Build the renderer for `path` off the GUI thread; the view switches to it when it is ready.
        No face found: the manual placement dialog opens, and OK builds the rig from the placed points."""
        prefs = self.prefs

        def done(renderer):
            self.renderer = renderer
            self.pipeline.renderer = renderer
            prefs.photo = str(path)
            prefs.add_recent(str(path))
            save_preferences(prefs)
            self._fill_recent()
            self.setWindowTitle(f"Talking Avatar — {Path(path).name}")
            self.statusBar().showMessage(f"Loaded {Path(path).name}", 3000)
            if on_ready:
                on_ready(renderer)

        def failed(error):
            if type(error).__name__ == "NoFaceError" and getattr(error, "image", None) is not None:
                self.place_face(path, error)
            else:
                self.show_error(_sentence(error), "Cannot use this photo")

        self.statusBar().showMessage(f"Loading {Path(path).name}…")
        return self._run(lambda w: self.renderer_factory(path, prefs, landmarks=landmarks), done, failed)

    def place_face(self, path: str, error) -> None:
        from avatar.gui.placement import PlacementDialog

        dialog = PlacementDialog(error.image, str(error), self)
        dialog.setAttribute(Qt.WA_DeleteOnClose)
        self.placement_dialog = dialog

        def placed():
            from avatar.face import fit_template

            try:
                points = fit_template(dialog.handles())
            except ValueError as e:
                self.show_error(str(e), "Cannot place the face")
                return
            self.open_photo(path, landmarks=points)

        dialog.accepted.connect(placed)
        dialog.open()

    def reload_renderer(self):
        if self.prefs.photo:
            self.open_photo(self.prefs.photo)

    # -- preferences ----------------------------------------------------------------------------------

    def set_display_rate(self, fps: int):
        self.prefs.fps = fps
        self.pipeline.fps = fps
        save_preferences(self.prefs)

    def set_background(self, key: str):
        if key == "color":
            colour = QColorDialog.getColor(QColor(self.prefs.background_color), self, "Background colour")
            if not colour.isValid():
                return
            self.prefs.background_color = colour.name()
        self.prefs.background = key
        save_preferences(self.prefs)
        self.reload_renderer()

    def set_liveliness(self, name: str, on: bool):
        self.prefs.liveliness = {**self.prefs.liveliness, name: bool(on)}
        save_preferences(self.prefs)
        self.reload_renderer()

    def set_size(self, size: int):
        self.prefs.size = size
        save_preferences(self.prefs)
        self.reload_renderer()

    def set_backend(self, backend: str):
        try:
            engine = self.engine_factory(backend)
        except Exception as e:
            self.show_error(f"The {backend} backend cannot run here: {e}")
            return
        self.prefs.backend = backend
        save_preferences(self.prefs)
        self.engine = engine
        self.pipeline.set_engine(engine)
        self.backend_label.setText(f"Backend: {_backend_text(engine)}")

    def choose_output_folder(self):
        folder = QFileDialog.getExistingDirectory(self, "Recording folder", self.prefs.output_folder)
        if folder:
            self.prefs.output_folder = folder
            save_preferences(self.prefs)

    def choose_name_prefix(self):
        from PySide6.QtWidgets import QInputDialog

        text, ok = QInputDialog.getText(self, "Recording name", "File names start with:", text=self.prefs.name_prefix)
        if ok:
            self.set_name_prefix(text)

    def set_name_prefix(self, text: str) -> bool:
        """Remember the start of recordings' file names (letters, digits, space, - and _ only)."""
        clean = "".join(c for c in text.strip() if c.isalnum() or c in " -_").strip()
        if not clean:
            self.show_error("A recording name needs at least one letter or digit.")
            return False
        self.prefs.name_prefix = clean
        save_preferences(self.prefs)
        return True

    # -- recording ------------------------------------------------------------------------------------

    def next_recording_path(self) -> Path:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        return Path(self.prefs.output_folder) / f"{self.prefs.name_prefix}-{stamp}.mp4"

    def _record_toggled(self, on: bool):
        if on:
            self.start_recording()
        else:
            self.stop_recording()

    def start_recording(self) -> bool:
        from avatar.record import RecordError

        if self.pipeline.recording is not None:
            return True
        try:
            self.pipeline.start_recording(self.next_recording_path(), fps=self.prefs.record_fps)
        except RecordError as e:
            self._set_record_button(False)
            self.show_error(str(e), "Cannot record")
            return False
        self._set_record_button(True)
        self.statusBar().showMessage(f"Recording to {self.pipeline.recording.path}", 5000)
        return True

    def stop_recording(self, wait: bool = False) -> Path | None:
        """Stop recording; the file is finished on a worker thread (or here when `wait`, e.g. while closing)."""
        from avatar.record import RecordError

        self._set_record_button(False)
        recording = self.pipeline.detach_recording()
        if recording is None:
            return None

        def saved(path):
            self.statusBar().showMessage(f"Saved {path}", 10000)
            self.last_recording = path

        def failed(error):
            self.show_error(f"{_sentence(error)}", "Recording stopped")
            self.last_recording = recording.path

        if wait:
            try:
                saved(recording.close())
            except RecordError as e:
                failed(e)
        else:
            self.statusBar().showMessage(f"Finishing {recording.path.name}…")
            self._run(lambda w: recording.close(), saved, failed)
        return recording.path

    def _set_record_button(self, on: bool):
        self.record_button.blockSignals(True)
        self.record_button.setChecked(on)
        self.record_button.setText("■ Stop" if on else "● Record")
        self.record_button.blockSignals(False)
        if not on:
            self.elapsed.setText("")

    # -- audio files ----------------------------------------------------------------------------------

    def choose_audio_file(self):
        path, _ = QFileDialog.getOpenFileName(self, "Play audio file", "", AUDIO_FILTER)
        if path:
            self.play_audio_file(path)

    def play_audio_file(self, path: str) -> bool:
        from avatar.live.sources import FileSource

        try:
            source = FileSource(path)
        except Exception as e:
            self.show_error(f"Cannot play {Path(path).name}: {e}")
            return False
        self.device_box.blockSignals(True)
        self.device_box.setCurrentIndex(0)
        self.device_box.blockSignals(False)
        self.pipeline.set_source(source)
        self.statusBar().showMessage(f"Playing {Path(path).name}", 5000)
        return True

    def choose_export(self):
        audio, _ = QFileDialog.getOpenFileName(self, "Audio to export", "", AUDIO_FILTER)
        if not audio:
            return
        default = Path(self.prefs.output_folder) / (Path(audio).stem + ".mp4")
        out, _ = QFileDialog.getSaveFileName(self, "Save video as", str(default), "MP4 video (*.mp4)")
        if out:
            self.export_video(audio, out)

    def export_video(self, audio_path: str, out_path: str) -> Worker:
        """Offline render with a progress dialog and Cancel; its own engine and renderer, the view keeps going."""
        from avatar.audio import load_audio
        from avatar.live.offline import Cancelled, render_offline

        prefs, photo = self.prefs, self.prefs.photo
        dialog = QProgressDialog(f"Exporting {Path(out_path).name}…", "Cancel", 0, 1000, self)
        dialog.setWindowTitle("Export video")
        dialog.setWindowModality(Qt.WindowModal)
        dialog.setMinimumDuration(0)

        def job(worker):
            audio = load_audio(audio_path)
            engine = self.offline_engine_factory(prefs.backend)
            renderer = self.renderer_factory(photo, prefs) if photo else _Blank(prefs.size)
            return render_offline(audio, engine, renderer, out_path, fps=prefs.record_fps,
                                  progress=worker.progress.emit, cancelled=lambda: worker.cancel_requested)

        def done(path):
            dialog.close()
            self.statusBar().showMessage(f"Exported {path}", 10000)
            self.last_export = path

        def failed(error):
            dialog.close()
            if isinstance(error, Cancelled):
                self.statusBar().showMessage("Export cancelled", 5000)
            else:
                self.show_error(_sentence(error), "Export failed")

        worker = self._run(job, done, failed)
        worker.progress.connect(lambda f: dialog.setValue(int(f * 1000)))
        dialog.canceled.connect(lambda: setattr(worker, "cancel_requested", True))
        self.export_dialog = dialog
        return worker

    # -- drag and drop --------------------------------------------------------------------------------

    def dragEnterEvent(self, event):
        if _dropped_file(event.mimeData()) is not None:
            event.acceptProposedAction()

    def dropEvent(self, event):
        path = _dropped_file(event.mimeData())
        if path is None:
            return
        if path.suffix.lower() in AUDIO_SUFFIXES:
            self.play_audio_file(str(path))
        else:
            self.open_photo(str(path))
        event.acceptProposedAction()

    # -- the display loop -----------------------------------------------------------------------------

    def _show_latest(self):
        frame = self.pipeline.latest
        if frame is None or frame.seq == self._last_seq:
            return
        self._last_seq = frame.seq
        self.view.show_frame(frame.image)
        now = time.monotonic()
        self._shown_times = self._shown_times[-119:] + [now]
        if frame.latency is not None:  # capture → frame ready, plus the wait until it is handed to the screen
            self._view_latencies = self._view_latencies[-119:] + [frame.latency + now - frame.ready]

    def view_stats(self) -> tuple[float, float | None]:
        """(frames shown per second, median capture→screen latency in ms) over the last ~2 s."""
        times = self._shown_times
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        lat = sorted(self._view_latencies)
        return fps, (1000 * lat[len(lat) // 2] if lat else None)

    def _update_status(self):
        fps, latency = self.view_stats()
        stats = self.pipeline.stats()
        self.fps_label.setText(f"{fps:.0f} fps")
        self.latency_label.setText(f"latency {latency:.0f} ms" if latency is not None else "latency –")
        self.dropped_label.setText(f"dropped {stats.dropped_frames}")
        level = getattr(self.pipeline.source, "level_db", METER_FLOOR_DB)
        self.meter.setValue(int(max(METER_FLOOR_DB, min(0, level))))
        recording = self.pipeline.recording
        if recording is not None:
            if recording.error:
                self.stop_recording()  # shows the message; the file keeps what was written
            else:
                s = int(recording.seconds)
                self.elapsed.setText(f" {s // 60:02d}:{s % 60:02d}")

    # -- closing --------------------------------------------------------------------------------------

    def closeEvent(self, event):
        self._events.frame.disconnect(self._show_latest)
        self.status_timer.stop()
        self.stop_recording(wait=True)  # finalize the file before anything else goes away
        for worker in list(self._workers):
            worker.cancel_requested = True
            worker.wait(10000)
        self.pipeline.stop()
        save_preferences(self.prefs)
        super().closeEvent(event)


class _Blank:
    """What the view shows until the first photo's rig is built: a plain dark square."""

    def __init__(self, size: int):
        import numpy as np

        self._frame = np.full((size, size, 3), 24, np.uint8)

    def render(self, params, t):
        return self._frame


def _sentence(error: Exception) -> str:
    return str(error) or type(error).__name__


def _backend_text(engine) -> str:
    if engine is None:
        return "no model (mouth stays closed)"
    name = getattr(engine, "name", "?")
    device = getattr(engine, "device", "cpu")
    pretty = {"tensorrt": "TensorRT", "onnxruntime": "ONNX Runtime", "torch": "PyTorch"}.get(name, name)
    return f"{pretty}, {'CPU' if device == 'cpu' else 'GPU ' + device}"


def _liveliness_switches(prefs: Preferences) -> dict[str, bool]:
    """The renderer's on/off liveliness options with the user's choices applied."""
    try:
        from dataclasses import fields

        from avatar.face import LivelinessConfig
    except ImportError:
        return {}
    defaults = LivelinessConfig()
    return {f.name: bool(prefs.liveliness.get(f.name, getattr(defaults, f.name)))
            for f in fields(LivelinessConfig) if isinstance(getattr(defaults, f.name), bool)}


def _dropped_file(mime) -> Path | None:
    for url in mime.urls() if mime.hasUrls() else []:
        path = Path(url.toLocalFile())
        if path.suffix.lower() in PHOTO_SUFFIXES | AUDIO_SUFFIXES:
            return path
    return None
