"""Audio augmentation that keeps phone timing: what a live microphone adds to clean synthetic speech.

Every function takes float32 mono audio and a `numpy.random.Generator`, so a seed fixes the result.
"""
from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
DEVICE_RATES = (44100, 48000)  # capture rates resampled to 16 kHz (soxr at a random quality)
SPEED_RANGE = (0.9, 1.1)  # resampling speed factor: tempo, pitch and formants move together
GAIN_DBFS_RANGE = (-38.0, -12.0)  # speech RMS level
NOISE_DBFS_RANGE = (-85.0, -40.0)  # background noise RMS level
MIN_SNR_DB = 8.0
RT60_RANGE = (0.15, 0.7)  # seconds, small room to lecture hall
HIGHPASS_HZ = (60.0, 300.0)
LOWPASS_HZ = (3400.0, 7800.0)
PEAK_HZ = (600.0, 4000.0)
PEAK_DB = (-8.0, 8.0)
HUM_HZ = (50.0, 60.0)
# keyboard: clicks in typing bursts; each key a few-ms noise burst, and its release a quieter one after it
KEY_RATE_HZ = (3.0, 10.0)  # keystrokes per second while typing
KEY_DECAY_MS = (0.8, 4.0)
KEY_RELEASE_MS = (50.0, 130.0)
TYPING_BURST_S, TYPING_PAUSE_S = (0.8, 5.0), (0.3, 3.0)
# fan: steady band-limited noise plus a weak blade-pass tone
FAN_LOW_HZ, FAN_HIGH_HZ = (80.0, 400.0), (900.0, 4000.0)
FAN_BLADE_HZ = (60.0, 300.0)
# traffic: low rumble whose level swells slowly as vehicles pass
TRAFFIC_HIGHPASS_HZ = 30.0  # below this the rumble would be sub-audible drift
TRAFFIC_LOWPASS_HZ = (150.0, 600.0)
TRAFFIC_SWELL_S = (2.0, 12.0)  # period of the slowest swell
TRAFFIC_FLOOR = (0.1, 0.5)  # envelope minimum relative to its peak


def resample(audio: np.ndarray, rate_in: float, rate_out: float, quality: str = "HQ") -> np.ndarray:
    import soxr  # soxr and scipy: the [train] extra, loaded by the augmentations that use them
    return soxr.resample(audio.astype(np.float32), rate_in, rate_out, quality=quality).astype(np.float32)


def rms_dbfs(audio: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(audio, dtype=np.float64)) + 1e-12))


def set_level(audio: np.ndarray, dbfs: float) -> np.ndarray:
    return audio * np.float32(10 ** ((dbfs - rms_dbfs(audio)) / 20))


def colored_noise(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Unit-RMS noise with a 1/f^exponent power spectrum (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.maximum(np.fft.rfftfreq(n), 1.0 / max(n, 1))
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2), n)
    return (noise / (np.sqrt(np.mean(noise ** 2)) + 1e-12)).astype(np.float32)


