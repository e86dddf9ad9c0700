"""`avatar train real-head`: the mouth-parameter head refitted to real faces, the rest of the network kept."""
from __future__ import annotations

import csv
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
from avatar.train import real_head as rh  # noqa: E402
from avatar.visemes import PARAM_NAMES  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
REAL_VIDEO = Path(os.environ.get("AVATAR_REAL_VIDEO", ROOT.parent / "shared" / "data" / "video"))


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_fit_moves_the_refit_rows_towards_the_real_targets_and_keeps_the_rest():
    rng = np.random.default_rng(0)
    hidden = 16
    w0, b0 = rng.normal(0, 0.3, (4, hidden)), rng.normal(0, 0.3, 4)
    true_w = rng.normal(0, 0.5, (3, hidden))  # what real mouths follow: not what the old head says
    real_x = rng.normal(0, 1, (600, hidden))
    real_y = _sigmoid(real_x @ true_w.T)
    real_y[:50] = np.nan  # frames outside speech carry no target
    syn_x = rng.normal(0, 1, (3000, hidden))
    syn_logits = syn_x @ w0.T + b0
    w, b = rh.fit_head(w0, b0, real_x, real_y, syn_x, _sigmoid(syn_logits), distill_weight=0.1, prior_weight=0.0, steps=300)
    press = PARAM_NAMES.index("lip_press")
    assert np.array_equal(w[press], w0[press]) and b[press] == b0[press]  # lip_press keeps its row
    rows = [PARAM_NAMES.index(p) for p in rh.REFIT_PARAMS]
    ok = np.isfinite(real_y[:, 0])
    before = np.mean((_sigmoid(real_x @ w0[rows].T + b0[rows]) - real_y)[ok] ** 2)
    after = np.mean((_sigmoid(real_x @ w[rows].T + b[rows]) - real_y)[ok] ** 2)
    assert after < 0.5 * before
    # a strong pull to the old outputs on the synthetic frames keeps them
    w2, b2 = rh.fit_head(w0, b0, real_x, real_y, syn_x, _sigmoid(syn_logits), distill_weight=100.0, prior_weight=0.0, steps=300)
    drift = np.abs(_sigmoid(syn_x @ w2[rows].T + b2[rows]) - _sigmoid(syn_logits[:, rows])).mean()
    free = np.abs(_sigmoid(syn_x @ w[rows].T + b[rows]) - _sigmoid(syn_logits[:, rows])).mean()
    assert drift < 0.5 * free


def test_measured_targets_are_only_given_in_speech():
    from avatar.train.real_mouths import MeasuredClip

    ms = np.arange(0, 1000, 40.0)
    clip = MeasuredClip("c", [(0, 200, "SIL"), (200, 600, "AA"), (600, 1000, "SIL")], ms,
                        np.linspace(0, 1.2, len(ms)), np.full(len(ms), 0.05), 100)
    t = rh.measured_targets(clip)
    speech = (ms >= 200) & (ms < 600)
    assert np.isnan(t[~speech]).all() and np.isfinite(t[speech]).all()
    assert t[speech, 0].max() <= 1.0  # openings past the speaker's 95th percentile are 1
    assert np.allclose(t[speech, 1], 0.05 / rh.SPREAD_FULL) and np.allclose(t[speech, 2], 0.0)


@pytest.mark.skipif(not (REAL_VIDEO / "grid_transcripts.tsv").is_file(),
                    reason=f"the GRID clips are not here ({REAL_VIDEO}: shared/data/video)")
@pytest.mark.skipif(importlib.util.find_spec("espeakng_loader") is None,
                    reason="espeakng-loader not installed (pip install '.[train]')")
