#!/usr/bin/env python3
"""Push speech to the talking avatar from another program (a TTS engine, a voice assistant).

Turn on Settings → Local input endpoint in the app and copy its URL, then:

    python examples/push_audio.py "ws://127.0.0.1:47810/input?token=…" speech.wav
    python examples/push_audio.py "ws://127.0.0.1:47810/input?token=…" --text "Hello there"

The WAV (8/16/32-bit integer PCM, any common rate, mono or stereo) is streamed in 20 ms chunks at real time, as a
streaming TTS would hand them out: the avatar's mouth follows it as it arrives. Needs only the standard library and
`websockets` (pip install websockets). The wire format:

    → {"type": "start", "rate": 22050, "channels": 1, "format": "s16le"}    (format: s16le or f32le)
    ← {"type": "started", ...}
    → binary chunk (interleaved little-endian PCM)          ← {"type": "queued", "seconds": 0.4}
    → {"type": "end"}                                       ← {"type": "ended", "queued_seconds": ...}
    → {"type": "clear"}   (drop what is queued: the assistant was interrupted)
    → {"type": "text", "text": "…"}                         ← {"type": "speaking", ...} (the app's text to speech)
    any mistake                                             ← {"type": "error", "error": "what was wrong"}
"""
import argparse
import json
import sys
import time
import wave

from websockets.sync.client import connect

CHUNK_SECONDS = 0.02


def stream_wav(ws, path: str) -> None:
    with wave.open(path) as w:
        if w.getsampwidth() != 2:
            sys.exit("this example sends 16-bit WAV files (the endpoint also takes float32: format f32le)")
        rate, channels = w.getframerate(), w.getnchannels()
        ws.send(json.dumps({"type": "start", "rate": rate, "channels": channels, "format": "s16le"}))
        print(ws.recv())
        frames = int(rate * CHUNK_SECONDS)
        start, sent = time.monotonic(), 0
        while chunk := w.readframes(frames):
            ws.send(chunk)
            reply = json.loads(ws.recv())
            if reply["type"] == "error":
                print(reply["error"], file=sys.stderr)
            sent += len(chunk) // (2 * channels)
            time.sleep(max(0.0, start + sent / rate - time.monotonic()))  # real time: as it is spoken
        ws.send(json.dumps({"type": "end"}))
        print(ws.recv())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="the URL the app shows (ws://127.0.0.1:PORT/input?token=...)")
    parser.add_argument("wav", nargs="?", help="a 16-bit WAV file to stream")
    parser.add_argument("--text", help="text for the app to speak instead")
    args = parser.parse_args()
    with connect(args.url) as ws:
        if args.text:
            ws.send(json.dumps({"type": "text", "text": args.text}))
            print(ws.recv())
        elif args.wav:
            stream_wav(ws, args.wav)
        else:
            parser.error("give a WAV file or --text")


if __name__ == "__main__":
    main()
