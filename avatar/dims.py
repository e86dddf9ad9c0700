"""The network's dimensions and its graph's tensor names: torch-free, so engines that never import torch
(ONNX Runtime, TensorRT) share them with the model definition."""
from __future__ import annotations

from dataclasses import dataclass, fields

from avatar.audio import N_MELS
from avatar.visemes import N_PARAMS, N_VISEMES

CELLS = ("gru", "lstm", "rnn")  # the three recurrent modules of the lecture this project comes from
MAX_LOOKAHEAD = 4  # frames: 40 ms at 100 frames/s


@dataclass(frozen=True)
class ModelDims:
    n_mels: int = N_MELS
    n_hidden: int = 128
    n_layers: int = 2
    cell: str = "gru"
    n_visemes: int = N_VISEMES
    n_params: int = N_PARAMS
    lookahead: int = 2  # frames of output delay (20 ms)
    voice_hidden: int = 0  # units of the voice-presence gate's own GRU (0: no gate; models before 2026-12-02)

    def __post_init__(self):
        if self.cell not in CELLS:
            raise ValueError(f"unknown cell {self.cell!r}; valid cells: {', '.join(CELLS)}")
        if not 0 <= self.lookahead <= MAX_LOOKAHEAD:
            raise ValueError(f"lookahead must be 0..{MAX_LOOKAHEAD} frames, got {self.lookahead}")

    @property
    def state_names(self) -> tuple[str, ...]:
        core = ("h", "c") if self.cell == "lstm" else ("h",)
        return core + ((VOICE_STATE,) if self.voice_hidden else ())

    def state_shape(self, name: str) -> tuple[int, int, int]:
        """(layers, batch 1, units) of one state tensor: the core's, or the voice gate's single layer."""
        return (1, 1, self.voice_hidden) if name == VOICE_STATE else (self.n_layers, 1, self.n_hidden)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelDims":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


VOICE_STATE = "voice"  # the voice gate's GRU state, carried like the core's

# ONNX graph I/O: features (1, frames, n_mels) and the state in; visemes, params and the state out
FEATURES = "features"
OUTPUTS = ("visemes", "params")


def state_io_names(dims: ModelDims) -> tuple[list[str], list[str]]:
    return [f"{s}_in" for s in dims.state_names], [f"{s}_out" for s in dims.state_names]
