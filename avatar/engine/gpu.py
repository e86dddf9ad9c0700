"""What NVIDIA GPU this machine has, and device memory for TensorRT, through torch or cuda-python.

The live app must run without torch, so every GPU helper here works with either torch (when installed
with CUDA) or NVIDIA's cuda-python bindings (pip cuda-python)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class GpuInfo:
    name: str
    capability: tuple[int, int]  # CUDA compute capability, e.g. (8, 9) for Ada, (9, 0) for Hopper
    via: str  # "torch" or "cuda-python"

    @property
    def sm(self) -> str:
        return f"{self.capability[0]}.{self.capability[1]}"


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # older cuda-python
    return cudart


def _check(result):
    err, *rest = result
    if int(err) != 0:
        raise RuntimeError(f"CUDA runtime error {err}")
    return rest[0] if len(rest) == 1 else rest


@lru_cache(maxsize=1)
def gpu_info() -> tuple[GpuInfo | None, str]:
    """(the first CUDA GPU, "") or (None, why there is none usable)."""
    why = []
    try:
        import torch

        if torch.cuda.is_available():
            return GpuInfo(torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0), "torch"), ""
        why.append("torch sees no CUDA GPU")
    except ImportError:
        why.append("torch not installed")
    try:
        cudart = _cudart()
        count = _check(cudart.cudaGetDeviceCount())
        if count > 0:
            props = _check(cudart.cudaGetDeviceProperties(0))
            name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
            return GpuInfo(name, (props.major, props.minor), "cuda-python"), ""
        why.append("cuda-python sees no GPU")
    except ImportError:
        why.append("cuda-python not installed")
    except Exception as e:  # driver missing or too old
        why.append(f"CUDA runtime unavailable ({e})")
    return None, "no NVIDIA GPU: " + "; ".join(why)


class DeviceBuffers:
    """Named device buffers and one CUDA stream, host <-> device copies, zeroing. torch or cuda-python."""

    def __init__(self, via: str):
        self.via = via
        self.buffers: dict[str, tuple[int, int, object]] = {}  # name -> (pointer, nbytes, owner)
        if via == "torch":
            import torch

            self._torch = torch
            self._stream = torch.cuda.Stream()
            self.stream_handle = self._stream.cuda_stream
        else:
            self._cudart = _cudart()
            self._stream = _check(self._cudart.cudaStreamCreate())
            self.stream_handle = int(self._stream)

    def alloc(self, name: str, nbytes: int) -> int:
        nbytes = max(int(nbytes), 4)
        if self.via == "torch":
            owner = self._torch.zeros(nbytes, dtype=self._torch.uint8, device="cuda")
            ptr = owner.data_ptr()
        else:
            ptr = int(_check(self._cudart.cudaMalloc(nbytes)))
            _check(self._cudart.cudaMemset(ptr, 0, nbytes))
            owner = None
        self.buffers[name] = (ptr, nbytes, owner)
        return ptr

    def ptr(self, name: str) -> int:
        return self.buffers[name][0]

    def upload(self, name: str, array: np.ndarray) -> None:
        a = np.ascontiguousarray(array)
        if self.via == "torch":
            t = self.buffers[name][2]
            with self._torch.cuda.stream(self._stream):  # same stream as the engine: ordered, no extra sync
                t[: a.nbytes].copy_(self._torch.from_numpy(a.view(np.uint8).reshape(-1)))
        else:
            kind = self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            _check(self._cudart.cudaMemcpyAsync(self.ptr(name), a.ctypes.data, a.nbytes, kind, self._stream))

    def download(self, name: str, shape, dtype=np.float32) -> np.ndarray:
        out = np.empty(shape, dtype)
        if self.via == "torch":
            t = self.buffers[name][2]
            self.synchronize()
            out.view(np.uint8).reshape(-1)[:] = t[: out.nbytes].cpu().numpy()
        else:
            kind = self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
            _check(self._cudart.cudaMemcpyAsync(out.ctypes.data, self.ptr(name), out.nbytes, kind, self._stream))
            self.synchronize()
        return out

    def zero(self, name: str) -> None:
        if self.via == "torch":
            with self._torch.cuda.stream(self._stream):
                self.buffers[name][2].zero_()
        else:
            ptr, nbytes, _ = self.buffers[name]
            _check(self._cudart.cudaMemsetAsync(ptr, 0, nbytes, self._stream))

    def synchronize(self) -> None:
        if self.via == "torch":
            self._stream.synchronize()
        else:
            _check(self._cudart.cudaStreamSynchronize(self._stream))

    def close(self) -> None:
        if self.via != "torch":
            for ptr, _, _ in self.buffers.values():
                self._cudart.cudaFree(ptr)
        self.buffers.clear()
