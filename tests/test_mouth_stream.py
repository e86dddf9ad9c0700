"""One mouth stream (log-mel -> engine -> look-ahead trim -> flush) behind the live view, `avatar lipsync` and
`avatar train evaluate`: one row per feature frame of the audio, the same rows on every path."""
import os
from pathlib import Path

import numpy as np
import pytest

from avatar.audio import HOP_LENGTH, N_MELS, SAMPLE_RATE, log_mel
from avatar.engine import EngineOutput
from avatar.lipsync import track_audio
from avatar.mouth_stream import LEAD_IN_MAX, LEAD_IN_OPENING, MouthStream, lead_in_audio, opening_of
from avatar.live.pipeline import LipSync
from avatar.visemes import N_PARAMS, N_VISEMES, VISEME_INDEX


class DelayEngine:
    """A stand-in network with a true output delay: output t is feature frame t - lookahead, copied (bands 0-3 as
    the params, bands 0-14 as the visemes; zeros while nothing is that old). So after the trim, row i must be
    exactly log_mel(audio)[i]: any row shifted, lost or added shows."""

    label = "delay (test)"

    def __init__(self, lookahead):
        self.lookahead = lookahead
        self.reset()

    def reset(self):
        self.history = np.zeros((self.lookahead, N_MELS), np.float32)

    def step(self, features):
        joined = np.concatenate([self.history, features])
        delayed = joined[:len(features)]
        self.history = joined[len(joined) - self.lookahead:]
        return EngineOutput(delayed[:, :N_VISEMES].copy(), delayed[:, :N_PARAMS].copy())


def _speechlike(n_samples, seed=0):
    """Silence, a buzzy vowel-like burst, silence (and a little noise so no two frames are equal)."""
    t = np.arange(n_samples) / SAMPLE_RATE
    mid, width = t[-1] / 2, t[-1] / 6
    x = 0.3 * np.sign(np.sin(2 * np.pi * 140 * t)) * np.exp(-(((t - mid) / width) ** 2))
    return (x + 1e-3 * np.random.default_rng(seed).standard_normal(n_samples)).astype(np.float32)


def _irregular_chunks(audio, seed=1, largest=700):
    """Blocks of 1..largest samples, like a microphone callback that never delivers the same amount twice."""
    rng = np.random.default_rng(seed)
    cuts = np.cumsum(rng.integers(1, largest, size=len(audio)))
    cuts = cuts[cuts < len(audio)]
    return np.split(audio, cuts)


@pytest.mark.parametrize("lookahead", [0, 1, 2, 4])
@pytest.mark.parametrize("extra", [0, 1, 79, 80, 159])  # samples past the last whole hop: the partial frame
def test_one_row_per_feature_frame_each_the_frame_it_describes(lookahead, extra):
    audio = _speechlike(123 * HOP_LENGTH + extra)
    features = log_mel(audio)
    assert len(features) == 123  # a partial hop is no feature frame
    rows = MouthStream(DelayEngine(lookahead)).run(_irregular_chunks(audio))
    assert rows.first == 0 and len(rows) == len(features)
    np.testing.assert_array_equal(rows.params, features[:, :N_PARAMS])  # row i describes frame i, to the last
    np.testing.assert_array_equal(rows.visemes, features[:, :N_VISEMES])


@pytest.mark.parametrize("lookahead", [0, 2])
def test_live_rows_carry_the_frame_they_describe_and_the_flush_ends_at_the_last_frame(lookahead):
    audio = _speechlike(50 * HOP_LENGTH + 120)
    stream = MouthStream(DelayEngine(lookahead))
    seen = []
    for chunk in _irregular_chunks(audio, largest=300):
        rows = stream.push(chunk)
        if len(rows):
            assert rows.first == len(seen)  # rows come in order, none skipped or repeated
            seen.extend(rows.params)
    # before the flush, the last `lookahead` frames are still held back by the engine's output delay
    assert len(seen) == 50 - lookahead
    tail = stream.flush()
    assert tail.first == len(seen) and len(seen) + len(tail) == 50
    assert stream.samples_in == len(audio)  # the flush's padding is not audio
    with pytest.raises(RuntimeError, match="flushed"):
        stream.push(audio[:160])
    stream.reset()
    assert len(stream.run([audio])) == 50


def test_no_model_gives_a_closed_silent_mouth_for_every_frame():
    rows = MouthStream(None).run([np.ones(10 * HOP_LENGTH + 5, np.float32) * 0.5])
    assert len(rows) == 10 and not rows.params.any()
    assert (rows.visemes.argmax(1) == VISEME_INDEX["sil"]).all() and np.allclose(rows.visemes.sum(1), 1)


