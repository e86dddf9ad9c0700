"""The OBS browser source in a real browser: Debian's chromium, headless, driven by selenium (chromium-driver).

The app's live pipeline renders the default face on a green-screen background (its matte is the page's alpha);
the page is loaded over a magenta page background and screenshotted: the face is drawn, magenta shows around it,
and the mouth region changes while sound pushed to the input endpoint plays."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import time

import cv2
import numpy as np
import pytest

from avatar.controller import Controller
from avatar.paths import default_photo
from avatar.preferences import Preferences
from avatar.visemes import PARAM_NAMES
from tests.conftest import tone_bursts

SIDE = 256
MAGENTA = (255, 0, 255)
JAW = PARAM_NAMES.index("jaw_open")
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                                reason="no chromium / chromedriver (apt-get install chromium chromium-driver)")


def wait_until(condition, timeout: float = 20.0, step: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not reached in time")


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={SIDE},{SIDE}", "--force-device-scale-factor=1", "--hide-scrollbars"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": SIDE, "height": SIDE, "deviceScaleFactor": 1, "mobile": False})
    yield driver
    driver.quit()


@pytest.fixture
def served(loudness_engine, tmp_path):
    from avatar.face.assemble import open_renderer

    controller = Controller(Preferences(output_folder=str(tmp_path), size=SIDE, background="green", serve_port=0),
                            lambda backend: loudness_engine,
                            lambda photo, prefs, landmarks=None: open_renderer(
                                photo, SIDE, background=prefs.background_rgb, liveliness={"enabled": False}),
                            save_prefs=lambda p: None, on_error=lambda message, title: None)
    photo = default_photo()
    controller.use_renderer(photo, controller.build_renderer(photo))
    controller.start()
    yield controller
    controller.close()


def screenshot(driver) -> np.ndarray:
    png = np.frombuffer(driver.get_screenshot_as_png(), np.uint8)
    return cv2.cvtColor(cv2.imdecode(png, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)[:SIDE, :SIDE]


def push(url: str, audio: np.ndarray, rate: int = 16000) -> list[dict]:
    import websockets.sync.client as ws_client

    replies = []
    with ws_client.connect(url) as ws:
        ws.send(json.dumps({"type": "start", "rate": rate, "channels": 1, "format": "s16le"}))
        replies.append(json.loads(ws.recv()))
        ws.send((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
        replies.append(json.loads(ws.recv()))
    return replies


def test_the_page_shows_the_face_transparent_around_it_and_the_mouth_moves_with_pushed_sound(served, browser):
    url = served.set_browser_source(True)
    input_url = served.set_input_endpoint(True)
    assert url.startswith("http://127.0.0.1:") and "token=" in url
    renderer = served.pipeline.renderer
    alpha = (renderer.mask[..., 0] * 255).astype(np.uint8)
    browser.get(url)
    browser.execute_script("document.body.style.background = 'rgb(255, 0, 255)'")
    wait_until(lambda: browser.execute_script("return window.avatarPainted") >= 1)  # a still face: drawn once
    time.sleep(0.5)  # the matte has reached the page (frames before it are opaque)
    still = screenshot(browser)

    outside, inside = alpha == 0, alpha == 255
    assert outside.mean() > 0.2 and inside.mean() > 0.2  # the photo has both, so the checks below mean something
    background = np.abs(still[outside].astype(int) - MAGENTA).max(axis=1)
    assert np.mean(background <= 2) > 0.99  # the page's colour shows through wherever the matte is clear
    frame = served.latest_frame.image
    person = np.abs(still[inside].astype(int) - frame[inside].astype(int)).mean()
    assert person < 12  # the face is drawn (JPEG-close to the app's own frame), not the page's colour
    assert np.abs(still[inside].astype(int) - MAGENTA).max(axis=1).min() > 30

    # the mouth: where the app's frame changes between the rest pose and the jaw wide open
    open_params = np.zeros(len(PARAM_NAMES), np.float32)
    open_params[JAW] = 1.0
    rest = renderer.render(np.zeros(len(PARAM_NAMES), np.float32), 0.0)
    wide = renderer.render(open_params, 0.0)
    mouth = np.abs(wide.astype(int) - rest.astype(int)).max(axis=2) > 40
    assert 50 < mouth.sum() < 0.2 * mouth.size
    before = np.abs(still[mouth].astype(int) - rest[mouth].astype(int)).mean()
    assert before < 12  # closed while silent

    replies = push(input_url, tone_bursts([0.0], 2.0, length=2.0))
    assert replies[0]["type"] == "started" and replies[1]["type"] == "queued" and replies[1]["seconds"] > 1.5
    wait_until(lambda: served.latest_frame.params[JAW] > 0.8)
    time.sleep(0.3)
    talking = screenshot(browser)
    assert served.latest_frame.params[JAW] > 0.8
    changed = np.abs(talking[mouth].astype(int) - still[mouth].astype(int)).mean()
    assert changed > 25, changed  # the open mouth is painted in the browser
    assert np.mean(np.abs(talking[outside].astype(int) - MAGENTA).max(axis=1) <= 2) > 0.99  # still transparent
    assert len(served.server.paint_delays) >= 2  # the page acknowledged its paints (a still face is drawn once)


def test_a_foreign_origin_and_a_missing_token_get_no_frames(served):
    import websockets.sync.client as ws_client
    from websockets.exceptions import InvalidStatus

    url = served.set_browser_source(True)
    port = served.server.port
    ws_url = f"ws://127.0.0.1:{port}/source/ws?token={served.server.view_token}"
    with pytest.raises(InvalidStatus) as refused:
        ws_client.connect(ws_url, origin="http://evil.example").close()
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as refused:
        ws_client.connect(ws_url.split("?")[0], origin=f"http://127.0.0.1:{port}").close()
    assert refused.value.response.status_code == 401
    with ws_client.connect(ws_url, origin=f"http://127.0.0.1:{port}") as ws:  # the page's own origin: frames
        header = ws.recv(timeout=10)
    assert isinstance(header, bytes) and header[0] in (1, 2)
    assert url.endswith(served.server.view_token)


def test_bench_serve_measures_both_delays(tmp_path, monkeypatch):
    """`avatar bench serve` (the README's figures) runs end to end: chromium paints, pushed bursts open the mouth."""
    from avatar import cli

    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path / "cache"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["bench", "serve", "--bursts", "4", "--size", "256", "--model", "probe"])
    text = out.getvalue()
    assert code == 0, text
    assert "app frame → chromium paint: median" in text and "(n=" in text
    assert "first open-mouth frame (4 of 4 bursts" in text, text
