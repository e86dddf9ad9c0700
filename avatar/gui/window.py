"""The main window: microphone, photo, live view, recording, audio-file demo and export.

What the app does lives in avatar.controller (Qt-free): its pipeline threads do the model and rendering work, and
the slow one-off jobs (building a rig, finishing a recording, exporting a video) run here on a worker QThread. This
module holds widgets and signals: it calls the controller's operations and shows what they report.
"""
from __future__ import annotations

import logging
from pathlib import Path
import time

from PySide6.QtCore import QEvent, QObject, Qt, QThread, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QActionGroup, QColor, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (QColorDialog, QComboBox, QFileDialog, QInputDialog, QLabel, QLineEdit, QMainWindow,
                               QMessageBox, QProgressBar, QProgressDialog, QPushButton, QSlider, QToolBar,
                               QToolButton, QVBoxLayout, QWidget)

from avatar import __version__
from avatar.controller import (APP_TITLE, GATE_OFF_AT_DB, SOURCE_MICROPHONE, SOURCE_SILENCE, Controller,
                               FaceChoiceNeeded, error_sentence)
from avatar.engine import normalize_backend
from avatar.face.expressions import EXPRESSION_NAMES
from avatar.gui.face_picker import FacePickerDialog
from avatar.gui.global_keys import GlobalKeys, HotkeyError
from avatar.gui.source_watch import SourceWatch
from avatar.gui.placement import PlacementDialog
from avatar.gui.settings import (DISPLAY_RATES, GAIN_RANGE_DB, GATE_RANGE_DB, SIZES, Preferences,
                                 save_preferences)
from avatar.preferences import WIDE_SIZES
from avatar.gui.view import AvatarView
from avatar.gui.serve_dialog import BROWSER_HELP, INPUT_HELP, UrlDialog
from avatar.hotkeys import expression_hotkeys
from avatar.record import RecordError
from avatar.tts import MAX_TEXT_CHARS, SpeechError

log = logging.getLogger(__name__)
PAUSE_TEXT, RESUME_TEXT = "P&ause audio file", "Res&ume audio file"

