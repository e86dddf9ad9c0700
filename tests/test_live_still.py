"""Frames that would look the same are not rendered again (avatar/live/still.py): the idle CPU saving, and what it
must not cost (blinks, speech and expressions still drawn every frame; the picture shown stays the true one)."""
import time

import numpy as np
import pytest

from avatar.face.assemble import open_renderer
from avatar.live.pipeline import LivePipeline
from avatar.live.still import MAX_QUIET_TICKS, MOTION_STEP_PIXELS, StillFrames
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
    local, head, eyes, _ = renderer.weights(neutral_params(), 0.0)
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


def _quiet_loop(renderer, still, seconds, start=10.0):
    """The render worker's ticks at rest with quiet_ticks honoured: [(t, image or None)] for the ticks looked at,
    and how many ticks there were."""
    looked, skip = [], 0
    for t in ticks(seconds, start):
        if skip:
            skip -= 1
            continue
        looked.append((t, still.render(renderer, neutral_params(), t)))
        skip = still.quiet_ticks(1.0 / FPS)
    return looked, int(seconds * FPS)


def test_at_rest_most_ticks_need_no_look_and_the_idle_motion_is_drawn_in_the_same_steps(face):
    renderer, reference, truth = face(), face(), face()
    looked, n_ticks = _quiet_loop(renderer, StillFrames(), 6.0)
    assert len(looked) < 0.45 * n_ticks  # looked at: ~1 tick in 3, against every tick
    drawn = [t for t, image in looked if image is not None]
    every = StillFrames()
    drawn_every_tick = [t for t in ticks(6.0) if every.render(reference, neutral_params(), t) is not None]
    assert abs(len(drawn) - len(drawn_every_tick)) <= 0.1 * len(drawn_every_tick)  # as many steps of motion
    # the frame shown at each tick (the last drawn one) against a full render of it: the same fraction of a grey
    # level as when every tick is looked at (test above)
    shown, diffs, i = None, [], 0
    for t in ticks(6.0):
        while i < len(looked) and looked[i][0] <= t:
            if looked[i][1] is not None:
                shown = looked[i][1]
            i += 1
        if shown is not None and t > ticks(6.0)[0] + 0.1:
            diffs.append(np.abs(truth.render(neutral_params(), t).astype(np.int16) - shown).mean())
    assert max(diffs) < 0.6


def test_a_blink_is_drawn_every_frame_though_the_ticks_before_it_were_slept_through(face):
    renderer = face()
    blinking = [t for t in ticks(12.0, 0.0) if 0.0 < renderer.liveliness.blink(t)]
    assert len(blinking) > 5
    looked, _ = _quiet_loop(renderer, StillFrames(), 12.0, 0.0)
    drawn = {t for t, image in looked if image is not None}
    missing = [t for t in blinking if t not in drawn]
    assert not missing, f"blink ticks not drawn: {missing[:5]}"


def test_nothing_is_slept_through_while_the_mouth_talks_or_the_speed_is_unknown(face):
    renderer, still = face(), StillFrames()
    assert still.quiet_ticks(1.0 / FPS) == 0  # nothing seen yet
    params = neutral_params()
    for i, t in enumerate(ticks(0.5)):
        params[JAW] = 0.2 + 0.02 * (i % 15)
        still.render(renderer, params, t)
        assert still.quiet_ticks(1.0 / FPS) == 0, f"frame {i}"
    assert StillFrames().quiet_ticks(1.0 / FPS) == 0
    frames = StillFrames()
    frames.render(SimpleFrames(), neutral_params(), 0.0)
    assert frames.quiet_ticks(1.0 / FPS) == 0  # a renderer without weights


def test_a_face_that_never_blinks_or_does_not_move_at_all_sleeps_through_ticks_too():
    if not default_photo():
        pytest.skip("this checkout has no default face (assets/default_face.*)")
    for config in ({"blinks": False}, {"enabled": False}):
        renderer, still = open_renderer(default_photo(), 192, liveliness=config), StillFrames()
        quiet = []
        for t in ticks(1.0):
            still.render(renderer, neutral_params(), t)
            quiet.append(still.quiet_ticks(1.0 / FPS))
        assert max(quiet) == MAX_QUIET_TICKS  # no blink to stop short of (next_blink is inf): no error either


def test_blinks_are_looked_up_not_scanned_and_next_blink_says_when_the_next_one_starts():
    from avatar.face.liveliness import Liveliness, LivelinessConfig

    live = Liveliness()
    late = 2 * 3600.0  # two hours into a session: ~1800 blinks scheduled
    assert len(live.blinks_near(late)) <= 2  # a frame looks at the blinks that can cover it, not all of them
    assert len(live._blinks) > 1000
    reference = Liveliness()  # the same schedule (seeded), read by scanning every blink
    d, closing = reference.config.blink_duration, 0.4 * reference.config.blink_duration

    def scanned(t):
        value = 0.0
        for start in reference._blink_starts_until(t):
            tau = t - start
            if 0 <= tau < d:
                s = tau / closing if tau < closing else (tau - closing) / (d - closing)
                value = max(value, s * s * (3 - 2 * s) if tau < closing else 1 - s * s * (3 - 2 * s))
        return value

    for t in np.concatenate([np.arange(0, 30, 0.007), late + np.arange(0, 10, 0.007)]):
        assert live.blink(t) == scanned(t)
    for t in (0.0, 3.3, late):
        nxt = live.next_blink(t)
        assert nxt > t and live.blink(nxt) == 0.0 < live.blink(nxt + 0.01)
        assert not [s for s in reference._blink_starts_until(nxt) if t < s < nxt]  # none starts before it
    assert Liveliness(LivelinessConfig(blinks=False)).next_blink(1.0) == float("inf")


def test_the_render_worker_sleeps_through_quiet_ticks_at_rest_and_looks_every_tick_once_sound_comes(face):
    import time

    from avatar.engine import create_engine, live_model_path
    from avatar.live.sources import SilenceSource

    class Voice(SilenceSource):  # silence paced by the clock, a vowel-like buzz once `loud` is set
        loud = False

        def read(self):
            out = super().read()
            if self.loud and len(out):
                out = (0.3 * np.sign(np.sin(2 * np.pi * 140 * np.arange(len(out)) / 16000))).astype(np.float32)
            return out

    jaws = []
    pipeline = LivePipeline(create_engine("onnxruntime", live_model_path()), face(), fps=FPS,
                            on_frame=lambda frame: jaws.append(float(frame.params[JAW])))
    looks = []
    real = pipeline.render_once
    pipeline.render_once = lambda: looks.append(time.monotonic()) or real()
    source = Voice()
    pipeline.set_source(source)
    pipeline.start()

    def window(seconds):
        n0, dropped0, t0 = len(looks), pipeline.dropped_frames, time.monotonic()
        time.sleep(seconds)
        ticks_run = (time.monotonic() - t0) * FPS - (pipeline.dropped_frames - dropped0)
        return (len(looks) - n0) / ticks_run

    try:
        time.sleep(1.5)  # the network settles on the silence and rests
        assert pipeline.lipsync.stream.resting
        at_rest = window(2.0)
        rest_fps = pipeline.stats().fps
        source.loud = True
        time.sleep(0.3)
        talking = window(1.0)
        mouth = max(jaws[-60:])
    finally:
        pipeline.stop()
    assert at_rest < 0.6, at_rest  # ~1 tick in 3 looked at (every tick before)
    assert rest_fps > 45  # the display rate counts the ticks slept through: the view was up to date at each
    assert talking > 0.9, talking  # speech: every tick looked at (and drawn) again
    assert mouth > 0.1  # the buzz opened the mouth
