"""The local server: the OBS browser source (a page and its frame WebSocket) and the input endpoint for other
programs' sound and text. aiohttp on its own thread and event loop; bound to 127.0.0.1 only, each feature behind
its own random token, and nothing listens until the user turns one on (the controller starts and stops it).

Routes (token as ?token=…, an X-Avatar-Token header or Authorization: Bearer …):
    GET  /source            the page (browser source token)           GET  /source/ws   its frames (page origin only)
    WS   /input             {"type": "start", "rate", "channels", "format"} then binary PCM chunks; {"type": "text",
                            "text"}, {"type": "end"}, {"type": "clear"}; every reply is JSON, errors {"type": "error"}
    POST /input/wav         a WAV file    POST /input/pcm?rate=&channels=&format=   raw PCM
    POST /input/text        {"text": "…"}                             GET  /input/status
"""
from __future__ import annotations

import asyncio
from collections import deque
import json
import logging
from pathlib import Path
import threading
import time
from typing import Callable

from aiohttp import WSCloseCode, WSMsgType, web
import numpy as np

from avatar.live.pipeline import name_os_thread
from avatar.serve import frames as wire
from avatar.serve.guard import (DEFAULT_PORT, LOOPBACK_HOST, given_token, host_ok, new_token, page_origin_ok,
                                program_origin_ok, token_ok)
from avatar.serve.push import MAX_CHUNK_BYTES, PcmStream, PushError, PushMixer, decode_wav, pcm_format

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("page.html")
# the page runs its own inline script and talks to this server only: nothing else loads, nothing leaves
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
               "connect-src ws://127.0.0.1:{port} ws://localhost:{port}")
MAX_HTTP_BYTES = 32 << 20  # a POSTed WAV (32 MiB: ~3 min of 48 kHz stereo 16-bit)
WS_HARD_LIMIT = 4 * MAX_CHUNK_BYTES  # aiohttp closes the socket (1009) above this; between the two: an error reply
MAX_TEXT_CHARS = 5000  # one text message to speak
MAX_IN_FLIGHT = 2  # frames sent to a page and not yet painted: more waits (the newest frame is sent next)
ACK_TIMEOUT_S = 1.0  # a frame not acknowledged this long counts as lost
START_TIMEOUT_S = 5.0
FEATURES = {"browser": "browser source", "input": "input endpoint"}
CLOSE_TIMEOUT_S = 2.0  # open connections get this long to close when a feature or the server is turned off
PAINT_DELAYS_KEPT = 2000


class ServeError(Exception):
    """The server could not start (the message says why)."""