PHOTO_FILTER = "Photos and video avatars (*.jpg *.jpeg *.png *.bmp *.webp *.tif *.tiff *.avatar)"
VIDEO_FILTER = "Video (*.mp4 *.mov *.m4v *.mkv *.webm *.avi *.mpg *.mpeg)"
AUDIO_FILTER = "Audio (*.wav *.mp3 *.flac *.ogg *.m4a *.aac *.opus)"
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".avatar"}
AUDIO_SUFFIXES = {".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac", ".opus"}
STATUS_INTERVAL_MS = 250
METER_FLOOR_DB = -60
GAIN_SLIDER_DB = tuple(int(db) for db in GAIN_RANGE_DB)
GATE_SLIDER_DB = (GATE_OFF_AT_DB, int(GATE_RANGE_DB[1]))  # leftmost = off
PROGRESS_STEPS = 1000  # the export dialog's resolution
SILENCE = "No microphone (silence)"
CLIP_STYLE = "QProgressBar::chunk { background: #d03030; }"  # the meter while the input clips
BACKEND_CHOICES = ("auto", "tensorrt", "onnxruntime-cuda", "onnxruntime", "torch")
COMPACT_SHORTCUT = "Ctrl+Shift+M"  # compact view on and off (Escape or a double-click on the face also leave it)
QUICK_START = """<h3>Quick start</h3>
<ol>
<li><b>Microphone</b>: pick yours in the list at the top (one plugged in shows up by itself; ↻ looks again).
Speak: the meter moves; red means too loud (lower the gain). The gate keeps the mouth shut below its level
(leftmost = off).</li>
<li><b>Photo</b>: File → Open photo, or drop one on the window. One face, looking at the camera, works best;
when no face is found you place a few points by hand.</li>
<li><b>Record</b>: ● Record or Ctrl+R; the MP4 goes to the recording folder (File → Recording folder).
File → Open recordings folder and Play last recording find it again.</li>
<li><b>Streaming or a call</b>: View → Background: green screen for OBS's chroma key; View → Always on top;
View → Compact view hides the controls and the frame (%s, Escape or a double-click on the face bring them back;
drag the face to move the window). Capture the window in OBS. Expressions: Ctrl+1 … Ctrl+5 in the window;
View → Expression → Global hotkeys adds Ctrl+Alt+1 … 5 from any window (X11 desktops).</li>
<li><b>No microphone at hand</b>: File → Play audio file animates a sound file (Ctrl+Shift+P pauses and resumes
it, Ctrl+. stops it); File → Export video renders one to an MP4.</li>
</ol>""" % COMPACT_SHORTCUT


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
        exports (default: engine_factory); renderer_factory(photo_path, prefs) -> renderer (see Controller)."""
        super().__init__()
        self.setWindowTitle(APP_TITLE)
        self.setAcceptDrops(True)
        self._events = _Events()
        self._events.message.connect(self._pipeline_event)
        self._workers: set[Worker] = set()
        self._last_seq = -1
        self._shown_times: list[float] = []
        self._view_latencies: list[float] = []

        self.view = AvatarView()
        # each frame is painted as soon as the render worker has it (no second timer between it and the screen)
        self._events.frame.connect(self._show_latest)
        self.controller = Controller(prefs, engine_factory, renderer_factory, offline_engine_factory,
                                     save_prefs=save_preferences, on_error=self._show_dialog,
                                     on_event=self._events.message.emit,
                                     on_frame=lambda frame: self._events.frame.emit())
        self._build_ui()
        if prefs.always_on_top:
            self.setWindowFlag(Qt.WindowStaysOnTopHint, True)
        self.controller.start()

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
        self.meter = QProgressBar(minimum=METER_FLOOR_DB, maximum=0, textVisible=True,
                                  toolTip="Input level (dB full scale, after gain); red = clipping")
        self.meter.setFixedWidth(110)
        self.meter.setValue(METER_FLOOR_DB)
        self.meter.setFormat("– dB")
        bar.addWidget(self.meter)
        bar.addWidget(QLabel(" Gain "))
        prefs = self.controller.prefs
        self.gain = QSlider(Qt.Horizontal, minimum=GAIN_SLIDER_DB[0], maximum=GAIN_SLIDER_DB[1],
                            value=int(prefs.gain_db), toolTip="Input gain (dB)")
        self.gain.setFixedWidth(80)
        self.gain.valueChanged.connect(self._gain_changed)
        bar.addWidget(self.gain)
        self.gain_value = QLabel(gain_text(self.gain.value()))
        self.gain_value.setMinimumWidth(52)
        bar.addWidget(self.gain_value)
        bar.addWidget(QLabel(" Gate "))
        self.gate = QSlider(Qt.Horizontal, minimum=GATE_SLIDER_DB[0], maximum=GATE_SLIDER_DB[1],
                            toolTip="Noise gate (dB); leftmost = off")
        self.gate.setValue(max(GATE_SLIDER_DB[0], int(prefs.gate_db)))
        self.gate.setFixedWidth(80)
        self.gate.valueChanged.connect(self._gate_changed)
        bar.addWidget(self.gate)
        self.gate_value = QLabel(gate_text(self.gate.value()))
        self.gate_value.setMinimumWidth(52)
        bar.addWidget(self.gate_value)

        self.backend_label, self.fps_label, self.latency_label, self.dropped_label = (QLabel() for _ in range(4))
        for w in (self.backend_label, self.fps_label, self.latency_label, self.dropped_label):
            self.statusBar().addPermanentWidget(w)
        self.backend_label.setText(f"Backend: {self.controller.backend_text}")

        self._build_speak_bar()
        self._build_menus()
        self.refresh_devices()
        self.device_box.currentIndexChanged.connect(self._device_chosen)
        self.source_watch = SourceWatch(self)  # microphones plugged in or out: the list follows
        self.source_watch.changed.connect(self._sources_changed)
        self.source_watch.start()

    def _build_menus(self):
        prefs = self.controller.prefs
        m = self.menuBar().addMenu("&File")
        self._action(m, "&Open photo…", QKeySequence.Open, self.choose_photo)
        self.recent_menu = m.addMenu("Recent photos")
        self._fill_recent()
        self._action(m, "Choose &face…", None, self.choose_face_again)
        self._action(m, "&New avatar from video…", None, self.choose_avatar_video)
        m.addSeparator()
        self._action(m, "&Play audio file…", "Ctrl+P", self.choose_audio_file)
        self.pause_playback_action = self._action(m, PAUSE_TEXT, "Ctrl+Shift+P", self.toggle_pause_playback)
        self.pause_playback_action.setEnabled(False)
        self.stop_playback_action = self._action(m, "&Stop audio file", "Ctrl+.", self.stop_playback)
        self.stop_playback_action.setEnabled(False)
        self._action(m, "&Export video from audio file…", "Ctrl+E", self.choose_export)
        self.speak_action = self._action(m, self._speak_menu_text(), "Ctrl+T", self.focus_speak_box)
        m.addSeparator()
        self._action(m, "Recording &folder…", None, self.choose_output_folder)
        self._action(m, "Recording &name…", None, self.choose_name_prefix)
        self.open_folder_action = self._action(m, "Open recordings folder", None, self.open_recordings_folder)
        self.play_last_action = self._action(m, "Play last recording", None, self.play_last_recording)
        m.aboutToShow.connect(self._update_file_actions)
        self.record_action = self._action(m, "&Record", "Ctrl+R", self.record_button.toggle)
        m.addSeparator()
        self._action(m, "&Quit", QKeySequence.Quit, self.close)

        v = self.menuBar().addMenu("&View")
        self._choices(v, [(f"{rate} fps", rate) for rate in DISPLAY_RATES], prefs.fps, self.set_display_rate)
        v.addSeparator()
        self._choices(v, [("Background: photo", "photo"), ("Background: solid colour…", "color"),
                          ("Background: green screen", "green")], prefs.background, self.set_background)
        v.addSeparator()
        self.liveliness_menu = v.addMenu("Liveliness")
        self._fill_liveliness()
        v.addSeparator()
        self.on_top_action = self._action(v, "Always on &top", None, self.set_always_on_top)
        self.on_top_action.setCheckable(True)
        self.on_top_action.setChecked(prefs.always_on_top)
        self.compact_action = self._action(v, "&Compact view", COMPACT_SHORTCUT, self.set_compact)
        self.compact_action.setCheckable(True)
        self.addAction(self.compact_action)  # its shortcut must work with the menu bar hidden
        leave = QAction("Leave compact view", self, shortcut=QKeySequence(Qt.Key_Escape))
        leave.triggered.connect(lambda: self.set_compact(False))
        self.addAction(leave)
        self._build_expression_menu(v)
        self._build_virtual_camera_menu(v)
        self.browser_action = self._action(v, "&Browser source (OBS)…", None, self.set_browser_source)
        self.browser_action.setCheckable(True)

        s = self.menuBar().addMenu("&Settings")
        self.backend_actions = self._choices(s.addMenu("Inference backend"), [(b, b) for b in BACKEND_CHOICES],
                                             normalize_backend(self.controller.backend_choice), self.set_backend)
        sizes = [(f"{n} × {n}", (n, "square")) for n in SIZES]
        sizes += [(f"{2 * round(n * 8 / 9)} × {n} (16:9)", (n, "16:9")) for n in WIDE_SIZES]
        self._choices(s.addMenu("Render size"), sizes, (prefs.size, prefs.frame), lambda v: self.set_size(*v))
        self.input_action = self._action(s, "Local &input endpoint…", None, self.set_input_endpoint)
        self.input_action.setCheckable(True)

        h = self.menuBar().addMenu("&Help")
        self._action(h, "&Quick start", QKeySequence.HelpContents, self.show_quick_start)
        self._action(h, "&About", None, self.show_about)
        self._update_file_actions()

    # -- expressions (issue 18): View → Expression, Ctrl+1..5 while the window is active ----------------

    def _build_expression_menu(self, view_menu) -> None:
        menu = view_menu.addMenu("&Expression")
        group = QActionGroup(self)
        self.expression_actions = {}
        for key, name in enumerate(EXPRESSION_NAMES, 1):
            action = self._action(menu, name.capitalize(), f"Ctrl+{key}",
                                  lambda _=False, n=name: self.set_expression(n))
            action.setCheckable(True)
            action.setChecked(name == self.controller.expression)
            group.addAction(action)
            self.addAction(action)  # its shortcut must work with the menu bar hidden (compact view)
            self.expression_actions[name] = action
        menu.addSeparator()
        self.global_keys = GlobalKeys(self)
        self.global_keys.pressed.connect(self.set_expression)
        self.global_keys_action = self._action(menu, "&Global hotkeys (Ctrl+Alt+1 … 5, from any window)", None,
                                               self.set_global_hotkeys)
        self.global_keys_action.setCheckable(True)
        self.hotkey_error = None
        if self.controller.prefs.global_hotkeys:
            self.set_global_hotkeys(True, save=False)

    def set_global_hotkeys(self, on: bool, save: bool = True) -> bool:
        """Expressions on Ctrl+Alt+1..5 whichever window has the focus (X11); where the desktop refuses, says why
        and stays off (Ctrl+1..5 keep working in the window). Returns whether they are on. At start (save=False)
        a refusal keeps the setting, for a session that allows them."""
        self.global_keys.stop()
        self.hotkey_error = None
        if on:
            try:
                self.global_keys.start(expression_hotkeys(EXPRESSION_NAMES))
            except HotkeyError as e:
                self.hotkey_error = str(e)
                self.statusBar().showMessage(self.hotkey_error, 15000)
                log.warning("%s", e)
        active = self.global_keys.active
        self.global_keys_action.setChecked(active)
        if save:
            self.controller.set_global_hotkeys(active)
        return active

    def set_expression(self, name: str) -> None:
        """Ease the face into an expression (the mouth keeps talking)."""
        self.controller.set_expression(name)
        self.expression_actions[name].setChecked(True)

    # -- text to speech (issue 20): the Speak bar, File → Speak text ----------------------------------------

    def _build_speak_bar(self) -> None:
        bar = QToolBar("Speak")
        bar.setObjectName("speakbar")
        self.addToolBar(bar)
        self.speak_box = QLineEdit()
        self.speak_box.setMaxLength(MAX_TEXT_CHARS)
        self.speak_box.setMinimumWidth(240)
        self.speak_button = QPushButton("Speak")
        problem = self.controller.speech_unavailable
        self.speak_box.setPlaceholderText(problem or "Text for the avatar to say (Enter speaks it)")
        self.speak_box.setToolTip(problem or "The avatar says this aloud (Piper voice)")
        for widget in (self.speak_box, self.speak_button):
            widget.setEnabled(problem is None)
        self.speak_box.returnPressed.connect(self.speak)
        self.speak_box.textEdited.connect(self._prepare_speech)
        self.speak_button.clicked.connect(self.speak)
        bar.addWidget(self.speak_box)
        bar.addWidget(self.speak_button)

    def _prepare_speech(self) -> None:
        """The first key typed loads the voice in the background (once)."""
        self.speak_box.textEdited.disconnect(self._prepare_speech)
        self.controller.prepare_speech()

    def _speak_menu_text(self) -> str:
        return "Spea&k text…" if self.controller.speech_unavailable is None else \
            "Speak text… (needs: pip install 'talking-avatar[tts]')"

    def focus_speak_box(self) -> None:
        problem = self.controller.speech_unavailable
        if problem:
            self.show_error(problem, "Cannot speak")
            return
        self.speak_box.setFocus()
        self.speak_box.selectAll()

    def speak(self, text: str | None = None) -> bool:
        """Say the Speak box's text (or `text`); a message when it cannot be spoken. The box is emptied."""
        text = self.speak_box.text() if text is None or isinstance(text, bool) else text
        try:
            self.controller.speak(text)
        except SpeechError as e:
            self.show_error(str(e), "Cannot speak")
            return False
        self.speak_box.clear()
        self._show_silence_chosen()
        self.stop_playback_action.setEnabled(True)  # File → Stop audio file stops the speech too
        self.statusBar().showMessage("Speaking (File → Stop audio file to stop)", 5000)
        return True

    # -- virtual camera (issue 20): View → Start virtual camera ------------------------------------------

    def _build_virtual_camera_menu(self, view_menu) -> None:
        view_menu.addSeparator()
        self.virtual_camera_action = self._action(view_menu, "Start &virtual camera", None,
                                                  self.set_virtual_camera)
        self.virtual_camera_action.setCheckable(True)

    def set_virtual_camera(self, on: bool) -> bool:
        """Send the view to a virtual camera (calls, OBS) or stop; without a device a message says what to install."""
        if on:
            on = self.controller.start_virtual_camera()
            if on:
                self.statusBar().showMessage(f"Sending to the {self.controller.virtual_camera.describe()}", 10000)
        else:
            self.controller.stop_virtual_camera()
        self.virtual_camera_action.setChecked(on)
        self.virtual_camera_action.setText("Stop &virtual camera" if on else "Start &virtual camera")
        return on

    def _choices(self, menu, items, current, slot) -> dict:
        """Mutually exclusive checkable actions, one per (text, value); choosing one calls slot(value).
        Returns {value: action}."""
        group = QActionGroup(self)
        actions = {}
        for text, value in items:
            a = self._action(menu, text, None, lambda _=False, v=value: slot(v))
            a.setCheckable(True)
            a.setChecked(value == current)
            group.addAction(a)
            actions[value] = a
        return actions

    def _action(self, menu, text, shortcut, slot) -> QAction:
        a = QAction(text, self)
        if shortcut is not None:
            a.setShortcut(QKeySequence(shortcut))
        a.triggered.connect(slot)
        menu.addAction(a)
        return a

    def _fill_recent(self):
        self.recent_menu.clear()
        prefs = self.controller.prefs
        for path in prefs.recent_photos:
            self._action(self.recent_menu, path, None, lambda _=False, p=path: self.open_photo(p))
        self.recent_menu.setEnabled(bool(prefs.recent_photos))

    def _fill_liveliness(self):
        self.liveliness_menu.clear()
        for name, on in self.controller.liveliness_switches().items():
            a = self._action(self.liveliness_menu, name.replace("_", " "), None,
                             lambda checked=False, n=name: self.set_liveliness(n, checked))
            a.setCheckable(True)
            a.setChecked(on)
        self.liveliness_menu.setEnabled(bool(self.liveliness_menu.actions()))

    # -- errors ---------------------------------------------------------------------------------------

    def show_error(self, message: str, title: str = APP_TITLE) -> None:
        """Say something went wrong (through the controller, which remembers it as `last_error`)."""
        self.controller.report_error(message, title)

    def _show_dialog(self, message: str, title: str) -> None:
        self.statusBar().showMessage(message, 10000)
        box = QMessageBox(QMessageBox.Warning, title, message, QMessageBox.Ok, self)
        box.setAttribute(Qt.WA_DeleteOnClose)
        box.open()  # non-blocking: the view keeps running while the message is up

    def _pipeline_event(self, message: str) -> None:
        """A message from the pipeline's workers (e.g. the microphone was lost): say it, show what runs now."""
        if self.controller.source_kind == SOURCE_SILENCE:
            self._show_silence_chosen()
        self.show_error(message)

    def _run(self, fn, on_done, on_failed=None) -> Worker:
        worker = Worker(fn, self)
        self._workers.add(worker)
        worker.done.connect(on_done)
        worker.failed.connect(on_failed or (lambda e: self.show_error(error_sentence(e))))
        worker.finished.connect(lambda: self._workers.discard(worker))
        worker.start()
        return worker

    # -- microphone -----------------------------------------------------------------------------------

    def refresh_devices(self):
        devices = self.controller.microphones()
        self._fill_devices(devices)
        if not devices:
            self.statusBar().showMessage("No microphone found: the avatar runs on silence.", 10000)
            return
        if self.controller.playing:  # a file plays on; the microphone comes back when it ends
            self._show_source_chosen()
            return
        opened = self.controller.open_preferred_microphone(devices)
        self._show_source_chosen()
        if opened is not None and self.controller.missing_saved_microphone(devices) is None:
            self.statusBar().showMessage(f"Listening to {self.controller.source_name}", 5000)

    def _sources_changed(self):
        """The sound server's sources changed: the list again, the microphone in use kept (a saved one that is
        back is opened again: Controller.sources_changed)."""
        devices = self.controller.sources_changed()
        if devices is None:
            return
        self._fill_devices(devices)
        self._show_source_chosen()  # silence while a file plays

    def _fill_devices(self, devices):
        self.device_box.blockSignals(True)
        self.device_box.clear()
        self.device_box.addItem(SILENCE, None)
        for d in devices:
            self.device_box.addItem(d.label, d.name)
        self.device_box.blockSignals(False)

    def _show_source_chosen(self):
        """The picker shows the microphone in use, or silence (also while a file plays); and File → Stop / Pause
        audio file only while a file plays (a device refresh can bring the microphone back after a file ended,
        before the status timer notices the end)."""
        name = self.controller.microphone if self.controller.source_kind == SOURCE_MICROPHONE else None
        index = self.device_box.findData(name) if name is not None else 0
        self.device_box.blockSignals(True)
        self.device_box.setCurrentIndex(max(0, index))
        self.device_box.blockSignals(False)
        if not (self.controller.playing or self.controller.paused):
            self.stop_playback_action.setEnabled(False)
            self.pause_playback_action.setEnabled(False)
            self.pause_playback_action.setText(PAUSE_TEXT)

    def _show_silence_chosen(self):
        self.device_box.blockSignals(True)
        self.device_box.setCurrentIndex(0)
        self.device_box.blockSignals(False)

    def _device_chosen(self, index: int):
        name = self.device_box.itemData(index)
        if name is None:
            self.controller.use_silence()
            return
        self.open_microphone(name)

    def open_microphone(self, name: str) -> bool:
        if not self.controller.use_microphone(name):
            return False
        self.statusBar().showMessage(f"Listening to {self.controller.source_name}", 5000)
        return True

    def _gain_changed(self, value):
        self.gain_value.setText(gain_text(value))
        self.controller.set_gain(value)

    def _gate_changed(self, value):
        self.gate_value.setText(gate_text(value))
        self.controller.set_gate(value)

    # -- photo ----------------------------------------------------------------------------------------

    def choose_photo(self):
        folder = str(Path(self.controller.prefs.photo).parent)
        path, _ = QFileDialog.getOpenFileName(self, "Open photo", folder, PHOTO_FILTER)
        if path:
            self.open_photo(path)

    def open_photo(self, path: str, on_ready=None, landmarks=None, face_index=None) -> Worker:
        """Build the renderer for `path` off the GUI thread; the view switches to it when it is ready.
        No face found: the manual placement dialog opens, and OK builds the rig from the placed points.
        Several faces and none picked in this photo before: the face picker opens, and a click builds that one."""
        def done(renderer):
            self.controller.use_renderer(path, renderer)
            self._fill_recent()
            self.setWindowTitle(f"{APP_TITLE} — {Path(path).name}")
            warning = self.controller.photo_warning
            if warning:  # a three-quarter face: said where it stays readable for a while
                self.statusBar().showMessage(f"Loaded {Path(path).name}. {warning}", 15000)
            else:
                self.statusBar().showMessage(f"Loaded {Path(path).name}", 3000)
            if on_ready:
                on_ready(renderer)

        def failed(error):
            self.statusBar().clearMessage()  # "Loading …" is over either way
            if self.controller.needs_placement(error):
                self.place_face(path, error)
            elif isinstance(error, FaceChoiceNeeded):
                self.pick_face(path, error.image, error.faces)
            else:
                self.show_error(error_sentence(error), "Cannot use this photo")

        self.statusBar().showMessage(f"Loading {Path(path).name}…")
        return self._run(lambda w: self.controller.build_renderer(path, landmarks, face_index), done, failed)

    def pick_face(self, path: str, image, faces) -> None:
        """The face picker (a child of the window while it is open); a click remembers and animates that face."""
        dialog = FacePickerDialog(image, faces, self.controller.chosen_face(path), self)
        dialog.setAttribute(Qt.WA_DeleteOnClose)

        def picked(index):  # remembered once its rig is built (a side view picked is refused, not remembered)
            self.open_photo(path, face_index=index, on_ready=lambda _: self.controller.choose_face(path, index))

        dialog.picked.connect(picked)
        dialog.open()

    def choose_face_again(self) -> Worker | None:
        """File → Choose face: the picker for the current photo (its faces looked for off the GUI thread)."""
        path = self.controller.prefs.photo
        if not path:
            return None

        def found(result):
            image, faces = result
            if len(faces) < 2:
                self.statusBar().showMessage(f"{Path(path).name} has no other face to choose", 5000)
            else:
                self.pick_face(path, image, faces)

        return self._run(lambda w: self.controller.faces_in(path), found)

    def place_face(self, path: str, error) -> Worker:
        """The manual placement dialog (a child of the window while it is open) for a photo without a found face,
        its points starting around the face the detector sees, if any (looked for off the GUI thread)."""
        return self._run(lambda w: self.controller.likely_face(error.image),
                         lambda box: self._open_placement(path, error, box),
                         lambda e: self._open_placement(path, error, None))

    def _open_placement(self, path: str, error, face_box) -> None:
        dialog = PlacementDialog(error.image, str(error), self, face_box=face_box)
        dialog.setAttribute(Qt.WA_DeleteOnClose)

        def placed():
            try:
                points = self.controller.landmarks_from_handles(dialog.handles())
            except ValueError as e:
                self.show_error(str(e), "Cannot place the face")
                return
            self.open_photo(path, landmarks=points)

        def cancelled():
            kept = Path(self.controller.prefs.photo).name if self.controller.renderer is not None else None
            self.statusBar().showMessage(f"{Path(path).name} not used" + (f"; still showing {kept}" if kept else ""),
                                         5000)

        dialog.accepted.connect(placed)
        dialog.rejected.connect(cancelled)
        dialog.open()

    def reload_renderer(self):
        if self.controller.prefs.photo:
            self.open_photo(self.controller.prefs.photo)

    # -- preferences ----------------------------------------------------------------------------------

    def set_display_rate(self, fps: int):
        self.controller.set_display_rate(fps)

    def set_background(self, key: str):
        colour = None
        if key == "color":
            picked = QColorDialog.getColor(QColor(self.controller.prefs.background_color), self, "Background colour")
            if not picked.isValid():
                return
            colour = picked.name()
        self.controller.set_background(key, colour)
        self.reload_renderer()

    def set_liveliness(self, name: str, on: bool):
        self.controller.set_liveliness(name, on)
        self.reload_renderer()

    def set_size(self, size: int, frame: str = "square"):
        self.controller.set_size(size, frame)
        self.reload_renderer()

    def set_backend(self, backend: str):
        self.controller.set_backend(backend)
        # a backend that failed leaves the old one running: the menu and the status bar say which runs
        running = self.backend_actions.get(normalize_backend(self.controller.backend_choice))
        if running is not None:
            running.setChecked(True)
        self.backend_label.setText(f"Backend: {self.controller.backend_text}")

    def choose_output_folder(self) -> QFileDialog:
        """The folder dialog (a child of the window while open), started in the output folder or the nearest
        folder above it that exists: started in a missing one it would offer nothing to Choose."""
        dialog = QFileDialog(self, "Recording folder", self.controller.folder_dialog_start())
        dialog.setFileMode(QFileDialog.Directory)
        dialog.setOption(QFileDialog.ShowDirsOnly)
        dialog.setAttribute(Qt.WA_DeleteOnClose)
        dialog.fileSelected.connect(self.set_output_folder)
        dialog.open()
        return dialog

    def set_output_folder(self, folder: str) -> bool:
        if not self.controller.set_output_folder(folder):
            return False
        self.statusBar().showMessage(f"Recordings go to {folder}", 5000)
        return True

    def choose_name_prefix(self):
        text, ok = QInputDialog.getText(self, "Recording name", "File names start with:",
                                        text=self.controller.prefs.name_prefix)
        if ok:
            self.set_name_prefix(text)

    def set_name_prefix(self, text: str) -> bool:
        return self.controller.set_name_prefix(text)

    # -- recording ------------------------------------------------------------------------------------

    def _record_toggled(self, on: bool):
        if on:
            self.start_recording()
        else:
            self.stop_recording()

    def start_recording(self) -> bool:
        if not self.controller.start_recording():
            self._set_record_button(False)
            return False
        self._set_record_button(True)
        self.statusBar().showMessage(f"Recording to {self.controller.recording.path}", 5000)
        return True

    def stop_recording(self, wait: bool = False) -> Path | None:
        """Stop recording; the file is finished on a worker thread (or here when `wait`, e.g. while closing)."""
        self._set_record_button(False)
        recording = self.controller.detach_recording()
        if recording is None:
            return None

        def saved(path):
            self.statusBar().showMessage(f"Saved {path}", 10000)
            self._update_file_actions()

        def failed(error):
            self.show_error(error_sentence(error), "Recording stopped")

        if wait:
            try:
                saved(self.controller.finish_recording(recording))
            except RecordError as e:
                failed(e)
        else:
            self.statusBar().showMessage(f"Finishing {recording.path.name}…")
            self._run(lambda w: self.controller.finish_recording(recording), saved, failed)
        return recording.path

    def _set_record_button(self, on: bool):
        self.record_button.blockSignals(True)
        self.record_button.setChecked(on)
        self.record_button.setText("■ Stop" if on else "● Record")
        self.record_button.blockSignals(False)
        if not on:
            self.elapsed.setText("")

    # -- finding recordings again --------------------------------------------------------------------

    def _update_file_actions(self):
        self.open_folder_action.setEnabled(self.controller.recordings_folder is not None)
        self.play_last_action.setEnabled(self.controller.playable_recording is not None)

    def open_recordings_folder(self) -> bool:
        """The output folder in the desktop's file manager."""
        folder = self.controller.recordings_folder
        if folder is None:
            self.show_error(f"The folder {self.controller.prefs.output_folder} does not exist (yet).")
            return False
        return self._open_url(folder)

    def play_last_recording(self) -> bool:
        """The last recording in the desktop's video player."""
        path = self.controller.playable_recording
        if path is None:
            self.show_error("There is no recording from this session to play.")
            return False
        return self._open_url(path)

    def _open_url(self, path: Path) -> bool:
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(path))):
            self.show_error(f"Nothing on this desktop opens {path}.")
            return False
        return True

    # -- capture-friendly window ----------------------------------------------------------------------

    def set_always_on_top(self, on: bool):
        self.controller.set_always_on_top(on)
        self.on_top_action.setChecked(on)
        self._set_window_flag(Qt.WindowStaysOnTopHint, on)

    def set_compact(self, on: bool):
        """Only the face: no menus, tool bars, status bar or window frame (for capturing the window)."""
        if on == self.is_compact and self.compact_action.isChecked() == on:
            return
        self.compact_action.setChecked(on)
        self.menuBar().setVisible(not on)
        self.statusBar().setVisible(not on)
        for bar in self.findChildren(QToolBar):
            bar.setVisible(not on)
        self._set_window_flag(Qt.FramelessWindowHint, on)
        if on:
            self.statusBar().showMessage("")  # nothing pending when the bar comes back

    @property
    def is_compact(self) -> bool:
        return bool(self.windowFlags() & Qt.FramelessWindowHint)

    def _set_window_flag(self, flag, on: bool):
        if bool(self.windowFlags() & flag) == on:
            return
        visible = self.isVisible()
        self.setWindowFlag(flag, on)  # hides the window (a new native window is made)
        if visible:
            self.show()

    def mouseDoubleClickEvent(self, event):
        """A double-click on the face toggles compact view (the view passes its clicks up to here)."""
        if self.childAt(event.position().toPoint()) is not self.view:
            super().mouseDoubleClickEvent(event)
            return
        self.set_compact(not self.is_compact)
        event.accept()

    def mouseMoveEvent(self, event):
        # a frameless window has no title bar: dragging the face moves it (on a drag, not a press, so that a
        # double-click still arrives)
        if self.is_compact and event.buttons() & Qt.LeftButton and self.windowHandle() is not None:
            self.windowHandle().startSystemMove()
            event.accept()
            return
        super().mouseMoveEvent(event)

    # -- help -----------------------------------------------------------------------------------------

    def show_quick_start(self) -> QMessageBox:
        return self._info("Quick start", QUICK_START)

    def show_about(self) -> QMessageBox:
        prefs = self.controller.prefs
        text = (f"<h3>{APP_TITLE} {__version__}</h3><p>A face photo that talks, live, from your microphone.</p>"
                f"<p>Lip-sync model: {self.controller.backend_text}.<br>Recordings: {prefs.output_folder}</p>"
                "<p>Everything runs on this computer: no sound or picture leaves it.</p>")
        return self._info("About", text)

    def _info(self, title: str, html: str) -> QMessageBox:
        box = QMessageBox(QMessageBox.Information, title, html, QMessageBox.Ok, self)
        box.setTextFormat(Qt.RichText)
        box.setAttribute(Qt.WA_DeleteOnClose)
        box.open()
        return box

    # -- audio files ----------------------------------------------------------------------------------

    def choose_audio_file(self):
        path, _ = QFileDialog.getOpenFileName(self, "Play audio file", "", AUDIO_FILTER)
        if path:
            self.play_audio_file(path)

    def play_audio_file(self, path: str) -> bool:
        if not self.controller.play_file(path):
            return False
        self._show_silence_chosen()
        self.stop_playback_action.setEnabled(True)
        self.pause_playback_action.setEnabled(True)
        self.pause_playback_action.setText(PAUSE_TEXT)
        self.statusBar().showMessage(f"Playing {Path(path).name} (File → Stop audio file to stop)", 5000)
        return True

    def stop_playback(self):
        self.controller.stop_playback()
        self._playback_ended()

    def toggle_pause_playback(self):
        """Pause the file playing (the face idles meanwhile), or go on from where it was paused."""
        c = self.controller
        if c.paused:
            c.resume_playback()
        elif not c.pause_playback():
            return
        self.pause_playback_action.setText(RESUME_TEXT if c.paused else PAUSE_TEXT)
        self.statusBar().showMessage(f"{'Paused' if c.paused else 'Playing'} {c.source_name if c.playing else ''}"
                                     .strip(), 3000)

    def _playback_ended(self):
        self._show_source_chosen()  # (which disables File → Stop / Pause audio file)

    def choose_export(self):
        audio, _ = QFileDialog.getOpenFileName(self, "Audio to export", "", AUDIO_FILTER)
        if not audio:
            return
        default = Path(self.controller.prefs.output_folder) / (Path(audio).stem + ".mp4")
        out, _ = QFileDialog.getSaveFileName(self, "Save video as", str(default), "MP4 video (*.mp4)")
        if out:
            self.export_video(audio, out)

    def export_video(self, audio_path: str, out_path: str) -> Worker:
        """Offline render with a progress dialog (a child of the window) and Cancel; the view keeps going."""
        return self._with_progress(
            f"Exporting {Path(out_path).name}…", "Export video",
            lambda **kw: self.controller.export(audio_path, out_path, **kw),
            lambda path: self.statusBar().showMessage(f"Exported {path}", 10000),
            "Export cancelled", "Export failed")

    def _with_progress(self, label: str, title: str, run, on_done, cancelled: str, failed_title: str) -> Worker:
        """`run(progress=, cancelled=)` on a worker thread with a progress dialog and Cancel; `on_done(result)`
        when it returns a result, the `cancelled` status line when it returns None, an error dialog when it fails."""
        dialog = QProgressDialog(label, "Cancel", 0, PROGRESS_STEPS, self)
        dialog.setWindowTitle(title)
        dialog.setWindowModality(Qt.WindowModal)
        dialog.setMinimumDuration(0)

        def job(worker):
            return run(progress=worker.progress.emit, cancelled=lambda: worker.cancel_requested)

        def done(result):
            dialog.close()
            if result is None:
                self.statusBar().showMessage(cancelled, 5000)
            else:
                on_done(result)

        def failed(error):
            dialog.close()
            self.show_error(error_sentence(error), failed_title)

        worker = self._run(job, done, failed)
        worker.progress.connect(lambda f: dialog.setValue(int(f * PROGRESS_STEPS)))
        dialog.canceled.connect(lambda: setattr(worker, "cancel_requested", True))
        return worker

    def choose_avatar_video(self):
        video, _ = QFileDialog.getOpenFileName(self, "Video of one person talking", "", VIDEO_FILTER)
        if not video:
            return
        default = Path(video).with_suffix(".avatar")
        out, _ = QFileDialog.getSaveFileName(self, "Save avatar as", str(default), "Video avatar (*.avatar)")
        if out:
            self.make_avatar(video, out if out.lower().endswith(".avatar") else out + ".avatar")

    def make_avatar(self, video_path: str, out_path: str) -> Worker:
        """Make a video avatar off the GUI thread, with a progress dialog and Cancel; it opens when made."""
        return self._with_progress(
            f"Making {Path(out_path).name} from {Path(video_path).name}…", "New avatar from video",
            lambda **kw: self.controller.make_avatar(video_path, out_path, **kw),
            lambda path: self.open_photo(str(path), on_ready=lambda _: self.statusBar().showMessage(
                f"Made {Path(path).name}: {self.controller.last_avatar_note}", 15000)),
            "New avatar cancelled", "Cannot make an avatar from this video")

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

    # -- the local server (avatar.serve): off until turned on here -------------------------------------

    def set_browser_source(self, on: bool) -> UrlDialog | None:
        url = self.controller.set_browser_source(on)
        frame = self.controller.latest_frame
        h, w = frame.image.shape[:2] if frame is not None else (self.controller.prefs.size,) * 2
        return self._served(self.browser_action, url, "Browser source", BROWSER_HELP.format(w=w, h=h), "browser")

    def set_input_endpoint(self, on: bool) -> UrlDialog | None:
        url = self.controller.set_input_endpoint(on)
        return self._served(self.input_action, url, "Local input endpoint", INPUT_HELP.format(), "input")

    def _served(self, action, url: str | None, title: str, help_html: str, feature: str) -> UrlDialog | None:
        action.setChecked(url is not None)  # a server that could not start has said why
        if url is None:
            return None
        dialog = UrlDialog(title, url, help_html, lambda: self.controller.renew_token(feature), self)
        dialog.open()
        return dialog

    # -- the display loop -----------------------------------------------------------------------------

    def _show_latest(self):
        frame = self.controller.latest_frame
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
        if self.controller.poll() or (self.stop_playback_action.isEnabled() and not self.controller.playing
                                      and not self.controller.paused):
            self._playback_ended()  # the file played out: the microphone in use before is back
        _, latency = self.view_stats()
        stats = self.controller.stats()
        # the display rate the view is kept up to date at (frames that would look the same are not painted again)
        self.fps_label.setText(f"{stats.fps:.0f} fps")
        shows_latency = self.controller.shows_latency
        self.latency_label.setVisible(shows_latency)  # capture→screen means nothing without a microphone
        self.latency_label.setText(f"latency {latency:.0f} ms" if shows_latency and latency is not None
                                   else "latency –")
        self.dropped_label.setText(f"dropped {stats.dropped_frames}")
        camera = self.controller.virtual_camera
        if self.virtual_camera_action.isChecked() and (camera is None or not camera.running):
            self.set_virtual_camera(False)  # it stopped sending (its message was shown)
        elif camera is not None:
            self.dropped_label.setText(f"dropped {stats.dropped_frames}, camera {camera.dropped}")
        self._show_level()
        recording = self.controller.recording
        if recording is not None:
            if recording.error:
                self.stop_recording()  # shows the message; the file keeps what was written
            else:
                s = int(recording.seconds)
                self.elapsed.setText(f" {s // 60:02d}:{s % 60:02d}")

    def _show_level(self):
        level = self.controller.level_db
        self.meter.setValue(int(max(METER_FLOOR_DB, min(0, level))))
        clipping = self.controller.clipping
        self.meter.setFormat(level_text(level) + (" CLIP" if clipping else ""))
        if clipping != self.meter.property("clipping"):
            self.meter.setProperty("clipping", clipping)
            self.meter.setStyleSheet(CLIP_STYLE if clipping else "")

    # -- closing --------------------------------------------------------------------------------------

    def changeEvent(self, event):
        if event.type() == QEvent.WindowStateChange:
            self.controller.set_view_visible(not self.isMinimized() and self.isVisible())
        super().changeEvent(event)

    def hideEvent(self, event):
        self.controller.set_view_visible(False)
        super().hideEvent(event)

    def showEvent(self, event):
        self.controller.set_view_visible(not self.isMinimized())
        super().showEvent(event)

    def closeEvent(self, event):
        self._events.frame.disconnect(self._show_latest)
        self.global_keys.stop()
        self.source_watch.close()
        self.status_timer.stop()
        self.stop_recording(wait=True)  # finalize the file before anything else goes away
        for worker in list(self._workers):
            worker.cancel_requested = True
            worker.wait(10000)
        self.controller.close()
        super().closeEvent(event)


def gain_text(db: int) -> str:
    return f"{db:+d} dB" if db else "0 dB"


def gate_text(db: int) -> str:
    return "off" if db <= GATE_OFF_AT_DB else f"{db} dB"


def level_text(db: float) -> str:
    return "– dB" if db <= METER_FLOOR_DB else f"{db:.0f} dB"


def _dropped_file(mime) -> Path | None:
    for url in mime.urls() if mime.hasUrls() else []:
        path = Path(url.toLocalFile())
        if path.suffix.lower() in PHOTO_SUFFIXES | AUDIO_SUFFIXES:
            return path
    return None
