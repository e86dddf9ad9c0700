"""The lip-sync network: log-mel frames -> recurrent core -> viseme posteriors and mouth parameters.

Strictly causal: the output at frame t sees input frames <= t only. The look-ahead the product needs is an
*output delay*: the model is trained so that its output at frame t describes frame t - lookahead, so the
caller shifts time by `lookahead` frames and the network itself never peeks ahead.

The recurrent state is explicit: forward(x, state) -> (..., new_state). Streaming inference carries it from
chunk to chunk; training carries it across truncated-BPTT segments the same way; the ONNX graph takes it as an
input and returns it as an output (h, and c for the LSTM; then the voice gate's, where the model has one; then
the head context's, where the mouth-parameter head reads a window of frames). The core's and the gate's carried
states are kept relative to where a quiet room leaves them (`core_settled`, `VoiceGate.settled`), so the all-zero
state every backend starts from is that room, not a state no sound leads to.

Head context (dims.head_context = k > 0): the mouth-parameter head reads the top-layer states of the k frames
before and after the frame it describes, not that frame's alone (a real mouth is shaped by the sounds around it:
held-out GRID r 0.646 -> 0.659 at k = 2, model card). The newest 2k rows of states (and voice logits) are carried as a state
like the others, so the heads speak of the frame k rows back: the output delay grows by k.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from pathlib import Path

import onnx  # the [torch] extra brings both
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from avatar.dims import CELLS, FEATURES, MAX_LOOKAHEAD, OUTPUTS, ModelDims, state_io_names  # noqa: F401
from avatar.visemes import VISEME_INDEX, VISEME_POSE

State = tuple[torch.Tensor, ...]  # (h,) or (h, c), each (n_layers, batch, n_hidden)


class LipSyncNet(nn.Module):
    def __init__(self, dims: ModelDims = ModelDims()):
        super().__init__()
        self.dims = dims
        # feature normalisation, set from training data, part of the graph so every backend applies it
        self.register_buffer("feature_mean", torch.zeros(dims.n_mels))
        self.register_buffer("feature_std", torch.ones(dims.n_mels))
        self.input = nn.Sequential(nn.Linear(dims.n_mels, dims.n_hidden), nn.Tanh())
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}[dims.cell]
        self.rnn = rnn(dims.n_hidden, dims.n_hidden, dims.n_layers, batch_first=True)
        # the core's state after a quiet room (settle_core): the carried core state is kept relative to it, as the
        # gate's is, so every backend's all-zero initial state starts the core there. From a true zero state its
        # first rows opened the jaw 0.1-0.2 and rounded the lips 0.2-0.3 for 40 ms on silence: every render's first
        # frame and every live start showed a twitch
        self.register_buffer("core_settled", torch.zeros(len(CORE_STATES[dims.cell]), dims.n_layers, 1, dims.n_hidden))
        self.viseme_head = nn.Linear(dims.n_hidden, dims.n_visemes)
        # reads the 2k+1 top-layer states around the frame it describes, oldest first, concatenated
        self.param_head = nn.Linear((2 * dims.head_context + 1) * dims.n_hidden, dims.n_params)
        if dims.voice_hidden:
            self.voice = VoiceGate(dims)
        if dims.head_context:
            # what the voice column of a carried context row of zeros stands for: no voice (so the first output
            # rows, which describe the time before the stream began, are the rest pose); its state columns stand
            # for the settled core's top row (context_start). Made from the dims, so not saved with the weights
            start = torch.zeros(dims.context_width - dims.n_hidden)
            if dims.voice_hidden:
                start[-1] = CONTEXT_START_LOGIT
            self.register_buffer("context_voice_start", start, persistent=False)

    def initial_state(self, batch: int = 1) -> State:
        shapes = [self.dims.state_shape(s) for s in self.dims.state_names]
        return tuple(torch.zeros(layers, batch, units, device=self.feature_mean.device) for layers, _, units in shapes)

    def quiet_features(self, dbfs: float | None = None) -> torch.Tensor:
        """(1, T, n_mels) normalised log-mel of QUIET_SECONDS of white noise `dbfs` under full scale (default
        QUIET_DBFS): a room."""
        import numpy as np

        from avatar.audio import SAMPLE_RATE, log_mel

        dbfs = QUIET_DBFS if dbfs is None else dbfs
        noise = np.random.default_rng(0).standard_normal(int(QUIET_SECONDS * SAMPLE_RATE)) * 10 ** (dbfs / 20)
        features = torch.from_numpy(log_mel(noise.astype(np.float32)))[None].to(self.feature_mean.device)
        return self.normalise(features)

    def settle_voice(self) -> None:
        """Give the voice gate its start state (VoiceGate.settle) from a quiet room."""
        self.voice.settle(self.quiet_features())

    @torch.no_grad()
    def settle_core(self) -> None:
        """Give the recurrent core its start state: where it is after a quiet room from an all-zero state. Run
        again whenever the core's weights change (training does, before it saves)."""
        self.core_settled.zero_()
        _, state = self.rnn(self.input(self.quiet_features(CORE_QUIET_DBFS)), self.core_start())
        self.core_settled.copy_(torch.stack(state) if self.dims.cell == "lstm" else state[None])

    def context_start(self) -> torch.Tensor:
        """(context_width,) what a carried context row of zeros stands for: the settled core's top-layer output
        (the states the head reads) and, where there is a gate, no voice."""
        return torch.cat([self.core_settled[0, -1, 0], self.context_voice_start])

    def core_start(self, batch: int = 1):
        """The core's start state as its nn module takes it: the settled one (h, or (h, c) for the LSTM)."""
        return self._core_absolute(self.core_state(self.initial_state(batch)))

    def _core_absolute(self, relative):
        """A carried core state (relative to the settled one) -> the state the nn module runs from."""
        if self.dims.cell == "lstm":
            return tuple(r + s for r, s in zip(relative, self.core_settled))
        return relative + self.core_settled[0]

    def _core_relative(self, absolute):
        """The nn module's new core state -> the carried one (a tuple, as the state tuple holds it)."""
        if self.dims.cell == "lstm":
            return tuple(a - s for a, s in zip(absolute, self.core_settled))
        return (absolute - self.core_settled[0],)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Log-mel frames in the units the input layer and the voice gate were trained on."""
        return (x - self.feature_mean) / self.feature_std  # non-finite input is stopped before this (engine.base)

    def core_state(self, state: State):
        """The recurrent core's part of a state tuple, as its nn module takes it: h, or (h, c) for the LSTM (a
        voice gate's state, where there is one, comes after it)."""
        return state[:2] if self.dims.cell == "lstm" else state[0]

    def forward(self, x: torch.Tensor, state: State | None = None, logits: bool = False):
        """x: (B, T, n_mels) log-mel frames. Returns (visemes, params, new_state):
        visemes (B, T, n_visemes) posteriors (or logits if `logits`), params (B, T, n_params) in 0..1
        (or pre-sigmoid if `logits`). With a voice gate the posteriors and parameters are drawn towards rest
        where it hears no voice; logits are the lip-sync heads' own, before the gate (what `fit` trains)."""
        if state is None:
            state = self.initial_state(x.shape[0])
        x = self.normalise(x)
        y, new_state = self.rnn(self.input(x), self._core_absolute(self.core_state(state)))
        new_state = self._core_relative(new_state)
        voice_logit = None
        if self.dims.voice_hidden:
            voice_logit, voice_state = self.voice(x, state[len(new_state)])
            new_state = new_state + (voice_state,)
        if self.dims.head_context:
            y, window, voice_logit, context = self.with_context(y, voice_logit, state[len(new_state)])
            new_state = new_state + (context,)
        else:
            window = y
        v, p = self.viseme_head(y), self.param_head(window)
        if not logits:
            v, p = torch.softmax(v, dim=-1), torch.sigmoid(p)
            if self.dims.voice_hidden:
                v, p = self.voice.gate(v, p, torch.sigmoid(voice_logit))
        return v, p, new_state

    def with_context(self, y: torch.Tensor, voice_logit, context: torch.Tensor):
        """y (B, T, H) the core's new top-layer rows, voice_logit (B, T, 1) or None, context (2k, B, C) the carried
        rows relative to context_start -> (centre states (B, T, H), windows (B, T, (2k+1) H), centre logits or None,
        new context). Output row t speaks of the row k before it; its window runs from 2k rows before it to it.
        Every slice has fixed bounds, so the exported graph takes any number of frames."""
        k, h = self.dims.head_context, self.dims.n_hidden
        rows = y if voice_logit is None else torch.cat([y, voice_logit], -1)
        start = self.context_start()
        rows = torch.cat([context.transpose(0, 1) + start, rows], 1)  # (B, 2k + T, C)
        new_context = (rows[:, -2 * k:] - start).transpose(0, 1)
        window = torch.cat([rows[:, j:j - 2 * k, :h] for j in range(2 * k)] + [rows[:, 2 * k:, :h]], -1)
        centre = rows[:, k:-k]
        return centre[..., :h], window, (None if voice_logit is None else centre[..., h:]), new_context


