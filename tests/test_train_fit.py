"""Training: a tiny model learns from freshly generated data (CI never trains the real model)."""
import importlib.util

import numpy as np
import pytest

pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(importlib.util.find_spec("espeakng_loader") is None,
                                reason="espeakng-loader not installed (pip install '.[train]')")


def test_lane_indices_continue_each_lane():
    from avatar.train.fit import lane_indices
    lanes = lane_indices(1000, batch=3, segment=7, rng=np.random.default_rng(0))
    a, b = next(lanes), next(lanes)
    assert a.shape == (3, 7)
    np.testing.assert_array_equal(b[:, 0], (a[:, -1] + 1) % 1000)  # the state carried over is the right one


def test_delayed_targets_describe_earlier_frames():
    from avatar.train.fit import Stream, delayed
    s = Stream(np.zeros((6, 40), np.float32), np.arange(6), np.arange(24, dtype=np.float32).reshape(6, 4))
    d = delayed(s, 2)
    assert list(d.visemes) == [0, 0, 0, 1, 2, 3]
    np.testing.assert_array_equal(d.params[2:], s.params[:4])


def test_onset_frames_and_their_weight():
    import torch

    from avatar.train.fit import SILENCE, losses, onset_frames
    from avatar.visemes import VISEME_INDEX
    sil, a, b = SILENCE, VISEME_INDEX["aa"], VISEME_INDEX["E"]  # (not p/b/m: those weigh more anyway)
    vis = torch.tensor([[sil, sil, a, a, a, a, a, a, a, sil, b, b]])
    assert onset_frames(torch, vis).int().tolist() == [[0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1]]
    # a prediction that is wrong only at the onsets costs more when onsets weigh more
    params = torch.zeros(1, 12, 4)
    p_logits = torch.full((1, 12, 4), -9.0)
    p_logits[0, 2:4, 0] = 3.0
    v_logits = torch.zeros(1, 12, 15)
    plain = losses(torch, v_logits, p_logits, vis, params)[2]
    weighted = losses(torch, v_logits, p_logits, vis, params, onset_weight=4.0)[2]
    assert weighted > 1.3 * plain
    p_logits[0, 2:4, 0], p_logits[0, 7:9, 0] = -9.0, 3.0  # ...and less when they are wrong elsewhere
    assert losses(torch, v_logits, p_logits, vis, params, onset_weight=4.0)[2] < 0.7 * losses(
        torch, v_logits, p_logits, vis, params)[2]


@pytest.mark.slow
def test_tiny_model_loss_falls_on_fresh_data(tmp_path):
    from avatar.model import load_model
    from avatar.train.datagen import GenConfig, generate
    from avatar.train.fit import FitConfig, fit
    generate(GenConfig(seed=2, piper_share=0.0, shard_seconds=40), tmp_path / "data", 40 / 3600, procs=1,
             progress=False)
    config = FitConfig(n_hidden=32, n_layers=1, lookahead=2, batch=8, segment=50, steps=120, minutes=None,
                       lr=1e-2, eval_every=1000)
    record = fit(config, tmp_path / "data", tmp_path / "tiny.safetensors", log=lambda *_: None)
    losses = [h["loss"] for h in record["history"]]
    assert record["steps"] == 120 and len(losses) >= 10
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:2])
    model = load_model(tmp_path / "tiny.safetensors")  # weights saved and loadable, normalisation learned
    assert model.dims.lookahead == 2 and model.dims.n_hidden == 32
    assert float(model.feature_std.min()) > 0 and float(model.feature_mean.abs().sum()) > 0


def test_targets_recomputed_from_the_shards_timed_phones(tmp_path):
    from avatar.train.datagen import GenConfig, generate
    from avatar.train.fit import load_stream
    from avatar.train.targets import HAND_RULES, measured_rules

    generate(GenConfig(seed=3, piper_share=0.0, shard_seconds=20), tmp_path / "d", 20 / 3600, procs=1, progress=False)
    stored = load_stream(tmp_path / "d")
    hand, measured = load_stream(tmp_path / "d", targets="hand"), load_stream(tmp_path / "d", targets="measured")
    np.testing.assert_allclose(hand.params, stored.params, atol=2e-3)  # stored as float16 by the same rules
    assert np.array_equal(hand.visemes, measured.visemes)  # only the mouth parameters change
    nn = stored.visemes == 8  # "nn" frames: the measured rules keep the lips apart on a tongue consonant
    assert nn.sum() > 10 and measured.params[nn, 0].mean() > hand.params[nn, 0].mean() + 0.1
    assert HAND_RULES.viseme_pose["nn"][0] < measured_rules().viseme_pose["nn"][0]
