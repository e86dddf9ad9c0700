"""Rendering: mouth opening measured by the landmark detector, identity at rest, a still background,
CPU/torch agreement, liveliness and the frame contract."""
import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avatar.face import FrameRenderer, LivelinessConfig, build_rig, create_renderer, detect_faces
from avatar.face import landmarks as lm
from avatar.face.liveliness import Liveliness
from avatar.face.render_base import field_weights, mouth_params
from avatar.face.rig import LOCAL_FIELDS
from avatar.face.shapes import DEFAULT_SHAPES
from avatar.visemes import N_PARAMS, PARAM_NAMES, VISEME_POSE

OFF = LivelinessConfig(enabled=False)  # frames that move only as commanded
ROOT = Path(__file__).resolve().parent.parent
PHOTOS = {"grace_hopper": ROOT / "assets" / "default_face.jpg",
          "astronaut": Path(__file__).parent / "data" / "face" / "astronaut.jpg"}
REST = np.zeros(N_PARAMS, np.float32)  # every mouth parameter 0: the photo's own mouth


def viseme(name: str) -> np.ndarray:
    return np.array(VISEME_POSE[name], np.float32)


@pytest.fixture(scope="module", params=list(PHOTOS))
def rig(request):
    return build_rig(PHOTOS[request.param], canvas=512)


@pytest.fixture(scope="module")
def grace():
    return build_rig(PHOTOS["grace_hopper"], canvas=512)


def inner_gap(points: np.ndarray) -> float:
    """Mean distance between matching upper and lower inner-lip points, in mouth widths."""
    up = points[list(lm.LIP_INNER_UPPER[2:-2]), :2]
    lo = points[list(lm.LIP_INNER_LOWER[2:-2]), :2]
    width = np.linalg.norm(points[lm.MOUTH_CORNERS[0], :2] - points[lm.MOUTH_CORNERS[1], :2])
    return float(np.linalg.norm(up - lo, axis=1).mean() / width)


def test_commanded_opening_moves_measured_lip_gap(rig):
    levels = np.linspace(0, 1, 9)
    r = create_renderer(rig, "cpu", OFF)
    measured = []
    for jaw in levels:
        faces = detect_faces(r.render(mouth_params(jaw_open=jaw), 0.0))
        assert faces, f"the detector lost the face at jaw_open={jaw}"
        measured.append(inner_gap(faces[0]))
    measured = np.array(measured)
    corr = np.corrcoef(levels, measured)[0, 1]
    assert corr >= 0.95, (corr, measured)
    assert np.all(np.diff(measured) > -0.01), measured  # monotonic within detector jitter
    assert measured[-1] - measured[0] > 0.2  # a wide "aa" opens by a fifth of the mouth width or more


def test_press_and_round_change_the_mouth_as_intended(grace):
    r = create_renderer(grace, "cpu", OFF)
    rest = detect_faces(r.render(REST, 0))[0]
    rounded = detect_faces(r.render(mouth_params(lip_round=1.0), 0))[0]
    width = lambda p: np.linalg.norm(p[lm.MOUTH_CORNERS[0], :2] - p[lm.MOUTH_CORNERS[1], :2])  # noqa: E731
    assert width(rounded) < 0.9 * width(rest)
    spread = detect_faces(r.render(mouth_params(lip_spread=1.0), 0))[0]
    assert width(spread) > 1.02 * width(rest)  # fitted: real widths follow lip_spread weakly (avatar.face.shapes)


def test_zero_parameters_reproduce_the_photo(rig):
    for device in ("cpu", "torch-cpu"):
        frame = create_renderer(rig, device, LivelinessConfig(enabled=False)).render(REST, 3.7)
        assert frame.shape == rig.image.shape and frame.dtype == np.uint8 and frame.flags.c_contiguous
        assert np.abs(frame.astype(int) - rig.image).max() <= 1


