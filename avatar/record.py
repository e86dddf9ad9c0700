"""MP4 writer (PyAV): H.264 yuv420p + AAC, both stamped on the audio clock.

A `Recorder` takes (frame, pts) and (audio block, pts), pts in seconds since the recording started, on the
audio sample clock. Audio is kept contiguous (gaps filled with silence, overlaps trimmed) so its timestamps are the
running sample count. Video is constant frame rate: a frame goes to the slot of the fps grid nearest the audio time
it depicts (so lips and voice line up within half a frame), and a slot no frame reached repeats the frame before it
(editors and upload sites want CFR; a variable-rate file with gaps was what live recordings were before).

Live recordings (and offline renders, `fragmented=True`) are fragmented MP4 (a fragment per second, flushed as
written): a process killed with `kill -9` leaves a file that plays up to the last fragment. A clean `close()`
rewrites it as a regular MP4 with the index up front (`faststart`), which every player and editor accepts, with
each stream's first timestamps restored (see `faststart_copy`).
"""
from __future__ import annotations

import errno
from fractions import Fraction
import os
from pathlib import Path
import queue
import threading

import av
import numpy as np

VIDEO_CODEC = "libx264"
AUDIO_CODEC = "aac"
PIX_FMT = "yuv420p"  # RGB input would otherwise give High 4:4:4, which many players reject
CRF = 23
LIVE_PRESET = "veryfast"  # ~6x real time at 512² on one core: leaves room for the model and renderer
OFFLINE_PRESET = "veryfast"
AUDIO_BITRATE = 160_000  # AAC LC: 128 kb/s and up is what upload sites recommend for mono/stereo speech + music
FRAGMENT_SECONDS = 1.0  # how much a crash can lose
LIVE_MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"
MAX_PENDING_FRAMES = 60  # frames queued for the encoder thread before new ones are dropped (2 s at 30 fps)
OFFLINE_PENDING_FRAMES = 16  # ...or before an offline producer waits: enough to keep both threads busy (12 MB
# at 512²; 60 frames were 47 MB, and a 1-minute render at 1 fps never filled them while a 2-hour one did)


class RecordError(RuntimeError):
    """A recording problem worded for the user; whatever was written before it stays playable."""


def _describe(e: Exception, path: Path) -> str:
    code = getattr(e, "errno", None)
    if code == errno.ENOSPC:
        return f"The disk is full. Recording stopped; what was recorded so far is in {path}."
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"Cannot write to {path.parent}: permission denied. Choose another output folder."
    if code == errno.ENOENT:
        return f"The output folder {path.parent} does not exist (any more). Choose another output folder."
    if code == errno.EFBIG:
        return f"The file became too large for this disk. Recording stopped; what was recorded is in {path}."
    return f"Recording to {path} failed: {e}"