CORE_STATES = {"gru": ("h",), "rnn": ("h",), "lstm": ("h", "c")}  # the core's state tensors, per cell
CONTEXT_START_LOGIT = -10.0  # the voice logit of the context rows before a stream begins: certainly no voice
VOICE_FULL = 0.9  # voice probability from which the core's outputs pass whole; below it they fade to rest
# ... and below this one they are the rest pose: the fade spans the gate's uncertain band, symmetric about its 0.5
# decision threshold (from 0 it let a frame the gate held 40 % likely to be voice show 44 % of the mouth)
VOICE_NONE = 1.0 - VOICE_FULL
# Every stream starts where the gate would be after hearing a quiet room (white noise this far under full scale, this
# long): from an all-zero state, a file that began inside a sentence was heard as no voice for 0.3 s and more (GRID,
# starts inside speech: the files gate's mouth share over the first 300 ms 0.66; 0.92 from the settled state)
QUIET_DBFS = -70.0
QUIET_SECONDS = 2.0
CORE_QUIET_DBFS = -40.0  # the core settles on a louder room than the gate: a stream whose first sound is room noise
# louder than the settled room starts like an onset (from -70 dBFS, -50 dBFS noise opened the jaw 0.15 / 0.17, files /
# live, in the first 100 ms); from -40 every start from digital silence to -40 dBFS noise stays under 0.06


