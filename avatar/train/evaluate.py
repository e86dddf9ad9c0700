"""`avatar train evaluate`: how well the mouth follows speech, on held-out synthetic voices and on real speech,
next to an energy-envelope mouth (the obvious baseline: open the jaw as loud as the voice is).

Frame i of every track describes audio samples [i*160, (i+1)*160) (see `targets`). A model runs over each clip
through avatar.mouth_stream (its look-ahead trimmed and flushed as in the app): one row per frame of the clip.
"""
from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatar.audio import HOP_LENGTH, load_audio
from avatar.mouth_stream import MouthStream
from avatar.stats import pearson
from avatar.visemes import PARAM_NAMES, VISEME_INDEX, VISEME_POSE, VISEMES

from .datagen import load_shard
from . import music as music_clips  # (run_evaluation's `music` switch is a bool)
from .phonemes import BILABIALS
from .realspeech import ASTERISK_SOUNDS, asterisk_clips
from .targets import HAND_RULES, TargetRules, frame_phones, mouth_targets, rules_named, viseme_targets

JAW, PRESS = PARAM_NAMES.index("jaw_open"), PARAM_NAMES.index("lip_press")
CLOSED_JAW = 0.15  # a mouth counts as shown closed below this jaw opening (about a "nn" or less)...
CLOSED_PRESS = 0.5  # ...or with the lips pressed together at least this much (the renderer shuts the lips)
BILABIAL_TOLERANCE = 2  # frames either side of an aligned p/b/m where its closure may show (aligner error)
SILENCE_MARGIN = 3  # silence frames this close to speech are left out of "silence shown closed"
MAX_LAG = 15  # frames searched either way for the best-aligning lag
# opening delay: how long after a labelled speech onset the live mouth opens, look-ahead included
ONSET_SILENCE = 10  # frames of labelled silence before an onset (100 ms: a pause, not a stop closure)
OPEN_JAW = 0.3  # "open": half of the renderer's pixel range from closed to jaw_open 1 (`avatar bench latency`)
ONSET_REACH = 15  # frames after the onset in which the labels must open (else the onset is not timed)...
ONSET_SEARCH = 20  # ...and in which the track must follow (else it counts as never opening)
# held-out instrumental music: a mouth opened past this on music "sings along" (issue 13's threshold; <= 5 % wanted)
MUSIC_OPEN_JAW = 0.2
# 6 mouth-shape classes: rest, lips shut, lip-teeth, tongue/teeth consonants, open/spread vowels, rounded
SIX_CLASSES = {"sil": 0, "PP": 1, "FF": 2, "TH": 3, "DD": 3, "kk": 3, "CH": 3, "SS": 3, "nn": 3,
               "aa": 4, "E": 4, "ih": 4, "RR": 5, "oh": 5, "ou": 5}
SIX_OF_INDEX = np.array([SIX_CLASSES[v] for v in VISEMES])
# energy baseline: jaw follows frame loudness between the clip's noise floor and its loud speech
BASELINE_FLOOR_PERCENTILE, BASELINE_TOP_PERCENTILE = 10, 95
BASELINE_FLOOR_MARGIN_DB = 6.0
BASELINE_MAX_JAW = VISEME_POSE["aa"][JAW]


@dataclass
class Track:
    """Predicted or labelled mouth of one clip, frame by frame."""
    visemes: np.ndarray  # (T,) int viseme index
    jaw: np.ndarray  # (T,) jaw_open
    press: np.ndarray | None = None  # (T,) lip_press, None for predictors without one
    delay: int = 0  # frames between hearing a frame and showing it live (a model's look-ahead)

    @property
    def closed(self) -> np.ndarray:
        shut = self.jaw < CLOSED_JAW
        return shut if self.press is None else shut | (self.press > CLOSED_PRESS)


@dataclass
class Labels:
    visemes: np.ndarray  # (T,)
    params: np.ndarray  # (T, 4)
    bilabial: np.ndarray  # (T,) bool: an aligned p/b/m sounds in this frame

    @classmethod
    def from_units(cls, units, n_frames: int, rules: TargetRules = HAND_RULES) -> "Labels":
        phones = frame_phones(units, n_frames)
        return cls(viseme_targets(units, n_frames), mouth_targets(units, n_frames, rules),
                   np.array([p in BILABIALS for p in phones], dtype=bool))