def check_output_path(path: str | Path) -> Path:
    """Raise RecordError unless `path` can be created (folder exists and is writable)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise RecordError(f"The output folder {folder} does not exist. Choose another output folder.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise RecordError(f"Cannot write to {folder}: permission denied. Choose another output folder.")
    if path.is_dir():
        raise RecordError(f"{path} is a folder; choose a file name for the output.")
    return path


PARTIAL_SUFFIX = ".partial"  # out.mp4 is written as out.partial.mp4 and renamed when complete


def partial_path(path: str | Path) -> Path:
    """Where a file being written to `path` lives until it is complete: beside it, named as partial."""
    path = Path(path)
    return path.with_name(path.stem + PARTIAL_SUFFIX + path.suffix)


class Recorder:
    """Synchronous MP4 writer. `live=True`: fragmented, low-latency encoder settings, remuxed on close."""

    def __init__(self, path: str | Path, width: int, height: int, fps: int = 30, sample_rate: int = 16000,
                 live: bool = True, crf: int = CRF, fragmented: bool | None = None):
        self.path = check_output_path(path)
        self.live = live
        self.fragmented = live if fragmented is None else fragmented
        self.sample_rate = sample_rate
        self.width, self.height = width - width % 2, height - height % 2  # yuv420p needs even sizes
        self.samples_written = 0
        self.frames_written = 0
        self.fps = fps
        self.last_video_pts = None  # slot index (frame number) of the newest frame encoded
        self.repeated_frames = 0  # slots filled with the frame before them (late or dropped frames)
        self._last_frame = None  # that frame, for the repeats
        self.error: str | None = None
        self._first_times: dict[int, tuple[Fraction, Fraction]] = {}  # stream index -> its first packet's pts, dts
        options = {"movflags": LIVE_MOVFLAGS, "frag_duration": str(int(FRAGMENT_SECONDS * 1e6)),
                   "flush_packets": "1"} if self.fragmented else {"movflags": "+faststart"}
        try:
            self._container = av.open(str(self.path), "w", format="mp4", options=options)
        except Exception as e:
            raise RecordError(_describe(e, self.path)) from e
        v = self._container.add_stream(VIDEO_CODEC, rate=fps)
        v.width, v.height, v.pix_fmt = self.width, self.height, PIX_FMT
        v.codec_context.time_base = Fraction(1, fps)  # pts = frame number: constant frame rate by construction
        v.codec_context.gop_size = fps  # a keyframe, hence a fragment boundary, every second
        v.options = {"preset": LIVE_PRESET if live else OFFLINE_PRESET, "crf": str(crf),
                     **({"tune": "zerolatency"} if live else {})}
        a = self._container.add_stream(AUDIO_CODEC, rate=sample_rate)
        a.layout = "mono"
        a.bit_rate = AUDIO_BITRATE
        self._video, self._audio = v, a

    @property
    def audio_seconds(self) -> float:
        return self.samples_written / self.sample_rate

    def _mux(self, packets) -> None:
        try:
            for p in packets:
                if p.stream.index not in self._first_times and p.dts is not None:
                    self._first_times[p.stream.index] = (p.pts * p.time_base, p.dts * p.time_base)
                self._container.mux(p)
        except Exception as e:
            self.error = _describe(e, self.path)
            raise RecordError(self.error) from e

    def _encode(self, stream, frame) -> None:
        if self.error:
            raise RecordError(self.error)
        try:
            packets = stream.encode(frame)
        except Exception as e:
            self.error = _describe(e, self.path)
            raise RecordError(self.error) from e
        self._mux(packets)

    @property
    def video_seconds(self) -> float:
        return 0.0 if self.last_video_pts is None else (self.last_video_pts + 1) / self.fps

    def add_frame(self, frame: np.ndarray | None, pts: float) -> bool:
        """Add an HxWx3 uint8 RGB frame depicting audio time `pts` (s) at the nearest slot of the fps grid; slots
        skipped since the last frame repeat that one. `frame=None`: only repeat the last frame up to the slot of
        `pts` (the renderer is late). False when nothing was added (the slot was filled already)."""
        slot = int(round(pts * self.fps))
        if self.last_video_pts is not None and slot <= self.last_video_pts:
            return False
        if frame is None:
            if self._last_frame is None:
                return False
            self._repeat_until(slot + 1)
            return True
        self._repeat_until(slot)
        if frame.shape[0] != self.height or frame.shape[1] != self.width:
            frame = frame[:self.height, :self.width]
        first = self._last_frame is None
        self._last_frame = np.ascontiguousarray(frame)
        if first:  # the video starts with the sound: the first frame also stands for the slots before it
            self.last_video_pts = -1
            self._repeat_until(slot)
        self._encode_frame(slot)
        self.frames_written += 1
        return True

    def _repeat_until(self, slot: int) -> None:
        """The last frame again for each slot before `slot` that has none (nothing before the first frame)."""
        if self._last_frame is None:
            return
        for k in range(self.last_video_pts + 1, slot):
            self._encode_frame(k)
            self.repeated_frames += 1

    def _encode_frame(self, slot: int) -> None:
        # a new VideoFrame each time: the encoder may still hold the previous one (frame threads, look-ahead)
        vf = av.VideoFrame.from_ndarray(self._last_frame, format="rgb24")
        vf.pts, vf.time_base = slot, self._video.codec_context.time_base
        self._encode(self._video, vf)
        self.last_video_pts = slot

    def pad_video_to(self, seconds: float) -> None:
        """Repeat the last frame until the video lasts `seconds` (to the audio's end, when the renderer lagged)."""
        if self._last_frame is not None and not self.error:
            self._repeat_until(int(np.ceil(seconds * self.fps - 1e-6)))

    def add_audio(self, block: np.ndarray, pts: float) -> None:
        """Add mono float32 samples starting at audio time `pts` (s); gaps become silence, overlaps are trimmed."""
        start = int(round(pts * self.sample_rate))
        block = np.asarray(block, np.float32)
        if start > self.samples_written:
            block = np.concatenate([np.zeros(start - self.samples_written, np.float32), block])
        elif start < self.samples_written:
            block = block[self.samples_written - start:]
        if len(block) == 0:
            return
        af = av.AudioFrame.from_ndarray(block[None, :], format="flt", layout="mono")
        af.sample_rate, af.pts, af.time_base = self.sample_rate, self.samples_written, Fraction(1, self.sample_rate)
        self._encode(self._audio, af)
        self.samples_written += len(block)

    def close(self) -> Path:
        """Flush the encoders and finish the file (remuxed to a regular MP4 when live). Safe after an error."""
        if self._container is None:
            return self.path
        try:
            if not self.error:
                if self.live:  # the renderer's last frames lag the sound: the video lasts as long as the audio
                    self.pad_video_to(self.audio_seconds)
                self._mux(self._video.encode(None))
                self._mux(self._audio.encode(None))
        except RecordError:
            pass
        finally:
            try:
                self._container.close()
            except Exception as e:
                self.error = self.error or _describe(e, self.path)
            self._container = None
        if self.fragmented and not self.error:
            try:
                faststart_copy(self.path, self._first_times)
            except Exception:  # the fragmented file is complete and playable as it is
                pass
        elif self.fragmented:
            drop_incomplete_fragment(self.path)
        if self.error:
            raise RecordError(self.error)
        return self.path

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def faststart_copy(path: Path, first_times: dict | None = None) -> None:
    """Rewrite a (fragmented) MP4 as a regular one with the index first, without re-encoding; atomic.

    The fragmenting muxer shifts every stream so the earliest timestamp is 0 (the AAC encoder's priming starts at
    -1024 samples) and starts each stream's first sample at 0; that would put the whole file 64 ms late and let the
    player play the priming. With `first_times` (stream index -> the encoder's first pts, dts, in seconds, as the
    `Recorder` saw them) the shift is undone and the first samples get their own times back, so the result equals
    what a regular MP4 writer would have written."""
    first_times = first_times or {}
    shift = -min([dts for _, dts in first_times.values()] + [Fraction(0)])
    tmp = path.with_name(path.name + ".part")
    try:
        with av.open(str(path)) as src, av.open(str(tmp), "w", format="mp4",
                                                 options={"movflags": "+faststart"}) as dst:
            mapping = {s.index: dst.add_stream_from_template(s) for s in src.streams if s.type in ("video", "audio")}
            seen = set()
            for packet in src.demux(*[src.streams[i] for i in mapping]):
                if packet.dts is None:
                    continue
                index, tb = packet.stream.index, packet.time_base
                if index in first_times and index not in seen:
                    pts, dts = first_times[index]
                    packet.pts, packet.dts = round(pts / tb), round(dts / tb)
                elif shift:
                    packet.pts, packet.dts = packet.pts - round(shift / tb), packet.dts - round(shift / tb)
                seen.add(index)
                packet.stream = mapping[index]
                dst.mux(packet)
    except BaseException:  # e.g. no room for the copy: the fragmented original stays as it is
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def mp4_boxes(path: Path) -> list[tuple[int, int, bytes]]:
    """(offset, size, type) of the complete top-level boxes of an MP4, stopping at the first torn one."""
    size = path.stat().st_size
    boxes, pos = [], 0
    with open(path, "rb") as f:
        while pos + 8 <= size:
            f.seek(pos)
            head = f.read(16)
            n, kind = int.from_bytes(head[:4], "big"), head[4:8]
            if n == 1 and len(head) == 16:
                n = int.from_bytes(head[8:16], "big")
            if n < 8 or pos + n > size:
                break
            boxes.append((pos, n, kind))
            pos += n
    return boxes


def drop_incomplete_fragment(path: Path) -> None:
    """Cut a fragmented MP4 after its last complete fragment (a write that failed half-way leaves a torn tail)."""
    try:
        boxes = mp4_boxes(path)
        if boxes and boxes[-1][2] == b"moof":  # a fragment header whose media data is missing
            boxes.pop()
        keep = boxes[-1][0] + boxes[-1][1] if boxes else 0
        if keep < path.stat().st_size:
            os.truncate(path, keep)
    except OSError:
        pass


class BackgroundRecorder:
    """A `Recorder` fed through a queue and encoded on its own thread, so rendering never waits for x264.

    Audio is never dropped. When the encoder falls behind, live recordings drop video frames (counted in
    `dropped_frames`; the `Recorder` fills their slots with the frame before, so the file stays constant frame
    rate and in sync: a machine that cannot keep up gets repeated frames, never drift); offline ones (`wait=True`)
    make the producer wait instead.
    The first error stops the recording: `error` holds the message and the file keeps what was written.
    """

    def __init__(self, recorder: Recorder, wait: bool = False):
        self.recorder = recorder
        self.error: str | None = None
        self.dropped_frames = 0
        self._wait = wait
        self._slots = threading.Semaphore(OFFLINE_PENDING_FRAMES if wait else MAX_PENDING_FRAMES)
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    @property
    def path(self) -> Path:
        return self.recorder.path

    def add_frame(self, frame: np.ndarray | None, pts: float) -> None:
        """Queue a frame (`None`: repeat the last one up to `pts`, which takes no queue slot: no image)."""
        if frame is None:
            if self.error is None:
                self._queue.put(("r", None, pts))
            return
        while self.error is None:
            if self._slots.acquire(timeout=0.1 if self._wait else 0):
                self._queue.put(("v", frame, pts))
                return
            if not self._wait:
                self.dropped_frames += 1
                return

    def add_audio(self, block: np.ndarray, pts: float) -> None:
        if self.error is None:
            self._queue.put(("a", block, pts))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            kind, data, pts = item
            try:
                if self.error is None:
                    if kind in ("v", "r"):
                        self.recorder.add_frame(data, pts)
                    else:
                        self.recorder.add_audio(data, pts)
            except RecordError as e:
                self.error = str(e)
            finally:
                if kind == "v":
                    self._slots.release()

    def close(self) -> Path:
        """Encode what is queued, finish the file; raises RecordError if the recording failed."""
        self._queue.put(None)
        self._thread.join()
        try:
            self.recorder.close()
        except RecordError as e:
            self.error = self.error or str(e)
        if self.error:
            raise RecordError(self.error)
        return self.recorder.path
