"""The microphone list as the person knows it: the sound server's sources where one runs, PortAudio's list elsewhere.

PortAudio on Linux sees the sound server only as two ALSA devices ("pulse", "default"), not its sources. Where
PulseAudio or PipeWire (through pipewire-pulse) answers `pactl`, each source is listed by its description
("Blue Yeti", "Monitor of Speakers") and opened through PortAudio's "pulse" device with PULSE_SOURCE naming the
source: libpulse reads that variable when the ALSA pulse plugin opens its stream, so it picks the source for that
open (and for a reopen after a loss, as long as it is left set). Elsewhere PortAudio's own devices are listed.

Qt-free; `pactl` is run with LC_ALL=C (its text output is translated otherwise) and a short timeout.
"""
from __future__ import annotations

from dataclasses import dataclass
import json
import logging
import os
import shutil
import subprocess

from avatar.mic import default_input_device, list_input_devices, rescan_devices

log = logging.getLogger(__name__)

PACTL_TIMEOUT_S = 3.0  # a sound server that does not answer in this long is treated as absent
PULSE_DEVICE = "pulse"  # PortAudio's (ALSA plugin) device that talks to PulseAudio / pipewire-pulse
PULSE_SOURCE_ENV = "PULSE_SOURCE"  # libpulse's variable for the source a stream records from
LEGACY_SERVER_DEFAULTS = ("pulse", "default")  # PortAudio's names for "whatever the sound server's default is"


@dataclass(frozen=True)
class SoundInput:
    """One entry of the microphone picker. `name` is what the preferences store (the sound server's source name,
    or PortAudio's device name), `label` what the picker shows; sounddevice opens `device`, with PULSE_SOURCE set
    to `pulse_source` when that is not None."""

    name: str
    label: str
    device: str
    pulse_source: str | None = None
    monitor: bool = False  # the sound sent to an output ("Monitor of …"), not a microphone


@dataclass(frozen=True)
class PulseSource:
    name: str
    description: str
    monitor: bool


def _pactl(*args: str) -> str | None:
    """pactl's output, None when there is no pactl or no server answering."""
    if shutil.which("pactl") is None:
        return None
    try:
        out = subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=PACTL_TIMEOUT_S,
                             env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.TimeoutExpired) as e:
        log.info("pactl %s failed: %s", " ".join(args), e)
        return None
    return out.stdout if out.returncode == 0 else None


def parse_sources_json(text: str) -> list[PulseSource]:
    """`pactl -f json list sources` (pactl 16 and later)."""
    sources = []
    for s in json.loads(text):
        props = s.get("properties") or {}
        monitor = bool(s.get("monitor_source")) or props.get("device.class") == "monitor"
        sources.append(PulseSource(s["name"], s.get("description") or props.get("device.description") or s["name"],
                                   monitor))
    return sources


def parse_sources_text(text: str) -> list[PulseSource]:
    """`pactl list sources` in the C locale (older pactl without -f json)."""
    sources, current = [], None
    for raw in text.splitlines():
        line = raw.strip()
        if raw.startswith("Source #"):
            current = {"name": None, "description": None, "monitor": False}
            sources.append(current)
        elif current is not None and ":" in line and raw.startswith("\t") and not raw.startswith("\t\t"):
            key, _, value = line.partition(":")
            value = value.strip()
            if key == "Name":
                current["name"] = value
            elif key == "Description":
                current["description"] = value
            elif key == "Monitor of Sink":
                current["monitor"] = value not in ("", "n/a")
    return [PulseSource(s["name"], s["description"] or s["name"], s["monitor"]) for s in sources if s["name"]]


def pulse_sources() -> list[PulseSource] | None:
    """The sound server's sources, None where no PulseAudio/PipeWire server answers."""
    text = _pactl("-f", "json", "list", "sources")
    if text is not None:
        try:
            return parse_sources_json(text)
        except (ValueError, KeyError, TypeError) as e:  # an old pactl ignores -f and prints text
            log.info("pactl gave no JSON (%s); reading its text", e)
            return parse_sources_text(text)
    text = _pactl("list", "sources")
    return None if text is None else parse_sources_text(text)


def pulse_default_source() -> str | None:
    text = _pactl("info")
    for line in (text or "").splitlines():
        if line.startswith("Default Source:"):
            return line.partition(":")[2].strip() or None
    return None


def pulse_inputs(sources: list[PulseSource]) -> list[SoundInput]:
    """The picker's entries for the server's sources: microphones first, then monitors, each as the server
    describes it (two with the same description keep their names apart)."""
    ordered = sorted(sources, key=lambda s: s.monitor)
    counts = {}
    for s in ordered:
        counts[s.description] = counts.get(s.description, 0) + 1
    return [SoundInput(s.name, s.description if counts[s.description] == 1 else f"{s.description} ({s.name})",
                       PULSE_DEVICE, s.name, s.monitor) for s in ordered]