class VoiceGate(nn.Module):
    """Is a voice (speaking or singing) in the sound? Its own small GRU on the normalised log-mel, trained on
    speech, song, instrumental music and noise (`avatar train voice-gate`) while the lip-sync core stays as it
    is: the core's states do not tell music from voice (a linear read of them cut held-out music only to 25 %).
    Where it hears none, the outputs are drawn to the rest pose, so music in the room does not open the mouth."""

    def __init__(self, dims: ModelDims):
        super().__init__()
        self.input = nn.Sequential(nn.Linear(dims.n_mels, dims.voice_hidden), nn.Tanh())
        self.rnn = nn.GRU(dims.voice_hidden, dims.voice_hidden, 1, batch_first=True)
        self.head = nn.Linear(dims.voice_hidden, 1)
        rest = torch.zeros(dims.n_visemes)
        rest[VISEME_INDEX["sil"]] = 1.0
        self.register_buffer("rest_visemes", rest)
        self.register_buffer("rest_params", torch.tensor(VISEME_POSE["sil"], dtype=torch.float32))
        # the state after a quiet room (settle): the carried state is kept relative to it, so every backend's
        # all-zero initial state starts the gate there
        self.register_buffer("settled", torch.zeros(1, 1, dims.voice_hidden))

    def forward(self, x: torch.Tensor, h: torch.Tensor):
        """x: (B, T, n_mels) normalised features, h: (1, B, voice_hidden) state relative to the settled one ->
        ((B, T, 1) voice logit, new relative h)."""
        y, h = self.rnn(self.input(x), h + self.settled)
        return self.head(y), h - self.settled

    @torch.no_grad()
    def settle(self, quiet: torch.Tensor) -> None:
        """Set the settled state: where the gate is after hearing `quiet` (1, T, n_mels), normalised features of a
        quiet room, from an all-zero state."""
        self.settled.zero_()
        _, h = self.forward(quiet, torch.zeros_like(self.settled))
        self.settled.copy_(h)

    def gate(self, visemes, params, voice):
        """Posteriors and parameters mixed with the rest pose by the voice probability (B, T, 1)."""
        voice = torch.clamp((voice - VOICE_NONE) / (VOICE_FULL - VOICE_NONE), min=0.0, max=1.0)
        return (voice * visemes + (1 - voice) * self.rest_visemes,
                voice * params + (1 - voice) * self.rest_params)


