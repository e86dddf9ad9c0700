"""ONNX Runtime backend: CPU, or the CUDA execution provider where present."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from avatar.engine.base import EngineError, StatefulEngine
from avatar.dims import FEATURES, OUTPUTS, ModelDims, state_io_names


def onnx_dims(path: str | Path) -> ModelDims:
    """The model dimensions stored in an exported graph's metadata."""
    import onnxruntime as ort  # ~0.3 s to import: loaded when a graph is opened, not whenever avatar.engine is

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own types for a damaged file
        raise EngineError(f"{path}: not a readable ONNX model ({e})") from e
    return session_dims(session)


def session_dims(session) -> ModelDims:
    meta = session.get_modelmeta().custom_metadata_map
    if "dims" not in meta:
        raise EngineError("the ONNX model carries no talking-avatar dims in its metadata")
    return ModelDims.from_dict(json.loads(meta["dims"]))


class OnnxEngine(StatefulEngine):
    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, provider: str = "cpu"):
        import onnxruntime as ort  # see onnx_dims

        options = ort.SessionOptions()
        # a step is ~1 MFLOP: thread hand-offs cost more than they save
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        if provider == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise EngineError("this onnxruntime build has no CUDA execution provider (pip onnxruntime-gpu)")
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(onnx_path), options, providers=providers)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            raise EngineError(f"{onnx_path}: onnxruntime cannot load it ({e})") from e
        if provider == "cuda" and "CUDAExecutionProvider" not in self.session.get_providers():
            raise EngineError("onnxruntime could not start its CUDA provider (no usable GPU or CUDA libraries)")
        super().__init__(session_dims(self.session))
        self.device = "cuda" if provider == "cuda" else "cpu"
        if provider == "cuda":
            self.name = "onnxruntime-cuda"
        self.state_in, self.state_out = state_io_names(self.dims)
        self.output_names = [*OUTPUTS, *self.state_out]
        self.reset()

    def reset(self) -> None:
        self.state = [np.zeros(self.dims.state_shape(s), np.float32) for s in self.dims.state_names]

    def _step(self, features: np.ndarray):
        feeds = {FEATURES: features[None], **dict(zip(self.state_in, self.state))}
        visemes, params, *self.state = self.session.run(self.output_names, feeds)
        return visemes[0], params[0]
