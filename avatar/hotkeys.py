"""Global hotkeys: keys that reach the app while another window has the focus (a game, OBS, a call).

On X11 (and XWayland apps under an X11 session) each key is grabbed on the root window with XGrabKey through
python-xlib, its own connection to the X server: the server then hands the key to this connection whichever window
is focused. `GlobalHotkeys.fileno()` is that connection's socket, for the GUI to watch (a QSocketNotifier), and
`take()` reads what arrived and returns the names of the keys pressed. Where the desktop does not allow it (a
Wayland session, no X display, a key another program grabbed already) `GlobalHotkeys(...)` raises HotkeyError
with a sentence for the user; the in-window shortcuts work regardless.

Qt-free: the window only connects the socket and maps names to actions.
"""
from __future__ import annotations

import os

EXPRESSION_HOTKEY_MODIFIERS = ("Control", "Alt")  # Ctrl+Alt+1 … 5: the in-window Ctrl+1 … 5 with Alt added
# XGrabKey matches modifiers exactly: each key is grabbed also with Num Lock (Mod2) and Caps Lock on
_LOCK_MASKS = ("", "Lock", "Mod2", "Lock+Mod2")


class HotkeyError(RuntimeError):
    """Global hotkeys cannot be had here; the message says why, for the user."""


def unavailable_reason(env=os.environ) -> str | None:
    """Why this session cannot have global hotkeys (None when an X server may grant them)."""
    if env.get("XDG_SESSION_TYPE", "").lower() == "wayland" or (env.get("WAYLAND_DISPLAY") and not env.get("DISPLAY")):
        return ("Global hotkeys are not available on Wayland (the desktop does not let an app see keys meant for "
                "other windows); the shortcuts work while the avatar window is active.")
    if not env.get("DISPLAY"):
        return "Global hotkeys need an X11 desktop (no DISPLAY is set); the in-window shortcuts still work."
    return None


class GlobalHotkeys:
    """Grabs `keys` ({name: key text like "Ctrl+Alt+2"}) on the X server until close()."""

    def __init__(self, keys: dict[str, str], display: str | None = None):
        reason = unavailable_reason() if display is None else None
        if reason:
            raise HotkeyError(reason)
        try:  # python-xlib: only where global hotkeys are switched on
            from Xlib import X, XK, error
            from Xlib.display import Display
        except ImportError as e:
            raise HotkeyError("Global hotkeys need the python-xlib package, which is not installed.") from e
        self._X = X
        try:
            self._display = Display(display)
        except Exception as e:  # Xlib.error.DisplayError and connection failures
            raise HotkeyError(f"Could not reach the X display for global hotkeys ({e}).") from e
        self._root = self._display.screen().root
        self._bindings: dict[tuple[int, int], str] = {}  # (keycode, modifier mask without locks) -> name
        catch = error.CatchError(error.BadAccess)
        try:
            for name, text in keys.items():
                keycode, mask = self._parse(text, XK)
                for lock in _LOCK_MASKS:
                    self._root.grab_key(keycode, mask | self._mask(lock), True, X.GrabModeAsync, X.GrabModeAsync,
                                        onerror=catch)
                self._bindings[(keycode, mask)] = name
            self._display.sync()  # the server's answer to the grabs: BadAccess if a key is taken
        except HotkeyError:
            self.close()
            raise
        if catch.get_error() is not None:
            self.close()
            raise HotkeyError("Another program holds one of the keys "
                              f"({', '.join(keys.values())}) for itself; global hotkeys are off.")

    def _mask(self, names: str) -> int:
        X = self._X
        masks = {"": 0, "Lock": X.LockMask, "Mod2": X.Mod2Mask, "Control": X.ControlMask, "Ctrl": X.ControlMask,
                 "Alt": X.Mod1Mask, "Shift": X.ShiftMask, "Super": X.Mod4Mask}
        out = 0
        for part in filter(None, names.split("+")):
            out |= masks[part]
        return out

    def _parse(self, text: str, XK) -> tuple[int, int]:
        *mods, key = text.split("+")
        try:
            mask = self._mask("+".join(mods))
        except KeyError as e:
            raise HotkeyError(f"Unknown modifier in hotkey {text!r}: {e}") from e
        keysym = XK.string_to_keysym(key)
        keycode = self._display.keysym_to_keycode(keysym) if keysym else 0
        if not keycode:
            raise HotkeyError(f"This keyboard has no key {key!r} for the hotkey {text!r}.")
        return keycode, mask

    @property
    def names(self) -> list[str]:
        return list(self._bindings.values())

    def fileno(self) -> int:
        """The X connection's socket: readable when a grabbed key (or other X traffic) arrives."""
        return self._display.fileno()

    def take(self) -> list[str]:
        """The names of the grabbed keys pressed since the last call, in order; never blocks."""
        pressed = []
        ignore = self._mask("Lock+Mod2")
        while self._display.pending_events():
            event = self._display.next_event()
            if event.type == self._X.KeyPress:
                name = self._bindings.get((event.detail, event.state & ~ignore))
                if name is not None:
                    pressed.append(name)
        return pressed

    def close(self) -> None:
        display, self._display = getattr(self, "_display", None), None
        if display is None:
            return
        try:
            self._root.ungrab_key(self._X.AnyKey, self._X.AnyModifier)
            display.close()
        except Exception:  # the server went away: nothing left to release
            pass


def expression_hotkeys(names) -> dict[str, str]:
    """{expression name: "Ctrl+Alt+N"} for the expressions in menu order (N = 1, 2, …)."""
    mods = "+".join(EXPRESSION_HOTKEY_MODIFIERS)
    return {name: f"{mods}+{i}" for i, name in enumerate(names, 1)}
