"""Frames that would look the same are not rendered again (avatar/live/still.py): the idle CPU saving, and what it
must not cost (blinks, speech and expressions still drawn every frame; the picture shown stays the true one)."""
import time

import numpy as np
import pytest

from avatar.face.assemble import open_renderer
from avatar.live.pipeline import LivePipeline
from avatar.live.still import MOTION_STEP_PIXELS, StillFrames
from avatar.live.track import neutral_params
from avatar.paths import default_photo
from avatar.visemes import PARAM_NAMES
from tests.conftest import SimpleFrames

JAW = PARAM_NAMES.index("jaw_open")
FPS = 60


@pytest.fixture(scope="module")
def face():
    if not default_photo():
        pytest.skip("this checkout has no default face (assets/default_face.*)")
    return lambda: open_renderer(default_photo(), 192)


def ticks(seconds, start=10.0):
    return start + np.arange(int(seconds * FPS)) / FPS


def test_at_rest_most_frames_are_not_rendered_and_the_one_shown_stays_within_a_fraction_of_a_grey_level(face):
    renderer, truth = face(), face()
    still, shown, diffs = StillFrames(), None, []
    for t in ticks(4.0):
        image = still.render(renderer, neutral_params(), t)
        if image is not None:
            shown = image.copy()
            continue
        true = truth.render(neutral_params(), t).astype(np.int16)
        diffs.append(np.abs(true - shown).mean())
    assert still.rendered + still.unchanged == 4 * FPS
    # sway and breathing move the face < 0.12 px a frame: it is redrawn every few frames (blinks: every frame)
    assert still.unchanged > 0.5 * 4 * FPS
    assert still.rendered > 4  # and the idle motion is still drawn, not frozen
    # what stands in for a skipped frame is what a render would show, within a quarter grey level on average
    # (measured 0.25 at 512²; the largest single pixel differs by ~24 on the sharpest edge)
    assert max(diffs) < 0.5


def test_a_blink_is_drawn_every_frame(face):
    renderer = face()
    blinking = [t for t in ticks(12.0, 0.0) if 0.02 < renderer.liveliness.blink(t) < 0.98]
    assert len(blinking) > 5, "no blink in the first 12 s of the default liveliness"
    still = StillFrames()
    for t in ticks(12.0, 0.0):
        image = still.render(renderer, neutral_params(), t)
        if t in blinking:
            assert image is not None, f"the blink at t={t:.3f} s was not drawn"


def test_speech_and_an_expression_are_drawn_every_frame(face):
    renderer, still = face(), StillFrames()
    params = neutral_params()
    for i, t in enumerate(ticks(1.0)):
        # a talking mouth, its jaw moving 0.02 of its range a frame (a syllable a quarter second): drawn every frame
        params[JAW] = 0.2 + 0.02 * (i % 15 if (i // 15) % 2 == 0 else 15 - i % 15)
        assert still.render(renderer, params, t) is not None, f"frame {i}"

    params[JAW] = 0.0
    for t in ticks(0.5, 20.0):  # settle at rest
        still.render(renderer, params, t)
    renderer.set_expression("smile")  # eased in over 0.2 s
    drawn = [still.render(renderer, params, t) is not None for t in ticks(0.15, 20.5)]
    assert all(drawn[1:]), drawn


def test_the_bound_says_how_far_pixels_move(face):
    renderer = face()
    still = StillFrames()
    still.render(renderer, neutral_params(), 0.0)  # binds the renderer
    local, head, eyes = renderer.weights(neutral_params(), 0.0)
    moved = head.copy()
    moved[0] += 0.01  # a hundredth of full yaw
    expected = 0.01 * np.sqrt((renderer.rig.head_fields[0] ** 2).sum(-1)).max()
    assert still.moved_pixels((local, moved, eyes), (local, head, eyes)) == pytest.approx(expected, rel=1e-4)
    closed = eyes + 0.01
    assert still.moved_pixels((local, head, closed), (local, head, eyes)) == float("inf")
    assert 0 < MOTION_STEP_PIXELS <= 0.5


def test_a_renderer_that_cannot_tell_its_weights_is_rendered_every_time():
    still, frames = StillFrames(), SimpleFrames()
    for t in ticks(0.5):
        assert still.render(frames, neutral_params(), t) is not None
    assert still.unchanged == 0


def test_the_pipeline_keeps_its_display_rate_and_feeds_a_recording_on_unchanged_frames(face, tmp_path):
    renderer = face()
    shown = []
    pipeline = LivePipeline(None, renderer, fps=FPS, on_frame=shown.append)
    pipeline.lipsync.track.append(np.zeros((400, len(PARAM_NAMES)), np.float32), 0)  # 4 s at rest
    fed = []

    class Recording:  # what LiveRecording gets from the render thread
        def add_frame(self, image, t):
            fed.append((image, t))

    pipeline._recording = Recording()
    for _ in range(2 * FPS):
        pipeline.render_once()
    assert pipeline.still.unchanged > FPS / 2
    assert len(shown) == pipeline.still.rendered  # on_frame only for new pictures
    assert len(fed) == 2 * FPS  # the recording gets a frame every tick, the last one again when unchanged
    assert all(image is not None for image, _ in fed)
    assert len(pipeline._frame_times) == min(2 * FPS, pipeline._frame_times.maxlen)  # fps counts every tick
