"""S2V audio front end against Hugging Face transformers and the official AudioEncoder.

Fixtures: tests/fixtures/make_s2v_audio_fixtures.py (transformers 4.57.1 Wav2Vec2ForCTC, librosa 0.11 and the
official wan22 2.2.11 audio_encoder.py, run in the reference environment).
"""
import os
import shutil
import subprocess

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from conftest import FIXTURES
from wan.checkpoint import CheckpointError, open_checkpoint
from wan.modules.s2v import AudioEncoder, Wav2Vec2ForCTC
from wan.utils.audio import load_audio

DIR = os.path.join(FIXTURES, "s2v_audio")
AUDIO = ["chirp_16k.wav", "chirp_22k_stereo.flac", "chirp_44k.mp3"]
# float32 tolerance: the largest error measured was 5e-6 on hidden states of magnitude ~1-10.
ATOL, RTOL = 3e-5, 1e-4


def _npz(name):
    return np.load(os.path.join(DIR, name))


@pytest.fixture(scope="module")
def encoder():
    return AudioEncoder(model_id=os.path.join(DIR, "wav2vec2_tiny"))


@pytest.mark.parametrize("folder,tag", [("wav2vec2_tiny", "xlsr"), ("wav2vec2_tiny_bin", "xlsr"),
                                        ("wav2vec2_tiny_base", "base")])
def test_wav2vec2_matches_transformers(folder, tag):
    hf = _npz("hf.npz")
    model = Wav2Vec2ForCTC.from_pretrained(os.path.join(DIR, folder))
    states = model(Tensor(hf["input_values"]))
    got = np.concatenate([s.asnumpy() for s in states])
    want = hf[f"{tag}_hidden"]
    assert got.shape == want.shape  # num_hidden_layers + 1 states, 50 frames/s
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    logits = model.ctc_logits(states[-1]).asnumpy()[0]
    np.testing.assert_allclose(logits, hf[f"{tag}_logits"], rtol=RTOL, atol=ATOL)


def test_weights_files_cover_both_weight_norm_spellings():
    """The release spelling (weight_g/v in model.safetensors) and torch's (parametrizations.* in a .bin)."""
    with open_checkpoint(os.path.join(DIR, "wav2vec2_tiny", "model.safetensors")) as r:
        keys = set(r.keys())
    assert "wav2vec2.encoder.pos_conv_embed.conv.weight_g" in keys and "wav2vec2.masked_spec_embed" in keys
    with open_checkpoint(os.path.join(DIR, "wav2vec2_tiny_bin", "pytorch_model.bin")) as r:
        keys = set(r.keys())
    assert "wav2vec2.encoder.pos_conv_embed.conv.parametrizations.weight.original0" in keys


@pytest.mark.parametrize("name", AUDIO)
def test_load_audio_equals_librosa(name):
    """16 kHz mono samples equal librosa.load(path, sr=16000): same decoder, same channel mix, same soxr HQ."""
    want = _npz("official.npz")[f"{name.split('.')[0]}_samples"]
    got = load_audio(os.path.join(DIR, name))
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", AUDIO)
def test_extract_audio_feat_matches_official(encoder, name):
    official = _npz("official.npz")
    key = name.split(".")[0]
    path = os.path.join(DIR, name)
    every = encoder.extract_audio_feat(path, return_all_layers=True)
    last = encoder.extract_audio_feat(path)
    assert every.dtype == ms.float32 and every.shape == official[f"{key}_all"].shape
    assert last.shape == official[f"{key}_last"].shape
    np.testing.assert_allclose(every.asnumpy(), official[f"{key}_all"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(last.asnumpy(), official[f"{key}_last"], rtol=RTOL, atol=ATOL)
    half = encoder.extract_audio_feat(path, dtype=ms.float16)
    assert half.dtype == ms.float16 and half.shape == last.shape


def _bucket_inputs():
    official = _npz("official.npz")
    buckets = _npz("buckets.npz")
    every = official["chirp_16k_all"]
    long = buckets["long_input"]
    return {"chirp16k": every, "chirp16klast": every[-1:], "long": long, "longlast": long[:1]}


@pytest.mark.parametrize("as_tensor", [False, True])
def test_bucket_fps_equals_official(encoder, as_tensor):
    buckets = _npz("buckets.npz")
    cases = [k for k in buckets.files if k.startswith("fps_") and not k.endswith("_n")]
    assert len(cases) == 20
    for tag, z in _bucket_inputs().items():
        for key in (k for k in cases if k.split("_")[1] == tag):
            fps, frames, m = (int(v) for v in key.split("_")[2:])
            out, n = encoder.get_audio_embed_bucket_fps(Tensor(z) if as_tensor else z, fps=fps,
                                                        batch_frames=frames, m=m)
            out = out.asnumpy() if as_tensor else out
            assert n == int(buckets[key + "_n"]), key
            assert out.shape == buckets[key].shape, key
            np.testing.assert_array_equal(out, buckets[key], err_msg=key)


def test_bucket_stride_equals_official(encoder):
    buckets = _npz("buckets.npz")
    cases = [k for k in buckets.files if k.startswith("stride_") and not k.endswith("_n")]
    assert len(cases) == 12
    for tag, z in _bucket_inputs().items():
        for key in (k for k in cases if k.split("_")[1] == tag):
            stride, frames, m = (int(v) for v in key.split("_")[2:])
            out, n = encoder.get_audio_embed_bucket(Tensor(z), stride=stride, batch_frames=frames, m=m)
            assert n == int(buckets[key + "_n"]), key
            np.testing.assert_array_equal(out.asnumpy(), buckets[key], err_msg=key)


def test_ffmpeg_fallback_decodes_other_containers(tmp_path):
    """ALAC in .m4a (lossless, not a libsndfile format) decodes through ffmpeg to librosa's samples of the wav."""
    import imageio_ffmpeg

    m4a = str(tmp_path / "chirp.m4a")
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-i",
                    os.path.join(DIR, "chirp_16k.wav"), "-c:a", "alac", m4a], check=True, timeout=60)
    np.testing.assert_array_equal(load_audio(m4a), _npz("official.npz")["chirp_16k_samples"])


