"""The torch renderer: the CpuRenderer's steps with torch ops (grid_sample for the warps), on CUDA or CPU.

This module imports torch at its top: avatar.face.render.create_renderer imports it only when a torch device is
asked for, so the OpenCV path (and `avatar --help`) never loads torch, an optional and heavy dependency.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from avatar.face.liveliness import LivelinessConfig
from avatar.face.mouth import gap_coverage, interior
from avatar.face.render_base import SIDEWAYS, SMOOTH, Renderer, stack_statics, unstack_statics
from avatar.face.rig import Rig


class TorchOps:
    @staticmethod
    def clip(x, lo, hi):
        return torch.clamp(x, lo, hi)

    @staticmethod
    def minimum(a, b):
        return torch.minimum(a, b) if isinstance(b, torch.Tensor) else torch.clamp(a, max=float(b))

    @staticmethod
    def maximum(a, b):
        return torch.maximum(a, b) if isinstance(b, torch.Tensor) else torch.clamp(a, min=float(b))

    where = staticmethod(torch.where)

    @staticmethod
    def colsum(x):
        return x.sum(dim=0, keepdim=True)

    @staticmethod
    def smooth01(x):
        s = torch.clamp(x, 0.0, 1.0)
        return s * s * (3 - 2 * s)

    @staticmethod
    def mix(scale, weights, colors):
        return scale[..., None] * sum(w[..., None] * c for w, c in zip(weights, colors))


def _normalized(coords: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Pixel-index coordinates (..., 2) -> grid_sample's [-1, 1] (align_corners=True)."""
    sx, sy = 2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)  # Python floats: no host-to-device copy
    return torch.stack([coords[..., 0] * sx - 1.0, coords[..., 1] * sy - 1.0], dim=-1)


