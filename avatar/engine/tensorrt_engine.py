"""TensorRT backend (the full `tensorrt`, or `tensorrt_rtx`: TensorRT for RTX, same API, another module name).

The steps, each visible, as in NVIDIA's samples:
  build:        parse the exported ONNX, one optimization profile over the chunk length, build_serialized_network
  serialize:    store the plan in the app's engine cache (key: model hash + TensorRT version + GPU)
  deserialize:  Runtime.deserialize_cuda_engine, only ever from that cache
  bind by name: set_input_shape / set_tensor_address for every I/O tensor, execute_async_v3 on our stream
The recurrent state lives on the GPU in two buffers per state tensor that swap roles each step (ping-pong):
step n reads h from A and writes to B, step n+1 reads B and writes A; it never crosses to the host.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from avatar.engine.base import MAX_CHUNK, EngineError, StatefulEngine
from avatar.engine.cache import EngineCache
from avatar.engine.gpu import DeviceBuffers, GpuInfo, gpu_info
from avatar.dims import FEATURES, OUTPUTS, ModelDims, state_io_names

OPT_CHUNK = 4  # frames the builder tunes for: one 40 ms live chunk
WORKSPACE_BYTES = 256 << 20
# TensorRT for RTX runs only on these compute capabilities (it builds on others, e.g. 9.0 Hopper, but
# refuses to deserialize there: "The engine cannot run on this GPU")
RTX_RUNNABLE_SM = {(8, 0), (8, 6), (8, 7), (8, 9), (12, 0), (12, 1)}


def import_tensorrt():
    """(module, flavour) for the installed TensorRT: 'tensorrt' first, else 'tensorrt_rtx'."""
    try:
        import tensorrt as trt

        return trt, "tensorrt"
    except ImportError:
        pass
    try:
        import tensorrt_rtx as trt

        return trt, "tensorrt_rtx"
    except ImportError:
        raise EngineError("neither tensorrt nor tensorrt_rtx is installed (pip install tensorrt-rtx)") from None


def runnable_reason(flavour: str, gpu: GpuInfo) -> str:
    """'' if engines of this flavour can run on this GPU, else why not."""
    if flavour == "tensorrt_rtx" and gpu.capability not in RTX_RUNNABLE_SM:
        ok = " ".join(f"{a}.{b}" for a, b in sorted(RTX_RUNNABLE_SM))
        return (f"TensorRT-RTX builds engines for {gpu.name} (compute capability {gpu.sm}) but refuses to run "
                f"them there; it runs on compute capability {ok}")
    if gpu.capability < (7, 5):
        return f"{gpu.name} (compute capability {gpu.sm}) is older than TensorRT 10 supports (7.5)"
    return ""


def _logger(trt):
    return trt.Logger(trt.Logger.WARNING)


def build_serialized(trt, onnx_bytes: bytes, dims: ModelDims) -> bytes:
    """ONNX -> serialized engine (plan) bytes. Raises EngineError with the parser's messages."""
    logger = _logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT could not parse the model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # full float32: the same numbers as the other backends
    profile = builder.create_optimization_profile()
    n = dims.n_mels
    profile.set_shape(FEATURES, (1, 1, n), (1, OPT_CHUNK, n), (1, MAX_CHUNK, n))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError("TensorRT failed to build the engine (see the log above)")
    return bytes(memoryview(plan)[: plan.nbytes])


def network_io(trt, onnx_bytes: bytes) -> dict[str, tuple[str, tuple[int, ...], str]]:
    """{name: (mode 'input'/'output', shape with -1 for dynamic, numpy dtype name)} as TensorRT parses the graph."""
    network = trt.Builder(_logger(trt)).create_network(0)
    parser = trt.OnnxParser(network, _logger(trt))
    if not parser.parse(onnx_bytes):
        raise EngineError("TensorRT could not parse the model")
    io = {}
    for i in range(network.num_inputs):
        t = network.get_input(i)
        io[t.name] = ("input", tuple(t.shape), np.dtype(trt.nptype(t.dtype)).name)
    for i in range(network.num_outputs):
        t = network.get_output(i)
        io[t.name] = ("output", tuple(t.shape), np.dtype(trt.nptype(t.dtype)).name)
    return io


