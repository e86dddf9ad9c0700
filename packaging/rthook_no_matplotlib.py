"""PyInstaller runtime hook: `import mediapipe` runs mediapipe's drawing helpers, which import matplotlib.pyplot at
module level, yet draw only when called, and the app never calls them. The bundle leaves matplotlib out, so a
placeholder takes its place; using it says plainly that matplotlib is not part of this bundle."""
import sys
import types


class _LeftOut(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(f"{self.__name__}.{name}: matplotlib is not part of the talking-avatar bundle")


if "matplotlib" not in sys.modules:
    sys.modules["matplotlib"] = _LeftOut("matplotlib")
    sys.modules["matplotlib"].pyplot = sys.modules["matplotlib.pyplot"] = _LeftOut("matplotlib.pyplot")
