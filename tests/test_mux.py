"""Audio muxing into a real mp4 with the bundled ffmpeg, read back."""
import os
import re
import wave

import numpy as np
import pytest

from wan.utils.media import read_video, save_video
from wan.utils.mux import mux_audio, probe_streams


def write_wav(path, seconds, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def duration(desc):
    h, m, s = re.search(r"Duration: (\d+):(\d+):([\d.]+)", desc).groups()
    return int(h) * 3600 + int(m) * 60 + float(s)


def test_audio_is_added_and_cut_to_the_video(tmp_path):
    video = np.zeros((3, 32, 32, 48), np.float32)  # 32 frames at 16 fps: 2 s
    path = save_video(video, str(tmp_path / "v.mp4"), fps=16)
    audio = write_wav(str(tmp_path / "a.wav"), 3.0)
    mux_audio(path, audio)
    desc = probe_streams(path)
    assert "Audio: aac" in desc and "Video: h264" in desc, desc
    assert abs(duration(desc) - 2.0) < 0.15, desc
    frames, fps = read_video(path)
    assert frames.shape == (32, 32, 48, 3) and fps == 16
    assert [p for p in os.listdir(tmp_path) if ".tmp." in p] == []


def test_bad_audio_leaves_the_video_untouched(tmp_path):
    path = save_video(np.zeros((3, 4, 16, 16), np.float32), str(tmp_path / "v.mp4"), fps=16)
    before = open(path, "rb").read()
    bad = tmp_path / "a.wav"
    bad.write_bytes(b"not audio")
    with pytest.raises(RuntimeError, match="ffmpeg could not add"):
        mux_audio(path, str(bad))
    assert open(path, "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == ["a.wav", "v.mp4"]
    with pytest.raises(ValueError, match="does not exist"):
        mux_audio(path, str(tmp_path / "missing.wav"))