class LocalServer:
    """frame_source() -> the newest avatar.live.pipeline.Frame or None; renderer_source() -> the renderer shown
    (its matte is the page's alpha); mixer: where pushed sound goes; speak_text(text): the app's text-to-speech
    (None: text is refused with a reply saying so)."""

    def __init__(self, mixer: PushMixer, renderer_source: Callable[[], object], port: int = DEFAULT_PORT,
                 speak_text: Callable[[str], None] | None = None, view_token: str | None = None,
                 input_token: str | None = None):
        self.mixer = mixer
        self.renderer_source = renderer_source
        self.speak_text = speak_text
        self.wanted_port = port
        self.port: int | None = None
        self.view_token = view_token or new_token()
        self.input_token = input_token or new_token()
        self._on = {"browser": False, "input": False}
        self._sockets: dict[str, set] = {"browser": set(), "input": set()}  # open WebSockets by feature
        self.paint_delays: deque = deque(maxlen=PAINT_DELAYS_KEPT)  # ms from the app's frame to the page's paint
        self.messages: deque = deque(maxlen=50)  # what was refused and why (the last few, for the user and tests)
        self._frame = None
        self._viewers: set[asyncio.Event] = set()
        self._mask = (None, 0, None, None)  # (renderer, mask id, PNG, alpha) of the matte sent with frames
        self._mask_busy = False
        self._encoded: dict = {}  # (seq, codec) -> bytes, shared by viewers
        self._pusher = None  # the WebSocket whose PCM stream is playing (one program at a time)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # -- from the app's threads ------------------------------------------------------------------------

    @property
    def browser_on(self) -> bool:
        return self._on["browser"]

    @browser_on.setter
    def browser_on(self, on: bool) -> None:
        self._turn("browser", on)

    @property
    def input_on(self) -> bool:
        return self._on["input"]

    @input_on.setter
    def input_on(self, on: bool) -> None:
        self._turn("input", on)

    def _turn(self, feature: str, on: bool) -> None:
        """A feature turned off closes its open connections too (not only new ones are refused)."""
        self._on[feature] = bool(on)
        if not on and self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._close_sockets(feature), self._loop).result(CLOSE_TIMEOUT_S)

    def renew_token(self, feature: str) -> None:
        """A new token for "browser" or "input": the old URL stops working and its open connections close."""
        if feature == "browser":
            self.view_token = new_token()
        else:
            self.input_token = new_token()
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._close_sockets(feature), self._loop).result(CLOSE_TIMEOUT_S)

    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def browser_url(self) -> str:
        return f"http://{LOOPBACK_HOST}:{self.port}/source?token={self.view_token}"

    @property
    def input_url(self) -> str:
        return f"ws://{LOOPBACK_HOST}:{self.port}/input?token={self.input_token}"

    def offer(self, frame) -> None:
        """A new frame from the render thread (LivePipeline.on_frame): wakes the pages; cheap when none watch."""
        self._frame = frame
        loop = self._loop
        if self._viewers and loop is not None:
            loop.call_soon_threadsafe(self._wake_viewers)

    def start(self) -> int:
        """Bind 127.0.0.1 (the wanted port, or any free one when that is taken) and serve; returns the port.
        Raises ServeError with the reason."""
        if self.running:
            return self.port
        loop = asyncio.new_event_loop()
        started: dict = {}
        ready = threading.Event()

        def run():
            name_os_thread("local-server")  # its CPU apart from the audio and render workers' (bench serve)
            asyncio.set_event_loop(loop)
            try:
                self._runner, self.port = loop.run_until_complete(self._bind())
            except Exception as e:  # reported to the caller of start()
                started["error"] = e
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="local-server", daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT_S) or "error" in started:
            self._thread.join(1)
            self._thread, self._loop = None, None
            raise ServeError(f"The local server could not start on {LOOPBACK_HOST}: {started.get('error', 'timeout')}")
        log.info("local server on %s:%d", LOOPBACK_HOST, self.port)
        return self.port

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(CLOSE_TIMEOUT_S + START_TIMEOUT_S)
        except Exception as e:  # closing as far as it goes; the thread ends with the loop
            log.warning("local server shutdown: %s", e)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(START_TIMEOUT_S)
        self._thread, self._loop, self._runner = None, None, None
        self._viewers.clear()
        self._pusher = None

    # -- the event loop ---------------------------------------------------------------------------------

    async def _close_sockets(self, feature: str) -> None:
        for ws in list(self._sockets[feature]):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=f"The app turned the {FEATURES[feature]} off or "
                           "gave it a new token.".encode())

    async def _shutdown(self) -> None:
        for feature in self._sockets:
            await self._close_sockets(feature)
        await self._runner.cleanup()

    async def _bind(self):
        app = web.Application(client_max_size=MAX_HTTP_BYTES, middlewares=[self._guard])
        app.router.add_get("/source", self._page)
        app.router.add_get("/source/ws", self._source_ws)
        app.router.add_get("/input", self._input_ws)
        app.router.add_post("/input/wav", self._post_wav)
        app.router.add_post("/input/pcm", self._post_pcm)
        app.router.add_post("/input/text", self._post_text)
        app.router.add_get("/input/status", self._status)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=CLOSE_TIMEOUT_S)
        await runner.setup()
        for port in dict.fromkeys((self.wanted_port, 0)):  # the saved port, else one the system picks
            try:
                site = web.TCPSite(runner, LOOPBACK_HOST, port, reuse_address=False)
                await site.start()
                break
            except OSError as e:
                failure = e
        else:
            await runner.cleanup()
            raise failure
        return runner, site._server.sockets[0].getsockname()[1]

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        """Every request: a Host naming this server on loopback, the feature turned on, its token."""
        if not host_ok(request.headers.get("Host"), self.port):
            return self._refuse(request, 403, "Wrong Host header: this server answers only to 127.0.0.1 / localhost.")
        browser = request.path.startswith("/source")
        if not (self.browser_on if browser else self.input_on):
            return self._refuse(request, 404, "The browser source is turned off in the app (View → Browser source)."
                                if browser else "The input endpoint is turned off in the app (Settings → Local "
                                "input endpoint).")
        expected = self.view_token if browser else self.input_token
        if not token_ok(expected, given_token(dict(request.query), dict(request.headers))):
            return self._refuse(request, 401, "Missing or wrong token: use the URL the app shows.")
        origin = request.headers.get("Origin")
        if not (page_origin_ok(origin, self.port) if request.path == "/source/ws"
                else browser or program_origin_ok(origin, self.port)):
            return self._refuse(request, 403, f"Origin {origin} may not connect here.")
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(request, 413, f"The body is too big (at most {MAX_HTTP_BYTES >> 20} MiB); push long "
                                "sound in chunks over the WebSocket.")

    def _refuse(self, request, status: int, message: str) -> web.Response:
        self.messages.append(message)
        log.info("refused %s %s: %s", request.method, request.path, message)
        return web.json_response({"type": "error", "error": message}, status=status)

    # -- the browser source -----------------------------------------------------------------------------

    async def _page(self, request):
        return web.Response(text=PAGE.read_text(encoding="utf-8"), content_type="text/html",
                            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
                                     "Content-Security-Policy": PAGE_POLICY.format(port=self.port)})

    def _wake_viewers(self) -> None:
        for event in self._viewers:
            event.set()

    async def _source_ws(self, request):
        codec = request.query.get("codec", "jpeg")
        if codec not in wire.CODECS:
            return self._refuse(request, 400, f"Unknown codec {codec!r}: use one of {', '.join(wire.CODECS)}.")
        ws = web.WebSocketResponse(max_msg_size=MAX_CHUNK_BYTES)
        await ws.prepare(request)
        wake = asyncio.Event()
        wake.set()  # the newest frame at once: a still face is not drawn again until it moves
        in_flight: dict[int, float] = {}  # seq -> time.monotonic() when sent
        self._viewers.add(wake)
        self._sockets["browser"].add(ws)
        sender = asyncio.ensure_future(self._send_frames(ws, wake, in_flight, codec))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._painted(msg.data, in_flight)
                    wake.set()
        finally:
            self._viewers.discard(wake)
            self._sockets["browser"].discard(ws)
            sender.cancel()
        return ws

    def _painted(self, text: str, in_flight: dict) -> None:
        try:
            ack = json.loads(text)
            seq, sent, painted = int(ack["seq"]), float(ack["sent"]), float(ack["painted"])
        except (ValueError, KeyError, TypeError):
            return  # the page sends nothing else; anything else is ignored
        if in_flight.pop(seq, None) is not None:
            self.paint_delays.append(painted - sent)

    async def _send_frames(self, ws, wake: asyncio.Event, in_flight: dict, codec: str) -> None:
        try:
            await self._frames_to(ws, wake, in_flight, codec)
        except ConnectionError:  # the page went away while a frame was on its way: its handler ends too
            pass

    async def _frames_to(self, ws, wake: asyncio.Event, in_flight: dict, codec: str) -> None:
        last_sent, mask_sent = None, 0  # (frame seq, mask id) last sent: a frame goes again once its matte is made
        while not ws.closed:
            await wake.wait()
            wake.clear()
            now = time.monotonic()
            for seq in [s for s, t in in_flight.items() if now - t > ACK_TIMEOUT_S]:
                del in_flight[seq]
            frame = self._frame
            if frame is None or len(in_flight) >= MAX_IN_FLIGHT:
                continue
            mask_id, mask_png, alpha = self._matte_for(frame)
            if (frame.seq, mask_id) == last_sent:
                continue
            if codec == "jpeg" and mask_id and mask_id != mask_sent:
                h, w = frame.image.shape[:2]
                await ws.send_bytes(wire.header(wire.KIND_MASK, 0, mask_id, w, h, 0.0) + mask_png)
                mask_sent = mask_id
            last_sent = (frame.seq, mask_id)
            in_flight[frame.seq] = now
            await ws.send_bytes(self._encode(frame, codec, mask_id, alpha))

    def _encode(self, frame, codec: str, mask_id: int, alpha) -> bytes:
        key = (frame.seq, codec, mask_id)
        data = self._encoded.get(key)
        if data is None:
            h, w = frame.image.shape[:2]
            head = wire.header(wire.KIND_JPEG if codec == "jpeg" else wire.KIND_RAW, frame.seq, mask_id, w, h,
                               wire.wall_ms(frame.ready))
            data = head + (wire.encode_jpeg(frame.image) if codec == "jpeg" else wire.raw_rgba(frame.image, alpha))
            self._encoded = {key: data}  # only the newest frame is ever sent again
        return data

    def _matte_for(self, frame):
        """(mask id, PNG, alpha) of the renderer showing `frame`; made on a worker thread the first time (the
        segmenter runs for a photo on its own background): (0, None, None), opaque frames, until it is ready."""
        renderer = self.renderer_source()
        held, mask_id, png, alpha = self._mask
        if held is renderer:
            if alpha is None or alpha.shape != frame.image.shape[:2]:
                return 0, None, None
            return mask_id, png, alpha
        if not self._mask_busy:
            self._mask_busy = True
            self._loop.run_in_executor(None, self._make_matte, renderer, mask_id + 1)
        return 0, None, None

    def _make_matte(self, renderer, mask_id: int) -> None:
        try:
            alpha = wire.person_alpha(renderer)
            self._mask = (renderer, mask_id, None if alpha is None else wire.encode_mask(alpha), alpha)
        except Exception as e:  # no matte: the page shows the frames opaque, and says why once
            self.messages.append(f"The browser source shows the face without transparency: {e}")
            self._mask = (renderer, mask_id, None, None)
        finally:
            self._mask_busy = False
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._wake_viewers)

    # -- the input endpoint ------------------------------------------------------------------------------

    async def _input_ws(self, request):
        ws = web.WebSocketResponse(max_msg_size=WS_HARD_LIMIT)
        await ws.prepare(request)
        self._sockets["input"].add(ws)
        stream = None
        try:
            async for msg in ws:
                try:
                    if msg.type == WSMsgType.TEXT:
                        stream = await self._input_message(ws, msg.data, stream)
                    elif msg.type == WSMsgType.BINARY:
                        await ws.send_json(self._chunk(ws, msg.data, stream))
                except PushError as e:
                    self.messages.append(str(e))
                    await ws.send_json({"type": "error", "error": str(e)})
        finally:
            self._sockets["input"].discard(ws)
            if self._pusher is ws:
                self._pusher = None
        return ws

    async def _input_message(self, ws, text: str, stream):
        try:
            message = json.loads(text)
        except ValueError as e:
            raise PushError(f"Malformed JSON ({e}); send objects like {{\"type\": \"start\", \"rate\": 22050}}.")
        if not isinstance(message, dict):
            raise PushError("Each text message must be a JSON object with a \"type\".")
        kind = message.get("type", "start" if "rate" in message else None)
        if kind == "start":
            if self._pusher is not None and self._pusher is not ws and not self._pusher.closed:
                raise PushError("Another program is pushing sound now; wait until it sends {\"type\": \"end\"}.")
            stream = PcmStream(pcm_format(message))
            self._pusher = ws
            self.mixer.mix_with_input = bool(message.get("mix", False))
            await ws.send_json({"type": "started", "rate": stream.format.rate, "channels": stream.format.channels,
                                "format": stream.format.format})
            return stream
        if kind == "end":
            queued = self.mixer.push(stream.resampler.process(np.zeros(0, np.float32), last=True)) if stream else 0.0
            if self._pusher is ws:
                self._pusher = None
            await ws.send_json({"type": "ended", "queued_seconds": queued})
            return None
        if kind == "clear":
            self.mixer.clear()
            await ws.send_json({"type": "cleared"})
            return stream
        if kind == "text":
            await ws.send_json(await self._speak(message.get("text")))
            return stream
        raise PushError(f"Unknown message type {kind!r}: use start, end, clear or text.")

    def _chunk(self, ws, data: bytes, stream) -> dict:
        if stream is None:
            raise PushError("Send the stream's header first: {\"type\": \"start\", \"rate\": 22050, \"channels\": 1, "
                            "\"format\": \"s16le\"}.")
        if len(data) > MAX_CHUNK_BYTES:
            raise PushError(f"A chunk of {len(data)} bytes is too big (at most {MAX_CHUNK_BYTES}); send smaller "
                            "chunks (e.g. 20-100 ms each).")
        return {"type": "queued", "seconds": self.mixer.push(stream.decode(data))}

    async def _speak(self, text) -> dict:
        if not isinstance(text, str) or not text.strip():
            raise PushError("A text message needs a non-empty \"text\" string.")
        if len(text) > MAX_TEXT_CHARS:
            raise PushError(f"The text is {len(text)} characters long; send at most {MAX_TEXT_CHARS} at a time.")
        if self.speak_text is None:
            raise PushError("Text to speech is not available in this app (install the [tts] extra).")
        try:  # the voice may have to load first (seconds): not on the loop; its refusal is the reply
            await self._loop.run_in_executor(None, self.speak_text, text)
        except Exception as e:  # SpeechError (too long for the voice, Piper missing, ...): said, never fatal
            raise PushError(f"Text to speech refused the text: {e}")
        return {"type": "speaking", "chars": len(text)}

    async def _http(self, fn):
        try:
            return web.json_response(fn())
        except PushError as e:
            return self._refusal(e)

    def _refusal(self, e: PushError):
        self.messages.append(str(e))
        return web.json_response({"type": "error", "error": str(e)}, status=400)

    async def _post_wav(self, request):
        body = await request.read()
        return await self._http(lambda: self._push_whole(*decode_wav(body)))

    async def _post_pcm(self, request):
        body = await request.read()
        query = {k: (int(v) if k in ("rate", "channels") and v.isdigit() else v) for k, v in request.query.items()}

        def push():
            stream = PcmStream(pcm_format(query))
            return {"type": "queued", "seconds": self.mixer.push(stream.decode(body, last=True))}
        return await self._http(push)

    def _push_whole(self, samples, fmt) -> dict:
        stream = PcmStream(fmt)
        return {"type": "queued", "seconds": self.mixer.push(stream.resampler.process(samples, last=True))}

    async def _post_text(self, request):
        body = await request.text()
        try:
            try:
                message = json.loads(body)
            except ValueError as e:
                raise PushError(f"Malformed JSON ({e}); send {{\"text\": \"…\"}}.")
            return web.json_response(await self._speak(message.get("text") if isinstance(message, dict) else None))
        except PushError as e:
            return self._refusal(e)

    async def _status(self, request):
        return web.json_response({"type": "status", "queued_seconds": self.mixer.queued_seconds,
                                  "text_to_speech": self.speak_text is not None})
