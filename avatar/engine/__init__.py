"""Inference engines behind one interface, and the choice between them.

    engine = create_engine("auto")          # TensorRT -> ONNX Runtime CUDA -> ONNX Runtime CPU -> PyTorch
    out = engine.step(features)             # (T, n_mels) -> EngineOutput(visemes (T, 15), params (T, 4))
    engine.reset()
    print(engine.label, engine.selection)   # what was picked, and why each backend before it was skipped
"""
from __future__ import annotations

import hashlib
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from avatar.engine.base import MAX_CHUNK, EngineError, EngineOutput, StatefulEngine
from avatar.engine.cache import verify_checksum, write_checksum
from avatar.engine.gpu import gpu_info
from avatar.engine.onnx_engine import OnnxEngine, onnx_dims  # onnxruntime itself loads when an engine is made
from avatar.engine.tensorrt_engine import TensorRTEngine, import_tensorrt, runnable_reason
from avatar.paths import assets_dir, cache_dir

__all__ = ["BACKENDS", "MAX_CHUNK", "EngineError", "EngineOutput", "StatefulEngine", "BackendStatus",
           "create_engine", "probe", "probe_backends", "default_model_path", "live_model_path", "resolve_onnx"]

# in the order `auto` tries them
AUTO_ORDER = ("tensorrt", "onnxruntime-cuda", "onnxruntime", "torch")
BACKENDS = ("auto", *AUTO_ORDER, "torch-cuda", "torch-cudagraph")
ALIASES = {"trt": "tensorrt", "tensorrt-rtx": "tensorrt", "ort": "onnxruntime", "onnx": "onnxruntime",
           "onnxruntime-cpu": "onnxruntime", "ort-cuda": "onnxruntime-cuda", "pytorch": "torch", "cpu": "onnxruntime"}
# Two shipped networks, the same size and the same interface: the default one waits 20 ms for what follows a
# frame (more accurate; for files, where nothing waits), the live one answers each frame at once (no look-ahead:
# the mouth opens ~20 ms sooner after a voice starts, for slightly lower accuracy). See assets/MODEL_CARD.md.
DEFAULT_MODEL = "lipsync_gru.safetensors"
LIVE_MODEL = "lipsync_gru_live.safetensors"

ModelSource = Union[str, Path, "LipSyncNet", None]  # noqa: F821 (torch is optional)


def default_model_path() -> Path:
    """The model for audio files: `avatar render`, `avatar lipsync`, File → Export video."""
    return assets_dir() / DEFAULT_MODEL


def live_model_path() -> Path:
    """The model for the microphone (and anything shown as it is heard): the app's live view and recording."""
    return assets_dir() / LIVE_MODEL


def normalize_backend(name: str) -> str:
    key = ALIASES.get(name.lower().strip(), name.lower().strip())
    if key not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; valid backends: {', '.join(BACKENDS)}")
    return key


@dataclass
class BackendStatus:
    backend: str
    available: bool
    detail: str  # the device it would use, or why it cannot be used


def _have(module: str) -> str:
    """'' if `module` imports, else why not."""
    try:
        importlib.import_module(module)
        return ""
    except ImportError as e:
        return f"{module} not installed ({e.name or e})"
    except Exception as e:  # a broken install raises anything at import
        return f"{module} failed to import ({e})"


def _probe_tensorrt() -> BackendStatus:
    try:
        trt, flavour = import_tensorrt()
    except EngineError as e:
        return BackendStatus("tensorrt", False, str(e))
    gpu, no_gpu = gpu_info()
    if gpu is None:
        return BackendStatus("tensorrt", False, f"{flavour} {trt.__version__} installed, but {no_gpu}")
    why = runnable_reason(flavour, gpu)
    return BackendStatus("tensorrt", not why, why or f"{flavour} {trt.__version__} on {gpu.name}")


def _probe_onnxruntime(cuda: bool) -> BackendStatus:
    name = "onnxruntime-cuda" if cuda else "onnxruntime"
    why = _have("onnxruntime")
    if why:
        return BackendStatus(name, False, why)
    import onnxruntime as ort  # ~0.3 s: only once a backend is probed, not for `avatar --help` or the GUI's start

    if not cuda:
        return BackendStatus(name, True, f"onnxruntime {ort.__version__} on the CPU")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return BackendStatus(name, False, f"onnxruntime {ort.__version__} is a CPU-only build (pip onnxruntime-gpu)")
    gpu, no_gpu = gpu_info()
    return BackendStatus(name, gpu is not None, f"onnxruntime {ort.__version__} on {gpu.name}" if gpu else no_gpu)


def _probe_torch(backend: str) -> BackendStatus:
    why = _have("torch")
    if why:
        return BackendStatus(backend, False, why)
    import torch  # optional (the [torch] extra); checked by _have just above

    if backend == "torch":
        return BackendStatus(backend, True, f"torch {torch.__version__} on the CPU")
    if not torch.cuda.is_available():
        return BackendStatus(backend, False, f"torch {torch.__version__}: no CUDA GPU")
    return BackendStatus(backend, True, f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}")


def probe(backend: str) -> BackendStatus:
    """Whether this machine can run one backend, without building anything, and why not."""
    backend = normalize_backend(backend)
    if backend == "tensorrt":
        return _probe_tensorrt()
    if backend.startswith("onnxruntime"):
        return _probe_onnxruntime(cuda=backend == "onnxruntime-cuda")
    if backend.startswith("torch"):
        return _probe_torch(backend)
    raise ValueError("`auto` is a choice among backends, not one to probe")


def probe_backends() -> list[BackendStatus]:
    """Every backend this machine could run, and the reason for each that it cannot."""
    return [probe(b) for b in BACKENDS if b != "auto"]