def _sample(image: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear sample of image (C, H, W) at pixel coordinates (h, w, 2), edges replicated -> (C, h, w)."""
    grid = _normalized(coords, image.shape[-1], image.shape[-2])[None]
    return F.grid_sample(image[None], grid, mode="bilinear", padding_mode="border", align_corners=True)[0]


class TorchRenderer(Renderer):
    """The CpuRenderer's steps with torch ops; see Renderer for the algorithm."""

    def __init__(self, rig: Rig, liveliness: LivelinessConfig | None = None, device: str = "cuda"):
        super().__init__(rig, liveliness)
        self.device = torch.device(device)
        self.name = f"torch-{self.device.type}"
        dev = self.device

        def t(a, dtype=torch.float32):
            return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=dev)

        h, w = rig.image.shape[:2]
        step = rig.step
        self._image = t(rig.image, torch.uint8).clone()  # (H, W, 3); its own copy: the eyes are written into it
        self._image_f = self._image.permute(2, 0, 1).float()
        # fields channels first: (K, branches, 2, rows, cols) and (K, 2, rows, cols)
        self._local_fields = t(rig.local_fields).permute(0, 1, 4, 2, 3).contiguous()
        self._head_fields = t(rig.head_fields).permute(0, 3, 1, 2).contiguous()
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        self._base = t(np.dstack([xs, ys]))  # (H, W, 2) pixel coordinates
        cy, cx = np.mgrid[-1:-(-h // step) + 1, -1:-(-w // step) + 1].astype(np.float32)
        cell_grid = np.dstack([cx, cy])  # cell coordinates from cell -1 on, as in CpuRenderer
        self._cell_grid = t(cell_grid)
        self._cell_pos = t(((cell_grid + 0.5) * step - 0.5).transpose(2, 0, 1))  # (2, rows, cols)
        lb = rig.local_box
        self._local_origin = torch.tensor([lb.x0, lb.y0], dtype=torch.float32, device=dev)
        self._local_cell_origin = torch.tensor([lb.c0, lb.r0], dtype=torch.float32, device=dev)
        self._mouth_origin = torch.tensor(rig.mouth_box[:2], dtype=torch.float32, device=dev)
        self._line_t = t(rig.line_t)[None]  # (1, h, w)
        self._statics_image = t(stack_statics(self.statics)).permute(2, 0, 1).contiguous()  # (6, h, w)
        self._colors = tuple(t(c) for c in self.colors)

    def _weights(self, w: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(w, np.float32), device=self.device)

    def _blend_local(self, local: np.ndarray, branches: int) -> torch.Tensor:
        fields = self._local_fields[:, :branches]
        other = local.copy()
        other[SIDEWAYS] = 0
        blend = torch.tensordot(self._weights(other), fields, dims=1)  # (B, 2, rows, cols)
        side = local[SIDEWAYS]
        if np.any(side):
            rows, cols = blend.shape[-2:]
            sblend = torch.tensordot(self._weights(side), fields[SIDEWAYS], dims=1)
            grid = self._cell_grid[1:rows + 1, 1:cols + 1][None] + sblend.permute(0, 2, 3, 1) * (1.0 / self.rig.step)
            blend = sblend + F.grid_sample(blend, _normalized(grid, cols, rows), mode="bilinear",
                                           padding_mode="border", align_corners=True)
        return blend

    @torch.no_grad()
    def render_weights(self, local: np.ndarray, head: np.ndarray, eyes: np.ndarray | None = None,
                       sound: np.ndarray | None = None) -> np.ndarray:
        rig = self.rig
        local, head = np.asarray(local, np.float32), np.asarray(head, np.float32)
        for _, (ex0, ey0, ex1, ey1), patch in self._eye_changes(eyes):
            p = torch.as_tensor(np.ascontiguousarray(patch), device=self.device)
            self._image[ey0:ey1, ex0:ex1] = p
            self._image_f[:, ey0:ey1, ex0:ex1] = p.permute(2, 0, 1).float()
        plan = self.plan(local, head, sound)
        if plan is None:
            # a copy: on the CPU device .cpu().numpy() is a view of the image the eyes are written into later
            return self._image.cpu().numpy().copy()
        step = rig.step
        r0, r1, c0, c1 = plan.cells
        y0, y1, x0, x1 = plan.region
        h, w = y1 - y0, x1 - x0
        head_c = torch.zeros((2, r1 - r0 + 2, c1 - c0 + 2), device=self.device)
        if plan.head_on:
            hb = rig.head_box
            hc = torch.tensordot(self._weights(head), self._head_fields, dims=1)
            head_c[:, hb.r0 - r0 + 1:hb.r1 - r0 + 1, hb.c0 - c0 + 1:hb.c1 - c0 + 1] = hc
        branches = 2 if plan.tearing else 1
        total = (head_c + self._cell_pos[:, r0:r1 + 2, c0:c1 + 2])[None].expand(branches, -1, -1, -1)
        carry_c = head_c  # where each pixel's side of the lips' line is read (see CpuRenderer.render_weights)
        if np.any(local):
            local_c = self._blend_local(local, branches)
            lrows, lcols = local_c.shape[-2:]
            coords = (self._cell_grid[r0:r1 + 2, c0:c1 + 2] - self._local_cell_origin
                      + head_c.permute(1, 2, 0) * (1.0 / step))
            grid = _normalized(coords, lcols, lrows)[None]
            total = total + F.grid_sample(local_c, grid.expand(branches, -1, -1, -1), mode="bilinear",
                                          padding_mode="zeros", align_corners=True)
            if plan.carried:
                smooth_c = self._blend_local(np.where(SMOOTH, local, 0).astype(np.float32), 1)
                carry_c = head_c + F.grid_sample(smooth_c, grid, mode="bilinear", padding_mode="zeros",
                                                 align_corners=True)[0]
        full = _upsample(total, step)[:, :, step:step + h, step:step + w]  # (B, 2, h, w)
        maps = full[0]
        base = self._base[y0:y1, x0:x1]
        head_f = None
        if plan.tearing:
            b0, b1 = plan.band
            if plan.head_on or plan.carried:
                head_f = _upsample(carry_c[None], step)[0, :, step:step + h, step:step + w].permute(1, 2, 0)
            where = base[b0:b1] if head_f is None else base[b0:b1] + head_f[b0:b1]
            t_eff = _sample(self._line_t, where - self._local_origin)[0]
            my0, my1, mx0, mx1 = plan.mouth
            split = (full[1, :, my0:my1, mx0:mx1] - full[0, :, my0:my1, mx0:mx1]).abs().sum(0)
            band = torch.where(t_eff[None] > 0, full[1, :, b0:b1], full[0, :, b0:b1])
            maps = torch.cat([full[0, :, :b0], band, full[1, :, b1:]], dim=1)
        maps = maps.permute(1, 2, 0)
        warped = _round(_sample(self._image_f, maps).permute(1, 2, 0))  # (h, w, 3) float
        if plan.tearing:
            warped = self._draw_mouth(warped, maps, base, head_f, split, plan)
        frame = self._image.clone()
        frame[y0:y1, x0:x1] = torch.clamp(warped, 0, 255).to(torch.uint8)
        return np.ascontiguousarray(frame.cpu().numpy())

    def _draw_mouth(self, warped, maps, base, head_f, split, plan):
        my0, my1, mx0, mx1 = plan.mouth
        box = (slice(my0, my1), slice(mx0, mx1))
        local_pos = base[box] if head_f is None else base[box] + head_f[box]
        t_out = _sample(self._line_t, local_pos - self._local_origin)[0]
        t_src = _sample(self._line_t, maps[box] - self._local_origin)[0]
        alpha = gap_coverage(TorchOps, t_out, t_src) * torch.clamp(split, max=1.0)
        alpha = alpha * self._slit_mask(TorchOps, local_pos)
        # the whole mouth box, no cropping to the opening: finding it would stall the GPU for a host round trip
        st_img = _sample(self._statics_image, local_pos - self._mouth_origin).permute(1, 2, 0)
        row_idx = torch.arange(my1 - my0, dtype=torch.float32, device=self.device)[:, None]
        st = unstack_statics(st_img, row_idx)
        rgb = interior(TorchOps, alpha, st, self.rig.appearance, self._colors, self._pose)
        region = warped[box]
        a = alpha[..., None]
        warped = warped.clone()
        warped[box] = _round(region * (1 - a) + rgb * a)
        return warped


def _upsample(coarse: torch.Tensor, step: int) -> torch.Tensor:
    """(B, C, rows, cols) -> step x larger, like cv2.resize INTER_LINEAR (half-pixel centres)."""
    rows, cols = coarse.shape[-2:]
    return F.interpolate(coarse, size=(rows * step, cols * step), mode="bilinear", align_corners=False)


def _round(x: torch.Tensor) -> torch.Tensor:
    return torch.floor(x + 0.5)


