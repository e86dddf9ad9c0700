"""Renderer assembly: photo -> rig (landmarks found or hand-placed) -> renderer with liveliness and a background."""
from __future__ import annotations

from dataclasses import fields

import cv2
import numpy as np

from avatar.face import LivelinessConfig, build_rig, create_renderer
from avatar.face.landmarks import pinned_solution, quiet_native_logs


def liveliness_config(switches: dict | None = None):
    """avatar.face.LivelinessConfig with the user's on/off switches applied (unknown names ignored)."""
    known = {f.name for f in fields(LivelinessConfig)}
    return LivelinessConfig(**{k: bool(v) for k, v in (switches or {}).items() if k in known})


def open_renderer(photo, size: int = 512, background: tuple[int, int, int] | None = None,
                  liveliness: dict | None = None, landmarks=None, device: str = "auto", face_index: int = 0):
    """The face renderer for a photo: rig (the face_index-th face found, largest first, or the hand-placed
    landmarks), liveliness, background.

    Raises avatar.face.PhotoError / NoFaceError with a message for the user."""
    # one OpenCV thread: the app already runs audio, render and encoder threads on few cores, and a second
    # remap thread measured no faster on 2 cores while costing more CPU (1024²: best wall 6.8 -> 10.2 ms)
    cv2.setNumThreads(1)
    rig = build_rig(photo, canvas=size, face_index=face_index, landmarks=landmarks)
    renderer = create_renderer(rig, device, liveliness_config(liveliness))
    if background is not None:
        renderer = BackgroundFill(renderer, person_mask(rig.image), background)
    return renderer


def person_mask(image: np.ndarray) -> np.ndarray:
    """Soft (H, W, 1) float32 mask of the person in a photo (MediaPipe selfie segmentation, bundled model)."""
    import mediapipe as mp  # 1 s to import, and only a background fill needs it

    # the model from mediapipe's own folder, never from ./mediapipe/modules/... of the current folder
    segmenter = pinned_solution(mp.solutions.selfie_segmentation.SelfieSegmentation)
    with quiet_native_logs, segmenter(model_selection=0) as seg:  # one quiet window from building to closing
        mask = seg.process(np.ascontiguousarray(image)).segmentation_mask
    return np.clip(mask, 0.0, 1.0).astype(np.float32)[..., None]


class BackgroundFill:
    """Wraps a renderer: everything outside the person becomes one colour (e.g. green for keying in OBS)."""

    def __init__(self, renderer, mask: np.ndarray, rgb: tuple[int, int, int]):
        self.renderer = renderer
        self.mask = mask
        self.fill = (1.0 - mask) * np.array(rgb, np.float32)

    def render(self, params, t: float = 0.0) -> np.ndarray:  # params as the wrapped renderer takes them
        frame = self.renderer.render(params, t)
        return (frame * self.mask + self.fill + 0.5).astype(np.uint8)
