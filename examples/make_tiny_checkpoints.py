"""Build the embedded tiny checkpoints (examples/tiny/<task>/) with the official PyTorch code.

Random weights in the exact on-disk layout of the official downloads, small enough to ship and to run on a CPU
in seconds. Their videos are noise: they prove an installation end to end, nothing more. Each folder carries
``wan_tiny.json`` saying so, with the small sizes it supports.

Run in a separate environment with torch and the official release (the project itself never imports torch):

    ref/bin/pip install torch==2.13.0 "numpy<2" safetensors diffusers easydict ftfy transformers
    ref/bin/pip install --no-deps wan22
    ref/bin/python examples/make_tiny_checkpoints.py
"""
import json
import os
import shutil
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures"))
from official import import_official  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "tiny")
TOKENIZER = os.path.join(ROOT, "tests", "fixtures", "t5", "tokenizer")  # made by tests/fixtures/tiny_tokenizer.py

T5 = dict(vocab=512, dim=32, dim_attn=32, dim_ffn=64, num_heads=4, num_layers=2, num_buckets=32,
          shared_pos=False, dropout=0.0)
DIT = dict(dim=32, ffn_dim=64, num_heads=2, num_layers=2, freq_dim=256, text_len=512, text_dim=T5["dim"],
           eps=1e-6)
VAE21 = dict(dim=4, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
             temperal_downsample=[False, True, True], dropout=0.0)
VAE22 = dict(dim=4, dec_dim=4, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
             temperal_downsample=[False, True, True], dropout=0.0)
TASKS = {
    "t2v-A14B": dict(dit=dict(model_type="t2v", in_dim=16, out_dim=16), experts=True, vae="2.1",
                     sizes=["64*64", "96*64", "64*96"]),
    "i2v-A14B": dict(dit=dict(model_type="i2v", in_dim=36, out_dim=16), experts=True, vae="2.1",
                     sizes=["64*64", "96*64", "64*96"]),
    "ti2v-5B": dict(dit=dict(model_type="ti2v", in_dim=48, out_dim=48), experts=False, vae="2.2",
                    sizes=["128*128", "128*96", "96*128"]),
}
NOTE = ("TINY RANDOM CHECKPOINT for smoke tests: random weights in the official Wan2.2 on-disk layout. "
        "Generated videos are noise; they prove the installation works end to end, nothing about quality.")


def official_modules():
    """The official model files (attention is never called here: nothing runs forward)."""
    return import_official("model", "tokenizers", "t5", "vae2_1", "vae2_2")


def randomize(module, gen, scale=0.5):
    """Every parameter random (the official init zeroes the DiT head, which would make outputs constant)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim <= 1 or "norm" in name or "gamma" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen) if "weight" in name or "gamma" in name
                        else 0.1 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p[0].numel()
                p.copy_(scale * torch.randn(p.shape, generator=gen) / fan_in ** 0.5)


def save_dit(mods, folder, config, gen):
    model = mods["model"].WanModel(**config)
    randomize(model, gen)
    os.makedirs(folder, exist_ok=True)
    state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(folder, "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"_class_name": "WanModel", "_diffusers_version": "0.33.0", **config}, f, indent=2, sort_keys=True)


def main():
    torch.manual_seed(0)
    mods = official_modules()
    gen = torch.Generator().manual_seed(2025)
    t5 = mods["t5"].T5Encoder(**T5)
    randomize(t5, gen)
    t5_state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in t5.state_dict().items()}
    vaes = {}
    for version, cfg, module in (("2.1", VAE21, mods["vae2_1"]), ("2.2", VAE22, mods["vae2_2"])):
        vae = module.WanVAE_(**cfg)
        randomize(vae, gen, scale=1.0)
        vaes[version] = {k: v.detach().float().contiguous() for k, v in vae.state_dict().items()}

    shutil.rmtree(OUT, ignore_errors=True)
    for task, spec in TASKS.items():
        folder = os.path.join(OUT, task)
        os.makedirs(folder)
        torch.save(t5_state, os.path.join(folder, "models_t5_umt5-xxl-enc-bf16.pth"))
        vae_name = "Wan2.1_VAE.pth" if spec["vae"] == "2.1" else "Wan2.2_VAE.pth"
        torch.save(vaes[spec["vae"]], os.path.join(folder, vae_name))
        shutil.copytree(TOKENIZER, os.path.join(folder, "google", "umt5-xxl"))
        config = {**DIT, **spec["dit"]}
        if spec["experts"]:
            for expert in ("high_noise_model", "low_noise_model"):
                save_dit(mods, os.path.join(folder, expert), config, gen)
        else:
            save_dit(mods, folder, config, gen)
        with open(os.path.join(folder, "wan_tiny.json"), "w") as f:
            json.dump({"note": NOTE, "sizes": spec["sizes"], "frame_num": 9}, f, indent=2)
        size = sum(os.path.getsize(os.path.join(d, n)) for d, _, files in os.walk(folder) for n in files)
        print(f"{task}: {folder} ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
