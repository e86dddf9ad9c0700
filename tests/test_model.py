import numpy as np
import pytest
import torch

from avatar.dims import CELLS, ModelDims
from avatar.model import LipSyncNet, load_model, read_dims, save_model

torch.set_num_threads(1)


def _net(cell, **kw):
    torch.manual_seed(0)
    net = LipSyncNet(ModelDims(cell=cell, **kw)).eval()
    with torch.no_grad():  # non-trivial normalisation so the buffers are exercised too
        net.feature_mean.uniform_(-6, -2)
        net.feature_std.uniform_(0.5, 2)
    return net


@pytest.mark.parametrize("cell", CELLS)
def test_chunked_with_carried_state_equals_full_pass(cell):
    net = _net(cell)
    frames = 3000  # 30 s at 100 frames/s
    x = torch.randn(1, frames, net.dims.n_mels) * 2 - 4
    with torch.no_grad():
        v_full, p_full, _ = net(x)
        sizes = np.random.default_rng(0).integers(1, 40, size=frames)
        state, vs, ps, i = None, [], [], 0
        for n in sizes:
            if i >= frames:
                break
            v, p, state = net(x[:, i:i + n], state)
            vs.append(v)
            ps.append(p)
            i += n
    v_chunks, p_chunks = torch.cat(vs, 1), torch.cat(ps, 1)
    assert v_chunks.shape == v_full.shape
    assert (v_chunks - v_full).abs().max() <= 1e-5
    assert (p_chunks - p_full).abs().max() <= 1e-5


@pytest.mark.parametrize("cell", CELLS)
def test_outputs_are_posteriors_and_unit_params(cell):
    net = _net(cell)
    with torch.no_grad():
        v, p, state = net(torch.randn(2, 20, net.dims.n_mels))
    assert v.shape == (2, 20, 15) and p.shape == (2, 20, 4)
    assert torch.allclose(v.sum(-1), torch.ones(2, 20), atol=1e-5)
    assert (p >= 0).all() and (p <= 1).all()
    assert len(state) == (2 if cell == "lstm" else 1)


def test_network_is_causal():
    net = _net("gru")
    x = torch.randn(1, 50, net.dims.n_mels)
    y = x.clone()
    y[:, 30:] += 5.0
    with torch.no_grad():
        a, b = net(x)[1], net(y)[1]
    assert torch.equal(a[:, :30], b[:, :30])
    assert not torch.allclose(a[:, 30:], b[:, 30:])


def test_safetensors_round_trip_keeps_dims_and_outputs(tmp_path):
    net = _net("lstm", n_hidden=64, n_layers=1, lookahead=4)
    path = tmp_path / "m.safetensors"
    save_model(net, path)
    assert read_dims(path) == net.dims
    again = load_model(path)
    x = torch.randn(1, 10, net.dims.n_mels)
    with torch.no_grad():
        assert torch.equal(net(x)[1], again(x)[1])
    assert b"pickle" not in path.read_bytes()[:64]


def test_invalid_dims_are_rejected():
    with pytest.raises(ValueError, match="valid cells: gru, lstm, rnn"):
        ModelDims(cell="transformer")
    with pytest.raises(ValueError, match="lookahead"):
        ModelDims(lookahead=9)