def _live_rows(engine, audio):
    """The app's path: LipSync fed in small irregular chunks, flushed as at the end of a file; its track's rows."""
    lipsync = LipSync(engine)
    lipsync.reset()
    for chunk in _irregular_chunks(audio, seed=7, largest=500):
        lipsync.push(chunk)
    lipsync.flush()
    rows, first = lipsync.track.rows_from(0, until=1e9)
    assert first == 0
    return rows


def test_live_view_avatar_lipsync_and_evaluation_give_the_same_rows_to_the_last_frame():
    torch = pytest.importorskip("torch")
    from avatar.dims import ModelDims
    from avatar.engine.torch_engine import TorchEngine
    from avatar.model import LipSyncNet
    from avatar.train.evaluate import predict

    torch.manual_seed(0)
    engine = TorchEngine(LipSyncNet(ModelDims(lookahead=2)).eval())
    audio = _speechlike(int(2.345 * SAMPLE_RATE))  # 234 frames and a partial hop of 80 samples
    n_frames = len(log_mel(audio))
    assert n_frames == 234

    live = _live_rows(engine, audio)
    # (no lead-in: the live view has no past to hear; the lead-in's own tests are below)
    lipsync = track_audio((audio[i:i + 8000] for i in range(0, len(audio), 8000)), engine, lead_in=False)
    visemes, params = predict(engine.model, audio)

    assert len(live) == lipsync.n_frames == len(params) == n_frames
    # chunked differently (1-5 frames, 50, 64 per step), the same numbers up to float rounding
    np.testing.assert_allclose(live, lipsync.params, atol=1e-5)
    np.testing.assert_allclose(params, lipsync.params, atol=1e-5)
    np.testing.assert_allclose(visemes, lipsync.visemes, atol=1e-5)
    assert np.ptp(params[:, 0]) > 1e-3  # the rows differ from frame to frame: a shifted row would show


# -- resting on silence (the live view's idle: avatar.mouth_stream.REST_BATCH) --------------------------


def _gated_talk():
    """Speech-like bursts between runs of digital silence (a gated microphone), 5 ms blocks as the app reads them:
    a long silence (the network settles and rests), short gaps (it may not), a burst 130 ms after the last."""
    def vowel(seconds, f0, seed):
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        x = 0.3 * np.sign(np.sin(2 * np.pi * f0 * t)) * np.minimum(1.0, t / 0.005)
        return (x + 1e-3 * np.random.default_rng(seed).standard_normal(len(t))).astype(np.float32)

    def hush(seconds):
        return np.zeros(int(seconds * SAMPLE_RATE), np.float32)

    audio = np.concatenate([vowel(0.5, 140, 0), hush(3.0), vowel(0.3, 200, 1), hush(12.0), vowel(0.4, 120, 2),
                            hush(0.13), vowel(0.2, 160, 3), hush(2.0)])
    return audio, np.split(audio, np.arange(80, len(audio), 80))


def _pushed(stream, blocks):
    rows = [stream.push(block) for block in blocks]
    return [len(r) for r in rows], np.concatenate([r.params for r in rows]), np.concatenate([r.visemes for r in rows])


def test_resting_on_silence_gives_the_frame_by_frame_rows_where_there_is_sound_with_far_fewer_network_calls():
    from avatar.engine import create_engine, live_model_path
    from avatar.mouth_stream import REST_BATCH

    audio, blocks = _gated_talk()
    exact = MouthStream(create_engine("onnxruntime", live_model_path()))
    resting = LipSync(create_engine("onnxruntime", live_model_path())).stream  # the live view's stream
    assert resting.rest_batch == REST_BATCH > 1
    counts, params, visemes = _pushed(exact, blocks)
    rest_counts, rest_params, rest_visemes = _pushed(resting, blocks)
    assert rest_counts == counts  # every row comes in the push that completes its frame: no onset is delayed
    frames = audio[:len(params) * HOP_LENGTH].reshape(-1, HOP_LENGTH)
    window_silent = np.array([not audio[max(0, (i + 1) * HOP_LENGTH - 400):(i + 1) * HOP_LENGTH].any()
                              for i in range(len(frames))])
    # a frame with sound sees the state the frame-by-frame network has: its row is that row (after 12 s of rest too)
    np.testing.assert_allclose(rest_params[~window_silent], params[~window_silent], atol=1e-6)
    np.testing.assert_allclose(rest_visemes[~window_silent], visemes[~window_silent], atol=1e-6)
    # the silent rows repeat the newest row the network gave: off by a drift too small to draw (MOUTH_STEP 0.01)
    assert np.abs(rest_params - params).max() < 5e-3
    assert np.ptp(params[~window_silent][:, 0]) > 0.1  # the bursts move the mouth: a wrong state would show
    assert resting.engine_calls < exact.engine_calls / 3  # 10 calls a second at rest instead of 100


