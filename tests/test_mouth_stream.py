"""One mouth stream (log-mel -> engine -> look-ahead trim -> flush) behind the live view, `avatar lipsync` and
`avatar train evaluate`: one row per feature frame of the audio, the same rows on every path."""
import numpy as np
import pytest

from avatar.audio import HOP_LENGTH, N_MELS, SAMPLE_RATE, log_mel
from avatar.engine import EngineOutput
from avatar.lipsync import track_audio
from avatar.mouth_stream import MouthStream
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
    lipsync = track_audio((audio[i:i + 8000] for i in range(0, len(audio), 8000)), engine)
    visemes, params = predict(engine.model, audio)

    assert len(live) == lipsync.n_frames == len(params) == n_frames
    # chunked differently (1-5 frames, 50, 64 per step), the same numbers up to float rounding
    np.testing.assert_allclose(live, lipsync.params, atol=1e-5)
    np.testing.assert_allclose(params, lipsync.params, atol=1e-5)
    np.testing.assert_allclose(visemes, lipsync.visemes, atol=1e-5)
    assert np.ptp(params[:, 0]) > 1e-3  # the rows differ from frame to frame: a shifted row would show
