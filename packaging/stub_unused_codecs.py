"""Swap two encoder libraries that PyAV's FFmpeg links, but the app never opens, for placeholders (Linux bundle).

Every PyAV wheel (12 to 18) links libavcodec against libx265 (HEVC, 21 MB) and SVT-AV1 (AV1, 7 MB). The app
encodes H.264 + AAC only, so the bundle carries placeholder libraries of the same soname that define the
functions libavcodec imports from them and fail: x265_api_get returns NULL, each SVT-AV1 call returns
EB_ErrorInsufficientResources. Opening those two encoders in the bundle then fails with FFmpeg's own error
message; everything else links and runs as before.

    python packaging/stub_unused_codecs.py dist/talking-avatar/_internal/av.libs

Needs `nm` (binutils) and a C compiler (`cc`); without them it changes nothing and says so.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# library name prefix -> what each placeholder function returns
UNUSED_ENCODERS = {
    "libx265": "0",  # x265_api_get_N(depth) -> NULL: FFmpeg reports the bit depth as unsupported
    "libSvtAv1Enc": "(long)0x80001000",  # EB_ErrorInsufficientResources: FFmpeg stops at the handle
}
TOOLS = ("nm", "readelf", "cc")  # without them the real libraries stay


def dynamic_symbols(lib: Path, defined: bool) -> set[str]:
    """Names in the dynamic symbol table: defined functions/objects, or the undefined (imported) ones."""
    flag = "--defined-only" if defined else "--undefined-only"
    out = subprocess.run(["nm", "-D", flag, str(lib)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1].split("@")[0] for line in out.splitlines() if line.strip()}


def soname(lib: Path) -> str:
    out = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if "(SONAME)" in line:
            return line.split("[", 1)[1].rstrip("]")
    return lib.name


def stub_source(symbols: set[str], result: str) -> str:
    lines = ["/* placeholder: the app never opens this encoder (packaging/stub_unused_codecs.py) */"]
    lines += [f"long {name}(void) {{ return {result}; }}" for name in sorted(symbols)]
    return "\n".join(lines) + "\n"


def build_stub(symbols: set[str], result: str, name: str, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "stub.c"
        src.write_text(stub_source(symbols, result))
        # no libc needed: the functions only return a constant
        subprocess.run(["cc", "-shared", "-fPIC", "-nostdlib", "-O2", f"-Wl,-soname,{name}", "-o", str(out),
                        str(src)], check=True)


def stub_unused(libs_dir: Path) -> list[tuple[str, int, int]]:
    """Replace the unused encoder libraries in libs_dir; returns (name, old bytes, new bytes) per library."""
    users = [p for p in libs_dir.glob("libavcodec*.so*") if p.is_file()]
    if not users:
        raise FileNotFoundError(f"no libavcodec in {libs_dir}")
    wanted = set().union(*(dynamic_symbols(p, defined=False) for p in users))
    done = []
    for prefix, result in UNUSED_ENCODERS.items():
        for lib in sorted(libs_dir.glob(f"{prefix}*.so*")):
            if lib.is_symlink() or not lib.is_file():
                continue
            symbols = dynamic_symbols(lib, defined=True) & wanted
            if not symbols:
                print(f"stub_unused_codecs: libavcodec imports nothing from {lib.name}: kept as it is")
                continue
            old = lib.stat().st_size
            stub = lib.with_name(lib.name + ".stub")
            build_stub(symbols, result, soname(lib), stub)
            missing = symbols - dynamic_symbols(stub, defined=True)
            if missing:
                stub.unlink()
                raise RuntimeError(f"placeholder for {lib.name} lacks {sorted(missing)}")
            stub.replace(lib)
            done.append((lib.name, old, lib.stat().st_size))
    return done


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        print(f"stub_unused_codecs: {', '.join(missing)} not found: keeping the real encoder libraries")
        return 0
    for name, old, new in stub_unused(Path(argv[0])):
        print(f"stub_unused_codecs: {name}: {old / 1e6:.1f} MB -> {new / 1e3:.0f} kB placeholder")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