class _DriftingEngine:
    """A network that never settles on silence: its rows climb by 1e-3 a frame, whatever it hears."""

    lookahead = 0

    def __init__(self):
        self.reset()

    def reset(self):
        self.n = 0

    def step(self, features):
        rows = (self.n + 1 + np.arange(len(features), dtype=np.float32))[:, None] * 1e-3
        self.n += len(features)
        return EngineOutput(np.repeat(rows, N_VISEMES, 1), np.repeat(rows, N_PARAMS, 1))


def test_a_network_that_does_not_settle_on_silence_is_stepped_every_frame():
    from avatar.mouth_stream import REST_BATCH

    blocks = [np.zeros(80, np.float32)] * 400  # 2 s of digital silence
    stream = MouthStream(_DriftingEngine(), rest_batch=REST_BATCH)
    _, params, _ = _pushed(stream, blocks)
    np.testing.assert_allclose(params[:, 0], (np.arange(len(params)) + 1) * 1e-3, rtol=1e-6)
    assert stream.engine_calls == len(params)  # a frame a call, as without resting


def test_a_backend_swapped_while_resting_takes_over_and_the_flush_steps_what_waited():
    from avatar.engine import create_engine, live_model_path

    engine = create_engine("onnxruntime", live_model_path())
    stream = LipSync(engine).stream
    hush = [np.zeros(80, np.float32)] * 300  # 1.5 s: settled and resting
    _pushed(stream, hush)
    calls = stream.engine_calls
    assert calls < 100
    other = _DriftingEngine()  # the live backend switch: a fresh engine between two pushes
    stream.engine = other
    counts, params, _ = _pushed(stream, hush[:40])
    assert sum(counts) == 20 and other.n == 20  # the new engine steps every frame: it has not settled
    np.testing.assert_allclose(params[:, 0], (np.arange(20) + 1) * 1e-3, rtol=1e-6)
    engine.reset()  # swapped back as LivePipeline.set_engine does: reset, then handed over
    stream.engine = engine
    _pushed(stream, hush)
    assert stream.flush().first == stream.frames_out - engine.lookahead
    exact = MouthStream(create_engine("onnxruntime", live_model_path()))
    _pushed(exact, hush)
    exact.flush()
    # after the flush the resting stream's network has heard every frame the frame-by-frame one has (to rounding:
    # the voice gate's state is carried relative to its settled one, so chunks of other sizes round differently by
    # ~1e-6; one frame missed or heard twice moves it by far more)
    for mine, theirs in zip(engine.state, exact.engine.state):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-5)


# -- the lead-in (files: a file that starts mid-sentence is heard as if it went on before) -------------------


def _tone(seconds, level=0.3, f0=150.0, seed=0):
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    x = level * np.sign(np.sin(2 * np.pi * f0 * t)) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    return (x + 1e-4 * np.random.default_rng(seed).standard_normal(len(t))).astype(np.float32)


def _quiet(seconds, level=1e-4, seed=1):
    return (level * np.random.default_rng(seed).standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)


def test_the_lead_in_is_the_opening_sound_backwards_up_to_its_first_pause():
    at_once = np.concatenate([_tone(2.0)])
    lead = lead_in_audio(at_once)
    assert len(lead) == LEAD_IN_MAX  # no pause in the first second: a second of it
    np.testing.assert_array_equal(lead, at_once[:LEAD_IN_MAX][::-1])
    phrase = np.concatenate([_tone(0.4), _quiet(0.15), _tone(1.0)])
    lead = lead_in_audio(phrase)
    assert len(lead) == int(0.4 * SAMPLE_RATE) and len(lead) % HOP_LENGTH == 0  # up to the pause, whole hops
    np.testing.assert_array_equal(lead, phrase[:len(lead)][::-1])
    # a file that opens with a pause, or with no speech at all, starts from the quiet room as before
    assert len(lead_in_audio(np.concatenate([_quiet(0.3), _tone(1.0)]))) == 0
    assert len(lead_in_audio(_quiet(2.0, level=1e-4))) == 0
    assert len(lead_in_audio(np.zeros(SAMPLE_RATE, np.float32))) == 0
    assert len(lead_in_audio(_tone(0.0055))) == 0  # under a hop: nothing whole to hear


