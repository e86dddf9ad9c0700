"""Instrumental music, the negatives of lip-sync training and the held-out "does it sing along" check.

Two offline sources, both from Debian packages (see .ci/apt-packages.txt):
- recorded game music: wesnoth-1.16-music (OGG), asc-music (MP3), fb-music-high (an XM tracker module);
- General-MIDI pieces composed here from a seed (melody, chords, bass, drums) and rendered by the `fluidsynth`
  CLI with the fluid-soundfont-gm SoundFont.
Train and held-out never share a recording (split by a hash of its name), a GM program or a drum kit, and the
two splits draw their compositions from different seed streams. Everything is mono float32 at 16 kHz.
"""
from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from avatar.audio import AudioError, iter_audio, load_audio

SAMPLE_RATE = 16000
# where the packages install their tracks (globs: the wesnoth branch number changes between releases)
RECORDING_GLOBS = ("/usr/share/games/wesnoth/*/data/core/music/*.ogg",  # wesnoth-1.16-music
                   "/usr/share/games/asc/music/*.mp3",  # asc-music
                   "/usr/share/games/frozen-bubble/snd/*.xm")  # fb-music-high (PyAV lacks libopenmpt: ffmpeg CLI)
MIN_RECORDING_SECONDS = 20.0  # shorter files are jingles or, in wesnoth's silence.ogg, 10 s of digital zero
# a recording is held out when crc32 of HELD_OUT_SALT + its name is a multiple of HELD_OUT_MODULUS (about 1 in 5;
# the salt picked so that the held-out set spans two packages: 2 of asc's 3 tracks, 6 of wesnoth's)
HELD_OUT_SALT, HELD_OUT_MODULUS = "music-eval:", 5
SOUNDFONT_PATHS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2",)  # fluid-soundfont-gm
# GM programs 0-119 are instruments; left out: 52-54 (choir aahs, voice oohs, synth voice: sung vowels, not
# instruments) and 120-127 (sound effects: breath, seashore, applause...). Every 4th program is held out.
VOICE_PROGRAMS = range(52, 55)
INSTRUMENT_PROGRAMS = [p for p in range(120) if p not in VOICE_PROGRAMS]
HELD_OUT_PROGRAMS = frozenset(p for p in INSTRUMENT_PROGRAMS if p % 4 == 3)
BASS_PROGRAMS = range(32, 40)  # the GM bass family
# drum kits of FluidR3_GM (bank 128): standard, room, power, electronic | TR-808, jazz, brush, orchestra
DRUM_KITS = {"train": (0, 8, 16, 24), "eval": (25, 32, 40, 48)}
SPLIT_STREAM = {"train": 0, "eval": 1}  # composition seeds of the two splits come from different streams
TICKS_PER_BEAT = 480
TEMPO_BPM = (60.0, 170.0)
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10), "dorian": (0, 2, 3, 5, 7, 9, 10),
          "pentatonic": (0, 2, 4, 7, 9, 12, 14)}
PROGRESSIONS = ((0, 4, 5, 3), (0, 5, 3, 4), (0, 3, 4, 4), (5, 3, 0, 4), (0, 0, 3, 4), (1, 4, 0, 0))  # degrees
P_DRUMS, P_BASS, P_MELODY, P_CHORDS = 0.7, 0.75, 0.85, 0.8
P_RECORDED = 0.6  # a training segment is a recording (else a MIDI render) when both sources are installed
RENDER_TAIL_S = 1.5  # composed this much longer than asked: the render's start is used, the release tail cut
# held-out music of `avatar train evaluate`: a stretch of every held-out recording and a few MIDI pieces
EVAL_OFFSET_S = 5.0
EVAL_RECORDING_S = 60.0
EVAL_MIDI_PIECES = 8
EVAL_MIDI_S = 30.0


class MusicUnavailable(RuntimeError):
    """Neither the music packages nor fluidsynth with its SoundFont are installed."""


# ----------------------------------------------------------------------------------------------------
# recordings


