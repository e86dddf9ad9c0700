"""Photo loading: every format and oddity loads or fails with a PhotoError; no face gives NoFaceError."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avatar.face import NoFaceError, PhotoError, build_rig, load_photo
from avatar.face.photo import MAX_SIDE

DATA = Path(__file__).parent / "data" / "face"
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FACE = ROOT / "assets" / "default_face.jpg"


@pytest.fixture(scope="module")
def face_rgb():
    return np.asarray(Image.open(DEFAULT_FACE).convert("RGB"))


def _save(img: Image.Image, path: Path, fmt: str, **kw) -> Path:
    img.save(path, fmt, **kw)
    return path


@pytest.mark.parametrize("fmt,ext", [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("BMP", "bmp"),
                                     ("TIFF", "tiff"), ("GIF", "gif")])
def test_formats_load_as_rgb(tmp_path, face_rgb, fmt, ext):
    path = _save(Image.fromarray(face_rgb), tmp_path / f"face.{ext}", fmt)
    img = load_photo(path)
    assert img.dtype == np.uint8 and img.shape == face_rgb.shape and img.flags.c_contiguous
    tol = 40 if fmt in ("JPEG", "WEBP", "GIF") else 0  # lossy formats and GIF's palette
    assert np.abs(img.astype(int) - face_rgb).mean() <= max(tol / 4, 0.0)


def test_exif_orientation_is_applied(tmp_path, face_rgb):
    im = Image.fromarray(face_rgb).transpose(Image.Transpose.ROTATE_90)  # stored sideways...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...with "rotate 90 CW to display"
    path = tmp_path / "sideways.jpg"
    im.save(path, "JPEG", exif=exif.tobytes(), quality=95)
    img = load_photo(path)
    assert img.shape == face_rgb.shape
    assert np.abs(img.astype(int) - face_rgb).mean() < 6


def test_grey_rgba_cmyk_16bit(tmp_path, face_rgb):
    grey = Image.fromarray(face_rgb).convert("L")
    g = load_photo(_save(grey, tmp_path / "g.png", "PNG"))
    assert g.shape == face_rgb.shape and np.array_equal(g[..., 0], g[..., 2])

    rgba = Image.fromarray(face_rgb).convert("RGBA")
    a = np.array(rgba)
    a[:50, :50, 3] = 0  # a transparent corner shows the backdrop
    ra = load_photo(_save(Image.fromarray(a), tmp_path / "a.png", "PNG"))
    assert ra.shape == face_rgb.shape and np.array_equal(ra[100, 100], face_rgb[100, 100])
    assert ra[10, 10].min() > 200

    cmyk = Image.fromarray(face_rgb).convert("CMYK")
    rc = load_photo(_save(cmyk, tmp_path / "c.jpg", "JPEG", quality=95))
    assert rc.shape == face_rgb.shape and np.abs(rc.astype(int) - face_rgb).mean() < 12

    g16 = (np.asarray(grey).astype(np.uint16) * 257)
    r16 = load_photo(_save(Image.fromarray(g16), tmp_path / "g16.png", "PNG"))
    assert np.abs(r16[..., 0].astype(int) - np.asarray(grey)).max() <= 1

    import cv2
    rgb16 = face_rgb.astype(np.uint16) * 257
    path = tmp_path / "rgb16.tiff"
    assert cv2.imwrite(str(path), rgb16[..., ::-1])
    r48 = load_photo(path)
    assert r48.shape == face_rgb.shape and np.abs(r48.astype(int) - face_rgb).max() <= 1


def test_arrays_of_any_common_type(face_rgb):
    assert np.array_equal(load_photo(face_rgb), face_rgb)
    f = load_photo(face_rgb.astype(np.float32) / 255)
    assert np.abs(f.astype(int) - face_rgb).max() <= 1
    assert load_photo(face_rgb[..., 0]).shape == face_rgb.shape
    with pytest.raises(PhotoError):
        load_photo(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(PhotoError):
        load_photo(np.zeros((100, 100, 5), np.uint8))


def test_large_photo_is_downscaled(tmp_path):
    big = np.full((3000, 4000, 3), 128, np.uint8)
    img = load_photo(big)
    assert max(img.shape[:2]) == MAX_SIDE and img.shape[1] / img.shape[0] == pytest.approx(4 / 3, rel=0.01)


@pytest.mark.parametrize("content", [b"", b"this is not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_not_an_image_gives_clear_error(tmp_path, content):
    path = tmp_path / "photo.png"
    path.write_bytes(content)
    with pytest.raises(PhotoError) as e:
        load_photo(path)
    assert "photo.png" in str(e.value)


def test_truncated_and_missing_files(tmp_path):
    data = DEFAULT_FACE.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(PhotoError, match=r"cut\.jpg is damaged"):  # a third of the file: refused, named, no crash
        load_photo(cut)
    cut.write_bytes(data[:-2])  # only the end-of-image marker missing: still refused, not half-decoded
    with pytest.raises(PhotoError, match=r"cut\.jpg is damaged"):
        load_photo(cut)
    with pytest.raises(PhotoError, match="not found"):
        load_photo(tmp_path / "missing.jpg")
    with pytest.raises(PhotoError, match="folder"):
        load_photo(tmp_path)
    with pytest.raises(PhotoError):
        load_photo(12345)


def test_no_face_raises_with_image():
    with pytest.raises(NoFaceError) as e:
        build_rig(DATA / "cat.jpg")
    assert e.value.image is not None and e.value.image.shape == (300, 451, 3)
    with pytest.raises(NoFaceError):
        build_rig(np.full((200, 200, 3), 90, np.uint8))
    with pytest.raises(PhotoError):
        build_rig(b"not an image")


def test_face_index_picks_another_face(face_rgb):
    import cv2
    sub = cv2.resize(face_rgb, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
    small = np.full_like(face_rgb, 200)
    small[: sub.shape[0], : sub.shape[1]] = sub
    both = np.ascontiguousarray(np.concatenate([face_rgb, small], axis=1))
    big = build_rig(both, canvas=None, face_index=0)
    other = build_rig(both, canvas=None, face_index=1)
    w = face_rgb.shape[1]
    assert big.landmarks[:, 0].mean() < w < other.landmarks[:, 0].mean()
    assert np.ptp(big.landmarks[:, 0]) > 1.1 * np.ptp(other.landmarks[:, 0])
    with pytest.raises(NoFaceError):
        build_rig(both, face_index=5)
