"""The microphone list from the sound server (avatar.devices): parsing pactl, and opening a listed source through
the virtual microphone's PulseAudio daemon (the stream must land on the chosen source)."""
import subprocess
import time

import pytest

from avatar.devices import (PULSE_DEVICE, PulseSource, SoundInput, list_microphones, parse_sources_json,
                            parse_sources_text, pulse_inputs)

PACTL_JSON = """[{"index":0,"name":"alsa_output.pci.monitor","description":"Monitor of Built-in Audio",
 "monitor_source":"alsa_output.pci","properties":{"device.class":"monitor"}},
 {"index":1,"name":"alsa_input.usb-Blue_Yeti","description":"Yeti Stereo Microphone","monitor_source":"",
 "properties":{"device.class":"sound"}}]"""

PACTL_TEXT = """Source #0
\tState: SUSPENDED
\tName: alsa_output.pci.monitor
\tDescription: Monitor of Built-in Audio
\tMonitor of Sink: alsa_output.pci
\tProperties:
\t\tdevice.description = "Monitor of Built-in Audio"

Source #1
\tState: RUNNING
\tName: alsa_input.usb-Blue_Yeti
\tDescription: Yeti Stereo Microphone
\tMonitor of Sink: n/a
\tProperties:
\t\tName: not-this-one
"""

EXPECTED = [PulseSource("alsa_output.pci.monitor", "Monitor of Built-in Audio", True),
            PulseSource("alsa_input.usb-Blue_Yeti", "Yeti Stereo Microphone", False)]


def test_pactl_json_and_text_give_the_same_sources():
    assert parse_sources_json(PACTL_JSON) == EXPECTED
    assert parse_sources_text(PACTL_TEXT) == EXPECTED


def test_the_picker_lists_microphones_before_monitors_by_their_descriptions():
    inputs = pulse_inputs(EXPECTED + [PulseSource("other.yeti", "Yeti Stereo Microphone", False)])
    assert [d.label for d in inputs] == ["Yeti Stereo Microphone (alsa_input.usb-Blue_Yeti)",
                                        "Yeti Stereo Microphone (other.yeti)", "Monitor of Built-in Audio"]
    assert all(d.device == PULSE_DEVICE and d.pulse_source == d.name for d in inputs)
    assert [d.monitor for d in inputs] == [False, False, True]


def _source_outputs_on(source_name: str) -> int:
    """How many recording streams the daemon has on the named source."""
    sources = subprocess.run(["pactl", "list", "short", "sources"], capture_output=True, text=True).stdout
    index = next(line.split("\t")[0] for line in sources.splitlines() if line.split("\t")[1] == source_name)
    outputs = subprocess.run(["pactl", "list", "short", "source-outputs"], capture_output=True, text=True).stdout
    return sum(1 for line in outputs.splitlines() if line.split("\t")[1] == index)


def test_the_list_shows_the_servers_sources_and_opens_the_one_chosen(virtual_mic, loudness_engine, tmp_path):
    from avatar.controller import SOURCE_MICROPHONE, Controller
    from avatar.preferences import Preferences
    from tests.conftest import SimpleFrames

    inputs = {d.name: d for d in list_microphones()}
    assert inputs["vmic"] == SoundInput("vmic", "VirtualMic", PULSE_DEVICE, "vmic")  # not "pulse (ALSA)"
    assert inputs["vmic_out.monitor"].label == "Monitor of VMicOut" and inputs["vmic_out.monitor"].monitor
    assert "pulse" not in inputs and "default" not in inputs

    controller = Controller(Preferences(output_folder=str(tmp_path)), lambda backend: loudness_engine,
                            lambda photo, prefs, landmarks=None: SimpleFrames(64)).start()
    try:
        devices = controller.microphones()
        assert controller.preferred_microphone(devices) == "vmic"  # the server's default source
        before = _source_outputs_on("vmic_out.monitor")
        assert controller.use_microphone("vmic_out.monitor")
        assert controller.source_kind == SOURCE_MICROPHONE and controller.source_name == "Monitor of VMicOut"
        deadline = time.monotonic() + 5
        while _source_outputs_on("vmic_out.monitor") <= before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _source_outputs_on("vmic_out.monitor") == before + 1  # the stream records from the chosen source
    finally:
        controller.close()


def test_without_a_sound_server_portaudios_list_is_used(monkeypatch):
    import avatar.devices as devices
    from avatar.mic import InputDevice

    monkeypatch.setattr(devices, "rescan_devices", lambda: None)
    monkeypatch.setattr(devices, "pulse_sources", lambda: None)
    monkeypatch.setattr(devices, "list_input_devices",
                        lambda: [InputDevice(3, "USB Audio: Mic (hw:1,0)", "ALSA", 48000.0, 1)])
    assert list_microphones() == [SoundInput("USB Audio: Mic (hw:1,0)", "USB Audio: Mic (hw:1,0) (ALSA)",
                                             "USB Audio: Mic (hw:1,0)")]


@pytest.mark.parametrize("answer", [None, ""])
def test_a_sound_server_that_does_not_answer_means_no_sources(monkeypatch, answer):
    import avatar.devices as devices

    monkeypatch.setattr(devices, "_pactl", lambda *args: answer)
    assert devices.pulse_sources() in (None, [])


def test_a_portaudio_name_saved_before_is_the_servers_default(monkeypatch):
    import avatar.devices as devices

    monkeypatch.setattr(devices, "pulse_default_source", lambda: "alsa_input.usb-Blue_Yeti")
    inputs = pulse_inputs(EXPECTED)
    assert devices.find_saved("pulse", inputs) == "alsa_input.usb-Blue_Yeti"  # saved as "pulse (ALSA)" before
    assert devices.find_saved("alsa_output.pci.monitor", inputs) == "alsa_output.pci.monitor"
    assert devices.find_saved("USB Headset", inputs) is None
