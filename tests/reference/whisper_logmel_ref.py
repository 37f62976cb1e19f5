#!/usr/bin/python3
"""Independent float64 reference for the Whisper log-mel features of Qwen2.5-Omni (model-formats.md 1.3).

Written with Debian python3-numpy only (no transformers, no librosa). For each clip it pads the 16 kHz signal with
zeros to 300 s, reflect-pads 200 samples on both sides, frames it (n_fft 400, hop 160), applies a periodic Hann
window, takes numpy's rfft power spectrum, drops the last frame, applies 128 slaney mel filters (slaney
normalisation, 0-8000 Hz), log10 with a 1e-10 floor, clamps at max - 8 over the whole padded spectrogram, maps
(x + 4) / 4 and keeps the ceil(samples / 160) frames the Omni thinker uses.

It writes tests/reference/whisper_logmel_ref.json: the mel bank summary, and per clip the sample count, the sum of
the float32 samples, the number of valid frames, the unnormalised global log10 maximum, the per-mel-bin mean over
the valid frames and a few hundred seeded (mel, frame, value) positions (plus the last frames).

Clips: the LibriVox WAVs in ../shared/data/audio/librivox (read with the standard `wave` module, int16 / 32768)
and synthetic signals whose formulas tests/audio_mel.test.ts reproduces.

Run from the repository root:  /usr/bin/python3 tests/reference/whisper_logmel_ref.py
"""

import glob
import json
import os
import sys
import wave

import numpy as np

SR = 16000
N_FFT = 400
HOP = 160
N_MELS = 128
PADDED = 300 * SR
POSITIONS = 256


def mel_from_hz(f):
    f = np.asarray(f, dtype=np.float64)
    lin = 3.0 * f / 200.0
    log = 15.0 + np.log(np.maximum(f, 1e-30) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, lin)


def hz_from_mel(m):
    m = np.asarray(m, dtype=np.float64)
    lin = 200.0 * m / 3.0
    log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
    return np.where(m >= 15.0, log, lin)


def mel_bank():
    """[N_MELS, 201] slaney-scale triangles with slaney area normalisation."""
    centres = hz_from_mel(np.linspace(mel_from_hz(0.0), mel_from_hz(SR / 2), N_MELS + 2))
    bins = np.arange(N_FFT // 2 + 1) * (SR / 2) / (N_FFT // 2)
    bank = np.zeros((N_MELS, bins.size))
    for m in range(N_MELS):
        lo, mid, hi = centres[m], centres[m + 1], centres[m + 2]
        up = (bins - lo) / (mid - lo)
        down = (hi - bins) / (hi - mid)
        bank[m] = np.clip(np.minimum(up, down), 0.0, None) * (2.0 / (hi - lo))
    return bank


BANK = mel_bank()
WINDOW = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)


def log_mel(x32):
    """Returns (features [N_MELS, valid], global unnormalised max)."""
    n = x32.size
    assert 0 < n <= PADDED
    buf = np.zeros(PADDED, dtype=np.float64)
    buf[:n] = x32.astype(np.float64)
    buf = np.pad(buf, N_FFT // 2, mode="reflect")
    count = 1 + (buf.size - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(count)[:, None]
    logs = np.empty((N_MELS, count - 1))
    block = 2048
    for s in range(0, count - 1, block):
        e = min(count - 1, s + block)
        spec = np.fft.rfft(buf[idx[s:e]] * WINDOW, axis=1)
        power = spec.real ** 2 + spec.imag ** 2
        logs[:, s:e] = np.log10(np.maximum(BANK @ power.T, 1e-10))
    top = logs.max()
    feats = (np.maximum(logs, top - 8.0) + 4.0) / 4.0
    valid = -(-n // HOP)
    return feats[:, :valid], float(top)


def synthetic():
    """Synthetic clips; the formulas are mirrored in tests/audio_mel.test.ts (float64 then float32)."""
    two_pi = 2.0 * np.pi
    clips = {}

    i = np.arange(16000, dtype=np.float64)
    clips["sine440_1s"] = 0.5 * np.sin(two_pi * 440.0 * i / SR)

    n = 40037
    i = np.arange(n, dtype=np.float64)
    t = i / SR
    k = 7800.0 / (n / SR)
    clips["chirp_tone"] = 0.3 * np.sin(two_pi * (100.0 * t + 0.5 * k * t * t)) + 0.1 * np.sin(two_pi * 3000.0 * t)

    i = np.arange(8000, dtype=np.float64)
    x = 0.001 * np.sin(two_pi * 1000.0 * i / SR)
    x[-1] = 0.9
    clips["click_end"] = x

    i = np.arange(321, dtype=np.float64)
    clips["tiny_321"] = 0.2 * np.sin(two_pi * 2500.0 * i / SR)

    i = np.arange(PADDED, dtype=np.float64)
    clips["full_300s"] = (0.2 + 0.6 * i / PADDED) * np.sin(two_pi * 700.0 * i / SR)

    n = PADDED - 100
    i = np.arange(n, dtype=np.float64)
    clips["near_full"] = (0.2 + 0.6 * i / n) * np.sin(two_pi * 1300.0 * i / SR)
    return {name: x.astype(np.float32) for name, x in clips.items()}


def read_wav16(path):
    with wave.open(path, "rb") as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1 and w.getframerate() == SR, path
        raw = w.readframes(w.getnframes())
    return (np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0).astype(np.float32)


def describe(name, kind, x32, seed):
    feats, top = log_mel(x32)
    valid = feats.shape[1]
    rng = np.random.RandomState(seed)
    mels = rng.randint(0, N_MELS, size=POSITIONS)
    frames = rng.randint(0, valid, size=POSITIONS)
    picks = list(zip(mels.tolist(), frames.tolist()))
    for t in range(max(0, valid - 2), valid):  # the last frames, where padding starts
        picks += [(m, t) for m in range(0, N_MELS, 8)]
    return {
        "name": name,
        "kind": kind,
        "samples": int(x32.size),
        "sampleSum": float(np.sum(x32.astype(np.float64))),
        "frames": int(valid),
        "globalMax": top,
        "binMeans": [round(float(v), 8) for v in feats.mean(axis=1)],
        "positions": [[m, t, round(float(feats[m, t]), 8)] for m, t in picks],
    }


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    shared = os.path.join(os.path.dirname(root), "shared", "data", "audio", "librivox")
    out = {
        "generator": "tests/reference/whisper_logmel_ref.py (numpy %s, float64)" % np.__version__,
        "settings": {"sampleRate": SR, "nFft": N_FFT, "hop": HOP, "nMels": N_MELS, "paddedLength": PADDED},
        "melBank": {
            "rowSums": [float(v) for v in BANK.sum(axis=1)],
            "rowMax": [float(v) for v in BANK.max(axis=1)],
            "nonZero": [int(v) for v in (BANK > 0).sum(axis=1)],
        },
        "clips": [],
    }
    seed = 1000
    for name, x in synthetic().items():
        out["clips"].append(describe(name, "synthetic", x, seed))
        seed += 1
    wavs = sorted(glob.glob(os.path.join(shared, "*.wav")))
    if not wavs:
        print("warning: no LibriVox WAVs found under", shared, file=sys.stderr)
    for path in wavs:
        out["clips"].append(describe(os.path.basename(path), "librivox", read_wav16(path), seed))
        seed += 1
    dest = os.path.join(root, "tests", "reference", "whisper_logmel_ref.json")
    with open(dest, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print("wrote", dest, "with", len(out["clips"]), "clips")


if __name__ == "__main__":
    main()
