import numpy as np
import pytest
import torch

from avatar.dims import CELLS, ModelDims
from avatar.engine import EngineError, create_engine, normalize_backend, probe_backends, resolve_onnx
from avatar.engine.cache import EngineCache
from avatar.model import LipSyncNet, export_onnx, save_model

torch.set_num_threads(1)


HEAD_CONTEXT = "gru-context"  # a gated GRU whose parameter head reads 2 frames either side: two more carried states


@pytest.fixture(scope="module", params=[*CELLS, HEAD_CONTEXT])
def model_files(request, tmp_path_factory):
    torch.manual_seed(1)
    dims = (ModelDims(n_hidden=96, voice_hidden=16, head_context=2, lookahead=4) if request.param == HEAD_CONTEXT
            else ModelDims(cell=request.param, n_hidden=96))
    net = LipSyncNet(dims).eval()
    with torch.no_grad():
        net.feature_mean.fill_(-4.0)
        net.feature_std.fill_(1.5)
    folder = tmp_path_factory.mktemp(request.param)
    save_model(net, folder / "m.safetensors")
    export_onnx(net, folder / "m.onnx")
    return folder / "m.safetensors", folder / "m.onnx"


def _features(frames, seed=0):
    return (np.random.default_rng(seed).standard_normal((frames, 40)) * 2 - 4).astype(np.float32)


def _run(engine, x, sizes):
    outs, i = [], 0
    for n in sizes:
        if i >= len(x):
            break
        outs.append(engine.step(x[i:i + n]))
        i += n
    return np.concatenate([o.visemes for o in outs]), np.concatenate([o.params for o in outs])


@pytest.mark.parametrize("chunk", [1, 2, 4, 7, 64])
def test_onnxruntime_equals_torch(model_files, chunk):
    weights, onnx = model_files
    x = _features(300)
    ref = create_engine("torch", weights)
    ort = create_engine("onnxruntime", onnx)
    v_ref, p_ref = _run(ref, x, [chunk] * 300)
    v_ort, p_ort = _run(ort, x, [chunk] * 300)
    assert np.abs(v_ref - v_ort).max() <= 1e-5
    assert np.abs(p_ref - p_ort).max() <= 1e-5


def test_random_chunks_equal_one_pass(model_files):
    weights, onnx = model_files
    x = _features(500, seed=3)
    sizes = np.random.default_rng(4).integers(1, 20, 500)
    for backend, path in (("torch", weights), ("onnxruntime", onnx)):
        whole = create_engine(backend, path).step(x)  # > MAX_CHUNK frames: split internally, state carried
        v, p = _run(create_engine(backend, path), x, sizes)
        assert np.abs(whole.params - p).max() <= 1e-5
        assert np.abs(whole.visemes - v).max() <= 1e-5


def test_reset_gives_a_fresh_engine(model_files):
    weights, onnx = model_files
    x = _features(40, seed=5)
    for backend, path in (("torch", weights), ("onnxruntime", onnx)):
        engine = create_engine(backend, path)
        first = engine.step(x).params
        second = engine.step(x).params
        assert not np.allclose(first, second)  # the state carried over changed the output
        engine.reset()
        assert np.array_equal(engine.step(x).params, create_engine(backend, path).step(x).params)


def test_non_finite_features_never_reach_the_state(model_files):
    weights, onnx = model_files
    x = _features(20)
    bad = x.copy()
    bad[3, 5], bad[7, :], bad[9, 0] = np.nan, np.inf, -np.inf
    for backend, path in (("torch", weights), ("onnxruntime", onnx)):
        engine = create_engine(backend, path)
        out = engine.step(bad)
        assert np.isfinite(out.params).all() and np.isfinite(out.visemes).all()
        after = engine.step(x)  # the state is still healthy afterwards
        assert np.isfinite(after.params).all()


def test_bad_feature_shapes_are_reported(model_files):
    engine = create_engine("onnxruntime", model_files[1])
    with pytest.raises(ValueError, match="features must be"):
        engine.step(np.zeros((4, 13), np.float32))
    assert engine.step(np.zeros((0, 40), np.float32)).params.shape == (0, 4)


# the backend names the README's table documents (what users type), in the order `auto` is documented to try
# them: TensorRT, ONNX Runtime CUDA, ONNX Runtime CPU, PyTorch; then the two GPU PyTorch variants auto never picks
DOCUMENTED_BACKENDS = ("tensorrt", "onnxruntime-cuda", "onnxruntime", "torch", "torch-cuda", "torch-cudagraph")


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown backend 'tensorflow'") as info:
        create_engine("tensorflow")
    listed = str(info.value).split("valid backends: ", 1)[1].split(", ")
    assert listed == ["auto", *DOCUMENTED_BACKENDS]
    for name in listed:  # every name offered is one the engine factory takes
        assert normalize_backend(name) == name


class _FakeEngine:
    def __init__(self, backend):
        self.label = f"{backend} (fake)"


