"""generate.py end to end on the embedded tiny checkpoints: real files written and read back."""
import os
import shutil

import numpy as np
import pytest

import generate
from conftest import ROOT
from wan.configs import get_task
from wan.utils.media import read_video

TINY = os.path.join(ROOT, "examples", "tiny")


def run(argv):
    return generate.main(argv)


def test_t2v_writes_mp4_with_right_frames_size_fps(tmp_path):
    out = tmp_path / "t2v.mp4"
    assert run(["--task", "t2v-A14B", "--size", "96*64", "--frame_num", "5", "--sample_steps", "3",
                "--base_seed", "7", "--save_file", str(out)]) == 0
    frames, fps = read_video(str(out))
    assert frames.shape == (5, 64, 96, 3)
    assert fps == 16
    assert frames.std() > 0  # not a constant image
    assert [p.name for p in tmp_path.iterdir()] == ["t2v.mp4"]  # no temporary files left


def test_i2v_and_ti2v_with_image(tmp_path):
    out = tmp_path / "i2v.mp4"
    assert run(["--task", "i2v-A14B", "--size", "64*64", "--frame_num", "5", "--sample_steps", "2",
                "--image", os.path.join(ROOT, "examples", "i2v_input.png"), "--save_file", str(out)]) == 0
    frames, fps = read_video(str(out))
    # 64*64 area at the image's 4:3 aspect -> latent 6x8 patches-aligned -> 48x64 (H x W) pixels
    assert frames.shape == (5, 48, 64, 3) and fps == 16

    out = tmp_path / "ti2v.mp4"
    assert run(["--task", "ti2v-5B", "--size", "128*128", "--frame_num", "5", "--sample_steps", "2",
                "--image", os.path.join(ROOT, "examples", "i2v_input.png"), "--save_file", str(out)]) == 0
    frames, fps = read_video(str(out))
    assert frames.shape[0] == 5 and fps == 24
    assert frames.shape[1] % 32 == 0 and frames.shape[2] % 32 == 0 and frames.shape[2] > frames.shape[1]


def test_ti2v_text_only_and_single_frame_png(tmp_path):
    out = tmp_path / "ti2v.mp4"
    assert run(["--task", "ti2v-5B", "--size", "96*128", "--frame_num", "5", "--sample_steps", "2",
                "--save_file", str(out)]) == 0
    frames, fps = read_video(str(out))
    assert frames.shape == (5, 128, 96, 3) and fps == 24

    from PIL import Image
    png = tmp_path / "one.png"
    assert run(["--task", "ti2v-5B", "--size", "128*128", "--frame_num", "1", "--sample_steps", "2",
                "--save_file", str(png)]) == 0
    assert Image.open(png).size == (128, 128)


def test_prompt_file_writes_every_output(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n\na dog on a skateboard\nthe sea at night\n")
    out = tmp_path / "many.mp4"
    assert run(["--task", "t2v-A14B", "--frame_num", "5", "--sample_steps", "2", "--prompt_file", str(prompts),
                "--save_file", str(out)]) == 0
    written = sorted(p.name for p in tmp_path.glob("many_*.mp4"))
    assert written == ["many_000.mp4", "many_001.mp4", "many_002.mp4"]
    videos = [read_video(str(tmp_path / name))[0] for name in written]
    assert all(v.shape == (5, 64, 64, 3) for v in videos)
    assert not np.array_equal(videos[0], videos[1])  # different prompts, different videos


def _write_lora(folder, ckpt, rank=2, seed=0):
    """A Lightning-layout LoRA for the tiny experts: diffusion_model.<param>.lora_down/up.weight (+ alpha)."""
    from safetensors.numpy import save_file

    from wan.checkpoint import open_checkpoint

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for expert in ("high_noise_model", "low_noise_model"):
        reader = open_checkpoint(os.path.join(ckpt, expert))
        tensors = {}
        for key in ("blocks.0.self_attn.q.weight", "blocks.1.ffn.0.weight"):
            out_f, in_f = reader.shape(key)
            base = "diffusion_model." + key[: -len(".weight")]
            tensors[base + ".lora_down.weight"] = rng.standard_normal((rank, in_f)).astype(np.float32)
            tensors[base + ".lora_up.weight"] = rng.standard_normal((out_f, rank)).astype(np.float32)
            tensors[base + ".alpha"] = np.array(float(rank), np.float32)
        save_file(tensors, os.path.join(folder, f"{expert}.safetensors"))


def test_lora_dir_applies_lightning_defaults(tmp_path):
    # The merged result itself is checked in test_lora_generate.py (against a checkpoint merged by hand).
    lora = tmp_path / "lora"
    _write_lora(str(lora), os.path.join(TINY, "t2v-A14B"))
    args = generate.validate(generate.parse_args(["--task", "t2v-A14B", "--lora_dir", str(lora)]))
    assert (args.sample_solver, args.sample_steps, args.sample_shift, args.guide) == ("euler", 4, 5.0, (1.0, 1.0))
    args = generate.validate(generate.parse_args(["--task", "t2v-A14B", "--lora_dir", str(lora),
                                                  "--sample_steps", "6"]))
    assert args.sample_steps == 6 and args.sample_solver == "euler"  # user value kept, rest Lightning


# ---------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("argv, message", [
    (["--task", "t2v-5B"], "unknown task 't2v-5B'; supported tasks: t2v-A14B, i2v-A14B, ti2v-5B"),
    (["--task", "ti2v-5B", "--size", "1280*720"], "supported sizes: 128*128, 128*96, 96*128, 704*1280, 1280*704"),
    (["--frame_num", "6"], "--frame_num 6 is not 4n+1"),
    (["--sample_solver", "ddim"], "--sample_solver 'ddim' is unknown"),
    (["--task", "t2v-A14B", "--image", "examples/i2v_input.png"], "takes no --image"),
    (["--dit_zero3"], "need several devices"),
    (["--sample_guide_scale", "abc"], "--sample_guide_scale 'abc'"),
])
def test_bad_arguments_fail_before_loading(argv, message, capsys, tmp_path):
    assert generate.main(argv + ["--save_file", str(tmp_path / "x.mp4")]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_bad_files_fail_before_loading(tmp_path, capsys):
    i2v = os.path.join(TINY, "i2v-A14B")
    cases = [
        (["--task", "i2v-A14B", "--ckpt_dir", i2v], "i2v-A14B needs --image"),
        (["--task", "i2v-A14B", "--ckpt_dir", i2v, "--image", str(tmp_path / "none.png")], "does not exist"),
    ]
    bad_image = tmp_path / "bad.png"
    bad_image.write_bytes(b"not an image")
    cases.append((["--task", "i2v-A14B", "--ckpt_dir", i2v, "--image", str(bad_image)], "could not be read"))
    broken = tmp_path / "broken"
    shutil.copytree(os.path.join(TINY, "t2v-A14B"), broken)
    os.remove(broken / "Wan2.1_VAE.pth")
    cases.append((["--ckpt_dir", str(broken)], "missing: " + str(broken / "Wan2.1_VAE.pth")))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    cases.append((["--prompt_file", str(empty)], "has no prompts"))
    cases.append((["--save_file", str(tmp_path / "nowhere" / "x.mp4")], "does not exist; create it first"))
    cases.append((["--frame_num", "1", "--save_file", str(tmp_path / "x.mp4")], "give --save_file a .png name"))
    for argv, message in cases:
        before = sorted(os.listdir(tmp_path))
        assert generate.main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
        assert sorted(os.listdir(tmp_path)) == before
