"""Renderer assembly: photo -> rig (landmarks found or hand-placed) -> renderer with liveliness and a background."""
from __future__ import annotations

from dataclasses import fields, replace

import cv2
import numpy as np

from avatar.face import LivelinessConfig, build_rig, create_renderer
from avatar.face.landmarks import pinned_solution, quiet_native_logs
from avatar.face.video_avatar import is_avatar_path
from avatar.face.video_avatar.renderer import open_video_avatar

# The matte for a background fill. The segmenter's mask fades over several pixels, and where it is grey the photo
# there is part background: mixed with the fill colour, a keyer (OBS's chroma key) removes the fill's share and
# leaves the photo's background as a light outline around hair, jaw and shoulders. So:
MATTE_RAMP = (0.35, 0.65)  # the mask is hardened through this ramp (0.5: the person's outline)...
MATTE_FEATHER_PX = 0.7  # ...then blurred this much (Gaussian sigma) so the outline stays anti-aliased
SURE_PERSON = 0.95  # mask values above this are the person's own colours
PERSON_COLOUR_REACH_PX = 14  # beyond the sure part, this far, the photo's colours are replaced by the person's
# extrapolated from inside: the matte's edge and the pixels the head's sway and a dropping jaw uncover inside the
# still matte show the person's colours, never the photo's background
EXTRAPOLATION_SIGMAS = (1.5, 3.0, 6.0, 12.0)  # normalized-convolution blurs, finest first, that carry them out
FINE_SIGMA = 1.5  # wider blurs run on the photo shrunk until they are this wide (a blur of 12 px costs as little)
MIN_SUPPORT = 0.02  # a blur's share of sure pixels below this is too thin to extrapolate from


def liveliness_config(switches: dict | None = None):
    """avatar.face.LivelinessConfig with the user's on/off switches applied (unknown names ignored)."""
    known = {f.name for f in fields(LivelinessConfig)}
    return LivelinessConfig(**{k: bool(v) for k, v in (switches or {}).items() if k in known})


def open_renderer(photo, size: int = 512, background: tuple[int, int, int] | None = None,
                  liveliness: dict | None = None, landmarks=None, device: str = "auto", face_index: int = 0):
    """The face renderer for a photo: rig (the face_index-th face found, largest first, or the hand-placed
    landmarks), liveliness, background.

    An avatar file (NAME.avatar, `avatar make-avatar`) opens the video avatar's renderer instead (its base loop is
    the video's own motion; the background from its stored mattes; no landmarks or face choice).

    Raises avatar.face.PhotoError / NoFaceError with a message for the user."""
    if is_avatar_path(photo):
        return open_video_avatar(photo, size=size, liveliness=liveliness, background=background)
    # one OpenCV thread: the app already runs audio, render and encoder threads on few cores, and a second
    # remap thread measured no faster on 2 cores while costing more CPU (1024²: best wall 6.8 -> 10.2 ms)
    cv2.setNumThreads(1)
    rig = build_rig(photo, canvas=size, face_index=face_index, landmarks=landmarks)
    mask = None
    if background is not None:
        mask = person_mask(rig.image)
        rig = replace(rig, image=person_colours(rig.image, mask))
    renderer = create_renderer(rig, device, liveliness_config(liveliness))
    if mask is not None:
        renderer = BackgroundFill(renderer, matte(mask), background)
    return renderer


def person_mask(image: np.ndarray) -> np.ndarray:
    """Soft (H, W, 1) float32 mask of the person in a photo (MediaPipe selfie segmentation, bundled model)."""
    import mediapipe as mp  # 1 s to import, and only a background fill needs it

    # the model from mediapipe's own folder, never from ./mediapipe/modules/... of the current folder
    segmenter = pinned_solution(mp.solutions.selfie_segmentation.SelfieSegmentation)
    with quiet_native_logs, segmenter(model_selection=0) as seg:  # one quiet window from building to closing
        mask = seg.process(np.ascontiguousarray(image)).segmentation_mask
    return np.clip(mask, 0.0, 1.0).astype(np.float32)[..., None]


def matte(mask: np.ndarray) -> np.ndarray:
    """The segmenter's soft (H, W, 1) mask hardened at the person's outline and lightly feathered (MATTE_RAMP)."""
    lo, hi = MATTE_RAMP
    s = np.clip((mask[..., 0] - lo) / (hi - lo), 0.0, 1.0)
    hard = s * s * (3 - 2 * s)
    return np.clip(cv2.GaussianBlur(hard, (0, 0), MATTE_FEATHER_PX), 0.0, 1.0).astype(np.float32)[..., None]


def person_colours(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The photo with its colours near and beyond the person's outline (PERSON_COLOUR_REACH_PX outside the sure
    part) replaced by the person's own, carried out from inside by normalized convolution (finest blur first)."""
    sure = (mask[..., 0] > SURE_PERSON).astype(np.uint8)
    if not sure.any():
        return image
    distance = cv2.distanceTransform(1 - sure, cv2.DIST_L2, 3)
    todo = (distance > 0) & (distance <= PERSON_COLOUR_REACH_PX)
    out = image.astype(np.float32)
    weight = sure.astype(np.float32)
    colours = out * weight[..., None]
    for sigma in EXTRAPOLATION_SIGMAS:
        support = _blur(weight, sigma)
        take = todo & (support > MIN_SUPPORT)
        if take.any():
            estimate = _blur(colours, sigma)[take] / support[take][:, None]
            out[take] = estimate
            todo &= ~take
    return np.ascontiguousarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """About a Gaussian blur of `sigma` pixels: computed on `a` shrunk so that it is FINE_SIGMA wide there."""
    shrink = max(int(sigma / FINE_SIGMA), 1)
    if shrink == 1:
        return cv2.GaussianBlur(a, (0, 0), sigma)
    h, w = a.shape[:2]
    small = cv2.resize(a, (max(w // shrink, 1), max(h // shrink, 1)), interpolation=cv2.INTER_AREA)
    return cv2.resize(cv2.GaussianBlur(small, (0, 0), sigma / shrink), (w, h), interpolation=cv2.INTER_LINEAR)


class BackgroundFill:
    """Wraps a renderer: everything outside the person becomes one colour (e.g. green for keying in OBS).
    mask: (H, W, 1) float32 in 0..1, the person (open_renderer passes the matte of its segmentation)."""

    def __init__(self, renderer, mask: np.ndarray, rgb: tuple[int, int, int]):
        self.renderer = renderer
        self.mask = mask
        self.fill = (1.0 - mask) * np.array(rgb, np.float32)

    def set_expression(self, name: str, ease: bool = True) -> None:  # see Renderer.set_expression
        self.renderer.set_expression(name, ease)

    def use_network(self, model_name: str) -> None:  # see Renderer.use_network
        self.renderer.use_network(model_name)

    @property
    def expression(self) -> str:
        return self.renderer.expression

    def render(self, params, t: float = 0.0) -> np.ndarray:  # params as the wrapped renderer takes them
        frame = self.renderer.render(params, t)
        return (frame * self.mask + self.fill + 0.5).astype(np.uint8)