def test_the_command_refits_the_head_on_real_clips_and_keeps_the_network(tmp_path):
    from avatar.cli import main
    from avatar.engine import default_model_path
    from avatar.model import load_model
    from avatar.train.datagen import GenConfig, generate

    # three GRID clips (links, nothing copied) and a 20 s synthetic set
    clips = tmp_path / "clips"
    clips.mkdir()
    with open(REAL_VIDEO / "grid_transcripts.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))[:3]
    with open(clips / "grid_transcripts.tsv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t")
        w.writeheader()
        w.writerows(rows)
    for r in rows:
        (clips / r["file"]).symlink_to(REAL_VIDEO / r["file"])
    generate(GenConfig(seed=3, piper_share=0.0, shard_seconds=20), tmp_path / "d", 20 / 3600, procs=1,
             progress=False)
    out = tmp_path / "head.safetensors"
    assert main(["train", "real-head", str(default_model_path()), "--data", str(tmp_path / "d"), "--clips",
                 str(clips), "--steps", "150", "-o", str(out)]) == 0
    old, new = load_model(default_model_path()), load_model(out)
    old_state, new_state = old.state_dict(), new.state_dict()
    for name, value in old_state.items():
        if not name.startswith("param_head"):
            assert np.array_equal(value.numpy(), new_state[name].numpy()), name  # the network is kept
    press = PARAM_NAMES.index("lip_press")
    assert np.array_equal(old.param_head.weight[press].detach().numpy(), new.param_head.weight[press].detach().numpy())
    assert not np.array_equal(old.param_head.weight[0].detach().numpy(), new.param_head.weight[0].detach().numpy())
    record = rh.training_record(out)["real_head"]
    assert record["clips"] == [r["file"] for r in rows] and set(record["held_out_r0"]) == set(record["clips"])
    assert all(np.isfinite(r["after"]["opening"]) for r in record["held_out_r0"].values())
    fitted = record["fitted_mean"]  # three clips are too few for a held-out gain; on its own clips it must fit
    assert fitted["after"]["opening"] > fitted["before"]["opening"] + 0.02
    # a head can only start from a network with this very core: the live network's is another
    from avatar.engine import live_model_path

    assert main(["train", "real-head", str(default_model_path()), "--data", str(tmp_path / "d"), "--clips", str(clips),
                 "--head-from", str(live_model_path()), "-o", str(tmp_path / "no.safetensors")]) == 1
    assert not (tmp_path / "no.safetensors").exists()


@pytest.mark.skipif(importlib.util.find_spec("espeakng_loader") is None,
                    reason="espeakng-loader not installed (pip install '.[train]')")
def test_synthetic_targets_are_the_old_outputs_or_the_closed_label_in_silence(tmp_path):
    import torch

    from avatar.engine import default_model_path
    from avatar.model import load_model
    from avatar.train.datagen import GenConfig, generate
    from avatar.train.fit import delayed, load_stream
    from avatar.visemes import VISEME_INDEX, VISEME_POSE

    generate(GenConfig(seed=5, piper_share=0.0, shard_seconds=20), tmp_path / "d", 20 / 3600, procs=1,
             progress=False)
    model = load_model(default_model_path())
    k, h = model.dims.head_context, model.dims.n_hidden
    w0, b0 = model.param_head.weight.detach().numpy(), model.param_head.bias.detach().numpy()
    x_old, kept = rh.synthetic_frames(model, [tmp_path / "d"], w0, b0, k, silence_closed=False)
    x_new, closed = rh.synthetic_frames(model, [tmp_path / "d"], w0, b0, k, silence_closed=True)
    assert np.array_equal(x_old, x_new) and len(x_old) > 1000 and x_old.shape[1] == (2 * k + 1) * h
    with torch.no_grad():
        assert np.allclose(kept, torch.sigmoid(model.param_head(torch.tensor(x_old, dtype=torch.float32))).numpy(),
                           atol=1e-5)
    stream = delayed(load_stream([tmp_path / "d"]), model.dims.core_lookahead)
    silent = stream.visemes[:len(x_old)] == VISEME_INDEX["sil"]  # one piece: the 20 s set is shorter than 1 min
    assert 0.1 < silent.mean() < 0.9
    assert np.allclose(closed[silent], VISEME_POSE["sil"]) and np.array_equal(closed[~silent], kept[~silent])
    assert np.abs(kept[silent] - closed[silent]).max() > 0.01  # the old head's silence was not exactly closed
    # a head over one frame (the centre taps), widened to 2 frames either side: windows centred on the same states,
    # the same targets
    w1 = w0[:, k * h:(k + 1) * h]
    x1, kept1 = rh.synthetic_frames(model, [tmp_path / "d"], w1, b0, 0)
    x_ctx, kept_ctx = rh.synthetic_frames(model, [tmp_path / "d"], rh.expand_head(w1, h, 2), b0, 2)
    assert x1.shape[1] == h and x_ctx.shape == (len(x1) - 2, 5 * h)
    assert np.array_equal(x_ctx[:, 2 * h:3 * h], x1[:-2]) and np.array_equal(x_ctx[2:, :h], x1[:-4])
    assert np.allclose(kept_ctx, kept1[:-2], atol=1e-5)


def test_window_rows_are_the_states_around_each_frame_zero_before_the_first():
    states = np.arange(10.0)[:, None] * np.ones((1, 3))
    rows = rh.window_rows(states, 2, 6, 1)
    assert rows.shape == (6, 9)
    assert np.array_equal(rows[:, ::3], np.stack([np.arange(1, 7), np.arange(2, 8), np.arange(3, 9)], 1))
    assert np.array_equal(rh.window_rows(states, 0, 3, 2)[0, ::3], [0, 0, 0, 1, 2])  # before the first: zeros
    w = np.arange(1.0, 7.0).reshape(2, 3)  # a head over 3 units, no context, widened to 1 frame either side
    wide = rh.expand_head(w, 3, 1)
    assert wide.shape == (2, 9) and np.array_equal(wide[:, 3:6], w) and not wide[:, :3].any() and not wide[:, 6:].any()
    assert np.array_equal(rh.expand_head(wide, 3, 2)[:, 3:12], wide)
    with pytest.raises(ValueError, match="cannot narrow"):
        rh.expand_head(wide, 3, 0)