def _fake_machine(monkeypatch, available, fails_to_build=()):
    """`auto` on a pretend machine: these backends probe as available, these others raise when built."""
    import avatar.engine as engines

    def probe(backend):
        return engines.BackendStatus(backend, backend in available, f"{backend} probe says no" if backend not in
                                     available else "fake device")

    def create(backend, model):
        if backend in fails_to_build:
            raise EngineError(f"{backend} would not build")
        return _FakeEngine(backend)

    monkeypatch.setattr(engines, "probe", probe)
    monkeypatch.setattr(engines, "_create", create)


def test_auto_takes_tensorrt_first_when_it_works(monkeypatch):
    _fake_machine(monkeypatch, available=DOCUMENTED_BACKENDS)
    engine = create_engine("auto")
    assert engine.selection == [("tensorrt", "chosen: tensorrt (fake)")]  # nothing else was probed or built


def test_auto_on_a_cpu_machine_takes_onnxruntime_and_says_why_not_the_gpu_ones(monkeypatch):
    _fake_machine(monkeypatch, available=("onnxruntime", "torch"))
    assert create_engine("auto").selection == [("tensorrt", "skipped: tensorrt probe says no"),
                                               ("onnxruntime-cuda", "skipped: onnxruntime-cuda probe says no"),
                                               ("onnxruntime", "chosen: onnxruntime (fake)")]


def test_auto_passes_over_a_backend_that_probes_fine_but_fails_to_build(monkeypatch):
    _fake_machine(monkeypatch, available=DOCUMENTED_BACKENDS, fails_to_build=("tensorrt",))
    assert create_engine("auto").selection == [("tensorrt", "skipped: tensorrt would not build"),
                                               ("onnxruntime-cuda", "chosen: onnxruntime-cuda (fake)")]


def test_auto_falls_back_to_torch_last_and_never_to_the_gpu_torch_variants(monkeypatch):
    _fake_machine(monkeypatch, available=("torch", "torch-cuda", "torch-cudagraph"))
    assert [b for b, _ in create_engine("auto").selection] == ["tensorrt", "onnxruntime-cuda", "onnxruntime", "torch"]
    _fake_machine(monkeypatch, available=("torch-cuda", "torch-cudagraph"))
    with pytest.raises(EngineError, match="no backend could run the model") as info:
        create_engine("auto")
    assert str(info.value).splitlines()[1:] == [f"  {b}: skipped: {b} probe says no"
                                                for b in ("tensorrt", "onnxruntime-cuda", "onnxruntime", "torch")]


def test_auto_on_this_machine_picks_a_backend_that_runs(model_files):
    engine = create_engine("auto", model_files[0])
    chosen, outcome = engine.selection[-1]
    assert outcome == f"chosen: {engine.label}" and {s.backend: s for s in probe_backends()}[chosen].available
    assert all(outcome.startswith("skipped: ") and len(outcome) > 12 for _, outcome in engine.selection[:-1])
    assert engine.step(np.zeros((3, 40), np.float32)).params.shape == (3, 4)


def test_onnx_is_exported_on_demand_into_the_cache(model_files, tmp_path, monkeypatch):
    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path))
    weights, _ = model_files
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes(weights.read_bytes())
    path = resolve_onnx(lone)
    assert path.parent == tmp_path / "onnx" and path.suffix == ".onnx"
    x = _features(30)
    assert np.abs(create_engine("onnxruntime", path).step(x).params
                  - create_engine("torch", lone).step(x).params).max() <= 1e-5


def test_an_export_is_redone_when_the_model_code_changes(model_files, tmp_path, monkeypatch):
    """The export cache is keyed by the weights and by the code that builds the graph: new code (a changed gate
    curve, say) must not run an old graph of the same weights."""
    import avatar.engine as engine_module

    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path))
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes(model_files[0].read_bytes())
    first = resolve_onnx(lone)
    assert resolve_onnx(lone) == first
    monkeypatch.setattr(engine_module, "graph_source", lambda: b"another version of avatar/model.py")
    second = resolve_onnx(lone)
    assert second != first and second.is_file() and first.is_file()


def test_a_pair_saved_before_the_settled_start_is_exported_again(tmp_path, monkeypatch):
    """Weights saved without the core's start state are settled when loaded; the ONNX beside them (exported then)
    starts the core from zero. Paired, the backends would disagree: the weights are exported again instead."""
    import json
    from dataclasses import asdict

    from safetensors.torch import load_file, save_file

    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(2)
    net = LipSyncNet(ModelDims(n_hidden=64)).eval()
    with torch.no_grad():
        net.feature_mean.fill_(-4.0)
        net.feature_std.fill_(1.5)
    save_model(net, tmp_path / "new.safetensors")
    tensors = load_file(str(tmp_path / "new.safetensors"))
    del tensors["core_settled"]
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"dims": json.dumps(asdict(net.dims))})
    export_onnx(net, tmp_path / "old.onnx")  # as the old code exported it: the core from zero
    x = _features(30)
    stale = create_engine("onnxruntime", tmp_path / "old.onnx").step(x).params
    settled = create_engine("torch", tmp_path / "old.safetensors").step(x).params
    assert np.abs(stale - settled).max() > 1e-3  # the old pair disagrees (else this test proves nothing)
    assert resolve_onnx(tmp_path / "old.safetensors").parent == tmp_path / "cache" / "onnx"
    paired = create_engine("onnxruntime", tmp_path / "old.safetensors").step(x).params
    assert np.abs(paired - settled).max() <= 1e-5
    export_onnx(net, tmp_path / "new.onnx")
    assert resolve_onnx(tmp_path / "new.safetensors") == tmp_path / "new.onnx"  # a current pair stays a pair