@dataclass(frozen=True)
class Recording:
    path: Path

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def split(self) -> str:
        return "eval" if zlib.crc32((HELD_OUT_SALT + self.name).encode()) % HELD_OUT_MODULUS == 0 else "train"


def recordings(split: str | None = None) -> list[Recording]:
    """The installed music files of `split` ('train', 'eval' or None for both), sorted by path."""
    found = sorted({Path(p) for g in RECORDING_GLOBS for p in Path("/").glob(g.lstrip("/"))})
    return [r for r in map(Recording, found) if split is None or r.split == split]


@functools.lru_cache(maxsize=4)  # a shard draws several segments from the same few tracks
def decode(path: Path) -> np.ndarray:
    """A whole recording as mono float32 16 kHz (PyAV; the ffmpeg CLI for formats PyAV's build lacks)."""
    try:
        return load_audio(path)
    except AudioError:
        if shutil.which("ffmpeg") is None:
            raise
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-ac", "1", "-ar", str(SAMPLE_RATE),
                          "-f", "f32le", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.float32).copy()


def excerpt(path: Path, offset_s: float, seconds: float) -> np.ndarray:
    """`seconds` of a recording from `offset_s`, decoding no further than needed."""
    a, b = int(offset_s * SAMPLE_RATE), int((offset_s + seconds) * SAMPLE_RATE)
    try:
        blocks, n = [], 0
        for block in iter_audio(path):
            blocks.append(block)
            n += len(block)
            if n >= b:
                break
        return np.concatenate(blocks)[a:b] if blocks else np.zeros(0, np.float32)
    except AudioError:
        return decode(path)[a:b]


def _long_enough(rec: Recording) -> bool:
    """Cheap length check from the container header (no decoding); unknown lengths count as long enough."""
    try:
        with av.open(str(rec.path)) as c:
            return c.duration is None or c.duration / 1e6 >= MIN_RECORDING_SECONDS
    except (av.error.FFmpegError, OSError):
        return shutil.which("ffmpeg") is not None  # e.g. the XM module, which only the ffmpeg CLI opens


# ----------------------------------------------------------------------------------------------------
# composed General-MIDI pieces


def soundfont() -> Path | None:
    return next((Path(p) for p in SOUNDFONT_PATHS if Path(p).is_file()), None)


def can_render_midi() -> bool:
    return shutil.which("fluidsynth") is not None and soundfont() is not None


def _vlq(n: int) -> bytes:
    """A MIDI variable-length quantity: 7 bits a byte, high bit set on all but the last."""
    out = [n & 0x7F]
    while n > 0x7F:
        n >>= 7
        out.append(0x80 | (n & 0x7F))
    return bytes(reversed(out))


