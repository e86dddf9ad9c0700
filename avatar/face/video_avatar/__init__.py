"""The video avatar: a talking avatar made from a short video of a person (their own head motion, blinks, teeth and
lips), beside the photo avatar.

    video ─ source.py ─► track.py ─► build.py ─► NAME.avatar (fileformat.py) ─► renderer.py (FrameRenderer)
    (PyAV: upright,      (FaceMesh     (base loop,   (.npz arrays + JSON        (base loop frame for t; the mouth
     constant rate,       video mode,   mouth          metadata, versioned,       retrieved from the library,
     downscaled)          one person,   library)       no pickle)                 warped to the photo renderer's
                          no cuts)                                                target contour, composited)
"""
from __future__ import annotations

from avatar.face.photo import PhotoError

AVATAR_SUFFIX = ".avatar"


class VideoAvatarError(ValueError):
    """A video that cannot make an avatar, or an avatar file that cannot be read: a sentence a person can act on."""


class VideoInputError(VideoAvatarError):
    """The video cannot be used (unreadable, too short, cuts, several people)."""


class VideoNoFaceError(VideoInputError):
    """No face (or too little of one) in the video."""


class AvatarFileError(VideoAvatarError, PhotoError):
    """A file that is not a readable avatar (foreign, damaged, a newer format); a PhotoError, so every caller that
    opens a face (`avatar render --face`, the app, the benches) reports it as an unusable face."""


def is_avatar_path(path) -> bool:
    """True for a path that names an avatar file (by its suffix)."""
    return str(path).lower().endswith(AVATAR_SUFFIX)
