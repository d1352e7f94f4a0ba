"""s2v-14B end to end on the embedded tiny checkpoint: clips, motion carry-over, pose, audio muxed into the mp4.

Not yet compared with the official ``WanS2V.generate`` as a whole (the DiT, the audio front end and the input
transforms each are, in test_s2v_model / test_s2v_audio / test_s2v_inputs); these tests check the clip rules
(frame counts, first-clip motion drop, --start_from_ref), that audio and pose reach the video, and the file.
"""
import os
import re
import wave

import numpy as np
import pytest

import generate
from conftest import ROOT
from wan.configs import get_task
from wan.utils.media import read_video
from wan.utils.mux import probe_streams

TINY = os.path.join(ROOT, "examples", "tiny", "s2v-14B")
POSE = os.path.join(ROOT, "tests", "fixtures", "s2v_inputs", "pose_25fps.mp4")
BASE = ["--task", "s2v-14B", "--size", "64*64", "--sample_steps", "1", "--base_seed", "3"]


def write_wav(path, samples, rate=16000):
    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return str(path)


def duration(desc):
    h, m, s = re.search(r"Duration: (\d+):(\d+):([\d.]+)", desc).groups()
    return int(h) * 3600 + int(m) * 60 + float(s)


def test_two_clips_with_the_audio_in_the_mp4(tmp_path):
    out = tmp_path / "s2v.mp4"
    assert generate.main(BASE + ["--num_clip", "2", "--save_file", str(out)]) == 0
    frames, fps = read_video(str(out))
    # infer_frames 12 (wan_tiny.json): the first clip drops its 3 motion-context frames, the second keeps 12.
    assert frames.shape[0] == 9 + 12 and fps == 16
    desc = probe_streams(str(out))
    assert "Audio: aac" in desc, desc
    assert abs(duration(desc) - 21 / 16) < 0.1, desc  # the 1.6 s clip is cut to the video
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s2v.mp4"]


@pytest.fixture(scope="module")
def pipe():
    from wan.pipeline import WanPipeline

    return WanPipeline(get_task("s2v-14B"), TINY)


def speech(pipe, audio, **kw):
    from wan.utils.media import load_image

    args = dict(image=load_image(os.path.join(ROOT, "examples", "i2v_input.png")), audio=audio, size=(64, 64),
                infer_frames=12, shift=3.0, sampling_steps=1, seed=11, num_clips=1, progress=False)
    args.update(kw)
    return pipe.generate_speech("a cat talks", **args)


def test_audio_pose_and_start_from_ref_reach_the_video(pipe, tmp_path):
    talk = os.path.join(ROOT, "examples", "talk.wav")
    base = speech(pipe, talk)
    assert base.shape == (3, 9, 64, 64)
    np.testing.assert_array_equal(base, speech(pipe, talk))  # deterministic for a seed
    t = np.arange(16000) / 16000
    other = write_wav(tmp_path / "tone.wav", 0.4 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 2 * t))
    assert np.abs(speech(pipe, other) - base).mean() > 1e-3  # the audio drives the video
    assert np.abs(speech(pipe, talk, pose_video=POSE) - base).mean() > 1e-3  # so does the pose
    ref = speech(pipe, talk, start_from_ref=True)
    assert ref.shape == (3, 12, 64, 64)  # no first-clip drop when starting from the reference
    timings = {}
    two = speech(pipe, talk, num_clips=5, timings=timings)
    # Capped by the audio, official rule: 48 features at 30 fps / (12 frames * 30/16) = 2.1 -> int + 1 = 3 clips.
    assert timings["clips"] == 3
    np.testing.assert_array_equal(two[:, :9], base)  # the first clip is the same whatever follows
    assert two.shape[1] == 9 + 12 + 12


@pytest.mark.parametrize("extra, message", [
    (["--audio", "/nonexistent.wav"], "nonexistent"),
    (["--enable_tts"], "--enable_tts is not supported"),
    (["--infer_frames", "10"], "--infer_frames 10"),
    (["--num_clip", "0"], "--num_clip 0"),
    (["--frame_num", "13"], "not --frame_num"),
    (["--pose_video", "/nonexistent.mp4"], "--pose_video"),
    (["--size", "123*45"], "--size"),
    (["--save_file", "/tmp/x.png"], ".mp4"),
])
def test_bad_input_is_refused_before_loading(extra, message, capsys, monkeypatch):
    import wan.pipeline

    monkeypatch.setattr(wan.pipeline.WanPipeline, "__init__", lambda *a, **k: pytest.fail("model loaded"))
    assert generate.main(BASE + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err, err


def test_silent_or_unreadable_audio_is_refused(tmp_path, capsys):
    silent = write_wav(tmp_path / "silent.wav", np.zeros(16000))
    assert generate.main(BASE + ["--audio", silent]) == 2
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really")
    assert generate.main(BASE + ["--audio", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 2, err


def test_two_rank_zero3_ulysses_equals_the_single_device_video(tmp_path):
    import subprocess
    import sys

    import imageio.v3 as iio
    from test_distributed import _log, _msrun

    common = BASE + ["--ckpt_dir", TINY, "--num_clip", "2", "--prompt", "a cat talks", "--audio",
                     os.path.join(ROOT, "examples", "talk.wav"), "--image", os.path.join(ROOT, "examples", "i2v_input.png")]
    single = str(tmp_path / "single.mp4")
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_v="3")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "generate.py"), *common, "--save_file", single],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    assert proc.returncode == 0, proc.stdout.decode(errors="replace")[-3000:]
    dist = str(tmp_path / "dist.mp4")
    code, seconds, log_dir = _msrun(tmp_path, os.path.join(ROOT, "generate.py"), *common, "--save_file", dist,
                                    "--dit_zero3", "--t5_zero3", "--ulysses_size", "2")
    logs = [_log(log_dir, r) for r in range(2)]
    assert code == 0, f"msrun failed ({seconds:.0f}s):\n{logs[0][-3000:]}\n{logs[1][-3000:]}"
    assert "ulysses 2, dit_zero3 True, t5_zero3 True" in logs[0]
    a, b = iio.imread(single).astype(np.float64), iio.imread(dist).astype(np.float64)
    assert a.shape == b.shape and a.shape[0] == 21
    mse = ((a - b) ** 2).mean()
    psnr = 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)
    assert psnr > 40, f"2-rank s2v video is {psnr:.1f} dB from the single-device one"
    assert "Audio: aac" in probe_streams(dist)
