"""The torch renderer: the CpuRenderer's steps with torch ops (grid_sample for the warps), on CUDA or CPU."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from avatar.face.liveliness import LivelinessConfig
from avatar.face.mouth import gap_coverage, interior
from avatar.face.render import MIN_COVERAGE, SIDEWAYS, TEARING, Renderer
from avatar.face.rig import Rig


class TorchOps:
    @staticmethod
    def clip(x, lo, hi):
        return torch.clamp(x, lo, hi)

    @staticmethod
    def minimum(a, b):
        return torch.minimum(a, b) if isinstance(b, torch.Tensor) else torch.clamp(a, max=float(b))

    @staticmethod
    def colsum(x):
        return x.sum(dim=0, keepdim=True)

    @staticmethod
    def smooth01(x):
        s = torch.clamp(x, 0.0, 1.0)
        return s * s * (3 - 2 * s)

    @staticmethod
    def channels(x):
        return x[..., None]


def _normalized(coords: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Pixel-index coordinates (..., 2) -> grid_sample's [-1, 1] (align_corners=True)."""
    scale = torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)], device=coords.device)
    return coords * scale - 1.0


def _sample(image: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear sample of image (C, H, W) at pixel coordinates (h, w, 2), edges replicated -> (C, h, w)."""
    grid = _normalized(coords, image.shape[-1], image.shape[-2])[None]
    return F.grid_sample(image[None], grid, mode="bilinear", padding_mode="border", align_corners=True)[0]


class TorchRenderer(Renderer):
    def __init__(self, rig: Rig, liveliness: LivelinessConfig | None = None, device: str = "cuda"):
        super().__init__(rig, liveliness)
        self.device = torch.device(device)
        self.name = f"torch-{self.device.type}"
        dev = self.device

        def t(a, dtype=torch.float32):
            return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=dev)

        self._image = t(rig.image, torch.uint8)  # (H, W, 3)
        self._image_f = self._image.permute(2, 0, 1).float()
        # fields as (K, branches, 2, rows, cols): channels first for interpolate/grid_sample
        self._local_fields = t(rig.local_fields).permute(0, 1, 4, 2, 3).contiguous()
        self._head_fields = t(rig.head_fields).permute(0, 3, 1, 2).contiguous()
        self._local_base = t(_grid(rig.local_box))
        self._head_base = t(_grid(rig.head_box))
        self._below = t(rig.below, torch.bool)
        self._line_t = t(rig.line_t)[None]  # (1, h, w)
        lb = rig.local_box
        x0, y0, x1, y1 = rig.mouth_box
        self._mouth = (slice(y0 - lb.y0, y1 - lb.y0), slice(x0 - lb.x0, x1 - lb.x0))
        self._line_t_mouth = self._line_t[0][self._mouth]
        self._origin = torch.tensor([lb.x0, lb.y0], dtype=torch.float32, device=dev)
        rows, cols = rig.local_fields.shape[2:4]
        gy, gx = torch.meshgrid(torch.arange(rows, device=dev, dtype=torch.float32),
                                torch.arange(cols, device=dev, dtype=torch.float32), indexing="ij")
        self._coarse_grid = torch.stack([gx, gy], -1)
        st = self.statics
        self._statics = type(st)(**{k: (t(v) if isinstance(v, np.ndarray) else v) for k, v in vars(st).items()})
        self._colors = tuple(t(c) for c in self.colors)

    def _upsample(self, field: torch.Tensor, box) -> torch.Tensor:
        """(B, 2, rows, cols) coarse -> (B, h, w, 2) pixels, like cv2.resize INTER_LINEAR (half-pixel centres)."""
        rows, cols = field.shape[-2:]
        full = F.interpolate(field, size=(rows * box.step, cols * box.step), mode="bilinear", align_corners=False)
        return full[..., :box.shape[0], :box.shape[1]].permute(0, 2, 3, 1)

    @torch.no_grad()
    def render_weights(self, local: np.ndarray, head: np.ndarray) -> np.ndarray:
        rig = self.rig
        frame = self._image
        if np.any(local):
            frame = self._local_pass(frame, local)
        if np.any(head):
            box = rig.head_box
            w = torch.as_tensor(head, device=self.device)
            disp = self._upsample(torch.tensordot(w, self._head_fields, dims=1)[None], box)[0]
            warped = _sample(frame.permute(2, 0, 1).float(), self._head_base + disp)
            frame = frame.clone()
            frame[box.y0:box.y1, box.x0:box.x1] = _to_uint8(warped)
        return np.ascontiguousarray(frame.cpu().numpy())

    def _local_pass(self, frame: torch.Tensor, local: np.ndarray) -> torch.Tensor:
        rig = self.rig
        box = rig.local_box
        tearing = bool(np.any(local[TEARING]))
        branches = 2 if tearing else 1
        fields = self._local_fields[:, :branches]
        other = local.copy()
        other[SIDEWAYS] = 0
        blend = torch.tensordot(torch.as_tensor(other, device=self.device), fields, dims=1)  # (B, 2, r, c)
        side = local[SIDEWAYS]
        if np.any(side):
            sblend = torch.tensordot(torch.as_tensor(side, device=self.device), fields[SIDEWAYS], dims=1)
            coords = self._coarse_grid[None] + sblend.permute(0, 2, 3, 1) * (1.0 / rig.step)
            grid = _normalized(coords, blend.shape[-1], blend.shape[-2])
            blend = sblend + F.grid_sample(blend, grid, mode="bilinear", padding_mode="border", align_corners=True)
        disp = self._upsample(blend, box)
        if tearing:
            disp = torch.where(self._below[..., None], disp[1], disp[0])
        else:
            disp = disp[0]
        maps = self._local_base + disp
        warped = _sample(self._image_f, maps)  # (3, h, w) float
        warped = warped.permute(1, 2, 0)
        warped = _round(warped)
        if tearing:
            t_src = _sample(self._line_t, maps[self._mouth] - self._origin)[0]
            alpha = gap_coverage(TorchOps, self._line_t_mouth, t_src)
            if float(alpha.max()) > MIN_COVERAGE:
                rgb = interior(TorchOps, alpha, self._statics, rig.appearance, self._colors)
                region = warped[self._mouth]
                a = alpha[..., None]
                warped = warped.clone()
                warped[self._mouth] = _round(region * (1 - a) + rgb * a)
        out = frame.clone()
        out[box.y0:box.y1, box.x0:box.x1] = _to_uint8(warped.permute(2, 0, 1))
        return out


def _round(x: torch.Tensor) -> torch.Tensor:
    return torch.floor(x + 0.5)


def _to_uint8(chw: torch.Tensor) -> torch.Tensor:
    return torch.clamp(_round(chw), 0, 255).to(torch.uint8).permute(1, 2, 0)


def _grid(box) -> np.ndarray:
    ys, xs = np.mgrid[box.y0:box.y1, box.x0:box.x1].astype(np.float32)
    return np.dstack([xs, ys])
