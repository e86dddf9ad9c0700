"""The synthesized mouth interior: a red-brown cavity graded by depth, teeth where the lips uncover them, gums,
a tongue.

The amounts and the light were calibrated with `avatar eval video` on the 11 GRID clips (the other clips' licence
lets nothing shipped be fitted to them): the inner-mouth colour on the 20 % most open real frames, CIELAB ΔE,
GRID mean 12.3 with the teeth as a band under the upper lip and darkened to 0.4-0.6 of the sclera, 9.4 with the
rows filling the opening, 6.7 with the rows meeting, evenly lit and fading only into the corners' shade (README,
"The mouth, the rest pose and blinks").

Colours come from the photo itself, once: the teeth from the photo's white reference (the sclera where the eye
sample is one, else a white inferred from the skin's light: white_reference; teeth are never bluer, greener or
brighter than it), the cavity, tongue and gums from the lips. How much of the teeth and tongue shows
follows the lips each frame (avatar.face.shapes.MouthPose). The per-frame math is written once over a tiny ops
table so the OpenCV and torch renderers share it.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from avatar.face import landmarks as lm

TOOTH_LENGTH = 0.15  # upper-incisor crown height that shows, in mouth widths W: a lip lifted beyond it shows gums
LOWER_TOOTH_LENGTH = 0.1  # lower incisors' (the lower lip keeps part of them covered); a wide "aa" shows the
# cavity and the tongue between the rows
UPPER_ROW_SHARE = 0.6  # of the teeth rows' share of an opening, the upper row's
TONGUE_MAX = 0.2  # the tongue shows at most this tall, in W
OCCLUSION_TOP = 0.85  # light reaching the interior just under the upper lip (1 = as lit as the opening's middle)
OCCLUSION_NARROW = 0.75  # and inside a barely open mouth
TEETH_OCCLUSION = 0.2  # the share of that occlusion the teeth feel (they stand in front, in the light). More of
# it darkens the narrow openings' teeth: 0.5 / 0.8 took bbaf2n 9.2 -> 8.1 / 7.5 and swiz3n 8.9 -> 9.2 / 10.0 (GRID
# mean 6.67 -> 6.68 / 6.76): a trade between the two, not kept
LOWER_TEETH_WARMTH = 0.12  # share of the lower teeth's colour that is the cavity's red light
TIP_UNCOVERS = 0.5  # a raised tongue tip shows below the upper teeth: they cover at most this much less
# Gaps between teeth, in mouth widths from the centre: the arch turns away, so teeth look narrower sideways.
UPPER_GAPS = (0.0, 0.155, 0.265, 0.35)
LOWER_GAPS = (0.0, 0.085, 0.165, 0.24)
GAP_WIDTH = 1.0  # the shadow's width, in tooth outline widths
GAP_DARK = 0.1  # the soft shadow between two teeth (0.3 drew a picket fence of dark lines GRID's real teeth do not
# show: the inner-mouth colour 1-2 ΔE darker; with the rows meeting (ROW_HEIGHT_KEEP) 0.1 no longer reads as lip)
ROW_HEIGHT_KEEP = 3.0  # the rows keep their full height along the arch until its last third (a teeth row seen
# from the front is as tall at the canines as at the incisors; the arch turns away only at its end): the row's
# height is min(1, this x the arch profile). With the bare profile the two rows drew apart toward the corners and
# a 2-3 px dark band ran between them (GRID, 512²: a fifth of a 15 px opening at L 15-25)
UPPER_TEETH_LIGHT = 1.0  # the upper teeth's brightness at the middle, as a share of the teeth colour
LOWER_TEETH_LIGHT = 1.0  # the lower teeth's: as lit as the upper ones (real GRID openings show the lower row as
# bright as the upper or brighter: the upper lip shades the upper row, not the lower; 0.9 read 0.5-1 L darker)
TEETH_CORNER_LIGHT = 0.35  # the front teeth are evenly lit; the last ones toward the corners fade into the
# cheeks' shade (the buccal corridor) to this share, from 0.6 to 1.0 of the slit's half length. Before, all teeth
# but the middle ones were lit 0.7 and the rows ended in a sharp edge beside black corners: GRID's rendered openings
# read 1-6 L darker than the real ones. Set with GAP_DARK, LOWER_TEETH_LIGHT and TEETH_WARMTH by a few sweeps on the
# 11 GRID clips (`avatar eval video`, inner-mouth ΔE mean 7.0 -> 6.7, README "Third pass")
TEETH_SHADE_FROM = 0.6  # where along the slit's half length that fade begins
TEETH_TIP_DARK = 0.2  # the upper teeth darken by this share toward their tips (further from the light under the lip)
CAVITY_SIDE_LIGHT = 0.55  # the cavity toward the corners darkens to this share (a Gaussian across the slit)
CAVITY_SIDE_SPAN = 0.7  # of this width, in the slit's half length
FULL_SATURATION_CHROMA = 18.0  # face chroma (mean |rgb - grey|) above which interior colours keep full saturation
TEETH_OF_SCLERA = 1.0  # teeth brightness relative to the sclera (in the mouth they are never lit better)
TEETH_WARMTH = (1.0, 0.85, 0.78)  # teeth are yellower and redder than the sclera (RGB factors; never bluer or
# greener): dentine shows through the enamel (GRID's real openings are 1-7 b yellower than (1, 0.93, 0.85) drew
# them), and in a talking mouth the teeth stand in the red light of the lips, gums and tongue: with green at 0.9 the
# rendered open interiors read a* 3.3 greener than the real ones on GRID (10 of 13 clips greener, kim and d20 too).
# 0.85: GRID inner-mouth ΔE 6.68 -> 6.43; 0.87 / 0.83 read 6.52 / 6.56 (README 2026-12-04, "redder teeth")
SCLERA_PALEST = 0.5  # the eye's white: of its pixels outside the iris, the palest half (lids, veins are redder)
SCLERA_BRIGHTEST = 0.4  # and of those the brightest 40% (lashes and shadow are darker)
MIN_SCLERA_PIXELS = 12
MIN_EYE_OPEN = 0.12  # an eye whose contour's area is under this x its width² is (nearly) closed: its inside is lids
# (GRID's first frames 0.20-0.30, kim looking down 0.16-0.18, a closed eye's contour 0.03-0.08)
# The white reference (the teeth's): the sclera where the eye sample is one. A sample as colourful for its lightness
# as the cheeks is skin (lids of an eye looking down or nearly closed, a reddened or tiny eye): Lab saturation C*/L*
# of the sample over the cheeks', each plus SATURATION_FLOOR (grey photos read 1, trusted). GRID's scleras 0.49-0.91
# of their cheeks (lbax4n, yellow light, the highest); lids measured as a sclera read 1.26-1.65 (kim, d20; 1.43 the
# reddened eye of the default face). From SKIN_LIKE[0] the sample gives way to a white inferred from the skin's
# light, wholly at SKIN_LIKE[1] (smoothstep between: no jump for photos near the edge).
SATURATION_FLOOR = 0.05
SKIN_LIKE = (1.0, 1.2)
# The white inferred from the skin (fitted on the 11 GRID first frames, their measured scleras): the face's light
# (its 95th-percentile L* inside the face oval, the skin's highlight) shaded as the eye socket shades the sclera,
# and the light's colour cast kept while the skin's own pigment is removed (cheek a*, b* scaled: the cast sits mostly
# on the yellow-blue axis, the pigment on the red one).
WHITE_L_OF_HIGHLIGHT = 0.75  # sclera L* / face L*95 on GRID: mean 0.748 (0.53-0.96)
WHITE_A_OF_SKIN = 0.35  # sclera a* / cheek a*, least squares on GRID (0.14-0.61 each)
WHITE_B_OF_SKIN = 0.61  # sclera b* / cheek b* (0.40-0.81 each)
# Interior colours as RGB factors of the photo's lip colour (at full colourfulness; greyer photos get greyer ones)
CAVITY_EDGE_OF_LIP = (0.8, 0.52, 0.4)  # the cavity near the lips: dark red-brown
CAVITY_DEEP_OF_LIP = (0.38, 0.2, 0.16)  # and in the depth
TONGUE_OF_LIP = (0.98, 0.8, 0.83)  # pink-red
GUMS_OF_LIP = (1.05, 0.82, 0.85)


@dataclass
class MouthAppearance:
    cavity_edge: np.ndarray  # (3,) float32 RGB 0..255
    cavity_deep: np.ndarray
    teeth: np.ndarray
    tongue: np.ndarray
    gums: np.ndarray
    white: np.ndarray  # the white reference the teeth are drawn from (teeth never bluer, greener or brighter)
    sclera: np.ndarray | None  # the eye white as sampled (None: too little of it shows)
    sclera_trust: float  # 1: the white is the sclera; 0: it is inferred from the skin (white_from_skin); between: mixed
    W: float  # mouth width, pixels
    a_in: float  # half the slit length, pixels


def _region_mask(shape, polygon):
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1)
    return mask.astype(bool)


def _lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (L* 0..100) of RGB 0..255 colours (..., 3)."""
    x = np.clip(np.asarray(rgb, np.float32).reshape(-1, 1, 3) / 255.0, 0, 1)
    return cv2.cvtColor(x, cv2.COLOR_RGB2LAB).reshape(np.shape(rgb))


