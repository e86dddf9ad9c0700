"""The window's part of the local server (avatar.serve): a dialog with the URL to copy and how to use it."""
from __future__ import annotations

from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout

BROWSER_HELP = ("<p>In OBS: Sources → + → <b>Browser</b>, paste this URL, set Width × Height to the avatar's size "
                "({w} × {h}); the background is transparent. The token in the URL is the only key: keep it off "
                "screen. Served on 127.0.0.1 only (this computer).</p>")
INPUT_HELP = ("<p>Programs on this computer push sound to this WebSocket: a JSON header "
              "<code>{{\"type\": \"start\", \"rate\": 22050, \"channels\": 1, \"format\": \"s16le\"}}</code>, "
              "then binary PCM chunks; or <code>{{\"type\": \"text\", \"text\": \"…\"}}</code> to speak text. "
              "HTTP: POST a WAV to /input/wav. See examples/push_audio.py. 127.0.0.1 only.</p>")


class UrlDialog(QDialog):
    """Shows `url` read-only with a Copy button (it goes to the clipboard), a New token button (`renew()` -> the new
    URL) and `help_html` below."""

    def __init__(self, title: str, url: str, help_html: str, renew=None, parent=None):
        super().__init__(parent)
        self.setWindowTitle(title)
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        self.url = QLineEdit(url, readOnly=True)
        self.url.setMinimumWidth(480)
        row.addWidget(self.url)
        self.copy_button = QPushButton("Copy")
        self.copy_button.clicked.connect(self.copy)
        row.addWidget(self.copy_button)
        self.renew_button = QPushButton("New token", toolTip="The old URL stops working (e.g. it was seen on stream)")
        self.renew_button.clicked.connect(lambda: self.url.setText(renew() or self.url.text()))
        self.renew_button.setVisible(renew is not None)
        row.addWidget(self.renew_button)
        layout.addLayout(row)
        text = QLabel(help_html, wordWrap=True)
        layout.addWidget(text)
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        buttons.rejected.connect(self.close)
        layout.addWidget(buttons)

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.url.text())
