"""The one interface every inference backend implements."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from avatar.dims import ModelDims

MAX_CHUNK = 64  # frames per step a backend must accept (640 ms); live use steps 1-4 frames at a time


class EngineError(RuntimeError):
    """A backend that cannot be created or run, with the reason in words."""


@dataclass
class EngineOutput:
    visemes: np.ndarray  # (T, n_visemes) posteriors, each row sums to 1
    params: np.ndarray  # (T, n_params) mouth parameters in 0..1, see avatar.visemes.PARAM_NAMES


class StatefulEngine(ABC):
    """Runs the lip-sync network chunk by chunk, carrying its recurrent state between calls.

    Output frame t of the stream describes input frame t - `lookahead` (the network's output delay)."""

    name: str = "?"  # backend, e.g. "onnxruntime"
    device: str = "cpu"  # "cpu", or the GPU's name
    model_name: str = ""  # the network's model file name without its suffix (create_engine sets it): the renderer
    # draws each network's parameters with the table fitted to it (avatar.face.shapes.shapes_for)

    def __init__(self, dims: ModelDims):
        self.dims = dims

    @property
    def lookahead(self) -> int:
        return self.dims.lookahead

    @property
    def label(self) -> str:
        return f"{self.name} ({self.device})"

    def step(self, features: np.ndarray) -> EngineOutput:
        """features: (T, n_mels) log-mel frames, 1 <= T <= MAX_CHUNK. Returns the T output frames."""
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dims.n_mels:
            raise ValueError(f"features must be (frames, {self.dims.n_mels}), got {x.shape}")
        if x.shape[0] == 0:
            return EngineOutput(np.zeros((0, self.dims.n_visemes), np.float32),
                                np.zeros((0, self.dims.n_params), np.float32))
        if x.shape[0] > MAX_CHUNK:  # long inputs go through in pieces, the state carried across them
            parts = [self.step(x[i:i + MAX_CHUNK]) for i in range(0, len(x), MAX_CHUNK)]
            return EngineOutput(np.concatenate([p.visemes for p in parts]),
                                np.concatenate([p.params for p in parts]))
        # non-finite features must never reach the recurrent state: one NaN would poison it for good
        if not np.isfinite(x).all():  # (the check is 5x cheaper than always cleaning)
            x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        x = np.ascontiguousarray(x)
        visemes, params = self._step(x)
        return EngineOutput(visemes, params)

    @abstractmethod
    def _step(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(T, n_mels) finite float32 -> ((T, n_visemes), (T, n_params)), advancing the carried state."""

    @abstractmethod
    def reset(self) -> None:
        """Forget the carried state: the next step behaves like a fresh engine's first."""

    def close(self) -> None:
        """Free device memory early (optional)."""