# ----------------------------------------------------------------------------------------------------
# predictors


def predict(model, audio: np.ndarray, lead_in: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(T, 15) viseme posteriors and (T, 4) params of frames 0..T-1 of `audio` (T = len // 160): the network on
    the PyTorch engine from a fresh state, through the same MouthStream as the app and `avatar lipsync`. lead_in:
    as a file is run (`avatar render`, `avatar lipsync`: avatar.mouth_stream.lead_in_audio); without it, as the
    live view meets a voice after a quiet room (the figures of the model card)."""
    from avatar.engine.torch_engine import TorchEngine  # torch: heavy, and the metrics here run without it
    rows = MouthStream(TorchEngine(model)).run([audio], lead_in=lead_in)
    return rows.visemes, rows.params


def energy_baseline(audio: np.ndarray) -> Track:
    """A mouth that opens with loudness: jaw = frame level scaled between the clip's floor and top percentiles
    (a generous baseline: it knows the whole clip's level range), closed/'sil' below CLOSED_JAW, 'aa' above."""
    n = len(audio) // HOP_LENGTH
    frames = audio[: n * HOP_LENGTH].astype(np.float64).reshape(n, HOP_LENGTH)
    db = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-10)
    if n == 0:
        return Track(np.zeros(0, int), np.zeros(0))
    floor = np.percentile(db, BASELINE_FLOOR_PERCENTILE) + BASELINE_FLOOR_MARGIN_DB
    top = max(np.percentile(db, BASELINE_TOP_PERCENTILE), floor + 1.0)
    jaw = np.clip((db - floor) / (top - floor), 0, 1) * BASELINE_MAX_JAW
    vis = np.where(jaw < CLOSED_JAW, VISEME_INDEX["sil"], VISEME_INDEX["aa"])
    return Track(vis, jaw)


# ----------------------------------------------------------------------------------------------------
# metrics


def _segments(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def _best_lag(preds: list[np.ndarray], labels: list[np.ndarray]) -> int:
    """Lag (frames, + = prediction late) maximising the correlation of predicted and labelled jaw."""
    best, best_r = 0, -2.0
    for lag in range(-MAX_LAG, MAX_LAG + 1):
        a = np.concatenate([p[lag:] if lag >= 0 else p[:lag] for p in preds])
        b = np.concatenate([y[: len(y) - lag] if lag >= 0 else y[-lag:] for y in labels])
        r = pearson(a, b)
        if r > best_r:
            best, best_r = lag, r
    return best


def opening_delays(tracks: list[Track], labels: list[Labels]) -> tuple[np.ndarray, int]:
    """(ms per timed onset, onsets never opened): after each labelled pause, the frames from the labels' jaw first
    reaching OPEN_JAW to the track's, plus the track's live delay. The part of live mic->pixel latency the
    predictor adds on real onsets (the pipeline adds the rest: `avatar bench latency`)."""
    delays, missed = [], 0
    for t, y in zip(tracks, labels):
        silent = y.visemes == VISEME_INDEX["sil"]
        for i, _ in _segments(~silent):
            if i < ONSET_SILENCE or not silent[i - ONSET_SILENCE:i].all():
                continue
            opens = np.flatnonzero(y.params[i:i + ONSET_REACH, JAW] >= OPEN_JAW)
            if len(opens) == 0 or i + opens[0] + ONSET_SEARCH > len(t.jaw):
                continue
            first = i + opens[0]
            shown = np.flatnonzero(t.jaw[i - ONSET_SILENCE // 2:first + ONSET_SEARCH] >= OPEN_JAW)
            if len(shown) == 0:
                missed += 1
            else:
                delays.append(10 * (i - ONSET_SILENCE // 2 + shown[0] - first + t.delay))
    return np.array(delays, float), missed


def mouth_metrics(tracks: list[Track], labels: list[Labels]) -> dict:
    """The report's metrics over a set of clips (each predicted track beside its labels)."""
    vis = np.concatenate([t.visemes for t in tracks])
    jaw = np.concatenate([t.jaw for t in tracks])
    lab_vis = np.concatenate([y.visemes for y in labels])
    lab_jaw = np.concatenate([y.params[:, JAW] for y in labels])
    closed = np.concatenate([t.closed for t in tracks])
    shown, total = 0, 0
    quiet = []
    for t, y in zip(tracks, labels):
        for a, b in _segments(y.bilabial):
            total += 1
            shown += bool(np.any(t.closed[max(a - BILABIAL_TOLERANCE, 0):b + BILABIAL_TOLERANCE]))
        speech = y.visemes != VISEME_INDEX["sil"]
        near = np.convolve(speech, np.ones(2 * SILENCE_MARGIN + 1), "same") > 0
        quiet.append(~near)
    quiet = np.concatenate(quiet)
    jitter = np.concatenate([np.abs(np.diff(t.jaw, 2)) for t in tracks if len(t.jaw) > 2])
    lab_jitter = np.concatenate([np.abs(np.diff(y.params[:, JAW], 2)) for y in labels if len(y.params) > 2])
    delays, never_opened = opening_delays(tracks, labels)
    return dict(
        frames=int(len(vis)),
        viseme_acc=float(np.mean(vis == lab_vis)),
        six_class_acc=float(np.mean(SIX_OF_INDEX[vis] == SIX_OF_INDEX[lab_vis])),
        openness_r=pearson(jaw, lab_jaw),
        openness_mae=float(np.mean(np.abs(jaw - lab_jaw))),
        bilabial_closure_recall=float(shown / total) if total else float("nan"),
        bilabial_segments=int(total),
        silence_closed=float(np.mean(closed[quiet])) if quiet.any() else float("nan"),
        best_lag_ms=10 * _best_lag([t.jaw for t in tracks], [y.params[:, JAW] for y in labels]),
        jitter=float(np.mean(jitter)) if len(jitter) else float("nan"),
        label_jitter=float(np.mean(lab_jitter)) if len(lab_jitter) else float("nan"),
        opening_delay_ms=float(np.median(delays)) if len(delays) else float("nan"),
        opening_delay_p90_ms=float(np.percentile(delays, 90)) if len(delays) else float("nan"),
        onsets_timed=int(len(delays)),
        onsets_never_opened=int(never_opened),
    )


def music_metrics(tracks: list[Track]) -> dict:
    """On music, where every frame should show a closed mouth: how often and how far the jaw opens anyway."""
    jaw = np.concatenate([t.jaw for t in tracks]) if tracks else np.zeros(0)
    vis = np.concatenate([t.visemes for t in tracks]) if tracks else np.zeros(0, int)
    if len(jaw) == 0:
        return dict(frames=0, open_share=float("nan"), mean_jaw=float("nan"), p95_jaw=float("nan"),
                    speech_viseme_share=float("nan"))
    return dict(frames=int(len(jaw)), open_share=float(np.mean(jaw > MUSIC_OPEN_JAW)), mean_jaw=float(np.mean(jaw)),
                p95_jaw=float(np.percentile(jaw, 95)),
                speech_viseme_share=float(np.mean(vis != VISEME_INDEX["sil"])))


def model_track(model, audio: np.ndarray, lead_in: bool = False) -> Track:
    v, p = predict(model, audio, lead_in)
    return Track(v.argmax(-1), p[:, JAW], p[:, PRESS], delay=model.dims.lookahead)


# ----------------------------------------------------------------------------------------------------
# the two evaluation sets


@dataclass
class EvalSet:
    name: str
    audios: list  # float32 16 kHz clips
    labels: list  # Labels per clip
    note: str = ""


def synthetic_set(folder: Path, clip_seconds: float = 30.0) -> EvalSet:
    """Held-out synthetic streams (`avatar train gen --split eval`), cut into clips."""
    audios, labels = [], []
    step = int(clip_seconds * 100)
    for path in sorted(Path(folder).glob("shard-*[0-9].npz")):
        shard = load_shard(path)
        audio = shard["audio"].astype(np.float32) / 32768.0
        for a in range(0, len(shard["visemes"]) - 100, step):
            b = min(a + step, len(shard["visemes"]))
            audios.append(audio[a * HOP_LENGTH:b * HOP_LENGTH])
            bil = np.zeros(b - a, bool)  # shards keep no phones: p/b/m = PP frames
            bil[:] = shard["visemes"][a:b] == VISEME_INDEX["PP"]
            labels.append(Labels(shard["visemes"][a:b], shard["params"][a:b].astype(np.float32), bil))
    if not audios:
        raise FileNotFoundError(f"no shards in {folder}")
    return EvalSet("synthetic held-out voices", audios, labels,
                   f"{len(audios)} clips from {folder}: held-out sentences and espeak voices")


def real_set(cache: Path | None = None, limit: int | None = None, rules: TargetRules = HAND_RULES) -> EvalSet:
    """The asterisk prompts with pocketsphinx labels (alignments cached as JSON in `cache`), mouths by `rules`."""
    aligned = None
    if cache is not None and cache.exists():
        aligned = json.loads(cache.read_text())
    if aligned is None or (limit is not None and len(aligned["clips"]) < limit):
        clips, skipped = asterisk_clips(limit=limit, progress=True)
        aligned = dict(skipped=skipped, clips=[dict(name=c.name, text=c.text, units=c.units) for c in clips])
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(aligned))
    entries = aligned["clips"][:limit]
    audios = [load_audio(ASTERISK_SOUNDS / f"{c['name']}.g722") for c in entries]
    labels = [Labels.from_units([tuple(u) for u in c["units"]], len(a) // HOP_LENGTH, rules)
              for c, a in zip(entries, audios)]
    seconds = sum(len(a) for a in audios) / 16000
    name = "real speech (asterisk prompts)" + ("" if rules is HAND_RULES else f", {rules.name} targets")
    return EvalSet(name, audios, labels,
                   f"{len(audios)} prompts, {seconds / 60:.1f} min, one female speaker, pocketsphinx-aligned; "
                   f"skipped {aligned['skipped']}")


def evaluate_music(predictors: dict, clips: list[tuple[str, np.ndarray]]) -> dict:
    """{name: {'all', 'recorded', 'midi': music_metrics}} for each predictor (audio -> Track) on the held-out
    music (`music.held_out_music`: composed pieces are named 'midi-...')."""
    out = {}
    for name, predict_track in predictors.items():
        tracks = [(clip, predict_track(audio)) for clip, audio in clips]
        out[name] = dict(all=music_metrics([t for _, t in tracks]),
                         recorded=music_metrics([t for c, t in tracks if not c.startswith("midi-")]),
                         midi=music_metrics([t for c, t in tracks if c.startswith("midi-")]))
    return out


def music_table(results: dict) -> str:
    def pct(x):
        return f"{x:.1%}" if x == x else "n/a"
    rows = [f"| model | jaw_open > {MUSIC_OPEN_JAW} | recordings | MIDI | mean jaw_open | p95 jaw_open | "
            "viseme not 'sil' |", "|---|---|---|---|---|---|---|"]
    for name, m in results.items():
        a = m["all"]
        rows.append(f"| {name} | {pct(a['open_share'])} | {pct(m['recorded']['open_share'])} | "
                    f"{pct(m['midi']['open_share'])} | {a['mean_jaw']:.3f} | {a['p95_jaw']:.3f} | "
                    f"{pct(a['speech_viseme_share'])} |")
    return "\n".join(rows)


def music_section(models: dict, lead_in: bool = False) -> tuple[dict, list[str]]:
    """The held-out music check: (results, report lines); skipped with the reason when no music is installed."""
    title = "### held-out instrumental music (a closed mouth wanted)"
    try:
        clips = music_clips.held_out_music()
    except music_clips.MusicUnavailable as e:
        return dict(skipped=str(e)), [title, "", f"skipped: {e}", ""]
    n_midi = sum(c.startswith("midi-") for c, _ in clips)
    seconds = sum(len(a) for _, a in clips) / 16000
    note = (f"{len(clips) - n_midi} held-out recordings ({', '.join(c for c, _ in clips if not c.startswith('midi-'))})"
            f" and {n_midi} composed MIDI pieces with held-out GM programs and drum kits; {seconds / 60:.1f} min; "
            f"never used in training. Share of frames with jaw_open > {MUSIC_OPEN_JAW}.")
    predictors = {"energy baseline": energy_baseline,
                  **{name: functools.partial(model_track, model, lead_in=lead_in) for name, model in models.items()}}
    res = evaluate_music(predictors, clips)
    return dict(note=note, metrics=res), [title, "", note, "", music_table(res), ""]


def evaluate_models(models: dict, evalset: EvalSet, baseline: bool = True, lead_in: bool = False) -> dict:
    """{name: metrics} for each model (and the energy baseline) on one evaluation set."""
    out = {}
    if baseline:
        out["energy baseline"] = mouth_metrics([energy_baseline(a) for a in evalset.audios], evalset.labels)
    for name, model in models.items():
        out[name] = mouth_metrics([model_track(model, a, lead_in) for a in evalset.audios], evalset.labels)
    return out


METRIC_COLUMNS = (("viseme_acc", "15-viseme acc", "{:.1%}"), ("six_class_acc", "6-class acc", "{:.1%}"),
                  ("openness_r", "openness r", "{:.3f}"), ("openness_mae", "openness MAE", "{:.3f}"),
                  ("bilabial_closure_recall", "p/b/m closed", "{:.1%}"), ("silence_closed", "silence closed", "{:.1%}"),
                  ("best_lag_ms", "best lag ms", "{:+d}"), ("jitter", "jitter", "{:.4f}"),
                  ("opening_delay_ms", "opening delay ms", "{:.0f}"), ("opening_delay_p90_ms", "p90", "{:.0f}"))


def markdown_table(results: dict) -> str:
    head = "| model | " + " | ".join(c[1] for c in METRIC_COLUMNS) + " |"
    rows = [head, "|" + "---|" * (len(METRIC_COLUMNS) + 1)]
    for name, m in results.items():
        cells = [fmt.format(m[key]) if m[key] == m[key] else "n/a" for key, _, fmt in METRIC_COLUMNS]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def step_time_ms(model, chunk: int = 4, iters: int = 300) -> dict:
    """Median and p99 wall time of one streaming step of `chunk` frames (PyTorch, this process's threads)."""
    import torch  # heavy, and the metrics here run without it

    x = torch.zeros(1, chunk, model.dims.n_mels)
    state = model.initial_state(1)
    times = []
    with torch.inference_mode():
        for i in range(iters + 20):
            t = time.perf_counter()
            _, _, state = model(x, state)
            if i >= 20:
                times.append((time.perf_counter() - t) * 1000)
    return dict(median=float(np.median(times)), p99=float(np.percentile(times, 99)))


def run_evaluation(model_paths: list[Path], synthetic: Path | None, real: bool, real_cache: Path | None,
                   limit: int | None = None, bench: bool = True, targets: tuple[str, ...] = ("hand",),
                   music: bool = True, lead_in: bool = False) -> tuple[dict, str]:
    """Every model (and the energy baseline) on each available set; (results dict, markdown report)."""
    import torch  # heavy, and the metrics here run without it

    from avatar.model import load_model  # (torch)

    torch.set_num_threads(1)
    models = {}
    for p in model_paths:
        model = load_model(p)
        name = f"{p.stem} ({model.dims.cell}, look-ahead {model.dims.lookahead * 10} ms)"
        models[name] = model
    sets = []
    if synthetic is not None:
        sets.append(synthetic_set(synthetic))
    if real:  # one table per set of target rules: the labels' mouths change, the alignment does not
        sets += [real_set(real_cache, limit, rules_named(name)) for name in targets]
    results, lines = {"sets": {}, "models": {}}, []
    for evalset in sets:
        res = evaluate_models(models, evalset, lead_in=lead_in)
        results["sets"][evalset.name] = dict(note=evalset.note, metrics=res)
        lines += [f"### {evalset.name}", "", evalset.note, "", markdown_table(res), ""]
    if music:
        results["music"], music_lines = music_section(models, lead_in)
        lines += music_lines
    lines += ["### models", "", "| model | parameters | step of 40 ms (median / p99 ms, 1 CPU thread) |", "|---|---|---|"]
    for name, model in models.items():
        info = dict(parameters=sum(p.numel() for p in model.parameters()))
        if bench:
            info["step_ms"] = step_time_ms(model)
        results["models"][name] = info
        step = f"{info['step_ms']['median']:.3f} / {info['step_ms']['p99']:.3f}" if bench else "n/a"
        lines.append(f"| {name} | {info['parameters']:,} | {step} |")
    return results, "\n".join(lines) + "\n"