# ----------------------------------------------------------------------------------------------------
# weights: safetensors with the dimensions in the metadata, never pickle


def save_model(model: LipSyncNet, path: str | Path, extra: dict | None = None) -> None:
    meta = {"dims": json.dumps(asdict(model.dims)), "format": "talking-avatar/lipsync-1"}
    if extra:
        meta["extra"] = json.dumps(extra)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata=meta)


def read_dims(path: str | Path) -> ModelDims:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "dims" not in meta:
        raise ValueError(f"{path}: not a talking-avatar model (no dims in its metadata)")
    return ModelDims.from_dict(json.loads(meta["dims"]))


def read_extra(path: str | Path) -> dict | None:
    """The training record saved with the weights (save_model's `extra`), or None."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return json.loads(meta["extra"]) if "extra" in meta else None


def load_model(path: str | Path, device: str = "cpu") -> LipSyncNet:
    model = LipSyncNet(read_dims(path))
    missing, unexpected = model.load_state_dict(load_file(str(path), device=device), strict=False)
    if unexpected or set(missing) - {"voice.settled", "core_settled"}:
        raise RuntimeError(f"{path}: weights do not fit the model (missing {missing}, unexpected {unexpected})")
    # weights saved before the gate or the core had a start state: settle them as training does now
    if "voice.settled" in missing:
        model.settle_voice()
    if "core_settled" in missing:
        model.settle_core()
    return model.to(device).eval()


# ----------------------------------------------------------------------------------------------------
# ONNX: state as explicit graph inputs/outputs (names in avatar.dims), time axis dynamic, batch 1

class _OnnxWrapper(nn.Module):
    """Flattens the state tuple into separate tensors, as ONNX wants them."""

    def __init__(self, model: LipSyncNet):
        super().__init__()
        self.model = model

    def forward(self, x, *state):
        v, p, new_state = self.model(x, tuple(state))
        return (v, p, *new_state)


def export_onnx(model: LipSyncNet, path: str | Path, chunk: int = 4) -> Path:
    dims = model.dims
    model = model.cpu().eval()
    state_in, state_out = state_io_names(dims)
    x = torch.zeros(1, chunk, dims.n_mels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and batch-size notes
        torch.onnx.export(
            _OnnxWrapper(model), (x, *model.initial_state(1)), str(path),
            dynamo=False,  # the TorchScript exporter emits the native ONNX GRU/LSTM/RNN ops TensorRT parses
            opset_version=17,
            input_names=[FEATURES, *state_in],
            output_names=[*OUTPUTS, *state_out],
            dynamic_axes={FEATURES: {1: "frames"}, OUTPUTS[0]: {1: "frames"}, OUTPUTS[1]: {1: "frames"}},
        )
    proto = onnx.load(str(path))
    for k, v in {"dims": json.dumps(asdict(dims)), "format": "talking-avatar/lipsync-1"}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, str(path))
    return Path(path)
