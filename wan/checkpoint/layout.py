"""Which networks live in which file of an official Wan2.2 release folder, and their converted names.

The only per-release knowledge of the checkpoint layer. A converted folder mirrors the official one:
each weight file becomes `<same stem>.safetensors` in MindSpore names and the chosen dtype (a DiT folder's
shards become one `mindspore_model.safetensors`), config.json and the tokenizer folder are copied, and
`convert_manifest.json` (written last) lists every file with its sha256.
"""
import glob
import os
from dataclasses import dataclass

from .errors import CheckpointError

T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
TOKENIZER_DIR = os.path.join("google", "umt5-xxl")
DIT_CONVERTED = "mindspore_model.safetensors"
MANIFEST = "convert_manifest.json"


@dataclass(frozen=True)
class Component:
    """One network's weights in a release: `source` relative to the folder ('.'-style folder for a DiT)."""
    network: str
    source: str
    dest: str
    copies: tuple = ()


def _dit(folder):
    return Component("dit", folder, os.path.join(folder, DIT_CONVERTED) if folder else DIT_CONVERTED,
                     copies=(os.path.join(folder, "config.json") if folder else "config.json",))


def _pth(network, name):
    return Component(network, name, os.path.splitext(name)[0] + ".safetensors")


LAYOUTS = {
    # Wan2.2-TI2V-5B: DiT shards at the top level, Wan2.2 VAE.
    "ti2v-5B": (_dit(""), _pth("t5", T5_FILE), _pth("vae2_2", "Wan2.2_VAE.pth")),
    # Wan2.2-T2V-A14B / Wan2.2-I2V-A14B: two experts, Wan2.1 VAE.
    "a14b": (_dit("high_noise_model"), _dit("low_noise_model"), _pth("t5", T5_FILE), _pth("vae2_1", "Wan2.1_VAE.pth")),
}


def _has_dit(folder):
    return os.path.isfile(os.path.join(folder, "config.json")) and bool(
        glob.glob(os.path.join(folder, "diffusion_pytorch_model*.safetensors")))


def detect_layout(src):
    """Name of the LAYOUTS entry `src` follows; CheckpointError saying what is missing otherwise."""
    if not os.path.isdir(src):
        raise FileNotFoundError(f"--src {src!r} is not a folder; pass the checkpoint folder as downloaded")
    if os.path.isdir(os.path.join(src, "high_noise_model")) or os.path.isdir(os.path.join(src, "low_noise_model")):
        name = "a14b"
    elif _has_dit(src):
        name = "ti2v-5B"
    else:
        raise CheckpointError(
            f"{src} is not a Wan2.2 checkpoint folder: expected either high_noise_model/ + low_noise_model/ "
            f"(T2V/I2V-A14B) or config.json + diffusion_pytorch_model*.safetensors (TI2V-5B); found "
            f"{sorted(os.listdir(src))[:20]}")
    problems = []
    for comp in LAYOUTS[name]:
        path = os.path.join(src, comp.source)
        if comp.network == "dit" and not _has_dit(path):
            problems.append(f"{comp.source or '.'}/ needs config.json and diffusion_pytorch_model*.safetensors")
        elif comp.network != "dit" and not os.path.isfile(path):
            problems.append(f"{comp.source} is missing")
    if not os.path.isdir(os.path.join(src, TOKENIZER_DIR)):
        problems.append(f"{TOKENIZER_DIR}/ (tokenizer) is missing")
    if problems:
        raise CheckpointError(f"{src} looks like a {name} checkpoint but is incomplete: " + "; ".join(problems) +
                              ". Download the complete folder.")
    return name


def weights_path(ckpt_dir, official_name):
    """The file to load for `official_name` in `ckpt_dir`: its converted .safetensors if present, else itself.

    official_name: e.g. "models_t5_umt5-xxl-enc-bf16.pth", "Wan2.1_VAE.pth".
    """
    converted = os.path.join(ckpt_dir, os.path.splitext(official_name)[0] + ".safetensors")
    if os.path.isfile(converted):
        return converted
    official = os.path.join(ckpt_dir, official_name)
    if os.path.isfile(official):
        return official
    raise FileNotFoundError(f"{ckpt_dir!r} has neither {official_name} nor its converted "
                            f"{os.path.basename(converted)}; is --ckpt_dir the Wan2.2 checkpoint folder?")
