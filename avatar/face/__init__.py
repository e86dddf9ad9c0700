"""Face: photo -> landmarks -> animation rig -> frames (CPU/OpenCV or torch/CUDA), with mouth interior,
blinks and idle motion. Nothing here imports mediapipe, torch or Qt at module level."""
from avatar.face.landmarks import HANDLE_NAMES, NoFaceError, default_handles, detect_faces, fit_template
from avatar.face.liveliness import LivelinessConfig
from avatar.face.photo import PhotoError, load_photo
from avatar.face.render import create_renderer
from avatar.face.render_base import FrameRenderer, Renderer
from avatar.face.rig import Rig, build_rig
from avatar.face.preview import add_cli  # `avatar preview`

__all__ = ["build_rig", "create_renderer", "LivelinessConfig", "PhotoError", "NoFaceError",
           "Rig", "Renderer", "FrameRenderer", "load_photo", "detect_faces", "fit_template", "default_handles",
           "HANDLE_NAMES", "add_cli"]