def test_pixels_far_from_the_face_never_change_with_mouth_parameters(rig):
    r = create_renderer(rig, "cpu", OFF)
    g = rig.geometry
    h, w = rig.image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    far = np.hypot(xs - g.mouth_center[0], ys - g.mouth_center[1]) > 1.2 * g.face_h
    assert far.mean() > 0.1  # the test means something: a good part of the canvas is far
    changed = np.zeros((h, w), bool)
    rng = np.random.default_rng(0)
    for _ in range(12):
        changed |= np.any(r.render(rng.uniform(0, 1, N_PARAMS).astype(np.float32), 0) != rig.image, axis=2)
    assert changed.any()
    assert not changed[far].any()
    lb = rig.local_box
    outside = np.ones((h, w), bool)
    outside[lb.y0:lb.y1, lb.x0:lb.x1] = False
    assert not changed[outside].any()


def test_mouth_opens_with_dark_interior_and_closes_on_press(grace):
    r = create_renderer(grace, "cpu", OFF)
    x0, y0, x1, y1 = grace.mouth_box
    luma = lambda f: f[y0:y1, x0:x1].astype(float) @ [0.299, 0.587, 0.114]  # noqa: E731
    rest_f, aa_f = r.render(REST, 0), r.render(viseme("aa"), 0)
    rest, aa = luma(rest_f), luma(aa_f)
    assert (aa < 40).sum() > 5 * max((rest < 40).sum(), 10)  # a dark cavity appeared
    # and teeth, brighter than the cavity (their colour is the photo's sclera's: tests/test_face_mouth.py)
    teeth = np.array(grace.appearance.teeth) @ [0.299, 0.587, 0.114]
    assert ((aa > 0.6 * teeth) & (aa < 1.05 * teeth) & (np.abs(aa - rest) > 30)).sum() > 50
    pp = luma(r.render(viseme("PP"), 0))
    assert (pp < 40).sum() <= (rest < 40).sum() + 5


def test_cpu_and_torch_renderers_agree(rig):
    pytest.importorskip("torch")
    cpu = create_renderer(rig, "cpu", OFF)
    tor = create_renderer(rig, "torch-cpu", OFF)
    assert isinstance(cpu, FrameRenderer) and isinstance(tor, FrameRenderer)
    frames = [(cpu.render(viseme(v), 0), tor.render(viseme(v), 0)) for v in ("aa", "ou", "E", "PP")]
    poses = [{"jaw_open": 0.6, "lip_round": 0.4, "blink_l": 0.7, "brow_raise": 0.5, "head_yaw": 0.8,
              "head_pitch": -0.5, "head_roll": 0.6, "head_rise": 1.0}]
    poses += [dict(zip(PARAM_NAMES, VISEME_POSE[v]), head_yaw=0.5, blink=0.3) for v in ("aa", "ou", "E", "PP")]
    frames += [(cpu.render_pose(p, 0), tor.render_pose(p, 0)) for p in poses]
    # the same parameter arrays and times with the idle motion on: the liveliness adds the same extras to both
    cfg = LivelinessConfig(seed=2)
    cpu_live, tor_live = create_renderer(rig, "cpu", cfg), create_renderer(rig, "torch-cpu", cfg)
    rows = np.random.default_rng(5).uniform(0, 1, (6, N_PARAMS)).astype(np.float32)
    frames += [(cpu_live.render(row, 0.7 * k), tor_live.render(row, 0.7 * k)) for k, row in enumerate(rows)]
    for k, (a, b) in enumerate(frames):
        diff = np.abs(a.astype(int) - b.astype(int))
        # a few pixels may differ more where a sub-pixel decision (lip line side) falls the other way
        assert diff.mean() < 0.2 and np.percentile(diff, 99.9) <= 3 and (diff > 16).mean() < 5e-4, (k, diff.max())


