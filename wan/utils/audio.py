"""Audio input for S2V: decode a file to float32 mono and resample it, as ``librosa.load(path, sr=16000)`` does.

The official code reads audio with ``librosa.load(path, sr=16000)``, which (librosa 0.10/0.11) decodes with
soundfile (libsndfile: WAV, FLAC, OGG, MP3), averages the channels, and resamples with soxr in its "HQ" quality,
padding or trimming the result to ``ceil(n * target / native)`` samples. This module makes the same calls on the
same two small libraries (``soundfile`` and ``soxr``, both wheels with their C library inside, numpy their only
Python dependency) without librosa's dependency tree (numba, scikit-learn, scipy, ...), so the samples equal
librosa's bit for bit. Files that libsndfile cannot decode (AAC/M4A, audio tracks of videos) are decoded by the
ffmpeg binary that imageio-ffmpeg ships, to 32-bit float; librosa would fall back to audioread there (16-bit), so
that path is not bit-equal to the official one.

Why not another resampler: on the test chirps (22.05 kHz stereo FLAC, 44.1 kHz MP3) scipy's ``resample_poly``
lands 0.4-0.5 % RMS (max 3e-3 absolute) away from librosa's samples, and ffmpeg's default resampler with its own
stereo downmix further still; soxr itself gives exactly librosa's samples (tests/test_s2v_audio.py).
"""
from __future__ import annotations

import math
import os
import subprocess
import tempfile
from typing import Tuple

import numpy as np

SAMPLE_RATE = 16000

# Peak amplitude at or below which a file counts as silent: one step of 16-bit audio (dither noise at most).
SILENCE_PEAK = 1.0 / 32768.0


def _import_soundfile():
    try:
        import soundfile
    except ImportError as err:  # pragma: no cover - requirements.txt lists it
        raise ImportError(f"reading audio needs the soundfile package ({err}); pip install soundfile") from None
    return soundfile


def _decode_soundfile(path: str) -> Tuple[np.ndarray, int]:
    """-> (float32 [N] or [C, N], native rate), as librosa's soundfile path reads it."""
    sf = _import_soundfile()
    with sf.SoundFile(path) as f:
        rate = int(f.samplerate)
        y = f.read(frames=-1, dtype=np.float32, always_2d=False).T
    return y, rate


def _decode_ffmpeg(path: str) -> Tuple[np.ndarray, int]:
    """Decode any ffmpeg-readable audio (first audio stream) to float32 [N] or [C, N] at its native rate."""
    import imageio_ffmpeg

    exe = imageio_ffmpeg.get_ffmpeg_exe()
    with tempfile.TemporaryDirectory(prefix="wan_audio_") as tmp:
        out = os.path.join(tmp, "decoded.wav")
        cmd = [exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", path, "-map", "0:a:0", "-vn",
               "-c:a", "pcm_f32le", "-f", "wav", out]
        try:
            proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
        except subprocess.TimeoutExpired:
            raise ValueError(f"audio file {path!r}: ffmpeg did not finish decoding it within 600 s") from None
        if proc.returncode != 0 or not os.path.isfile(out):
            message = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise ValueError(f"audio file {path!r} could not be decoded ({message[-1] if message else 'no audio'}); "
                             "pass a WAV, FLAC, MP3 or OGG file with an audio track")
        return _decode_soundfile(out)


def decode_audio(path: str) -> Tuple[np.ndarray, int]:
    """Decode ``path`` to float32 samples at the file's own rate: ([N] mono or [C, N], rate).

    Raises ValueError (naming the file and the fix) when it does not exist or holds no decodable audio.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"audio file {path!r} does not exist; pass an existing WAV, FLAC, MP3 or OGG file")
    sf = _import_soundfile()
    try:
        return _decode_soundfile(path)
    except sf.SoundFileRuntimeError:
        # Not a libsndfile format (e.g. AAC in .m4a / .mp4): let ffmpeg try; librosa would try audioread.
        pass
    return _decode_ffmpeg(path)


def to_mono(y: np.ndarray) -> np.ndarray:
    """[C, N] -> [N] by averaging channels (librosa.to_mono); [N] is returned as is."""
    return np.mean(y, axis=tuple(range(y.ndim - 1))) if y.ndim > 1 else y


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited resampling of [N] float32 with soxr "HQ" (librosa's default ``res_type='soxr_hq'``).

    The output has exactly ``ceil(N * target_sr / orig_sr)`` samples (zero-padded or trimmed, as librosa's
    ``fix=True``); equal rates return ``y`` itself.
    """
    if orig_sr == target_sr:
        return y
    try:
        import soxr
    except ImportError as err:  # pragma: no cover - requirements.txt lists it
        raise ImportError(f"resampling audio needs the soxr package ({err}); pip install soxr") from None
    ratio = float(target_sr) / orig_sr
    n_out = int(math.ceil(y.shape[-1] * ratio))
    out = soxr.resample(y, orig_sr, target_sr, quality="soxr_hq")
    if out.shape[-1] > n_out:
        out = out[:n_out]
    elif out.shape[-1] < n_out:
        out = np.pad(out, (0, n_out - out.shape[-1]))
    return np.asarray(out, dtype=y.dtype)


def load_audio(path: str, sr: int = SAMPLE_RATE, reject_silent: bool = True) -> np.ndarray:
    """Read an audio file as float32 mono at ``sr`` Hz: the samples of ``librosa.load(path, sr=sr)``.

    Args:
        path: WAV, FLAC, MP3, OGG (libsndfile), or anything ffmpeg decodes (M4A/AAC, ...).
        sr: target sample rate; any channel count and native rate is converted.
        reject_silent: raise if no sample exceeds one 16-bit step (a silent file drives nothing).
    Returns:
        float32 [N].
    Raises:
        ValueError for a missing, undecodable, empty, non-finite or (with ``reject_silent``) silent file.
    """
    y, native = decode_audio(path)
    if y.size == 0:
        raise ValueError(f"audio file {path!r} holds no samples; pass a file with audio in it")
    if native <= 0:
        raise ValueError(f"audio file {path!r} reports a sample rate of {native} Hz; the file is broken")
    y = to_mono(y)
    if not np.isfinite(y).all():
        raise ValueError(f"audio file {path!r} has NaN or infinite samples; re-export it")
    if reject_silent and float(np.max(np.abs(y))) <= SILENCE_PEAK:
        raise ValueError(f"audio file {path!r} is silent (peak {float(np.max(np.abs(y))):.3g}); S2V needs "
                         "speech or music to drive the video")
    return resample(y, native, int(sr))
