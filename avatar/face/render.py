"""Frame rendering: parameters -> field weights -> one warp per pass -> mouth interior -> RGB frame.

`create_renderer` returns the OpenCV renderer (CpuRenderer, here) or the torch one (TorchRenderer, CUDA or CPU,
in avatar.face.render_torch); both build on avatar.face.render_base (the Renderer base, the frame plan, the field
weights), follow the same steps on the same rig and agree within a few grey levels.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from avatar.face.liveliness import LivelinessConfig
from avatar.face.mouth import NumpyOps, gap_coverage, interior
from avatar.face.render_base import SIDEWAYS, SMOOTH, FramePlan, Renderer, stack_statics, unstack_statics
from avatar.face.rig import HEAD_FIELDS, SUPPORT_EPS, Rig

MIN_COVERAGE = 1.0 / 512  # below this the lips are closed: no interior to draw
STRIP_PIXELS = 32  # the CPU warp runs in strips about this tall, each as wide as the active fields reach there
NO_SPAN = 1 << 20  # a row's span (NO_SPAN, -NO_SPAN): no field reaches it


def _weighted_sum(weights: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """weights @ matrix over the non-zero weights only, without BLAS (whose thread pool stalls on busy CPUs)."""
    out = np.zeros(matrix.shape[1], np.float32)
    for k in np.nonzero(weights)[0]:
        out += weights[k] * matrix[k]
    return out


def _upsample_part(coarse: np.ndarray, step: int, ya: int, yb: int, xa: int, xb: int) -> np.ndarray:
    """Rows ya..yb, columns xa..xb of cv2.resize(coarse, step x), resizing only the coarse cells they need."""
    k0, k1 = _cells_for(ya, yb, step, coarse.shape[0])
    j0, j1 = _cells_for(xa, xb, step, coarse.shape[1])
    part = coarse[k0:k1, j0:j1]
    full = cv2.resize(part, (part.shape[1] * step, part.shape[0] * step), interpolation=cv2.INTER_LINEAR)
    return full[ya - k0 * step:yb - k0 * step, xa - j0 * step:xb - j0 * step]


def _cells_for(a: int, b: int, step: int, n: int) -> tuple[int, int]:
    """Coarse cells whose upsampling gives pixels a..b exactly: one spare cell each side, so that resize's edge
    clamping stays out of the pixels kept."""
    return max(math.floor((a + 0.5) / step - 0.5) - 1, 0), min(math.floor((b - 0.5) / step - 0.5) + 3, n)



class CpuRenderer(Renderer):
    """The OpenCV renderer. Per frame it touches full-resolution pixels only where they can change: each branch's
    map is upsampled only over its own rows, and the photo is remapped straight into a copy of itself, in strips
    only as wide as the active fields reach (through RGBA, which OpenCV's remap vectorises better than RGB)."""

    name = "cpu"

    def __init__(self, rig: Rig, liveliness: LivelinessConfig | None = None):
        super().__init__(rig, liveliness)
        h, w = rig.image.shape[:2]
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        self._base = np.ascontiguousarray(np.dstack([xs, ys]))  # pixel coordinates of the canvas
        step = rig.step
        cy, cx = np.mgrid[-1:-(-h // step) + 1, -1:-(-w // step) + 1].astype(np.float32)
        self._cell_grid = np.ascontiguousarray(np.dstack([cx, cy]))  # cell coordinates, from cell -1 on
        self._cell_pos = (self._cell_grid + 0.5) * step - 0.5  # where cv2.resize puts each cell's sample
        self._head_matrix = rig.head_fields.reshape(len(HEAD_FIELDS), -1)
        lb = rig.local_box
        # each local field's support in local-box cells: blending adds a field only there
        self._field_boxes = [(max(r0 - lb.r0, 0), max(r1 - lb.r0, 0), max(c0 - lb.c0, 0), max(c1 - lb.c0, 0))
                             for r0, r1, c0, c1 in self._field_cells]
        self._local_cells = self._cell_grid - np.array([lb.c0, lb.r0], np.float32)  # cell coordinates in the box
        # the lips' line distance over the whole canvas (edges replicated), read at canvas coordinates directly:
        # subtracting an origin from (h, w, 2) coordinates would broadcast two elements at a time
        self._line_t = cv2.copyMakeBorder(rig.line_t, lb.y0, h - lb.y1, lb.x0, w - lb.x1, cv2.BORDER_REPLICATE)
        self._mouth_origin = (float(rig.mouth_box[0]), float(rig.mouth_box[1]), 0.0, 0.0)  # a cv2 scalar
        self._statics_image = stack_statics(self.statics)
        self._image_rgba = cv2.cvtColor(rig.image, cv2.COLOR_RGB2RGBA)
        self._source = rig.image.copy()  # the photo with each eye at its current closure (see _eye_changes)
        # per canvas cell row, the cell columns each field reaches (padded by one cell)
        n_rows = -(-h // step)
        mags = np.abs(rig.local_fields).max(axis=(1, 4))
        self._field_spans = [_row_spans(m > SUPPORT_EPS, lb.r0, lb.c0, n_rows) for m in mags]
        hb = rig.head_box
        self._head_spans = _row_spans(np.abs(rig.head_fields).max(axis=(0, 3)) > SUPPORT_EPS, hb.r0, hb.c0, n_rows)
        mr0, mr1, mc0, mc1 = self._mouth_cells
        self._mouth_spans = _row_spans(np.ones((mr1 - mr0, mc1 - mc0), bool), mr0, mc0, n_rows, pad=0)
        self._strip_cells = max(STRIP_PIXELS // step, 1)

    def _blend(self, weights: np.ndarray, branches: int, box=None) -> np.ndarray:
        """sum_k weights[k] * local field k, (branches, rows, cols, 2) over the local box's cells `box` (r0, r1,
        c0, c1; default all), each field added over its support only."""
        fields = self.rig.local_fields
        r0, r1, c0, c1 = box or (0, fields.shape[2], 0, fields.shape[3])
        out = np.zeros((branches, r1 - r0, c1 - c0, 2), np.float32)
        for k in np.nonzero(weights)[0]:
            fr0, fr1, fc0, fc1 = self._field_boxes[k]
            a0, a1, b0, b1 = max(fr0, r0), min(fr1, r1), max(fc0, c0), min(fc1, c1)
            if a1 > a0 and b1 > b0:
                out[:, a0 - r0:a1 - r0, b0 - c0:b1 - c0] += weights[k] * fields[k, :branches, a0:a1, b0:b1]
        return out

    def _blend_local(self, local: np.ndarray, branches: int) -> np.ndarray:
        """Coarse backward field per branch: sideways fields composed after the others (see SIDEWAYS_FIELDS)."""
        other = local.copy()
        other[SIDEWAYS] = 0
        blend = self._blend(other, branches)
        side = np.zeros_like(local)
        side[SIDEWAYS] = local[SIDEWAYS]
        if not np.any(side):
            return blend
        # composing changes the blend only where the sideways fields move it
        boxes = [self._field_boxes[k] for k in SIDEWAYS if side[k]]
        r0, r1 = min(b[0] for b in boxes), max(b[1] for b in boxes)
        c0, c1 = min(b[2] for b in boxes), max(b[3] for b in boxes)
        sblend = self._blend(side, branches, (r0, r1, c0, c1))
        grid = self._cell_grid[1 + r0:1 + r1, 1 + c0:1 + c1]  # local cell indices of that box
        for b in range(branches):
            s = sblend[b]
            moved = cv2.remap(blend[b], grid + s * (1.0 / self.rig.step), None, cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
            blend[b, r0:r1, c0:c1] = s + moved
        return blend

    def _strips(self, local: np.ndarray, plan: FramePlan, shift: int) -> list[tuple[int, int, int, int]]:
        """Region-relative pixel boxes (y0, y1, x0, x1), one per strip, covering every pixel an active field can
        move; `shift` cells of margin for the head carrying the local fields along."""
        spans = [self._field_spans[k] for k in np.nonzero(local)[0]]
        spans += [self._mouth_spans] if plan.tearing else []
        spans += [self._head_spans] if plan.head_on else []
        r0, r1, c0, c1 = plan.cells
        a = max(r0 - shift, 0)  # the head carries the fields up to `shift` cells: widen the spans that much
        lo = np.minimum.reduce([s[0][a:r1 + shift] for s in spans])
        hi = np.maximum.reduce([s[1][a:r1 + shift] for s in spans])
        lo_rows, hi_rows = lo.copy(), hi.copy()
        for k in range(1, shift + 1):  # and each row's span to its neighbours `shift` rows up and down
            lo[k:], lo[:-k] = np.minimum(lo[k:], lo_rows[:-k]), np.minimum(lo[:-k], lo_rows[k:])
            hi[k:], hi[:-k] = np.maximum(hi[k:], hi_rows[:-k]), np.maximum(hi[:-k], hi_rows[k:])
        lo, hi = lo - shift, hi + shift
        starts = np.arange(r0, r1, self._strip_cells)
        lo = np.maximum(np.minimum.reduceat(lo, starts - a), c0).tolist()
        hi = np.minimum(np.maximum.reduceat(hi, starts - a), c1).tolist()
        y0, y1, x0, x1 = plan.region
        step, n = self.rig.step, self._strip_cells
        return [(r * step - y0, min((r + n) * step, y1) - y0, left * step - x0, min(right * step, x1) - x0)
                for r, left, right in zip(starts.tolist(), lo, hi) if right > left]

    def _warp(self, frame: np.ndarray, maps: np.ndarray, row0: int, rows: tuple[int, int], boxes, origin) -> None:
        """Remap the photo into the frame inside each box, on region rows rows[0]..rows[1]; maps[y - row0, x] is
        the map at region pixel (y, x); origin: the region's (y0, x0) in the frame."""
        for ya, yb, xa, xb in boxes:
            ya, yb = max(ya, rows[0]), min(yb, rows[1])
            if yb <= ya or xb <= xa:
                continue
            m = maps[ya - row0:yb - row0, xa:xb]
            rgba = cv2.remap(self._image_rgba, m, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            y, x = origin[0] + ya, origin[1] + xa
            cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB, dst=frame[y:y + yb - ya, x:x + xb - xa])

    def render_weights(self, local: np.ndarray, head: np.ndarray, eyes: np.ndarray | None = None,
                       sound: np.ndarray | None = None) -> np.ndarray:
        rig = self.rig
        local, head = np.asarray(local, np.float32), np.asarray(head, np.float32)
        for _, (ex0, ey0, ex1, ey1), patch in self._eye_changes(eyes):
            self._source[ey0:ey1, ex0:ex1] = patch
            cv2.cvtColor(patch, cv2.COLOR_RGB2RGBA, dst=self._image_rgba[ey0:ey1, ex0:ex1])
        plan = self.plan(local, head, sound)
        if plan is None:
            return self._source.copy()
        step = rig.step
        r0, r1, c0, c1 = plan.cells
        y0, y1, x0, x1 = plan.region
        h, w = y1 - y0, x1 - x0
        frame = self._source.copy()  # one memcpy: cheaper than copying only around the warped strips
        # coarse work on the region plus one cell all round, so that upsampling is exact up to the region's edge
        cells = (slice(r0, r1 + 2), slice(c0, c1 + 2))  # self._cell_grid starts one cell before the canvas
        head_c = np.zeros((r1 - r0 + 2, c1 - c0 + 2, 2), np.float32)
        if plan.head_on:
            hb = rig.head_box
            hc = _weighted_sum(head, self._head_matrix).reshape(hb.r1 - hb.r0, hb.c1 - hb.c0, 2)
            head_c[hb.r0 - r0 + 1:hb.r1 - r0 + 1, hb.c0 - c0 + 1:hb.c1 - c0 + 1] = hc
        branches = 2 if plan.tearing else 1
        total = head_c + self._cell_pos[cells]  # absolute photo coordinates, coarse
        total = [total, total.copy()] if branches == 2 else [total]
        shift = int(np.ceil(np.abs(head_c).max() / step)) if plan.head_on else 0  # cells the head moves things
        if np.any(local):
            self._add_local(total, local, head_c, plan.cells, shift)
        boxes = self._strips(local, plan, shift)
        if not plan.tearing:
            maps = _upsample_part(total[0], step, step, step + h, step, step + w)
            self._warp(frame, maps, 0, (0, h), boxes, (y0, x0))
            return frame
        carry_c = head_c  # where each pixel's side of the lips' line is read: q + H(q), plus the smooth fields'
        if plan.carried:
            carry_c = head_c.copy()
            self._add_local([carry_c], np.where(SMOOTH, local, 0).astype(np.float32), head_c, plan.cells, shift)
        self._render_torn(frame, total, carry_c, plan, boxes)
        return frame

    def _add_local(self, total, local, head_c, cells, shift: int) -> None:
        """total[b] += L_b(q + H(q)) on the coarse grid, only over the cells the active local fields reach."""
        r0, r1, c0, c1 = cells
        local_c = self._blend_local(local, len(total))
        boxes = [self._field_cells[k] for k in np.nonzero(local)[0]]
        # total's index i is canvas cell r0 - 1 + i (one cell of margin all round)
        a0 = max(min(b[0] for b in boxes) - shift - r0 + 1, 0)
        a1 = min(max(b[1] for b in boxes) + shift - r0 + 1, r1 - r0 + 2)
        b0 = max(min(b[2] for b in boxes) - shift - c0 + 1, 0)
        b1 = min(max(b[3] for b in boxes) + shift - c0 + 1, c1 - c0 + 2)
        if a1 <= a0 or b1 <= b0:
            return
        coords = self._local_cells[r0 + a0:r0 + a1, c0 + b0:c0 + b1] + head_c[a0:a1, b0:b1] * (1.0 / self.rig.step)
        for t, field in zip(total, local_c):
            t[a0:a1, b0:b1] += cv2.remap(field, coords, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                         borderValue=0)

    def _render_torn(self, frame, total, carry_c, plan: FramePlan, boxes) -> None:
        """Warp with two branches: the upper one above the band, the lower one below it, chosen per pixel inside
        the band by the side of the lips' line; then draw the mouth interior where the lips parted. carry_c: the
        coarse field that carries output pixels to the photo before the lips part (the head's, the smooth
        fields')."""
        step = self.rig.step
        y0, y1, x0, x1 = plan.region
        h, w = y1 - y0, x1 - x0
        b0, b1 = plan.band
        my0, my1, mx0, mx1 = plan.mouth

        def part(coarse, ya, yb, xa=0, xb=w):  # region pixels ya..yb, xa..xb of an upsampled coarse grid
            return _upsample_part(coarse, step, step + ya, step + yb, step + xa, step + xb)

        upper = part(total[0], 0, b1)  # the rows that take the upper branch or may: above the band and the band
        lower = part(total[1], b0, h)  # the band and below
        base = self._base[y0:y1, x0:x1]
        carried = plan.head_on or plan.carried
        where = base[b0:b1] if not carried else base[b0:b1] + part(carry_c, b0, b1)  # q + H(q)
        t_eff = cv2.remap(self._line_t, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        cv2.copyTo(lower[:b1 - b0], (t_eff > 0).view(np.uint8), upper[b0:b1])  # pixels below the line
        self._warp(frame, upper, 0, (0, b1), boxes, (y0, x0))  # above the band and the band: the merged map
        self._warp(frame, lower, b0, (b1, h), boxes, (y0, x0))
        if my1 <= my0 or mx1 <= mx0:
            return
        # how far apart the two branches pull each mouth pixel: the lips part only where they differ
        gap = cv2.absdiff(part(total[1], my0, my1, mx0, mx1), part(total[0], my0, my1, mx0, mx1))
        split = gap[..., 0] + gap[..., 1]
        split_row = min(max(b1, my0), my1)  # mouth rows above it read the (merged) upper map, the rest the lower
        maps = np.concatenate([upper[my0:split_row, mx0:mx1],
                               lower[split_row - b0:my1 - b0, mx0:mx1]])  # the mouth box's map
        local_pos = base[my0:my1, mx0:mx1]  # each output pixel's place before the head moved
        if carried:
            local_pos = local_pos + part(carry_c, my0, my1, mx0, mx1)
        self._draw_mouth(frame[y0 + my0:y0 + my1, x0 + mx0:x0 + mx1], maps, local_pos, split)

    def _draw_mouth(self, out, maps, local_pos, split):
        """Blend the mouth interior into `out`, the frame's view of the mouth box."""
        t_out = cv2.remap(self._line_t, local_pos, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        t_src = cv2.remap(self._line_t, maps, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        alpha = gap_coverage(NumpyOps, t_out, t_src) * np.minimum(split, 1.0) * self._slit_mask(NumpyOps, local_pos)
        rows = np.nonzero(alpha.max(1) > MIN_COVERAGE)[0]
        if len(rows) == 0:
            return
        cols = np.nonzero(alpha.max(0) > MIN_COVERAGE)[0]
        gr, gc = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)  # the opening's box
        a = alpha[gr, gc]
        st_img = cv2.remap(self._statics_image, cv2.subtract(local_pos[gr, gc], self._mouth_origin), None,
                           cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        st = unstack_statics(st_img, np.arange(gr.start, gr.stop, dtype=np.float32)[:, None])
        rgb = interior(NumpyOps, a, st, self.rig.appearance, self.colors, self._pose)
        blend = cv2.blendLinear(out[gr, gc].astype(np.float32), rgb, 1 - a, a)  # per-pixel alpha, any channels
        out[gr, gc] = cv2.convertScaleAbs(blend)  # rounded, saturated to uint8


def _row_spans(mask: np.ndarray, row0: int, col0: int, n_rows: int, pad: int = 1):
    """(first, one-past-last) canvas cell column per canvas cell row within `pad` cells of a true cell of the
    coarse mask whose first cell is (row0, col0), clipped to the mask as the plan's boxes are; rows it misses get
    (NO_SPAN, -NO_SPAN). One cell of padding suffices: an upsampled pixel reads only its cell's neighbours."""
    if pad:
        mask = cv2.dilate(mask.astype(np.uint8), np.ones((2 * pad + 1, 2 * pad + 1), np.uint8)) > 0
    lo, hi = np.full(n_rows, NO_SPAN), np.full(n_rows, -NO_SPAN)
    rows = np.nonzero(mask.any(1))[0]
    lo[row0 + rows] = col0 + mask[rows].argmax(1)
    hi[row0 + rows] = col0 + mask.shape[1] - mask[rows, ::-1].argmax(1)
    return lo, hi


def create_renderer(rig: Rig, device: str = "auto", liveliness: LivelinessConfig | None = None) -> Renderer:
    """device: "cpu" (OpenCV), "cuda" (torch on the GPU), "torch-cpu" (the torch renderer on CPU tensors) or
    "auto" (the OpenCV renderer). liveliness: None = the default idle motion; LivelinessConfig(enabled=False) for a
    face that moves only as commanded."""
    # "auto" stays on the CPU even where torch sees a GPU: the torch renderer issues a few hundred small kernels
    # per frame and is launch-bound (H200 host: 5.0 ms at 512², 5.2 ms at 1024², all of it CPU time), while
    # OpenCV takes 2.0 ms / 6.7 ms on one thread of a 2-core box. "cuda" remains selectable.
    if device in ("cpu", "auto"):
        return CpuRenderer(rig, liveliness)
    if device in ("cuda", "torch-cpu") or device.startswith("cuda:"):
        # here, not at the top: torch is optional (the app runs on ONNX Runtime + OpenCV alone) and takes seconds
        # to import; render_torch imports only render_base, so this is no import circle
        from avatar.face.render_torch import TorchRenderer
        return TorchRenderer(rig, liveliness, device="cpu" if device == "torch-cpu" else device)
    raise ValueError(f"Unknown renderer device {device!r}; use 'auto', 'cpu', 'cuda' or 'torch-cpu'.")
