"""GPU backends: TensorRT / TensorRT-RTX and the PyTorch CUDA-graph path. Skipped, with the reason, where the
library or a supported GPU is absent."""
import numpy as np
import pytest

from avatar.dims import ModelDims

torch = pytest.importorskip("torch", reason="torch is needed to make the test model")


def _trt_or_skip():
    from avatar.engine import EngineError
    from avatar.engine.tensorrt_engine import import_tensorrt

    try:
        return import_tensorrt()
    except EngineError as e:
        pytest.skip(str(e))


def _gpu_or_skip():
    from avatar.engine.gpu import gpu_info

    gpu, why = gpu_info()
    if gpu is None:
        pytest.skip(why)
    return gpu


@pytest.fixture(scope="module", params=["gru", "lstm"])
def model_files(request, tmp_path_factory):
    from avatar.model import LipSyncNet, export_onnx, save_model

    torch.manual_seed(2)
    net = LipSyncNet(ModelDims(cell=request.param)).eval()
    folder = tmp_path_factory.mktemp("gpu")
    save_model(net, folder / "m.safetensors")
    export_onnx(net, folder / "m.onnx")
    return folder / "m.safetensors", folder / "m.onnx"


def _onnx_io(path):
    import onnx

    proto = onnx.load(str(path))
    out = {}
    for mode, values in (("input", proto.graph.input), ("output", proto.graph.output)):
        for v in values:
            shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim)
            dtype = onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name
            out[v.name] = (mode, shape, dtype)
    return out


def test_tensorrt_build_matches_the_onnx_graph(model_files):
    trt, flavour = _trt_or_skip()
    _gpu_or_skip()
    from avatar.engine.onnx_engine import onnx_dims
    from avatar.engine.tensorrt_engine import build_serialized, network_io

    onnx_path = model_files[1]
    data = onnx_path.read_bytes()
    plan = build_serialized(trt, data, onnx_dims(onnx_path))  # building works even where running does not
    assert len(plan) > 1000
    assert network_io(trt, data) == _onnx_io(onnx_path)


def test_tensorrt_equals_onnxruntime(model_files, tmp_path, monkeypatch):
    trt, flavour = _trt_or_skip()
    gpu = _gpu_or_skip()
    from avatar.engine import create_engine
    from avatar.engine.tensorrt_engine import engine_io, runnable_reason

    why = runnable_reason(flavour, gpu)
    if why:
        pytest.skip(why)
    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path))
    engine = create_engine("tensorrt", model_files[1])
    assert engine.built_now
    assert engine_io(trt, engine.engine) == _onnx_io(model_files[1])
    ref = create_engine("onnxruntime", model_files[1])
    x = (np.random.default_rng(0).standard_normal((200, 40)) * 2 - 4).astype(np.float32)
    for chunk in (1, 4, 7):
        got = np.concatenate([engine.step(x[i:i + chunk]).params for i in range(0, 200, chunk)])
        want = np.concatenate([ref.step(x[i:i + chunk]).params for i in range(0, 200, chunk)])
        assert np.abs(got - want).max() <= 1e-5
        engine.reset()
        ref.reset()
    # the second engine comes from the cache; a corrupted cache file is rebuilt, not crashed on
    assert not create_engine("tensorrt", model_files[1]).built_now
    for f in (tmp_path / "engines").glob("*.engine"):
        f.write_bytes(f.read_bytes()[:100])
    again = create_engine("tensorrt", model_files[1])
    assert again.built_now
    assert np.abs(again.step(x[:4]).params - ref.step(x[:4]).params).max() <= 1e-5


def test_cuda_graph_equals_eager(model_files):
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA GPU")
    from avatar.engine import create_engine

    eager, graph = create_engine("torch-cuda", model_files[0]), create_engine("torch-cudagraph", model_files[0])
    cpu = create_engine("onnxruntime", model_files[1])
    x = (np.random.default_rng(1).standard_normal((120, 40)) * 2 - 4).astype(np.float32)
    for chunk in (4, 4, 1, 7):
        for engine in (eager, graph, cpu):
            engine.reset()
        a = np.concatenate([eager.step(x[i:i + chunk]).params for i in range(0, 120, chunk)])
        b = np.concatenate([graph.step(x[i:i + chunk]).params for i in range(0, 120, chunk)])
        c = np.concatenate([cpu.step(x[i:i + chunk]).params for i in range(0, 120, chunk)])
        assert np.abs(a - b).max() <= 1e-5
        assert np.abs(a - c).max() <= 1e-4  # cuDNN vs MLAS float32 summation order
