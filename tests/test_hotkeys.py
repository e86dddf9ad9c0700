"""Global expression hotkeys (avatar/hotkeys.py, avatar/gui/global_keys.py): Ctrl+Alt+1..5 reach the app while
another program's window has the focus, sent for real with xdotool (XTEST) on the X display."""
import shutil
import subprocess

import pytest

from avatar.hotkeys import GlobalHotkeys, HotkeyError, expression_hotkeys, unavailable_reason
from tests.test_app_gui import window  # noqa: F401  (a fixture)

pytestmark = pytest.mark.usefixtures("x_platform")


def xdotool(*args) -> str:
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool is not installed (.ci/apt-packages.txt): cannot send keys through the X server")
    return subprocess.run(["xdotool", *args], check=True, capture_output=True, text=True, timeout=10).stdout


@pytest.fixture
def other_window(x_platform):
    """A window of another X client (its own connection, as another program's), mapped and given the focus."""
    from Xlib import X
    from Xlib.display import Display

    display = Display()
    root = display.screen().root
    win = root.create_window(0, 0, 200, 200, 0, display.screen().root_depth, X.InputOutput, X.CopyFromParent,
                             event_mask=X.KeyPressMask)
    win.set_wm_name("another program")
    win.map()
    display.sync()
    xdotool("windowfocus", "--sync", str(win.id))
    yield win.id
    win.destroy()
    display.close()


def focused_window() -> int:
    return int(xdotool("getwindowfocus").strip())


def test_ctrl_alt_digits_change_the_expression_while_another_window_has_the_focus(window, other_window, qtbot):
    c = window.controller
    assert window.set_global_hotkeys(True) and window.global_keys_action.isChecked()
    assert focused_window() == other_window  # not the avatar's window
    xdotool("key", "ctrl+alt+2")
    qtbot.waitUntil(lambda: c.expression == "smile", timeout=3000)
    assert window.expression_actions["smile"].isChecked()
    xdotool("key", "ctrl+alt+3")
    qtbot.waitUntil(lambda: c.expression == "surprise", timeout=3000)
    xdotool("key", "ctrl+3", "ctrl+alt+shift+4")  # not the hotkeys: left to the focused window
    qtbot.wait(300)
    assert c.expression == "surprise"
    xdotool("key", "ctrl+alt+1")
    qtbot.waitUntil(lambda: c.expression == "neutral", timeout=3000)

    window.set_global_hotkeys(False)  # off: the keys are let go
    assert not c.prefs.global_hotkeys
    xdotool("key", "ctrl+alt+5")
    qtbot.wait(300)
    assert c.expression == "neutral"
    keys = GlobalHotkeys(expression_hotkeys(["a", "b"]))  # free again for another program to take
    keys.close()


def test_the_setting_is_kept_and_turns_them_on_at_start(window, qtbot):
    from avatar.gui.settings import load_preferences

    assert window.set_global_hotkeys(True)
    assert load_preferences().global_hotkeys
    window.set_global_hotkeys(False)
    assert not load_preferences().global_hotkeys


def test_keys_another_program_holds_are_refused_with_a_message_and_the_window_keys_still_work(window, qtbot):
    other = GlobalHotkeys({"x": "Control+Alt+3"})  # another client grabbed one of them first
    try:
        with pytest.raises(HotkeyError, match="Another program holds"):
            GlobalHotkeys(expression_hotkeys(["neutral", "smile", "surprise"]))
        assert not window.set_global_hotkeys(True)
        assert "Another program holds" in window.statusBar().currentMessage()
        assert not window.global_keys_action.isChecked() and not window.controller.prefs.global_hotkeys
    finally:
        other.close()
    window.activateWindow()
    qtbot.waitUntil(lambda: window.isActiveWindow(), timeout=3000)
    qtbot.keyClick(window, "2", modifier=__import__("PySide6.QtCore", fromlist=["Qt"]).Qt.ControlModifier)
    qtbot.waitUntil(lambda: window.controller.expression == "smile", timeout=3000)


def test_on_wayland_they_are_refused_with_the_reason(window, monkeypatch):
    assert "Wayland" in unavailable_reason({"XDG_SESSION_TYPE": "wayland", "WAYLAND_DISPLAY": "wayland-0"})
    assert "X11" in unavailable_reason({})
    monkeypatch.setenv("XDG_SESSION_TYPE", "wayland")
    assert not window.set_global_hotkeys(True)
    assert "Wayland" in window.statusBar().currentMessage() and not window.global_keys_action.isChecked()