def test_load_rejects_foreign_safetensors(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    with pytest.raises(ValueError, match="not a talking-avatar model"):
        load_model(path)


def test_a_head_context_is_carried_across_chunks_like_the_recurrent_state():
    net = _net("gru", voice_hidden=8, head_context=2, lookahead=4)
    assert net.dims.state_names == ("h", "voice", "context") and net.dims.core_lookahead == 2
    x = torch.randn(1, 400, net.dims.n_mels) * 2 - 4
    with torch.no_grad():
        v_full, p_full, _ = net(x)
        state, ps, vs, i = None, [], [], 0
        for n in np.random.default_rng(1).integers(1, 9, size=400):
            if i >= 400:
                break
            v, p, state = net(x[:, i:i + n], state)
            vs.append(v)
            ps.append(p)
            i += n
    assert state[2].shape == (4, 1, net.dims.n_hidden + 1)
    assert (torch.cat(ps, 1) - p_full).abs().max() <= 1e-5
    assert (torch.cat(vs, 1) - v_full).abs().max() <= 1e-5


def test_a_head_context_of_centre_taps_only_is_the_same_network_two_frames_later():
    from avatar.train.real_head import expand_head, with_head
    from avatar.visemes import VISEME_INDEX, VISEME_POSE

    plain = _net("gru", voice_hidden=8)
    w = plain.param_head.weight.detach().numpy().astype(np.float64)
    wide = with_head(plain, expand_head(w, plain.dims.n_hidden, 2), plain.param_head.bias.detach().numpy(), 2)
    assert wide.dims.lookahead == plain.dims.lookahead + 2 and wide.param_head.in_features == 5 * plain.dims.n_hidden
    x = torch.randn(1, 200, plain.dims.n_mels) * 2 - 4
    with torch.no_grad():
        v0, p0, _ = plain(x)
        v2, p2, _ = wide(x)
    assert (p2[:, 2:] - p0[:, :-2]).abs().max() <= 1e-5 and (v2[:, 2:] - v0[:, :-2]).abs().max() <= 1e-5
    # the rows before the stream's first describe nothing heard: the rest pose
    assert torch.allclose(p2[0, :2], torch.tensor(VISEME_POSE["sil"]).expand(2, -1), atol=1e-4)
    assert (v2[0, :2].argmax(-1) == VISEME_INDEX["sil"]).all()
    # a head that uses its new taps reads the frames after the described one (delayed output, still causal)
    with torch.no_grad():
        wide.param_head.weight.normal_(0, 0.3)
        y = x.clone()
        y[:, 100:] += 5.0
        a, b = wide(x)[1], wide(y)[1]
    assert torch.equal(a[:, :100], b[:, :100]) and not torch.allclose(a[:, 100:], b[:, 100:])


def test_a_head_context_beyond_the_output_delay_is_rejected():
    with pytest.raises(ValueError, match="head_context"):
        ModelDims(lookahead=1, head_context=2)


@pytest.mark.parametrize("cell", CELLS)
def test_the_core_starts_from_its_settled_quiet_room_state(cell, tmp_path):
    """The all-zero core state every backend starts from means "after a (loud-ish) quiet room" (settle_core): the
    state is carried relative to it, chunks still add up to one pass, and weights saved before the core had a
    start state are settled when loaded (the same start as a settled save)."""
    import json
    from dataclasses import asdict

    from safetensors.torch import load_file, save_file

    net = _net(cell, head_context=1)
    with torch.no_grad():
        _, plain, _ = net(torch.randn(1, 20, net.dims.n_mels, generator=torch.Generator().manual_seed(1)))
    net.settle_core()
    assert net.core_settled.abs().max() > 0.05  # a real state, not zeros
    assert torch.equal(net.context_start()[:net.dims.n_hidden], net.core_settled[0, -1, 0])
    x = torch.randn(1, 20, net.dims.n_mels, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, whole, _ = net(x)
        _, a, state = net(x[:, :7])
        _, b, _ = net(x[:, 7:], state)
        _, from_zero, _ = LipSyncNet.forward(net, x, net.initial_state(1))
    torch.testing.assert_close(torch.cat([a, b], 1), whole, atol=1e-6, rtol=0)
    torch.testing.assert_close(from_zero, whole)
    assert (whole - plain).abs().max() > 1e-3  # the start state is used (fails if forward ignores it)
    save_model(net, tmp_path / "new.safetensors")
    tensors = load_file(str(tmp_path / "new.safetensors"))
    del tensors["core_settled"]
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"dims": json.dumps(asdict(net.dims))})
    old, new = load_model(tmp_path / "old.safetensors"), load_model(tmp_path / "new.safetensors")
    torch.testing.assert_close(old.core_settled, net.core_settled)
    copy = LipSyncNet(net.dims).eval()  # a network built from another's state dict (merge_gates, with_gate)
    copy.load_state_dict(net.state_dict())
    for other in (new, copy):
        with torch.no_grad():
            torch.testing.assert_close(other(x)[1], whole)  # the same start, its context included


START_JAW_MAX = 0.08  # measured 2026-12-04 on the shipped networks' first 100 ms from the settled state: 0.026-0.06
# (files) / 0.01-0.05 (live) for digital silence to -40 dBFS noise; from the all-zero state 0.16-0.27 / 0.11-0.16


@pytest.mark.parametrize("name", ["lipsync_gru", "lipsync_gru_live"])
def test_a_fresh_shipped_engine_shows_no_start_twitch(name):
    """A stream that starts in silence or room noise keeps the mouth at rest from its first row, on both backends
    (from a zero state the core's first 40 ms opened the jaw up to 0.27 and rounded the lips: every render's first
    frame and every live start twitched)."""
    from pathlib import Path

    from avatar.audio import log_mel
    from avatar.engine import create_engine

    assets = Path(__file__).resolve().parents[1] / "assets"
    rng = np.random.default_rng(3)
    starts = [np.zeros(8000)] + [rng.standard_normal(8000) * 10 ** (db / 20) for db in (-70, -60, -50, -40)]
    for backend, path in (("onnxruntime", assets / f"{name}.onnx"), ("torch", assets / f"{name}.safetensors")):
        engine = create_engine(backend, path)
        for audio in starts:
            engine.reset()
            jaw = engine.step(log_mel(audio.astype(np.float32))[:10]).params[:, 0]
            assert jaw.max() < START_JAW_MAX, (backend, jaw.round(3))
