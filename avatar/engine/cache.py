"""On-disk cache of built TensorRT engines, in the user's cache folder.

An engine is only valid for the exact ONNX graph, TensorRT version and GPU it was built for, so the key is a
hash of those. Each engine file has a JSON sidecar with the same key parts and the engine's own SHA-256: a
truncated, corrupted or mismatched file is detected before it reaches the runtime, deleted, and rebuilt.
Engines are loaded only from this folder, never from a path a user or file hands us.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable

from avatar.paths import cache_dir

log = logging.getLogger(__name__)
ENGINE_SUBDIR = "engines"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cache_key(parts: dict[str, str]) -> str:
    """A short stable name for a set of key parts (model hash, TensorRT version, GPU, build settings)."""
    return sha256_bytes(json.dumps(parts, sort_keys=True).encode())[:24]


def write_checksum(path: Path) -> Path:
    """A JSON sidecar (same name, .json) with the file's SHA-256 and size, for verify_checksum."""
    data = Path(path).read_bytes()
    sidecar = Path(path).with_suffix(".json")
    sidecar.write_text(json.dumps({"sha256": sha256_bytes(data), "nbytes": len(data)}))
    return sidecar


def verify_checksum(path: Path) -> bool:
    """True when the file and its sidecar agree; a missing, truncated or altered file (or sidecar) is removed with
    its sidecar, so the caller rebuilds it."""
    path, sidecar = Path(path), Path(path).with_suffix(".json")
    if not path.exists():
        return False
    try:
        meta = json.loads(sidecar.read_text())
        data = path.read_bytes()
        ok = meta.get("sha256") == sha256_bytes(data) and meta.get("nbytes") == len(data)
        why = "corrupt (checksum mismatch)"
    except (OSError, ValueError, AttributeError) as e:
        ok, why = False, f"no readable checksum ({e})"
    if not ok:
        log.warning("cached %s: %s; rebuilding", path.name, why)
        path.unlink(missing_ok=True)
        sidecar.unlink(missing_ok=True)
    return ok


class EngineCache:
    def __init__(self, folder: Path | None = None):
        self.folder = Path(folder) if folder is not None else cache_dir() / ENGINE_SUBDIR
        self.folder.mkdir(parents=True, exist_ok=True)

    def paths(self, parts: dict[str, str]) -> tuple[Path, Path]:
        key = cache_key(parts)
        return self.folder / f"{key}.engine", self.folder / f"{key}.json"

    def load(self, parts: dict[str, str]) -> bytes | None:
        """The cached engine for these key parts, or None when absent or not trustworthy (then removed)."""
        engine_path, meta_path = self.paths(parts)
        if not engine_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            data = engine_path.read_bytes()
        except (OSError, ValueError) as e:
            return self._discard(parts, f"unreadable ({e})")
        if meta.get("parts") != parts:
            return self._discard(parts, "built for another model, TensorRT version or GPU")
        if meta.get("sha256") != sha256_bytes(data) or meta.get("nbytes") != len(data):
            return self._discard(parts, "corrupt (checksum mismatch)")
        return data

    def store(self, parts: dict[str, str], data: bytes) -> Path:
        engine_path, meta_path = self.paths(parts)
        tmp = engine_path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, engine_path)  # never leave a half-written engine under the real name
        meta_path.write_text(json.dumps({"parts": parts, "sha256": sha256_bytes(data), "nbytes": len(data)}))
        return engine_path

    def _discard(self, parts, why):
        log.warning("cached engine %s: %s; rebuilding", self.paths(parts)[0].name, why)
        for p in self.paths(parts):
            p.unlink(missing_ok=True)
        return None

    def get_or_build(self, parts: dict[str, str], build: Callable[[], bytes],
                     deserialize: Callable[[bytes], object]) -> tuple[object, bool]:
        """(runtime object, built_now). A cached file that fails to deserialize is rebuilt once."""
        data = self.load(parts)
        if data is not None:
            try:
                obj = deserialize(data)
            except Exception as e:  # a runtime's own error types for a bad blob
                obj, why = None, f"rejected by the runtime ({e})"
            else:
                why = "rejected by the runtime"
            if obj is not None:
                return obj, False
            self._discard(parts, why)
        data = build()
        self.store(parts, data)
        obj = deserialize(data)
        if obj is None:
            raise RuntimeError("a freshly built engine could not be deserialized")
        return obj, True