def engine_io(trt, engine) -> dict[str, tuple[str, tuple[int, ...], str]]:
    """The same description read back from a deserialized engine."""
    io = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output"
        io[name] = (mode, tuple(engine.get_tensor_shape(name)), np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name)
    return io


def cache_parts(trt, flavour: str, onnx_bytes: bytes, gpu: GpuInfo) -> dict[str, str]:
    return {"model": hashlib.sha256(onnx_bytes).hexdigest(), "flavour": flavour, "trt": trt.__version__,
            "gpu": gpu.name, "sm": gpu.sm, "profile": f"1-{OPT_CHUNK}-{MAX_CHUNK}"}


class TensorRTEngine(StatefulEngine):
    name = "tensorrt"

    def __init__(self, onnx_path: str | Path, dims: ModelDims, cache: EngineCache | None = None):
        super().__init__(dims)
        trt, flavour = import_tensorrt()
        gpu, why = gpu_info()
        if gpu is None:
            raise EngineError(why)
        why = runnable_reason(flavour, gpu)
        if why:
            raise EngineError(why)
        self.trt, self.name, self.device = trt, flavour.replace("_", "-"), gpu.name
        onnx_bytes = Path(onnx_path).read_bytes()
        self.cache = cache or EngineCache()
        parts = cache_parts(trt, flavour, onnx_bytes, gpu)
        self.runtime = trt.Runtime(_logger(trt))
        self.engine, self.built_now = self.cache.get_or_build(
            parts, lambda: build_serialized(trt, onnx_bytes, dims), self._deserialize)
        self.context = self.engine.create_execution_context()
        self.mem = DeviceBuffers(gpu.via)
        self._bind()
        self.reset()

    def _deserialize(self, data: bytes):
        engine = self.runtime.deserialize_cuda_engine(data)
        if engine is not None and set(engine_io(self.trt, engine)) != self._expected_names():
            return None  # a plan for another graph: let the cache discard and rebuild it
        return engine

    def _expected_names(self) -> set[str]:
        state_in, state_out = state_io_names(self.dims)
        return {FEATURES, *OUTPUTS, *state_in, *state_out}

    def _bind(self) -> None:
        d, f4 = self.dims, 4  # float32 bytes
        self.state_in, self.state_out = state_io_names(d)
        self.mem.alloc(FEATURES, MAX_CHUNK * d.n_mels * f4)
        self.mem.alloc(OUTPUTS[0], MAX_CHUNK * d.n_visemes * f4)
        self.mem.alloc(OUTPUTS[1], MAX_CHUNK * d.n_params * f4)
        for s in d.state_names:
            state_bytes = int(np.prod(d.state_shape(s))) * f4
            self.mem.alloc(f"{s}:0", state_bytes)
            self.mem.alloc(f"{s}:1", state_bytes)
        for name in (FEATURES, *OUTPUTS):
            self.context.set_tensor_address(name, self.mem.ptr(name))
        self.parity = 0

    def reset(self) -> None:
        for s in self.dims.state_names:
            self.mem.zero(f"{s}:0")
            self.mem.zero(f"{s}:1")
        self.mem.synchronize()
        self.parity = 0

    def _step(self, features: np.ndarray):
        n = len(features)
        self.mem.upload(FEATURES, features)
        self.context.set_input_shape(FEATURES, (1, n, self.dims.n_mels))
        src, dst = self.parity, 1 - self.parity
        for s, s_in, s_out in zip(self.dims.state_names, self.state_in, self.state_out):
            self.context.set_tensor_address(s_in, self.mem.ptr(f"{s}:{src}"))
            self.context.set_tensor_address(s_out, self.mem.ptr(f"{s}:{dst}"))
        if not self.context.execute_async_v3(self.mem.stream_handle):
            raise EngineError("TensorRT execution failed")
        self.parity = dst
        visemes = self.mem.download(OUTPUTS[0], (n, self.dims.n_visemes))
        params = self.mem.download(OUTPUTS[1], (n, self.dims.n_params))
        return visemes, params

    def close(self) -> None:
        self.mem.close()