def midi_file(tracks: list[list[tuple[int, bytes]]], tempo_bpm: float) -> bytes:
    """A format-1 Standard MIDI File: each track a list of (absolute tick, event bytes); tempo in track 0."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return kind + len(body).to_bytes(4, "big") + body

    tempo = round(60e6 / tempo_bpm).to_bytes(3, "big")
    all_tracks = [[(0, b"\xff\x51\x03" + tempo)]] + tracks
    out = chunk(b"MThd", (1).to_bytes(2, "big") + len(all_tracks).to_bytes(2, "big")
                + TICKS_PER_BEAT.to_bytes(2, "big"))
    for events in all_tracks:
        body, now = b"", 0
        # note-offs (0x8n) before note-ons at the same tick, so a repeated note is not cut short
        for tick, data in sorted(events, key=lambda e: (e[0], (e[1][0] & 0xF0) != 0x80)):
            body += _vlq(tick - now) + data
            now = tick
        out += chunk(b"MTrk", body + b"\x00\xff\x2f\x00")
    return out


def _notes(channel: int, notes: list[tuple[float, float, int, int]]) -> list[tuple[int, bytes]]:
    """(start beat, length in beats, pitch, velocity) -> note-on/off events."""
    events = []
    for start, length, pitch, velocity in notes:
        a, b = round(start * TICKS_PER_BEAT), round((start + length) * TICKS_PER_BEAT)
        events += [(a, bytes([0x90 | channel, pitch, velocity])), (max(b, a + 1), bytes([0x80 | channel, pitch, 0]))]
    return events


def _program(split: str, rng: np.random.Generator, pool=INSTRUMENT_PROGRAMS) -> int:
    allowed = [p for p in pool if (p in HELD_OUT_PROGRAMS) == (split == "eval")]
    return int(rng.choice(allowed))


def compose(seed: int, seconds: float, split: str = "train") -> tuple[bytes, dict]:
    """A random but seeded piece of about `seconds`: (MIDI file bytes, what was drawn). Only `split`'s GM
    programs and drum kits are used, and each split has its own seed stream."""
    rng = np.random.default_rng([SPLIT_STREAM[split], seed])
    bpm = float(rng.uniform(*TEMPO_BPM))
    scale_name = str(rng.choice(list(SCALES)))
    scale, root = SCALES[scale_name], int(rng.integers(45, 58))  # A2..A#3
    progression = PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))]
    n_bars = max(1, int(np.ceil(seconds * bpm / 60 / 4)))

    def pitch(degree: int, octave: int = 0) -> int:
        return root + 12 * (octave + degree // len(scale)) + scale[degree % len(scale)]

    parts = {}
    if rng.random() < P_CHORDS:
        arpeggio = rng.random() < 0.4
        notes = []
        for bar in range(n_bars):
            d = progression[bar % len(progression)]
            chord = [pitch(d + k, 1) for k in (0, 2, 4)]
            if arpeggio:
                notes += [(bar * 4 + i / 2, 0.5, chord[i % 3], int(rng.integers(45, 80))) for i in range(8)]
            else:
                notes += [(bar * 4, 4.0, p, int(rng.integers(45, 80))) for p in chord]
        parts["chords"] = (_program(split, rng), notes)
    if rng.random() < P_BASS:
        notes = [(bar * 4 + beat, 1.0, pitch(progression[bar % len(progression)], -1), int(rng.integers(60, 100)))
                 for bar in range(n_bars) for beat in range(0, 4, int(rng.choice([1, 2])))]
        parts["bass"] = (_program(split, rng, BASS_PROGRAMS), notes)
    if rng.random() < P_MELODY or not parts:
        notes, beat, degree = [], 0.0, int(rng.integers(0, 7))
        while beat < n_bars * 4:
            length = float(rng.choice([0.25, 0.5, 0.5, 1.0, 1.0, 2.0]))
            if rng.random() > 0.15:  # else a rest
                notes.append((beat, length, pitch(degree, 2), int(rng.integers(60, 110))))
            degree = int(np.clip(degree + rng.integers(-2, 3), 0, 13))
            beat += length
        parts["melody"] = (_program(split, rng), notes)
    tracks = []
    drawn = dict(seed=seed, split=split, bpm=round(bpm, 1), scale=scale_name, root=root, programs={})
    for channel, (part, (program, notes)) in enumerate(parts.items()):
        tracks.append([(0, bytes([0xC0 | channel, program]))] + _notes(channel, notes))
        drawn["programs"][part] = program
    if rng.random() < P_DRUMS:
        kit = int(rng.choice(DRUM_KITS[split]))
        kick, snare, hat = 36, int(rng.choice([38, 40])), int(rng.choice([42, 44, 46]))
        notes = []
        for bar in range(n_bars):
            notes += [(bar * 4 + b, 0.25, kick, 100) for b in (0, 2) + ((2.5,) if rng.random() < 0.3 else ())]
            notes += [(bar * 4 + b, 0.25, snare, 90) for b in (1, 3)]
            notes += [(bar * 4 + i / 2, 0.25, hat, int(rng.integers(40, 80))) for i in range(8)]
        # channel 10 (index 9) is GM percussion: fluidsynth plays it from bank 128, the program picks the kit
        tracks.append([(0, bytes([0xC9, kit]))] + _notes(9, notes))
        drawn["drum_kit"] = kit
    return midi_file(tracks, bpm), drawn


def render(midi: bytes, seconds: float | None = None) -> np.ndarray:
    """A MIDI file played by fluidsynth with the GM SoundFont: mono float32 16 kHz (optionally cut)."""
    if not can_render_midi():
        raise MusicUnavailable("MIDI rendering needs the Debian packages fluidsynth and fluid-soundfont-gm")
    with tempfile.TemporaryDirectory(prefix="avatar-midi-") as tmp:
        mid, wav = Path(tmp) / "piece.mid", Path(tmp) / "piece.wav"
        mid.write_bytes(midi)
        # -n no MIDI input, -i no shell, -q quiet; -F renders to a file as fast as it can, at -r Hz
        subprocess.run(["fluidsynth", "-niq", "-F", str(wav), "-r", str(SAMPLE_RATE), "-g", "0.5",
                        "-o", "synth.cpu-cores=1", str(soundfont()), str(mid)],
                       check=True, capture_output=True, timeout=300)
        audio = load_audio(wav)
    return audio if seconds is None else audio[: int(seconds * SAMPLE_RATE)]


# ----------------------------------------------------------------------------------------------------
# the source the data generator draws from, and the held-out set


class MusicSource:
    """Music segments for one split, drawn with the caller's generator (so a shard's seed fixes them)."""

    def __init__(self, split: str = "train"):
        self.split = split
        self.recordings = [r for r in recordings(split) if _long_enough(r)]
        self.midi = can_render_midi()
        if not self.recordings and not self.midi:
            raise MusicUnavailable(
                "no music source: install the Debian packages wesnoth-1.16-music / asc-music / fb-music-high "
                "(recorded tracks) or fluidsynth + fluid-soundfont-gm (composed MIDI); see .ci/apt-packages.txt")

    def segment(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        """`n` samples of music (as recorded: not levelled) and where they came from."""
        if self.recordings and (not self.midi or rng.random() < P_RECORDED):
            rec = self.recordings[int(rng.integers(len(self.recordings)))]
            audio = decode(rec.path)
            if len(audio) < MIN_RECORDING_SECONDS * SAMPLE_RATE:  # too short after all: compose instead
                return self._composed(n, rng) if self.midi else (np.zeros(n, np.float32), dict(track=rec.name))
            start = int(rng.integers(0, max(1, len(audio) - n)))
            piece = audio[start:start + n]
            if len(piece) < n:  # a track shorter than the stretch: play it again from the start
                piece = np.resize(audio, n)
            return piece.astype(np.float32), dict(track=rec.name, start_s=round(start / SAMPLE_RATE, 2))
        return self._composed(n, rng)

    def _composed(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        midi, drawn = compose(int(rng.integers(2**31)), n / SAMPLE_RATE + RENDER_TAIL_S, self.split)
        audio = render(midi)[:n]
        return np.pad(audio, (0, n - len(audio))).astype(np.float32), dict(midi=drawn)


def held_out_music(recording_seconds: float = EVAL_RECORDING_S, midi_pieces: int = EVAL_MIDI_PIECES,
                   midi_seconds: float = EVAL_MIDI_S) -> list[tuple[str, np.ndarray]]:
    """(name, audio) of the music never trained on: a stretch of each held-out recording (from EVAL_OFFSET_S)
    and `midi_pieces` compositions with held-out programs, kits and seeds. Raises MusicUnavailable if none."""
    clips = []
    for rec in recordings("eval"):
        if _long_enough(rec):
            clips.append((rec.name, excerpt(rec.path, EVAL_OFFSET_S, recording_seconds)))
    if can_render_midi():
        for seed in range(midi_pieces):
            midi, _ = compose(seed, midi_seconds + RENDER_TAIL_S, "eval")
            clips.append((f"midi-eval-{seed}", render(midi, midi_seconds)))
    if not clips:
        raise MusicUnavailable("no held-out music: install wesnoth-1.16-music / asc-music / fb-music-high or "
                               "fluidsynth + fluid-soundfont-gm (see .ci/apt-packages.txt)")
    return clips