def portaudio_inputs() -> list[SoundInput]:
    return [SoundInput(d.name, d.label, d.name) for d in list_input_devices()]


def list_microphones() -> list[SoundInput]:
    """Every input, looked for again (PortAudio's devices only while no stream is open: rescan_devices): the sound
    server's sources when it answers and PortAudio can reach it, PortAudio's devices otherwise. Raises what
    PortAudio raises when it cannot be asked."""
    rescan_devices()
    portaudio = portaudio_inputs()
    sources = pulse_sources()
    if sources and any(d.device == PULSE_DEVICE for d in portaudio):
        return pulse_inputs(sources)
    return portaudio


def default_microphone(inputs: list[SoundInput]) -> str | None:
    """The name of the system's default among `inputs`: the server's default source, else PortAudio's default."""
    names = {d.name for d in inputs}
    if any(d.pulse_source for d in inputs):
        default = pulse_default_source()
        if default in names:
            return default
    try:
        device = default_input_device()
    except Exception as e:  # PortAudio cannot be asked: no default
        log.info("no default input: %s", e)
        return None
    return device.name if device is not None and device.name in names else None


def find_saved(saved: str, inputs: list[SoundInput]) -> str | None:
    """The name among `inputs` of the microphone saved as `saved`: the same name, or, for a PortAudio name saved
    before the sound server's sources were listed ("pulse", "default" = the server's default), the server's
    default source. None when it is not there."""
    names = {d.name for d in inputs}
    if saved in names:
        return saved
    if saved in LEGACY_SERVER_DEFAULTS and any(d.pulse_source for d in inputs):
        return default_microphone(inputs)
    return None


def prepare_open(choice: SoundInput) -> str:
    """Point the next stream opened on the sound server at `choice`'s source; returns the PortAudio device name
    to open. For a PortAudio device PULSE_SOURCE is cleared, so "pulse"/"default" mean the server's default."""
    if choice.pulse_source is not None:
        os.environ[PULSE_SOURCE_ENV] = choice.pulse_source
    else:
        os.environ.pop(PULSE_SOURCE_ENV, None)
    return choice.device


def server_inputs() -> list[SoundInput] | None:
    """The sound server's sources as picker entries, asked of the server alone (no PortAudio rescan, so a stream
    open meanwhile is undisturbed); None where no server answers."""
    sources = pulse_sources()
    return None if sources is None else pulse_inputs(sources)


SOURCE_EVENT_WORDS = (b"'new' on source", b"'remove' on source", b"on server")  # a source came, went, or the
# server's default changed; `pactl subscribe` prints one line per event ("Event 'new' on source #5")


class SourceEvents:
    """`pactl subscribe`, left running: its output wakes the app when the sound server's sources change (plugged,
    unplugged, a module loaded), so the picker is refreshed without polling. `fileno()` is readable when it has
    printed; `take()` says whether a source changed since the last call; `ended` once the server went away."""

    def __init__(self):
        self.ended = False
        # util-linux's setpriv ends it with the app however the app ends (a killed app leaves no `pactl subscribe`
        # behind: the signal comes when the thread that started it, the GUI thread, ends); plain pactl elsewhere
        ending = ["setpriv", "--pdeathsig", "TERM"] if shutil.which("setpriv") else []
        self._proc = subprocess.Popen([*ending, "pactl", "subscribe"], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                      env={**os.environ, "LC_ALL": "C"})
        os.set_blocking(self._proc.stdout.fileno(), False)
        self._partial = b""

    @staticmethod
    def start() -> "SourceEvents | None":
        """Watching where a PulseAudio/PipeWire server answers; None elsewhere (there the list is refreshed by
        hand: PortAudio cannot look for devices with a stream open)."""
        if shutil.which("pactl") is None or _pactl("info") is None:
            return None
        try:
            return SourceEvents()
        except OSError as e:
            log.info("pactl subscribe failed: %s", e)
            return None

    def fileno(self) -> int:
        return self._proc.stdout.fileno()

    def take(self) -> bool:
        """Whether a source event arrived since the last call; never blocks."""
        changed = False
        while True:
            try:
                chunk = os.read(self.fileno(), 65536)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:  # end of file: pactl ended (the server stopped)
                self.ended = True
                break
            lines = (self._partial + chunk).split(b"\n")
            self._partial = lines.pop()
            changed = changed or any(word in line for line in lines for word in SOURCE_EVENT_WORDS)
        return changed

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc.stdout.close()