def test_gpu_renderer_matches_cpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine")
    # stored landmarks: GPU machines need not have mediapipe
    points = np.load(Path(__file__).parent / "data" / "face" / "default_face_landmarks.npy")
    rig = build_rig(PHOTOS["grace_hopper"], canvas=512, landmarks=points)
    cpu, gpu = create_renderer(rig, "cpu", OFF), create_renderer(rig, "cuda", OFF)
    frames = [(cpu.render(viseme(v), 0), gpu.render(viseme(v), 0)) for v in ("aa", "ou", "PP")]
    poses = [dict(zip(PARAM_NAMES, VISEME_POSE[v]), head_yaw=0.5, blink=0.4) for v in ("aa", "ou", "PP")]
    frames += [(cpu.render_pose(p, 0), gpu.render_pose(p, 0)) for p in poses]
    for a, b in frames:
        diff = np.abs(a.astype(int) - b.astype(int))
        assert diff.mean() < 0.2 and np.percentile(diff, 99.9) <= 3 and (diff > 16).mean() < 5e-4


def test_parameter_array_is_in_param_names_order(grace):
    r = create_renderer(grace, "cpu", OFF)
    jaw, press = PARAM_NAMES.index("jaw_open"), PARAM_NAMES.index("lip_press")
    local = lambda params: dict(zip(LOCAL_FIELDS, field_weights(params)[0]))  # noqa: E731
    only_jaw = np.zeros(N_PARAMS, np.float32)
    only_jaw[jaw] = 0.75
    assert local(only_jaw)["jaw"] == pytest.approx(0.75 * DEFAULT_SHAPES.jaw_gain)
    only_press = np.zeros(N_PARAMS, np.float32)
    only_press[press] = 0.75
    assert local(only_press)["jaw"] == 0.0  # pressing alone opens nothing
    for k, name in enumerate(PARAM_NAMES):  # slot k is the parameter PARAM_NAMES[k], for the frame too
        one = np.zeros(N_PARAMS, np.float32)
        one[k] = 0.7
        assert np.array_equal(r.render(one, 0), r.render_pose({name: 0.7}, 0)), name
    a = mouth_params(jaw_open=0.8, lip_round=0.3)
    swapped = a.copy()
    swapped[[jaw, PARAM_NAMES.index("lip_round")]] = a[[PARAM_NAMES.index("lip_round"), jaw]]
    assert not np.array_equal(r.render(a, 0), r.render(swapped, 0))
    # float64 rows (a smoother's) of the same values draw the same frame as the engine's float32 rows
    assert np.array_equal(r.render(a.astype(np.float64), 0), r.render(a, 0))


def test_bad_parameters_give_the_photo_or_a_clear_error(grace):
    r = create_renderer(grace, "cpu", OFF)
    nan, inf = float("nan"), float("inf")
    for p in ([nan, 0, 0, 0], [7.0, 0, -3, 0], [inf, -inf, nan, 1e9]):
        f = r.render(np.array(p, np.float32), 0)
        assert f.shape == grace.image.shape and f.dtype == np.uint8
    assert np.array_equal(r.render(np.array([nan, nan, nan, nan], np.float32), 0), grace.image)
    # out of range counts as the range's end
    assert np.array_equal(r.render(mouth_params(jaw_open=7.0, lip_round=-3), 0), r.render(mouth_params(jaw_open=1), 0))
    for p in ({"jaw_open": "x"}, {"head_yaw": 1e9, "blink": inf}, {"jaw_open": nan}):
        f = r.render_pose(p, 0)
        assert f.shape == grace.image.shape and f.dtype == np.uint8
    assert np.array_equal(r.render_pose({"jaw_open": "x"}, 0), grace.image)
    with pytest.raises(ValueError, match="expected 4 values .* jaw_open"):
        r.render(np.zeros(3, np.float32), 0)
    with pytest.raises(ValueError, match="unknown pose names tongue_out"):
        r.render_pose({"tongue_out": 1.0}, 0)
    with pytest.raises(ValueError, match="unknown mouth parameters smile"):
        mouth_params(smile=1.0)


