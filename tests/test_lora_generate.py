"""generate.py --lora_dir / --lora_scale end to end: the video equals the one made from a checkpoint merged by
hand (W + scale * alpha / rank * up @ down, float64 here, stored in float32), and a merge that drops alpha or the
scale gives a clearly different video, so the comparison can tell a right merge from a wrong one."""
import os
import shutil

import numpy as np
from PIL import Image
from safetensors.numpy import save_file

import generate
from conftest import ROOT
from wan.checkpoint import open_checkpoint

TINY = os.path.join(ROOT, "examples", "tiny", "t2v-A14B")
EXPERTS = ("high_noise_model", "low_noise_model")
RANK, ALPHA, SCALE = 2, 1.0, 0.7  # alpha != rank and scale != 1: both must be applied


def _write_lora(folder):
    """Lightning layout: diffusion_model.<param>.lora_down/up.weight + alpha, for every attention/FFN weight
    of both experts. Returns {expert: {param: (down, up)}}."""
    rng = np.random.default_rng(5)
    os.makedirs(folder)
    pairs = {}
    for expert in EXPERTS:
        tensors, pairs[expert] = {}, {}
        with open_checkpoint(os.path.join(TINY, expert)) as reader:
            for key in reader.keys():
                if key.startswith("blocks.") and key.endswith(".weight") and len(reader.shape(key)) == 2 and \
                        (".self_attn." in key or ".cross_attn." in key or ".ffn." in key):
                    out_f, in_f = reader.shape(key)
                    down = rng.normal(0, 0.5, (RANK, in_f)).astype(np.float32)
                    up = rng.normal(0, 0.5, (out_f, RANK)).astype(np.float32)
                    stem = "diffusion_model." + key[: -len(".weight")]
                    tensors[stem + ".lora_down.weight"], tensors[stem + ".lora_up.weight"] = down, up
                    tensors[stem + ".alpha"] = np.array(ALPHA, np.float32)
                    pairs[expert][key] = (down, up)
        save_file(tensors, os.path.join(folder, f"{expert}.safetensors"))
    return pairs


def _merged_checkpoint(folder, pairs, factor):
    """A copy of the tiny checkpoint whose experts hold W + factor * up @ down (float64, stored float32)."""
    shutil.copytree(TINY, folder)
    for expert in EXPERTS:
        path = os.path.join(folder, expert)
        with open_checkpoint(path) as reader:
            state = {k: reader.read(k).astype(np.float32) for k in reader.keys()}
        for key, (down, up) in pairs[expert].items():
            state[key] = (state[key].astype(np.float64) + factor * (up.astype(np.float64) @ down)).astype(np.float32)
        for f in os.listdir(path):
            if f.startswith("diffusion_pytorch_model"):
                os.remove(os.path.join(path, f))
        save_file(state, os.path.join(path, "diffusion_pytorch_model.safetensors"))
    return folder


def test_generate_with_lora_equals_the_hand_merged_checkpoint(tmp_path):
    pairs = _write_lora(str(tmp_path / "lora"))
    # --frame_num 1 writes a PNG: lossless, so the comparison sees the model's output, not the mp4 encoder
    common = ["--task", "t2v-A14B", "--size", "64*64", "--frame_num", "1", "--base_seed", "3",
              "--sample_solver", "euler", "--sample_steps", "4", "--sample_shift", "5", "--sample_guide_scale", "1.0"]

    def video(name, *flags):
        out = str(tmp_path / f"{name}.png")
        assert generate.main(common + list(flags) + ["--save_file", out]) == 0
        return np.asarray(Image.open(out).convert("RGB"), np.int16)

    lora = video("lora", "--lora_dir", str(tmp_path / "lora"), "--lora_scale", str(SCALE))
    merged = video("merged", "--ckpt_dir", _merged_checkpoint(str(tmp_path / "merged"), pairs, SCALE * ALPHA / RANK))
    no_alpha = video("no_alpha", "--ckpt_dir", _merged_checkpoint(str(tmp_path / "no_alpha"), pairs, SCALE))
    base = video("base")
    assert lora.shape == merged.shape == (64, 64, 3)
    right = np.abs(lora - merged)
    # float32 vs float64 merge (~1e-6 apart in [-1, 1]): a pixel may round to the neighbouring code value
    assert right.max() <= 1 and right.mean() < 0.01, (right.max(), right.mean())
    for wrong in (no_alpha, base):  # a merge without alpha, or no merge at all, is far away
        assert np.abs(lora - wrong).mean() > 2.0, np.abs(lora - wrong).mean()
