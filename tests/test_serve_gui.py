"""The window's part of the local server: View → Browser source and Settings → Local input endpoint turn it on
and off through the controller, and show the URL to copy."""
import urllib.error
import urllib.request

import pytest

from tests.test_app_gui import window  # noqa: F401  (a fixture)


def _dialog_of(window, action, qtbot):
    from avatar.gui.serve_dialog import UrlDialog

    action.trigger()

    dialogs = [d for d in window.findChildren(UrlDialog) if d.isVisible()]
    assert len(dialogs) == 1
    return dialogs[0]


def test_the_browser_source_url_is_shown_and_copied_and_the_server_stops_when_turned_off(window, qtbot):
    from PySide6.QtGui import QGuiApplication

    window.controller.prefs.serve_port = 0  # any free port (the saved one may be taken on a shared machine)
    assert window.controller.server is None and not window.browser_action.isChecked()
    dialog = _dialog_of(window, window.browser_action, qtbot)
    server = window.controller.server
    assert window.browser_action.isChecked() and dialog.url.text() == server.browser_url
    dialog.copy_button.click()
    assert QGuiApplication.clipboard().text() == server.browser_url
    with urllib.request.urlopen(dialog.url.text(), timeout=10) as page:  # the URL shown is the page
        assert page.status == 200 and b"<canvas" in page.read()
    dialog.renew_button.click()  # the URL was seen on stream: a new token, the old URL refused
    assert dialog.url.text() == server.browser_url != QGuiApplication.clipboard().text()
    assert dialog.url.text().endswith(window.controller.prefs.view_token)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(QGuiApplication.clipboard().text(), timeout=10)
    assert refused.value.code == 401
    dialog.close()
    window.browser_action.trigger()
    assert not window.browser_action.isChecked() and window.controller.server is None


def test_the_input_endpoint_url_is_shown(window, qtbot):
    window.controller.prefs.serve_port = 0
    dialog = _dialog_of(window, window.input_action, qtbot)
    assert dialog.url.text() == window.controller.server.input_url and dialog.url.text().startswith("ws://127.0.0.1:")
    dialog.close()
    window.input_action.trigger()
    assert window.controller.server is None
