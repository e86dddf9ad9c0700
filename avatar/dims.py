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
    lookahead: int = 2  # frames of output delay (20 ms), the mouth-parameter head's context included
    voice_hidden: int = 0  # units of the voice-presence gate's own GRU (0: no gate; models before 2026-12-02)
    # frames either side of the described frame whose top-layer states the mouth-parameter head reads (0: that
    # frame's only; models before 2026-12-03). Its k frames after cost k frames of the output delay
    head_context: int = 0

    def __post_init__(self):
        if self.cell not in CELLS:
            raise ValueError(f"unknown cell {self.cell!r}; valid cells: {', '.join(CELLS)}")
        if not 0 <= self.lookahead <= MAX_LOOKAHEAD:
            raise ValueError(f"lookahead must be 0..{MAX_LOOKAHEAD} frames, got {self.lookahead}")
        if not 0 <= self.head_context <= self.lookahead:
            raise ValueError(f"head_context must be 0..lookahead ({self.lookahead}) frames, got {self.head_context}")

    @property
    def core_lookahead(self) -> int:
        """The recurrent core's own output delay: its output at frame t describes frame t - core_lookahead (the
        heads then wait head_context frames more for the states after it)."""
        return self.lookahead - self.head_context

    @property
    def context_width(self) -> int:
        """Units per row of the carried head context: the top-layer state, and the voice logit where there is a gate."""
        return self.n_hidden + (1 if self.voice_hidden else 0)

    @property
    def state_names(self) -> tuple[str, ...]:
        core = ("h", "c") if self.cell == "lstm" else ("h",)
        return core + ((VOICE_STATE,) if self.voice_hidden else ()) + ((CONTEXT_STATE,) if self.head_context else ())

    def state_shape(self, name: str) -> tuple[int, int, int]:
        """(layers, batch 1, units) of one state tensor: the core's, the voice gate's single layer, or the head
        context's last 2 * head_context rows (oldest first; time stands where the layers stand)."""
        if name == VOICE_STATE:
            return (1, 1, self.voice_hidden)
        if name == CONTEXT_STATE:
            return (2 * self.head_context, 1, self.context_width)
        return (self.n_layers, 1, self.n_hidden)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelDims":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


VOICE_STATE = "voice"  # the voice gate's GRU state, carried like the core's
CONTEXT_STATE = "context"  # the rows the heads still need: the newest 2 * head_context frames' states and logits

# ONNX graph I/O: features (1, frames, n_mels) and the state in; visemes, params and the state out
FEATURES = "features"
OUTPUTS = ("visemes", "params")


def state_io_names(dims: ModelDims) -> tuple[list[str], list[str]]:
    return [f"{s}_in" for s in dims.state_names], [f"{s}_out" for s in dims.state_names]
