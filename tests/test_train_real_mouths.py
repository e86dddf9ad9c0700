"""Mouth targets measured from real faces (`avatar train measure-targets`) and the rules they become."""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from avatar.train import real_mouths as rm
from avatar.train.targets import (HAND_RULES, MEASURED_FILE, frame_centers_ms, measured_rules, mouth_targets,
                                  rules_named)
from avatar.visemes import PARAM_NAMES, VISEMES

ROOT = Path(__file__).resolve().parent.parent
REAL_VIDEO = Path(os.environ.get("AVATAR_REAL_VIDEO", ROOT.parent / "shared" / "data" / "video"))
UNITS = [(100, 180, "S"), (180, 300, "AA"), (300, 360, "T"), (360, 520, "IY"), (520, 600, "N"), (600, 700, "UW")]


def test_shipped_measured_rules_keep_rest_and_closure():
    rules = measured_rules()
    assert set(rules.viseme_pose) == set(VISEMES)
    assert rules.viseme_pose["sil"] == HAND_RULES.viseme_pose["sil"]  # rest stays closed
    assert rules.viseme_pose["PP"][0] == 0 and rules.viseme_pose["PP"][3] == 1  # p/b/m shut
    poses = np.array(list(rules.viseme_pose.values()) + list(rules.phone_pose.values()))
    assert poses.min() >= 0 and poses.max() <= 1
    # the measured mouth keeps a tongue consonant open more than the hand table did, and rounds for "oo"
    assert rules.viseme_pose["nn"][0] > HAND_RULES.viseme_pose["nn"][0]
    assert rules.viseme_pose["ou"][2] > 0.3 > rules.viseme_pose["aa"][2]
    assert rules_named("hand") is HAND_RULES and rules_named("measured") is rules
    with pytest.raises(ValueError, match="hand or measured"):
        rules_named("pretty")


def test_rules_change_targets_only_through_their_poses_and_timing():
    hand = mouth_targets(UNITS, 80)
    assert np.array_equal(hand, mouth_targets(UNITS, 80, HAND_RULES))
    wide = replace(HAND_RULES, viseme_pose={**HAND_RULES.viseme_pose, "aa": (1.0, 0.0, 0.0, 0.0)})
    changed = np.flatnonzero(np.abs(mouth_targets(UNITS, 80, wide) - hand).max(axis=1) > 1e-6)
    assert changed.size and 8 <= changed.min() and changed.max() <= 45  # around the AA only (and its blends)


def test_pose_table_shrinks_sparse_visemes_towards_the_hand_table():
    samples = {"AA": [(0.4, 0.0)] * 45, "UW": [(0.1, -0.15)] * 45, "OW": [(0.9, 0.05)]}
    visemes, phones, counts = rm.pose_table(samples)
    assert visemes["aa"][0] == pytest.approx((45 * 0.4 + 5 * 0.9) / 50)  # well measured: near 0.4
    assert visemes["ou"][2] == pytest.approx(1.0)  # 15 % narrower than neutral = full rounding
    hand_oh = HAND_RULES.viseme_pose["oh"]
    assert abs(visemes["oh"][0] - hand_oh[0]) < abs(0.9 - hand_oh[0]) / 2  # seen once: mostly the table
    assert visemes["sil"] == HAND_RULES.viseme_pose["sil"] and counts["aa"] == 45
    assert "AA" in phones and "OW" not in phones  # a phone row needs MIN_PHONE_COUNT samples


def test_timing_fit_recovers_the_rules_that_made_the_motion():
    truth = replace(HAND_RULES, ramp_ms=50.0, weak_jaw_blend=0.25)
    frame_ms = np.arange(0, 800, 40.0)  # a 25 fps camera
    n_audio = 80
    track = mouth_targets(UNITS, n_audio, truth)[:, 0]
    opening = np.interp(frame_ms, frame_centers_ms(n_audio), track)
    clip = rm.MeasuredClip("made-up", UNITS, frame_ms, opening, np.zeros_like(opening), n_audio)
    fitted, scores = rm.fit_timing([clip], replace(HAND_RULES, ramp_ms=20.0, weak_jaw_blend=0.0))
    assert (fitted.ramp_ms, fitted.weak_jaw_blend) == (50.0, 0.25)
    assert scores[(50.0, 0.25)] > 0.999


@pytest.mark.skipif(not (REAL_VIDEO / rm.GRID_TRANSCRIPTS).is_file(),
                    reason=f"the GRID clips are not here ({REAL_VIDEO}: shared/data/video)")
def test_the_command_reproduces_the_shipped_table(tmp_path):
    from avatar.cli import main

    out = tmp_path / "measured.json"
    assert main(["train", "measure-targets", "--clips", str(REAL_VIDEO), "-o", str(out)]) == 0
    made, shipped = json.loads(out.read_text()), json.loads(MEASURED_FILE.read_text())
    for v in VISEMES:
        for k in PARAM_NAMES:
            assert made["visemes"][v][k] == pytest.approx(shipped["visemes"][v][k], abs=0.01), (v, k)
    assert (made["ramp_ms"], made["weak_jaw_blend"]) == (shipped["ramp_ms"], shipped["weak_jaw_blend"])
    assert made["r_measured"] > made["r_hand"]  # the measured rules follow the real mouths better