def test_liveliness_is_deterministic_switchable_and_alive(grace):
    cfg = LivelinessConfig(enabled=True, seed=3)
    a, b = create_renderer(grace, "cpu", cfg), create_renderer(grace, "cpu", cfg)
    times = np.arange(0, 8, 1 / 30)
    frames_a = [a.render(REST, t) for t in times[::15]]
    frames_b = [b.render(REST, t) for t in times[::15]]
    assert all(np.array_equal(x, y) for x, y in zip(frames_a, frames_b))
    assert any(not np.array_equal(frames_a[0], f) for f in frames_a[1:])  # the head is never frozen
    other = create_renderer(grace, "cpu", LivelinessConfig(enabled=True, seed=4))
    assert not np.array_equal(other.render(REST, 2.0), a.render(REST, 2.0))
    off = create_renderer(grace, "cpu", LivelinessConfig(enabled=False))
    assert np.array_equal(off.render(REST, 2.0), grace.image)
    blinks = [a.liveliness.blink(t) for t in times]
    starts = np.nonzero(np.diff((np.array(blinks) > 0.5).astype(int)) == 1)[0]
    assert 1 <= len(starts) <= 5  # 2-6 s apart over 8 s
    closed = (np.array(blinks) > 0.5).sum() / 30 / max(len(starts), 1)
    assert 0.03 < closed < 0.2  # each blink is short (~150 ms end to end)


def test_emphasis_lifts_brows():
    def brows(slot: str, config: LivelinessConfig) -> list[float]:
        live = Liveliness(config)
        out = []
        for i in range(100):
            t = i / 50
            value = 0.9 if 0.5 <= t < 0.7 else 0.05  # an emphasised syllable at 0.5 s
            out.append(live.extras(mouth_params(**{slot: value}), t)["brow_raise"])
        return out

    emphasis_only = LivelinessConfig(seed=0, blinks=False, sway=False, breathing=False)
    lifted = brows("jaw_open", emphasis_only)
    assert max(lifted[:25]) == 0 and max(lifted[25:60]) > 0.3
    assert max(brows("lip_round", emphasis_only)) == 0  # emphasis reads the jaw's slot of the array
    quiet = Liveliness(LivelinessConfig(seed=0, emphasis=False, blinks=False, sway=False, breathing=False))
    assert all(v == 0 for v in quiet.extras(mouth_params(jaw_open=1.0), 1.0).values())


def test_default_renderer_is_alive(grace):
    r = create_renderer(grace, "cpu")  # no liveliness given: the face idles by itself
    assert not np.array_equal(r.render(REST, 0.0), r.render(REST, 2.0))


def test_face_package_imports_headless():
    code = ("import sys, avatar.face; "
            "bad = [m for m in ('mediapipe', 'torch', 'PySide6', 'sounddevice') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_renderer_modules_form_no_import_circle():
    """render imports render_torch (lazily) and both import render_base; nothing leads back (issue 16)."""
    graph = {}
    for path in (ROOT / "avatar" / "face").glob("render*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
        graph[f"avatar.face.{path.stem}"] = {m for m in imported if m.startswith("avatar.face.render")}
    assert {"avatar.face.render", "avatar.face.render_base", "avatar.face.render_torch"} <= set(graph)
    assert "avatar.face.render_torch" in graph["avatar.face.render"]  # the graph is read (else this means nothing)

    def reaches(start: str, target: str, seen: frozenset = frozenset()) -> bool:
        return any(m == target or (m not in seen and reaches(m, target, seen | {m})) for m in graph.get(start, ()))

    assert [m for m in graph if reaches(m, m)] == []


def test_pressed_lips_shut_an_open_jaw():
    open_jaw = mouth_params(jaw_open=0.8)
    with_press = lambda press: mouth_params(jaw_open=0.8, lip_press=press)  # noqa: E731
    jaw = 0.8 * DEFAULT_SHAPES.jaw_gain  # the fitted jaw weight per jaw_open (avatar.face.shapes)
    assert field_weights(open_jaw)[0][0] == pytest.approx(jaw)
    assert field_weights(with_press(0.2))[0][0] == pytest.approx(jaw)
    assert 0 < field_weights(with_press(0.4))[0][0] < jaw
    assert field_weights(with_press(0.6))[0][0] == 0.0
