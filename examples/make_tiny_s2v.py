"""Build the embedded tiny speech-to-video checkpoint (examples/tiny/s2v-14B/) with the official PyTorch code,
plus the example speech clip (examples/talk.wav).

Random weights in the on-disk layout of the official Wan2.2-S2V-14B download: the DiT (config.json + sharded
safetensors + index, made by the official ``WanModel_S2V.save_pretrained``), the tiny umT5 and Wan2.1 VAE of the
other tiny tasks (copied from examples/tiny/i2v-A14B), and a tiny ``wav2vec2-large-xlsr-53-english`` folder made by
transformers' ``Wav2Vec2ForCTC`` with the release's 24 layers (the DiT's audio encoder weighs 25 hidden states)
at width 32. The videos are noise; they prove the installation end to end. The DiT config also records
``text_dim`` (the official ``ignore_for_config`` never writes it; every release uses 4096, the tiny T5 is 32 wide).

Run in the reference environment (torch, transformers, diffusers, the official wan22), from any folder:
    /work/torchenv/bin/python examples/make_tiny_s2v.py
"""
import json
import os
import shutil
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
sys.path.insert(0, FIXTURES)
OUT = os.path.join(HERE, "tiny", "s2v-14B")
SOURCE = os.path.join(HERE, "tiny", "i2v-A14B")  # the shared tiny T5, tokenizer and Wan2.1 VAE
AUDIO = os.path.join(HERE, "talk.wav")

DIT = dict(cond_dim=16, audio_dim=32, num_audio_token=4, enable_adain=True, adain_mode="attn_norm",
           audio_inject_layers=[0, 1], zero_init=True, zero_timestep=True, enable_motioner=False,
           add_last_motion=True, enable_framepack=True, framepack_drop_mode="padd", text_len=512, in_dim=16,
           dim=32, ffn_dim=64, freq_dim=256, text_dim=32, out_dim=16, num_heads=2, num_layers=2, eps=1e-6)
NOTE = ("TINY RANDOM CHECKPOINT for smoke tests: random weights in the official Wan2.2-S2V-14B on-disk layout. "
        "Generated videos are noise; they prove the installation works end to end, nothing about quality.")


def main():
    from make_s2v_audio_fixtures import XLSR_TINY, build, chirp, write_folder
    from make_s2v_model_fixtures import load_official, randomize

    import soundfile as sf

    official = load_official()
    gen = torch.Generator().manual_seed(2026)
    model = official.WanModel_S2V(**DIT).eval()
    randomize(model, gen)
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    model.to(torch.bfloat16).save_pretrained(OUT, safe_serialization=True, max_shard_size="80KB")  # bf16 as released
    with open(os.path.join(OUT, "config.json")) as f:
        config = json.load(f)
    config["text_dim"] = DIT["text_dim"]
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    for name in ("models_t5_umt5-xxl-enc-bf16.pth", "Wan2.1_VAE.pth"):
        shutil.copy(os.path.join(SOURCE, name), os.path.join(OUT, name))
    shutil.copytree(os.path.join(SOURCE, "google"), os.path.join(OUT, "google"))
    wav2vec = build(dict(XLSR_TINY, num_hidden_layers=24, num_attention_heads=2), 7)
    write_folder(os.path.join(OUT, "wav2vec2-large-xlsr-53-english"), wav2vec)
    with open(os.path.join(OUT, "wan_tiny.json"), "w") as f:
        json.dump({"note": NOTE, "sizes": ["64*64", "96*64", "64*96"], "infer_frames": 12}, f, indent=2)
    # 1.6 s of a speech-band chirp with a syllable envelope: 2 clips of 12 frames at 16 fps.
    sf.write(AUDIO, chirp(1.6, 16000, seed=5).astype(np.float32), 16000, subtype="PCM_16")
    size = sum(os.path.getsize(os.path.join(d, n)) for d, _, files in os.walk(OUT) for n in files)
    print(f"s2v-14B: {OUT} ({size / 1024:.0f} KiB), {AUDIO}")


if __name__ == "__main__":
    main()