def _rgb(lab: np.ndarray) -> np.ndarray:
    x = np.asarray(lab, np.float32).reshape(-1, 1, 3)
    return (np.clip(cv2.cvtColor(x, cv2.COLOR_LAB2RGB), 0, 1) * 255.0).reshape(np.shape(lab))


def measure_sclera(image: np.ndarray, points: np.ndarray) -> np.ndarray | None:
    """The photo's eye white (RGB float): the brightest pixels inside both eye contours, outside the irises and off
    the lid edges; None where too little of it shows (closed or tiny eyes)."""
    img = image.astype(np.float32)
    p = points[:, :2]
    found = []
    for upper, lower, iris in ((lm.RIGHT_EYE_UPPER, lm.RIGHT_EYE_LOWER, lm.RIGHT_IRIS),
                               (lm.LEFT_EYE_UPPER, lm.LEFT_EYE_LOWER, lm.LEFT_IRIS)):
        contour = _region_mask(image.shape, p[list(upper) + list(lower[::-1])])
        if contour.sum() < MIN_EYE_OPEN * np.ptp(p[list(upper), 0]) ** 2:
            continue  # a closed eye: its inside is the lids
        eye = cv2.erode(contour.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0  # off the lashes
        c = p[iris[0]]
        radius = np.mean([np.linalg.norm(p[i] - c) for i in iris[1:]])
        ys, xs = np.nonzero(eye)
        keep = np.hypot(xs - c[0], ys - c[1]) > 1.1 * radius
        found.append(img[ys[keep], xs[keep]])
    px = np.concatenate(found) if found else np.zeros((0, 3), np.float32)
    if len(px) < MIN_SCLERA_PIXELS:
        return None
    saturation = (px.max(1) - px.min(1)) / np.maximum(px.max(1), 1.0)
    pale = px[saturation <= np.quantile(saturation, SCLERA_PALEST)]
    luma = pale @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.median(pale[luma >= np.quantile(luma, 1 - SCLERA_BRIGHTEST)], axis=0)


def lab_saturation(rgb: np.ndarray) -> float:
    """C*/L* of an RGB colour: how colourful it is for its lightness."""
    L, a, b = _lab(rgb)
    return float(np.hypot(a, b) / max(float(L), 1.0))


def sclera_trust(sclera: np.ndarray | None, skin: np.ndarray) -> float:
    """How far the eye sample is an eye white (1) rather than skin (0): its saturation against the cheeks'."""
    if sclera is None:
        return 0.0
    ratio = (lab_saturation(sclera) + SATURATION_FLOOR) / (lab_saturation(skin) + SATURATION_FLOOR)
    s = float(np.clip((ratio - SKIN_LIKE[0]) / (SKIN_LIKE[1] - SKIN_LIKE[0]), 0, 1))
    return 1.0 - s * s * (3 - 2 * s)


def white_from_skin(skin: np.ndarray, highlight_l: float) -> np.ndarray:
    """A white lit as the face is (RGB float): the skin's highlight lightness shaded as a sclera, the light's cast
    without the skin's pigment (constants above)."""
    _, a, b = _lab(skin)
    return _rgb(np.array([WHITE_L_OF_HIGHLIGHT * highlight_l, WHITE_A_OF_SKIN * a, WHITE_B_OF_SKIN * b]))


def white_reference(image: np.ndarray, points: np.ndarray, skin: np.ndarray, face_px: np.ndarray):
    """(white, sclera, trust): the teeth's white reference, the eye sample it came from and how far it did."""
    sclera = measure_sclera(image, points)
    trust = sclera_trust(sclera, skin)
    white = white_from_skin(skin, float(np.percentile(_lab(face_px)[:, 0], 95))) if trust < 1 else sclera
    if 0 < trust < 1:
        white = trust * sclera + (1 - trust) * white
    return np.asarray(white, np.float32), sclera, trust


def measure_appearance(image: np.ndarray, g) -> MouthAppearance:
    p = g.points[:, :2]
    img = image.astype(np.float32)
    outer = _region_mask(image.shape, p[list(lm.LIP_OUTER)])
    inner = _region_mask(image.shape, p[list(lm.LIP_INNER)])
    lips = outer & ~inner
    lip = np.median(img[lips], axis=0) if lips.sum() > 8 else np.array([150.0, 90, 90])
    patches = []
    for idx in (50, 280, 101, 330):  # cheeks below the eyes
        x, y = np.round(p[idx]).astype(int)
        r = max(2, int(0.06 * g.face_w))
        patch = img[max(y - r, 0):y + r, max(x - r, 0):x + r].reshape(-1, 3)
        if len(patch):
            patches.append(patch)
    skin = np.median(np.concatenate(patches), axis=0) if patches else np.array([190.0, 150, 130])
    face = _region_mask(image.shape, p[list(lm.FACE_OVAL)])
    fpx = img[face] if face.sum() > 16 else img.reshape(-1, 3)
    chroma = float(np.abs(fpx - fpx.mean(1, keepdims=True)).mean())
    saturation = float(np.clip(chroma / FULL_SATURATION_CHROMA, 0, 1))
    white, sclera, trust = white_reference(image, g.points, skin, fpx)
    # the teeth: the white's own colour, a little warmer and darker (factors <= 1: never bluer, greener, brighter)
    teeth = white * TEETH_OF_SCLERA * np.array(TEETH_WARMTH)

    def of_lip(factors):  # a colour from the lips', its tint scaled by how colourful the photo is
        f = 1 + saturation * (np.array(factors) - np.mean(factors))
        return np.clip(lip * np.mean(factors) * f, 0, 255).astype(np.float32)

    return MouthAppearance(of_lip(CAVITY_EDGE_OF_LIP), of_lip(CAVITY_DEEP_OF_LIP), teeth.astype(np.float32),
                           of_lip(TONGUE_OF_LIP), of_lip(GUMS_OF_LIP), white,
                           None if sclera is None else sclera.astype(np.float32), trust, float(g.W), float(g.a_in))


@dataclass
class MouthStatics:
    """Per-pixel arrays of the mouth box that never change (they depend on the lateral position only)."""

    rows: np.ndarray  # (h, 1) row index within the box
    upper_h: np.ndarray  # (h, w) 0..1 lateral profile of the upper teeth's visible height (notched between teeth)
    lower_h: np.ndarray
    tongue_w: np.ndarray  # 0..1 tongue lateral profile
    upper_shade: np.ndarray  # teeth brightness incl. gaps between teeth and the darker sides
    lower_shade: np.ndarray
    side_dark: np.ndarray  # cavity darkening toward the corners


def mouth_statics(u: np.ndarray, app: MouthAppearance) -> MouthStatics:
    W, a = app.W, app.a_in
    prof_u = np.clip(1 - (u / (0.95 * a)) ** 2, 0, 1)
    prof_l = np.clip(1 - (u / (0.8 * a)) ** 2, 0, 1)
    corner = np.clip((np.abs(u) - TEETH_SHADE_FROM * a) / ((1 - TEETH_SHADE_FROM) * a), 0, 1)
    lat = 1 - (1 - TEETH_CORNER_LIGHT) * corner * corner * (3 - 2 * corner)  # smoothstep into the corners' shade
    line_w = 0.012 * W + 0.6

    def gaps(positions, widen=1.0):
        s = np.zeros_like(u)
        for k in positions:
            for sign in ((1,) if k == 0 else (1, -1)):
                s = s + np.exp(-((u - sign * k * W) / (widen * line_w)) ** 2)
        return np.clip(s, 0, 1)

    height_u = np.minimum(ROW_HEIGHT_KEEP * np.sqrt(prof_u), 1.0)
    height_l = np.minimum(ROW_HEIGHT_KEEP * np.sqrt(prof_l), 1.0)
    return MouthStatics(
        rows=np.arange(u.shape[0], dtype=np.float32)[:, None],
        # incisal edges notch a little between teeth (embrasures), so teeth read as separate teeth
        upper_h=(height_u * (1 - 0.12 * gaps(UPPER_GAPS, 2.5))).astype(np.float32),
        lower_h=(height_l * (1 - 0.12 * gaps(LOWER_GAPS, 2.5))).astype(np.float32),
        tongue_w=np.sqrt(np.clip(1 - (u / (0.85 * a)) ** 2, 0, 1)).astype(np.float32),
        upper_shade=(UPPER_TEETH_LIGHT * lat * (1 - GAP_DARK * gaps(UPPER_GAPS, GAP_WIDTH)) * np.minimum(prof_u * 5, 1)
                     ).astype(np.float32),
        lower_shade=(LOWER_TEETH_LIGHT * lat * (1 - GAP_DARK * gaps(LOWER_GAPS, GAP_WIDTH)) * np.minimum(prof_l * 5, 1)
                     ).astype(np.float32),
        side_dark=(CAVITY_SIDE_LIGHT + (1 - CAVITY_SIDE_LIGHT) * np.exp(-(u / (CAVITY_SIDE_SPAN * a)) ** 2)
                   ).astype(np.float32),
    )


try:  # the clip ufunc itself: np.clip's wrapper costs more than small arrays do
    from numpy._core.umath import clip as _clip_ufunc  # numpy >= 1.26 (np.core warns from numpy 2 on)
except ImportError:
    from numpy.core.umath import clip as _clip_ufunc


class NumpyOps:
    clip = staticmethod(_clip_ufunc)
    minimum = staticmethod(np.minimum)
    maximum = staticmethod(np.maximum)
    where = staticmethod(np.where)

    @staticmethod
    def colsum(x):
        return x.sum(axis=0, keepdims=True)

    @staticmethod
    def smooth01(x):  # smoothstep(0, 1, x)
        s = _clip_ufunc(x, 0.0, 1.0)
        return s * s * (3 - 2 * s)

    @staticmethod
    def mix(scale, weights, colors):
        """scale * sum_k weights[k] * colors[k] as (h, w, 3), one colour plane at a time: broadcasting (h, w, 1)
        against (3,) would run numpy's inner loop three elements at a time."""
        out = np.empty(scale.shape + (3,), np.float32)
        for c in range(3):
            plane = weights[0] * colors[0][c]
            for w, col in zip(weights[1:], colors[1:]):
                plane += w * col[c]
            np.multiply(plane, scale, out=out[..., c])
        return out


def interior(ops, alpha, st: MouthStatics, app: MouthAppearance, colors, pose):
    """RGB (h, w, 3) float of the mouth interior for a gap coverage `alpha` (h, w); colors: the 5 (3,) arrays
    (cavity edge, cavity deep, teeth, tongue, gums); pose: avatar.face.shapes.MouthPose (how much shows)."""
    cav_edge, cav_deep, teeth, tongue, gums = colors
    W = app.W
    rows = st.rows
    # per column (1, w): the opening's length and centre
    length = ops.colsum(alpha)
    center = ops.colsum(alpha * rows) / (length + 1e-6)
    d_top = rows - (center - length / 2)  # distance below the opening's top edge
    d_bot = (center + length / 2) - rows  # and above its bottom edge
    upper_px, lower_px = max(pose.upper_show * W, 0.0), max(pose.lower_show * W, 0.0)
    # parted lips show the teeth rows behind them: the rows fill pose.teeth_fill of each column's opening (upper
    # row UPPER_ROW_SHARE of that), and at least what the lips' own lift and drop uncover; a crown's length at most
    fill = pose.teeth_fill * length
    crown_u, crown_l = TOOTH_LENGTH * W, LOWER_TOOTH_LENGTH * W
    upper_fill = ops.minimum(fill * UPPER_ROW_SHARE, crown_u)
    lower_fill = ops.minimum(fill * (1.0 - UPPER_ROW_SHARE), crown_l)
    # upper teeth hang from the gums: a lip lifted beyond their crown shows gums above them
    upper_col = ops.maximum(upper_fill, upper_px)
    if pose.tongue_tip > 0:  # the teeth leave room below them for a raised tongue tip
        upper_col = ops.minimum(upper_col, (1.0 - TIP_UNCOVERS * pose.tongue_tip) * length)
    upper_h = st.upper_h * upper_col
    cu = ops.clip(upper_h - d_top + 0.5, 0.0, 1.0)
    gum_px = max(upper_px - crown_u, 0.0)
    cg = ops.clip(st.upper_h * gum_px - d_top + 0.5, 0.0, 1.0) if gum_px > 0 else 0.0
    lower_col = ops.maximum(lower_fill, min(lower_px, crown_l))
    lower_h = st.lower_h * lower_col
    cl = ops.clip(lower_h - d_bot + 0.5, 0.0, 1.0)
    # the tongue lies behind the lower teeth and rises into the gap between the rows
    gap = ops.maximum(length - upper_col - lower_col, 0.0)
    tongue_h = (ops.minimum(pose.tongue_share * gap, TONGUE_MAX * W) + lower_h) * st.tongue_w
    into_tongue = tongue_h - d_bot
    ct = ops.clip(into_tongue + 0.5, 0.0, 1.0) * st.tongue_w
    vis_gum = cg
    vis_up = cu - cg
    not_up = 1 - cu
    vis_lo = cl * (1 - pose.tongue_tip * ct) * not_up  # a raised tip is in front of the lower teeth
    vis_tg = ct * (not_up - vis_lo)
    vis_cav = not_up - vis_lo - vis_tg
    # light falls in through the opening: darker under the upper lip, in the depth and when barely open
    occl = (OCCLUSION_TOP + (1 - OCCLUSION_TOP) * ops.smooth01(d_top / (0.07 * W + 1))) * (
        0.85 + 0.15 * ops.smooth01(d_bot / (0.04 * W + 1)))
    occl = occl * (OCCLUSION_NARROW + (1 - OCCLUSION_NARROW) * ops.smooth01(length / (0.15 * W)))
    deep = ops.smooth01(ops.minimum(d_top, d_bot) / (0.1 * W + 1)) * st.side_dark
    deep_w = vis_cav * deep
    edge_w = (vis_cav - deep_w) * st.side_dark
    # teeth darken toward their tips (further from the light under the lip) and toward the corners (shade)
    tips = ops.smooth01((d_top - 0.75 * upper_px) / (0.25 * upper_px + 1))
    teeth_w = vis_up * st.upper_shade * (1 - TEETH_TIP_DARK * tips)
    lower_w = vis_lo * st.lower_shade  # the lower teeth (part of their light is the cavity's red: below)
    tongue_w = vis_tg * (0.55 + 0.45 * ops.smooth01(into_tongue / (tongue_h + 1)))
    gum_w = vis_gum * st.upper_shade
    lit = ((1 - TEETH_OCCLUSION) + TEETH_OCCLUSION * occl) / (occl + 1e-3)  # teeth catch more light than the cavity
    # the lower teeth stand in the mouth's red light: part of their colour is the cavity's
    return ops.mix(occl, (edge_w + LOWER_TEETH_WARMTH * lower_w, deep_w, teeth_w * lit,
                          (1 - LOWER_TEETH_WARMTH) * lower_w * lit, tongue_w, gum_w * lit),
                   (cav_edge, cav_deep, teeth, teeth, tongue, gums))


def gap_coverage(ops, line_t_out, line_t_src):
    """Fraction of each output pixel showing the mouth interior: its photo source lies across the lips' line.

    line_t_out: signed distance of the output pixel below the line (which branch it belongs to);
    line_t_src: the same distance of the photo point it samples. Anti-aliased over one pixel.
    """
    a = ops.clip(abs(line_t_out), 0.0, 0.5)  # |t_out| capped at half a pixel
    across = ops.where(line_t_out > 0, -line_t_src, line_t_src)  # how far the source lies on the other side
    return ops.clip(ops.minimum(across, 0.5) + a, 0.0, 1.0)