def test_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(EngineError, match="not found"):
        create_engine("onnxruntime", tmp_path / "nothing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(EngineError, match="cannot load"):
        create_engine("onnxruntime", junk)


# ---- engine cache: corrupt or mismatched plans are detected and rebuilt, never crashed on -----------------


class _Builder:
    """Stands in for TensorRT's builder/runtime so the cache logic runs everywhere; the plan is plain bytes."""

    def __init__(self, plan=b"PLAN:model-a"):
        self.plan, self.builds = plan, 0

    def build(self):
        self.builds += 1
        return self.plan

    def deserialize(self, data):
        if not data.startswith(b"PLAN:"):
            raise RuntimeError("Serialization assertion failed: magic tag mismatch")
        return data.decode()


PARTS = {"model": "abc", "trt": "10.0", "gpu": "RTX 4090", "sm": "8.9"}


def test_cache_builds_once_then_loads(tmp_path):
    cache, builder = EngineCache(tmp_path), _Builder()
    obj, built = cache.get_or_build(PARTS, builder.build, builder.deserialize)
    assert built and obj == "PLAN:model-a"
    obj, built = cache.get_or_build(PARTS, builder.build, builder.deserialize)
    assert not built and builder.builds == 1


@pytest.mark.parametrize("damage", ["truncate", "flip", "sidecar", "no-sidecar", "runtime-rejects"])
def test_damaged_cached_engine_is_rebuilt(tmp_path, damage):
    cache, builder = EngineCache(tmp_path), _Builder()
    cache.get_or_build(PARTS, builder.build, builder.deserialize)
    engine_path, meta_path = cache.paths(PARTS)
    if damage == "truncate":
        engine_path.write_bytes(engine_path.read_bytes()[:3])
    elif damage == "flip":
        data = bytearray(engine_path.read_bytes())
        data[-1] ^= 0xFF
        engine_path.write_bytes(bytes(data))
    elif damage == "sidecar":
        meta_path.write_text("{not json")
    elif damage == "no-sidecar":
        meta_path.unlink()
    else:  # checksums fine, but the runtime refuses the blob (e.g. written by another TensorRT build)
        cache.store(PARTS, b"XXXX-not-a-plan")
    obj, built = cache.get_or_build(PARTS, builder.build, builder.deserialize)
    assert built and obj == "PLAN:model-a" and builder.builds == 2
    assert cache.load(PARTS) == b"PLAN:model-a"


def test_cache_key_separates_models_and_gpus(tmp_path):
    cache = EngineCache(tmp_path)
    other_gpu = dict(PARTS, gpu="RTX 3060", sm="8.6")
    assert cache.paths(PARTS)[0] != cache.paths(other_gpu)[0]
    cache.store(PARTS, b"PLAN:a")
    assert cache.load(other_gpu) is None
    # a plan stored under one key but claiming other parts in its sidecar is not trusted
    engine_path, meta_path = cache.paths(PARTS)
    meta_path.write_text(meta_path.read_text().replace("RTX 4090", "RTX 3060"))
    assert cache.load(PARTS) is None and not engine_path.exists()


@pytest.mark.parametrize("which", ["default", "live"])
def test_shipped_model_pair_agrees(which):
    from avatar.engine import default_model_path, live_model_path

    weights = {"default": default_model_path, "live": live_model_path}[which]()
    assert weights.is_file() and weights.with_suffix(".onnx").is_file(), f"the {which} model must ship as a pair"
    x = _features(200, seed=7)
    torch_out = create_engine("torch", weights).step(x)
    ort_out = create_engine("onnxruntime", weights.with_suffix(".onnx")).step(x)
    assert np.abs(torch_out.params - ort_out.params).max() <= 1e-5
    assert np.abs(torch_out.visemes - ort_out.visemes).max() <= 1e-5


def test_live_view_runs_the_zero_look_ahead_model_and_exports_the_default_one():
    """The app's live view must answer each frame at once; files may wait for what follows (more accurate)."""
    from avatar.gui.app import real_engine_factory, real_offline_engine_factory

    live, offline = real_engine_factory("onnxruntime"), real_offline_engine_factory("onnxruntime")
    assert live.lookahead == 0 and offline.lookahead == 4  # files: 20 ms core + 20 ms head context
    x = _features(50, seed=3)
    assert np.abs(live.step(x).params - offline.step(x).params).max() > 1e-3  # two different networks
