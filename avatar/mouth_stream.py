"""Audio to mouth rows: 16 kHz audio -> streaming log-mel -> engine.step (state carried) -> look-ahead trim -> flush.

The one place this is written: the live view and recording (`avatar.live.pipeline.LipSync`), `avatar lipsync`
(`avatar.lipsync.track_audio`), `avatar eval video` (through it) and `avatar train evaluate`
(`avatar.train.evaluate.predict`) all run audio through a `MouthStream`.

Row i describes feature frame i, which covers the 25 ms ending at sample (i + 1) * HOP_LENGTH (see avatar.audio):
N samples of audio have N // HOP_LENGTH feature frames, and a stream that is flushed at the end gives exactly one
row for each of them.
"""
from __future__ import annotations

from dataclasses import dataclass
import itertools
from typing import Iterable, Iterator

import numpy as np

from avatar.audio import HOP_LENGTH, SAMPLE_RATE, LogMelStream, silent_features
from avatar.visemes import N_PARAMS, N_VISEMES, VISEME_INDEX

FIRST_CAPACITY = 1024  # rows `run` allocates before it first has to grow (10 s); it doubles from there
# Resting on silence (live only: `rest_batch`). Once the network's rows have settled on digital silence, its silent
# frames are stepped in batches: the state is carried exactly as frame by frame (a batch is the same arithmetic;
# tests/test_mouth_stream.py checks the states bit for bit), and a voice's first frame sees that state.
REST_BATCH = 10  # silent frames stepped in one call (100 ms): a step's fixed cost is most of it (ONNX Runtime CPU,
# warm: 31 µs for 1 frame, 110 µs for 10, 380 µs for 50; several times that in the live app's cold caches). The
# frames waiting when a voice starts are stepped with its first frame: more would delay that row
REST_TOLERANCE = 1e-4  # settled: consecutive rows differ by less than this in every parameter and viseme (the live
# model after ~0.4 s of silence; 2e-5 a frame by 1 s, 1e-6 by 30 s). While a batch fills, its frames' rows repeat
# the newest row the network gave: off by at most REST_BATCH × the drift (< 1e-3; a drawn change is 0.01)
REST_SETTLE_FRAMES = 10  # silent frames in a row within REST_TOLERANCE before batching starts
# The lead-in (files only: `run(..., lead_in=True)`, `avatar render`'s offline path). A file that starts mid-sentence
# (a clip cut from a conversation, speech with no pause before it) met a network that had heard a quiet room: it took
# 0.2-0.3 s to follow (GRID sentences' last 40 %, each from a fresh state: opening r 0.845 against 0.901 with the
# sentence heard from its start). Where the sound starts at once, the stream first hears its own opening played
# backwards (reflection padding, as an image filter pads an edge), up to the first pause, so the state at frame 0 is
# that of someone already speaking: those tails 0.845 -> 0.899. A file that opens quietly (GRID's lead-ins, TTS with a
# leading pause, silence) starts as before, from the settled quiet room.
LEAD_IN_MAX = SAMPLE_RATE  # at most 1 s played backwards (a fixed 0.25 / 0.5 / 1 s, no pause rule: tails 0.828 /
# 0.825 / 0.855 on all 13 speech clips; with the rules below 0.855, and GRID's whole sentences unchanged)
LEAD_IN_QUIET_DB = 20.0  # a 10 ms frame this far under the opening's loudest is quiet (30 dB let GRID's lead-in
# noise count as sound on 2 of 11 clips: r 0.791 -> 0.732 on sbia1a)
LEAD_IN_PAUSE_FRAMES = 10  # quiet frames in a row (100 ms) that make a pause: the lead-in stops there
LEAD_IN_ONSET_FRAMES = 1  # a file whose first frames (10 ms each) are quiet begins an utterance: no lead-in
LEAD_IN_FLOOR_DBFS = -50.0  # an opening whose loudest frame is under this has no speech in it: no lead-in
LEAD_IN_OPENING = LEAD_IN_MAX + LEAD_IN_PAUSE_FRAMES * HOP_LENGTH  # samples of a file's opening lead_in_audio reads