def hum(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS mains hum with a few harmonics."""
    t = np.arange(n) / SAMPLE_RATE
    f0 = rng.choice(HUM_HZ)
    x = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) for k in (1, 2, 3, 5))
    return (x / (np.sqrt(np.mean(x ** 2)) + 1e-12)).astype(np.float32)


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return (x / (np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-12)).astype(np.float32)


def keyboard_clicks(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS typing: bursts of keystrokes (a bright decaying click, then a quieter release) and pauses."""
    x = np.zeros(n + SAMPLE_RATE // 2, np.float64)
    t, typing = 0, bool(rng.random() < 0.7)
    rate = rng.uniform(*KEY_RATE_HZ)
    while t < n:
        if not typing:
            t += int(rng.uniform(*TYPING_PAUSE_S) * SAMPLE_RATE)
        else:
            end = t + int(rng.uniform(*TYPING_BURST_S) * SAMPLE_RATE)
            while t < min(end, n):
                for delay, gain in ((0.0, 1.0), (rng.uniform(*KEY_RELEASE_MS) / 1000, rng.uniform(0.2, 0.6))):
                    tau = rng.uniform(*KEY_DECAY_MS) / 1000
                    m = int(6 * tau * SAMPLE_RATE) + 1
                    a = t + int(delay * SAMPLE_RATE)
                    click = np.diff(rng.standard_normal(m + 1)) * np.exp(-np.arange(m) / (tau * SAMPLE_RATE))
                    x[a:a + m] += gain * rng.uniform(0.4, 1.0) * click[: len(x) - a]
                t += int(rng.exponential(1 / rate) * SAMPLE_RATE) + int(0.03 * SAMPLE_RATE)
        typing = not typing
    return _unit_rms(x[:n]) if np.any(x[:n]) else x[:n].astype(np.float32)


def fan(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS fan or air conditioning: steady band-limited noise with a weak blade-pass tone."""
    from scipy.signal import butter, sosfilt
    band = [rng.uniform(*FAN_LOW_HZ), rng.uniform(*FAN_HIGH_HZ)]
    x = _unit_rms(sosfilt(butter(2, band, "bandpass", fs=SAMPLE_RATE, output="sos"), rng.standard_normal(n)))
    t = np.arange(n) / SAMPLE_RATE
    blade = rng.uniform(*FAN_BLADE_HZ)
    tone = sum(np.sin(2 * np.pi * blade * k * t + rng.uniform(0, 2 * np.pi)) / k for k in (1, 2, 3))
    return _unit_rms(x + rng.uniform(0.0, 0.3) * tone)


def traffic(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS traffic through a window: low band-passed pink noise whose level swells over seconds."""
    from scipy.signal import butter, sosfilt
    band = [TRAFFIC_HIGHPASS_HZ, rng.uniform(*TRAFFIC_LOWPASS_HZ)]
    rumble = sosfilt(butter(2, band, "bandpass", fs=SAMPLE_RATE, output="sos"), colored_noise(n, rng, 1.0))
    t = np.arange(n) / SAMPLE_RATE
    period = rng.uniform(*TRAFFIC_SWELL_S)
    swell = sum(rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * t / (period / k) + rng.uniform(0, 2 * np.pi))
                for k in (1.0, 1.7, 2.9))
    swell = (swell - swell.min()) / (np.ptp(swell) + 1e-12)
    floor = rng.uniform(*TRAFFIC_FLOOR)
    return _unit_rms(rumble * (floor + (1 - floor) * swell))


NOISE_KINDS = {"hum": hum, "keyboard": keyboard_clicks, "fan": fan, "traffic": traffic}


def room_noise(n: int, rng: np.random.Generator, dbfs: float) -> tuple[np.ndarray, str]:
    """One of NOISE_KINDS at `dbfs` RMS, and its name."""
    kind = str(rng.choice(list(NOISE_KINDS)))
    x = NOISE_KINDS[kind](n, rng)
    return (set_level(x, dbfs) if n and np.any(x) else x), kind


def background(n: int, rng: np.random.Generator, dbfs: float) -> np.ndarray:
    """Stationary background at `dbfs`: coloured noise, sometimes with hum."""
    x = colored_noise(n, rng, rng.uniform(0.0, 2.0))
    if rng.random() < 0.15:
        x = x + rng.uniform(0.3, 1.0) * hum(n, rng)
    return set_level(x, dbfs) if n else x


def room_impulse(rng: np.random.Generator) -> np.ndarray:
    """A synthetic room: direct path, then exponentially decaying noise reaching -60 dB at RT60."""
    rt60 = rng.uniform(*RT60_RANGE)
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    predelay = int(rng.uniform(0.002, 0.02) * SAMPLE_RATE)
    tail[:predelay] = 0.0
    tail *= rng.uniform(0.1, 0.6) / (np.sqrt(np.sum(tail ** 2)) + 1e-12)  # direct-to-reverberant ratio
    tail[0] = 1.0
    return tail.astype(np.float32)


def reverb(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from scipy.signal import fftconvolve
    wet = fftconvolve(audio, room_impulse(rng))[: len(audio)]
    return wet.astype(np.float32)


def microphone_eq(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Band-limit like a cheap microphone or a phone line, with one resonance or dip."""
    from scipy.signal import butter, sosfilt
    sos = [butter(2, rng.uniform(*HIGHPASS_HZ), "highpass", fs=SAMPLE_RATE, output="sos")]
    if rng.random() < 0.6:
        sos.append(butter(4, rng.uniform(*LOWPASS_HZ), "lowpass", fs=SAMPLE_RATE, output="sos"))
    out = sosfilt(np.concatenate(sos), audio)
    # a peak/dip: add or subtract a band-passed copy
    f = rng.uniform(*PEAK_HZ)
    band = sosfilt(butter(2, [f / 1.4, min(f * 1.4, SAMPLE_RATE / 2 - 100)], "bandpass", fs=SAMPLE_RATE,
                          output="sos"), out)
    out = out + (10 ** (rng.uniform(*PEAK_DB) / 20) - 1) * band
    return out.astype(np.float32)


def to_16k(audio: np.ndarray, rate: int, speed: float, rng: np.random.Generator) -> np.ndarray:
    """Resample synthesizer output to 16 kHz played `speed` times faster, sometimes through a 44.1/48 kHz
    capture rate as a sound card would deliver it."""
    if rng.random() < 0.3:
        device = int(rng.choice(DEVICE_RATES))
        audio = resample(audio, rate, device / speed, quality=str(rng.choice(["LQ", "MQ", "HQ"])))
        return resample(audio, device, SAMPLE_RATE, quality=str(rng.choice(["QQ", "LQ", "HQ"])))
    return resample(audio, rate, SAMPLE_RATE / speed)
