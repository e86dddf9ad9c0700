"""PyTorch backend: the reference, on CPU or CUDA, optionally replaying a captured CUDA graph."""
from __future__ import annotations

import numpy as np
import torch

from avatar.engine.base import StatefulEngine
from avatar.model import LipSyncNet


class TorchEngine(StatefulEngine):
    name = "torch"

    def __init__(self, model: LipSyncNet, device: str = "cpu", cuda_graph: bool = False):
        super().__init__(model.dims)
        self.torch_device = torch.device(device)
        self.model = model.to(self.torch_device).eval()
        self.device = torch.cuda.get_device_name(self.torch_device) if self.torch_device.type == "cuda" else "cpu"
        self.cuda_graph = cuda_graph and self.torch_device.type == "cuda"
        if self.cuda_graph:
            self.name = "torch-cudagraph"
        self._graphs: dict[int, _GraphStep] = {}
        self.reset()

    def reset(self) -> None:
        if self.cuda_graph and hasattr(self, "state"):
            for s in self.state:  # the captured graphs read and write these very buffers: zero in place
                s.zero_()
        else:
            self.state = self.model.initial_state(1)

    @torch.inference_mode()
    def _step(self, features: np.ndarray):
        if self.cuda_graph:
            graph = self._graphs.get(len(features))
            if graph is None:  # one graph per chunk length, all updating the same state buffers
                graph = self._graphs[len(features)] = _GraphStep(self.model, len(features), self.state)
            return graph.run(features)
        x = torch.from_numpy(features)[None].to(self.torch_device)
        v, p, self.state = self.model(x, self.state)
        return v[0].cpu().numpy(), p[0].cpu().numpy()


class _GraphStep:
    """A CUDA graph of one step for a fixed chunk length: static input, static state buffers updated in place,
    so a step is one graph launch plus the copies of features in and outputs out."""

    def __init__(self, model: LipSyncNet, frames: int, state):
        self.x = torch.zeros(1, frames, model.dims.n_mels, device=model.feature_mean.device)
        self.state = state
        saved = tuple(t.clone() for t in state)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(3):  # warm-up outside the graph, as capture requires
                model(self.x, self.state)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(self.graph):
            self.v, self.p, new_state = model(self.x, self.state)
            for dst, src in zip(self.state, new_state):
                dst.copy_(src)  # the state ping-pongs inside the graph: no host round trip
        for dst, src in zip(self.state, saved):  # capture does not run the kernels, but be explicit
            dst.copy_(src)

    def run(self, features: np.ndarray):
        self.x.copy_(torch.from_numpy(features)[None])
        self.graph.replay()
        return self.v[0].cpu().numpy(), self.p[0].cpu().numpy()