@dataclass
class MouthRows:
    """Consecutive mouth rows: row k describes feature frame `first + k`."""
    first: int
    visemes: np.ndarray  # (n, 15) float32 posteriors
    params: np.ndarray  # (n, 4) float32 mouth parameters, avatar.visemes.PARAM_NAMES order

    def __len__(self) -> int:
        return len(self.params)


def lead_in_audio(opening: np.ndarray) -> np.ndarray:
    """What the stream hears before a file's first sample: the file's opening sound up to its first pause (at most
    LEAD_IN_MAX), reversed; empty where the file opens with a pause or holds no speech there. Whole hops only, so the
    file's own frames keep their places. `opening`: the file's first LEAD_IN_OPENING samples (or all it has)."""
    head = np.asarray(opening, np.float64)[:LEAD_IN_OPENING]
    n = len(head) // HOP_LENGTH
    if n == 0:
        return np.zeros(0, np.float32)
    db = 10.0 * np.log10(np.mean(head[:n * HOP_LENGTH].reshape(n, HOP_LENGTH) ** 2, axis=1) + 1e-12)
    if db.max() < LEAD_IN_FLOOR_DBFS:
        return np.zeros(0, np.float32)
    quiet = db < db.max() - LEAD_IN_QUIET_DB
    if quiet[:LEAD_IN_ONSET_FRAMES].any():  # the sound rises at the start: an utterance begins, nothing before it
        return np.zeros(0, np.float32)
    frames, run = min(n, LEAD_IN_MAX // HOP_LENGTH), 0
    for i, q in enumerate(quiet):
        run = run + 1 if q else 0
        if run == LEAD_IN_PAUSE_FRAMES:
            frames = min(frames, i + 1 - LEAD_IN_PAUSE_FRAMES)
            break
    return np.ascontiguousarray(opening[:frames * HOP_LENGTH][::-1], np.float32)


def opening_of(blocks: Iterable[np.ndarray], n: int) -> tuple[np.ndarray, Iterator[np.ndarray]]:
    """(the first n samples of a block stream, fewer if it is shorter; the stream again, from its start)."""
    blocks = iter(blocks)
    taken, have = [], 0
    while have < n:
        block = next(blocks, None)
        if block is None:
            break
        taken.append(block)
        have += len(block)
    head = np.concatenate(taken)[:n] if taken else np.zeros(0, np.float32)
    return head, itertools.chain(taken, blocks)


def led_in(stream, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """The blocks again, after `stream` (a MouthStream, or anything with its `lead_in`) has heard their opening's
    lead_in_audio: a file that starts mid-sentence is followed from its first frame."""
    head, blocks = opening_of(blocks, LEAD_IN_OPENING)
    stream.lead_in(lead_in_audio(head))
    return blocks


def _closed_mouth(n: int) -> tuple[np.ndarray, np.ndarray]:
    """n rows of a closed, silent mouth: what the stream gives without a model (the face stays alive)."""
    visemes = np.zeros((n, N_VISEMES), np.float32)
    visemes[:, VISEME_INDEX["sil"]] = 1.0
    return visemes, np.zeros((n, N_PARAMS), np.float32)


class MouthStream:
    """Push 16 kHz audio in blocks of any size; get back the mouth rows of every feature frame the engine has
    now described. `flush()` at the end of the input gives the rows the look-ahead was still holding back.

    `engine` is a StatefulEngine (avatar.engine) or None (no model: a closed mouth). It may be swapped between
    pushes (the live backend switch); the stream's frame count runs on.

    `rest_batch` > 0 (the live view): once the rows have settled on digital silence (REST_SETTLE_FRAMES frames
    within REST_TOLERANCE), silent frames reach the network `rest_batch` at a time, their rows the newest row it
    gave meanwhile; a frame with sound steps the waiting ones and itself in one call, so its row is the one the
    frame-by-frame stream gives, in the same push. 0 (files, evaluation): every frame is stepped as it comes."""

    def __init__(self, engine, rest_batch: int = 0):
        self.rest_batch = rest_batch
        self.engine = engine
        self.mel = LogMelStream()
        self.samples_in = 0  # audio samples pushed (the flush's padding not counted)
        self.frames_out = 0  # engine output rows so far; output j describes feature frame j - lookahead
        self.flushed = False
        self.engine_calls = 0  # engine.step calls (what resting on silence saves)

    @property
    def engine(self):
        return self._engine

    @engine.setter
    def engine(self, engine) -> None:
        self._engine = engine
        self._rest_clear()  # a new (reset) network has not settled; frames waiting for the old one go with it

    @property
    def lookahead(self) -> int:
        """The engine's output delay in frames: output j describes feature frame j - lookahead."""
        return 0 if self.engine is None else self.engine.lookahead

    def reset(self) -> None:
        """Forget all audio and the engine's state: the next push starts a new stream at frame 0."""
        if self.engine is not None:
            self.engine.reset()
        self.mel.reset()
        self.samples_in = self.frames_out = 0
        self.flushed = False
        self._rest_clear()

    def lead_in(self, audio: np.ndarray) -> None:
        """Before the first push: let the engine hear `audio` (lead_in_audio) as the time before the stream's
        start; its rows are dropped, and the stream's frame 0 is the next sample's frame as ever."""
        if self.samples_in or self.frames_out:
            raise RuntimeError("a lead-in goes before the stream's first sample")
        if not len(audio):
            return
        features = self.mel.push(np.asarray(audio, np.float32))
        if len(features) and self.engine is not None:
            self._engine_step(features)
        # its feature frames come before frame 0: outputs describing them fall under the warm-up rows _step drops
        self.frames_out = len(features) - len(audio) // HOP_LENGTH

    def push(self, audio: np.ndarray) -> MouthRows:
        """Feed audio; the rows it completed (possibly none)."""
        if self.flushed:
            raise RuntimeError("this mouth stream was flushed (its input ended); reset() it to start another")
        self.samples_in += len(audio)
        return self._step(self.mel.push(audio))

    def flush(self) -> MouthRows:
        """End of input: the rows of the last `lookahead` feature frames, which the engine gives only once it has
        seen that many frames after them.

        The padding is exactly lookahead * HOP_LENGTH samples of silence. The log-mel stream holds the audio's
        last N % HOP_LENGTH samples (less than a hop) as a partial frame; with the padding it completes exactly
        `lookahead` more frames, so the engine's newest output describes feature frame N // HOP_LENGTH - 1, the last
        frame of the real audio. A longer padding (e.g. + WIN_LENGTH) would add rows for frames past the end of the
        audio (its partial last hop and the silence after it); a shorter one would lose the last real frames."""
        self._catch_up()  # what waited, then the padding's frames, each stepped (none repeats a row)
        self._settled = 0
        rows = self._step(self.mel.push(np.zeros(self.lookahead * HOP_LENGTH, np.float32)))
        self.flushed = True
        return rows

    def run(self, blocks: Iterable[np.ndarray], lead_in: bool = False) -> MouthRows:
        """A whole input from a fresh state: every block, then the flush. Rows from frame 0, one per feature frame
        of the audio (samples_in // HOP_LENGTH of them). Keeps only the rows, however long the audio. lead_in (a
        file): the stream first hears lead_in_audio of the input's opening."""
        self.reset()
        if lead_in:
            blocks = led_in(self, blocks)
        visemes = np.empty((FIRST_CAPACITY, N_VISEMES), np.float32)
        params = np.empty((FIRST_CAPACITY, N_PARAMS), np.float32)
        n = 0
        for rows in self._pushed(blocks):
            if n + len(rows) > len(params):
                visemes, params = _grown(visemes, n, len(rows)), _grown(params, n, len(rows))
            visemes[n:n + len(rows)], params[n:n + len(rows)] = rows.visemes, rows.params
            n += len(rows)
        return MouthRows(0, visemes[:n].copy(), params[:n].copy())

    def _pushed(self, blocks: Iterable[np.ndarray]) -> Iterable[MouthRows]:
        for block in blocks:
            yield self.push(block)
        yield self.flush()

    def _step(self, features: np.ndarray) -> MouthRows:
        """Features through the engine; the warm-up rows (describing frames before the start) dropped."""
        if len(features) == 0:
            return MouthRows(max(self.frames_out - self.lookahead, 0), *_closed_mouth(0))
        if self.engine is None:
            visemes, params = _closed_mouth(len(features))
        elif self.rest_batch > 0:
            visemes, params = self._resting_step(features)
        else:
            visemes, params = self._engine_step(features)
        first = self.frames_out - self.lookahead  # the feature frame the first output row describes
        self.frames_out += len(params)
        if first < 0:  # the network's warm-up rows describe nothing before the start
            visemes, params, first = visemes[-first:], params[-first:], 0
        return MouthRows(first, visemes, params)


    def _engine_step(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.engine.step(features)
        self.engine_calls += 1
        return np.asarray(out.visemes, np.float32), np.asarray(out.params, np.float32)

    # -- resting on silence (rest_batch > 0) ------------------------------------------------------------

    @property
    def resting(self) -> bool:
        """The rows have settled on silence and silent frames are batched: the mouth will not move until sound."""
        return self.rest_batch > 0 and self._settled >= REST_SETTLE_FRAMES

    def _rest_clear(self) -> None:
        self._settled = 0  # silent frames in a row, newest last, whose rows stayed within REST_TOLERANCE
        self._newest = None  # (visemes, params) row the network gave last
        self._waiting = 0  # silent frames not yet stepped (their rows were the newest row)

    def _resting_step(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        silent = (features == silent_features()).all(axis=1)
        n = len(features)
        if self._settled >= REST_SETTLE_FRAMES and silent.all():
            self._waiting += n
            if self._waiting >= self.rest_batch:
                self._catch_up()
            visemes, params = self._newest
            return np.repeat(visemes[None], n, axis=0), np.repeat(params[None], n, axis=0)
        waiting, self._waiting = self._waiting, 0
        if waiting:  # sound after resting: the frames that waited go first, in the same call
            features = np.concatenate([np.repeat(silent_features(), waiting, axis=0), features])
            silent = np.concatenate([np.ones(waiting, bool), silent])
        visemes, params = self._engine_step(features)
        self._observe(silent, visemes, params)
        return visemes[waiting:], params[waiting:]

    def _catch_up(self) -> None:
        """Step the silent frames that wait; their rows (already given) only tell whether the rows stay settled."""
        waiting, self._waiting = self._waiting, 0
        if waiting and self.engine is not None:
            visemes, params = self._engine_step(np.repeat(silent_features(), waiting, axis=0))
            self._observe(np.ones(waiting, bool), visemes, params)

    def _observe(self, silent: np.ndarray, visemes: np.ndarray, params: np.ndarray) -> None:
        """Count the silent frames in a row (newest last) whose rows moved less than REST_TOLERANCE."""
        if not silent[-1]:  # sound (a microphone's room noise, speech): no run; nothing more to look at
            self._settled, self._newest = 0, (visemes[-1].copy(), params[-1].copy())
            return
        rows = np.concatenate([visemes, params], axis=1)
        step = np.full(len(rows), np.inf)  # the very first row has no row before it
        if self._newest is not None:
            step[0] = np.abs(rows[0] - np.concatenate(self._newest)).max()
        step[1:] = np.abs(np.diff(rows, axis=0)).max(axis=1, initial=0.0)
        moved = np.flatnonzero(~(silent & (step < REST_TOLERANCE)))
        self._settled = self._settled + len(rows) if len(moved) == 0 else len(rows) - 1 - int(moved[-1])
        self._newest = (visemes[-1].copy(), params[-1].copy())


def _grown(buffer: np.ndarray, used: int, extra: int) -> np.ndarray:
    """`buffer` with room for `extra` more rows after `used` (doubled, so appending stays linear)."""
    out = np.empty((max(2 * len(buffer), used + extra), buffer.shape[1]), buffer.dtype)
    out[:used] = buffer[:used]
    return out