def test_a_lead_in_shifts_no_row_and_only_the_first_frames_see_it():
    audio = _tone(1.3)
    plain = MouthStream(DelayEngine(2)).run([audio])
    led = MouthStream(DelayEngine(2)).run([audio], lead_in=True)
    lead = lead_in_audio(audio)
    assert len(lead) == LEAD_IN_MAX and len(led) == len(plain) == len(log_mel(audio))
    # row i is feature frame i of the lead-in followed by the file: the file's own frames, where the 25 ms window
    # lies inside the file (i >= 2); before that the window reaches into the lead-in, not into zeros
    joined = log_mel(np.concatenate([lead, audio]))[len(lead) // HOP_LENGTH:]
    np.testing.assert_array_equal(led.params, joined[:, :N_PARAMS])
    np.testing.assert_array_equal(led.params[2:], plain.params[2:])
    assert not np.array_equal(led.params[:2], plain.params[:2])


def test_the_lead_in_does_not_depend_on_how_the_file_is_cut_into_blocks():
    torch = pytest.importorskip("torch")
    from avatar.dims import ModelDims
    from avatar.engine.torch_engine import TorchEngine
    from avatar.model import LipSyncNet

    torch.manual_seed(0)
    engine = TorchEngine(LipSyncNet(ModelDims(lookahead=2)).eval())
    audio = np.concatenate([_tone(0.7), _quiet(0.2), _tone(0.8, f0=210)])
    whole = track_audio([audio], engine)
    for size in (777, 8000, 16000):
        blocks = [audio[i:i + size] for i in range(0, len(audio), size)]
        np.testing.assert_allclose(track_audio(blocks, engine).params, whole.params, atol=1e-5)
    assert not np.allclose(track_audio([audio], engine, lead_in=False).params[:20], whole.params[:20], atol=1e-4)
    head, again = opening_of(iter(blocks), LEAD_IN_OPENING)
    np.testing.assert_array_equal(head, audio[:len(head)])
    np.testing.assert_array_equal(np.concatenate(list(again)), audio)  # nothing lost or repeated


def test_a_file_that_opens_with_a_pause_runs_exactly_as_before():
    audio = np.concatenate([_quiet(0.4), _tone(1.0)])
    np.testing.assert_array_equal(MouthStream(DelayEngine(1)).run([audio], lead_in=True).params,
                                  MouthStream(DelayEngine(1)).run([audio]).params)


def test_a_lead_in_goes_before_the_first_sample_only():
    stream = MouthStream(DelayEngine(0))
    stream.push(_tone(0.1))
    with pytest.raises(RuntimeError):
        stream.lead_in(_tone(0.1))


REAL_VIDEO = Path(os.environ.get("AVATAR_REAL_VIDEO", Path(__file__).resolve().parents[2] / "shared" / "data" / "video"))


@pytest.mark.skipif(not (REAL_VIDEO / "bbaf2n.mpg").is_file(),
                    reason=f"the real talking clips are not here ({REAL_VIDEO}: shared/data/video)")
@pytest.mark.parametrize("clip", ["bbaf2n.mpg", "sbwe5n.mpg"])
def test_a_file_cut_mid_sentence_is_followed_from_its_first_frame(clip):
    """A GRID sentence's last 40 %, from a fresh state: its first 300 ms of jaw_open against what the network says
    there having heard the sentence from its start; the lead-in brings them at least 40 % closer."""
    from avatar.engine import create_engine
    from avatar.eval.video import read_clip

    engine = create_engine("onnxruntime")
    audio = read_clip(REAL_VIDEO / clip).audio
    start = int(0.6 * len(audio)) // HOP_LENGTH * HOP_LENGTH
    heard_whole = track_audio([audio], engine).params[start // HOP_LENGTH:, 0]
    k = 30  # 300 ms
    fresh = track_audio([audio[start:]], engine, lead_in=False).params[:k, 0]
    led = track_audio([audio[start:]], engine).params[:k, 0]
    assert len(lead_in_audio(audio[start:])) > 0.3 * SAMPLE_RATE  # mid-word: it starts at once
    assert np.abs(led - heard_whole[:k]).mean() < 0.6 * np.abs(fresh - heard_whole[:k]).mean()