def test_bad_audio_is_a_value_error(encoder, tmp_path):
    import soundfile as sf

    with pytest.raises(ValueError, match="does not exist"):
        load_audio(str(tmp_path / "missing.wav"))
    junk = tmp_path / "junk.wav"
    junk.write_text("not audio at all")
    with pytest.raises(ValueError, match="could not be decoded"):
        load_audio(str(junk))
    empty = str(tmp_path / "empty.wav")
    sf.write(empty, np.zeros(0, np.float32), 16000, subtype="PCM_16")
    with pytest.raises(ValueError, match="no samples"):
        load_audio(empty)
    silent = str(tmp_path / "silent.wav")
    sf.write(silent, np.zeros((8000, 2), np.float32), 44100, subtype="PCM_16")
    with pytest.raises(ValueError, match="silent"):
        encoder.extract_audio_feat(silent)
    short = str(tmp_path / "short.wav")
    sf.write(short, 0.5 * np.sin(np.arange(300) / 3.0).astype(np.float32), 16000, subtype="PCM_16")
    with pytest.raises(ValueError, match="too short"):
        encoder.extract_audio_feat(short)


def test_bad_folder(tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        AudioEncoder(model_id=str(tmp_path / "nowhere"))
    folder = tmp_path / "w2v"
    shutil.copytree(os.path.join(DIR, "wav2vec2_tiny"), folder)
    os.remove(folder / "model.safetensors")
    with pytest.raises(ValueError, match="model.safetensors"):
        AudioEncoder(model_id=str(folder))
    # A config that does not belong to the weights: every mis-shaped tensor is named.
    shutil.copy(os.path.join(DIR, "wav2vec2_tiny_base", "model.safetensors"), folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="shape"):
        AudioEncoder(model_id=str(folder))


def test_real_size_names_and_shapes_match_transformers():
    """Every tensor of the real wav2vec2-large-xlsr-53 (424, 315.5 M parameters) lands on a parameter of ours of
    the same shape, and nothing is left over (manifest built by transformers on torch's meta device)."""
    import json

    from mindspore import nn

    from wan.checkpoint import get_keymap
    from wan.modules.s2v.wav2vec2 import Wav2Vec2Config

    with open(os.path.join(DIR, "large_xlsr_manifest.json")) as f:
        manifest = json.load(f)
    config = Wav2Vec2Config.from_dict(manifest["config"])
    with nn.no_init_parameters():
        model = Wav2Vec2ForCTC(config)
    ours = {name: tuple(p.shape) for name, p in model.parameters_and_names()}
    mapped = get_keymap("wav2vec2").map_keys(manifest["tensors"])
    assert len(manifest["tensors"]) == 424 and len(mapped) == 423  # masked_spec_embed is training-only
    assert sorted(mapped) == sorted(ours)
    for name, key in mapped.items():
        assert tuple(manifest["tensors"][key]) == ours[name], name
    assert sum(int(np.prod(s)) for s in ours.values()) == 315472545 - 1024
    assert config.receptive_field == 400 and config.num_frames(16000 * 60) == 2999