# ----------------------------------------------------------------------------------------------------
# model files


def _load_torch_model(model: ModelSource):
    from avatar.model import LipSyncNet, load_model  # imports torch, an optional extra

    if isinstance(model, LipSyncNet):
        return model
    path = Path(model) if model is not None else default_model_path()
    if path.suffix == ".onnx":
        path = path.with_suffix(".safetensors")
    if not path.is_file():
        raise EngineError(f"{path}: model weights not found (the torch backend needs the .safetensors file)")
    try:
        return load_model(path)
    except ImportError:
        raise
    except Exception as e:  # safetensors, json and torch each raise their own types for a damaged or foreign file
        raise EngineError(f"{path}: not a readable talking-avatar model ({e})") from e


def graph_source() -> bytes:
    """What the exported graph is made of besides the weights: the model's code (its file; the package version
    where a bundle keeps no source)."""
    import avatar
    import avatar.model

    try:
        return Path(avatar.model.__file__).read_bytes()
    except (OSError, TypeError):
        return avatar.__version__.encode()


def predates_settled_start(weights: Path) -> bool:
    """Weights saved before the core had a start state (avatar.model.LipSyncNet.core_settled): loaded, they are
    settled, but an ONNX exported beside them then starts the core from zero, so the pair would not give the same
    numbers; such a pair is exported again into the cache instead."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="numpy") as f:
            return "core_settled" not in f.keys()
    except Exception:  # not readable as safetensors: loading it says why
        return False


def resolve_onnx(model: ModelSource) -> Path:
    """The ONNX file for a model: given directly, beside its .safetensors (shipped as a pair, checked equal by
    the tests), or exported into the cache."""
    from_torch = model is not None and not isinstance(model, (str, Path))
    if not from_torch:
        path = Path(model) if model is not None else default_model_path()
        if path.suffix == ".onnx":
            if not path.is_file():
                raise EngineError(f"{path}: model file not found")
            return path
        sibling = path.with_suffix(".onnx")
        if sibling.is_file() and not (path.is_file() and predates_settled_start(path)):
            return sibling
        if not path.is_file():
            raise EngineError(f"{path}: model file not found (neither it nor {sibling.name} exists)")
    try:
        from avatar.model import export_onnx  # torch: an optional extra
    except ImportError:
        if not from_torch and sibling.is_file():  # an old pair without torch to export it again: as it was made
            return sibling
        raise EngineError("this model has no exported .onnx beside it, and exporting needs torch") from None
    net = _load_torch_model(model)
    digest = hashlib.sha256(b"".join(t.detach().cpu().numpy().tobytes() for t in net.state_dict().values()))
    digest.update(repr(net.dims).encode())
    digest.update(graph_source())  # the same weights export to another graph when the model's code changes
    out = cache_dir() / "onnx" / f"{digest.hexdigest()[:24]}.onnx"
    if not verify_checksum(out):  # checksummed like the TensorRT cache: a damaged export is rebuilt, not trusted
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp.onnx")  # per process: two exports at once do not collide
        export_onnx(net, tmp)
        write_checksum(tmp).replace(out.with_suffix(".json"))
        tmp.replace(out)
    return out


# ----------------------------------------------------------------------------------------------------


def model_name(model: ModelSource) -> str:
    """The network's name: its model file's name without the suffix (the shipped default's for None, "" for a
    network handed over as an object)."""
    if model is None:
        return Path(DEFAULT_MODEL).stem
    return Path(model).stem if isinstance(model, (str, Path)) else ""


def _create(backend: str, model: ModelSource) -> StatefulEngine:
    if backend == "tensorrt":
        import_tensorrt()  # fail fast with the clear reason before any export work
        path = resolve_onnx(model)
        return TensorRTEngine(path, onnx_dims(path))
    if backend in ("onnxruntime", "onnxruntime-cuda"):
        return OnnxEngine(resolve_onnx(model), provider="cuda" if backend == "onnxruntime-cuda" else "cpu")
    if backend.startswith("torch"):
        from avatar.engine.torch_engine import TorchEngine  # imports torch, an optional extra

        device = "cpu" if backend == "torch" else "cuda"
        if device == "cuda":
            import torch  # loaded by TorchEngine's module just above

            if not torch.cuda.is_available():
                raise EngineError("torch sees no CUDA GPU")
        return TorchEngine(_load_torch_model(model), device=device, cuda_graph=backend == "torch-cudagraph")
    raise AssertionError(backend)


def create_engine(backend: str = "auto", model: ModelSource = None) -> StatefulEngine:
    """An engine for `model` (a .safetensors or .onnx path, a LipSyncNet, or None for the shipped default).

    The returned engine's `.selection` lists (backend, outcome) for every backend tried: the chosen one
    with its device, each skipped one with the reason."""
    backend = normalize_backend(backend)
    if backend != "auto":
        engine = _create(backend, model)
        engine.selection = [(backend, f"chosen: {engine.label}")]
        engine.model_name = model_name(model)
        return engine
    selection = []
    for candidate in AUTO_ORDER:  # probed one at a time: the first that works ends the search (and its cost)
        status = probe(candidate)
        if not status.available:
            selection.append((candidate, f"skipped: {status.detail}"))
            continue
        try:
            engine = _create(candidate, model)
        except (EngineError, ImportError, OSError) as e:
            selection.append((candidate, f"skipped: {e}"))
            continue
        selection.append((candidate, f"chosen: {engine.label}"))
        engine.selection = selection
        engine.model_name = model_name(model)
        return engine
    raise EngineError("no backend could run the model:\n" + "\n".join(f"  {b}: {r}" for b, r in selection))
