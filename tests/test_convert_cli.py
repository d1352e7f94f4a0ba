"""python -m convert on tiny folders in the official layouts (written by the official modules + torch/diffusers)."""
import json
import os
import shutil

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

import convert.cli as cli
from wan.checkpoint import CheckpointError, get_keymap, load_into_cell, open_checkpoint
from wan.checkpoint.layout import MANIFEST, weights_path

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "checkpoint")
TI2V = os.path.join(FIX, "ti2v_tiny")
A14B = os.path.join(FIX, "a14b_tiny")
TINY = json.load(open(os.path.join(FIX, "tiny_configs.json")))


def _bits(a):
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8).tobytes()


def _files(folder):
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            path = os.path.join(root, f)
            out[os.path.relpath(path, folder)] = open(path, "rb").read()
    return out


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    base = tmp_path_factory.mktemp("conv")
    out = {}
    for name, src in [("ti2v", TI2V), ("a14b", A14B)]:
        for dtype in ("bf16", "fp32"):
            dst = str(base / f"{name}-{dtype}")
            assert cli.main(["--src", src, "--dst", dst, "--dtype", dtype, "--no_progress"]) == 0
            out[name, dtype] = dst
    return out


def test_outputs_layout_and_manifest(converted):
    files = sorted(_files(converted["a14b", "bf16"]))
    assert files == sorted([MANIFEST, "Wan2.1_VAE.safetensors", "models_t5_umt5-xxl-enc-bf16.safetensors",
                            "google/umt5-xxl/special_tokens_map.json", "google/umt5-xxl/tokenizer_config.json",
                            "high_noise_model/config.json", "high_noise_model/mindspore_model.safetensors",
                            "low_noise_model/config.json", "low_noise_model/mindspore_model.safetensors"])
    files = sorted(_files(converted["ti2v", "bf16"]))
    assert "mindspore_model.safetensors" in files and "Wan2.2_VAE.safetensors" in files and "config.json" in files
    assert cli.verify_converted(converted["ti2v", "bf16"])["layout"] == "ti2v-5B"
    assert open(os.path.join(converted["a14b", "bf16"], "high_noise_model", "config.json")).read() == \
        open(os.path.join(A14B, "high_noise_model", "config.json")).read()


def test_converting_twice_gives_identical_bytes(converted, tmp_path):
    again = str(tmp_path / "again")
    cli.convert_checkpoint(A14B, again, "bf16", progress=False)
    assert _files(again) == _files(converted["a14b", "bf16"])


@pytest.mark.parametrize("layout,official,network", [
    ("a14b", "high_noise_model", "dit"), ("a14b", "low_noise_model", "dit"), ("ti2v", "", "dit"),
    ("a14b", "models_t5_umt5-xxl-enc-bf16.pth", "t5"), ("a14b", "Wan2.1_VAE.pth", "vae2_1"),
    ("ti2v", "Wan2.2_VAE.pth", "vae2_2")])
def test_round_trip_is_bit_identical(converted, layout, official, network):
    src = TI2V if layout == "ti2v" else A14B
    keymap = get_keymap(network)
    with open_checkpoint(os.path.join(src, official) if official else src) as ref:
        for dtype in ("bf16", "fp32"):
            folder = converted[layout, dtype]
            path = weights_path(folder, official) if official.endswith(".pth") else \
                os.path.join(folder, official, "mindspore_model.safetensors")
            loaded = ms.load_checkpoint(path, format="safetensors")  # MindSpore's own reader
            assert sorted(loaded) == sorted(ref.keys())
            want_dtype = ("bfloat16" if dtype == "bf16" else "float32") if not network.startswith("vae") \
                else "float32"
            for key in ref.keys():
                param = loaded[key]
                expect = keymap.param_dtype(key, want_dtype)
                assert str(param.dtype).lower() == expect, key
                got = param.asnumpy()
                if expect == "bfloat16":
                    assert ref.dtype(key) == "bfloat16"
                    assert _bits(got.view(np.uint16)) == _bits(ref.read(key, raw=True)), key
                else:
                    assert _bits(got) == _bits(ref.read(key).astype(np.float32)), key


def _tiny_wan_model(folder):
    from wan.modules.model import WanModel

    with nn.no_init_parameters():
        return WanModel(**WanModel.config_from_file(os.path.join(folder, "config.json")))


def test_mindspore_strict_load_of_converted_dit(converted):
    # fp32 conversion -> fp32 WanModel, strict name/shape/dtype checks by MindSpore itself.
    model = _tiny_wan_model(TI2V)
    params = ms.load_checkpoint(os.path.join(converted["ti2v", "fp32"], "mindspore_model.safetensors"),
                                format="safetensors")
    assert ms.load_param_into_net(model, params, strict_load=True) == ([], [])
    # bf16 conversion -> the same model with bf16 parameters (modulation stays float32).
    model = _tiny_wan_model(os.path.join(A14B, "low_noise_model"))
    for name, p in model.parameters_and_names():
        if not name.endswith("modulation"):
            p.set_dtype(ms.bfloat16)
    params = ms.load_checkpoint(os.path.join(converted["a14b", "bf16"], "low_noise_model",
                                             "mindspore_model.safetensors"), format="safetensors")
    assert ms.load_param_into_net(model, params, strict_load=True) == ([], [])
    with open_checkpoint(os.path.join(A14B, "low_noise_model")) as ref:
        assert _bits(model.blocks[1].ffn[2].weight.asnumpy().view(np.uint16)) == \
            _bits(ref.read("blocks.1.ffn.2.weight", raw=True))


@pytest.mark.parametrize("layout,sub", [("a14b", "high_noise_model"), ("ti2v", "")])
def test_from_pretrained_reads_a_converted_dit(converted, layout, sub):
    # In TI2V-5B the DiT shares the top folder with the converted T5/VAE .safetensors files.
    from wan.modules.model import WanModel

    model = WanModel.from_pretrained(os.path.join(converted[layout, "bf16"], sub))
    with open_checkpoint(os.path.join(A14B if layout == "a14b" else TI2V, sub)) as ref:
        for name, p in model.parameters_and_names():
            assert _bits(p.asnumpy()) == _bits(ref.read(name)), name


def test_converted_t5_and_vae_load_strictly_into_our_cells(converted):
    from wan.modules.t5 import T5Encoder
    from wan.modules.vae2_1 import WanVAE_

    t5 = T5Encoder(**TINY["t5"])
    load_into_cell(t5, weights_path(converted["a14b", "fp32"], "models_t5_umt5-xxl-enc-bf16.pth"), network="t5")
    vae = WanVAE_(**TINY["vae2_1"])
    params = ms.load_checkpoint(weights_path(converted["a14b", "fp32"], "Wan2.1_VAE.pth"), format="safetensors")
    assert ms.load_param_into_net(vae, params, strict_load=True) == ([], [])
    with open_checkpoint(os.path.join(A14B, "Wan2.1_VAE.pth")) as ref:
        for name, p in vae.parameters_and_names():
            assert _bits(p.asnumpy()) == _bits(ref.read(name)), name


# ---- bad input ------------------------------------------------------------------------------------------------

def test_not_a_wan_folder(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "readme.txt").write_text("hi")
    assert cli.main(["--src", str(tmp_path / "src"), "--dst", str(tmp_path / "dst")]) == 2
    assert "not a Wan2.2 checkpoint folder" in capsys.readouterr().err


def test_incomplete_folder_names_what_is_missing(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(A14B, src)
    os.remove(src / "Wan2.1_VAE.pth")
    with pytest.raises(CheckpointError, match="Wan2.1_VAE.pth is missing"):
        cli.convert_checkpoint(str(src), str(tmp_path / "dst"), progress=False)


def test_missing_shard_fails_before_writing(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(TI2V, src)
    os.remove(src / "diffusion_pytorch_model-00003-of-00006.safetensors")
    with pytest.raises(CheckpointError, match="diffusion_pytorch_model-00003-of-00006.safetensors"):
        cli.convert_checkpoint(str(src), str(tmp_path / "dst"), progress=False)
    assert not os.path.exists(tmp_path / "dst") or os.listdir(tmp_path / "dst") == []


def test_corrupted_pth_in_source_is_named(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(TI2V, src)
    data = (src / "Wan2.2_VAE.pth").read_bytes()
    (src / "Wan2.2_VAE.pth").write_bytes(data[: len(data) - 300])
    with pytest.raises(CheckpointError, match="Wan2.2_VAE.pth"):
        cli.convert_checkpoint(str(src), str(tmp_path / "dst"), progress=False)


def test_interrupted_conversion_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    dst = tmp_path / "dst"
    calls = {"n": 0}
    real = cli.read_param

    def dying(reader, key, dtype, rows=None):
        calls["n"] += 1
        if calls["n"] == 100:  # inside the second expert (69 tensors each)
            raise KeyboardInterrupt
        return real(reader, key, dtype, rows)

    monkeypatch.setattr(cli, "read_param", dying)
    with pytest.raises(KeyboardInterrupt):
        cli.convert_checkpoint(A14B, str(dst), progress=False)
    files = _files(dst)
    assert MANIFEST not in files
    assert "low_noise_model/mindspore_model.safetensors" not in files  # the file being written
    assert not any(".tmp." in f for f in files)
    with pytest.raises(CheckpointError, match="did not finish"):
        cli.verify_converted(str(dst))
    # A SIGKILL leaves the temp file behind: the next run removes it and completes.
    (dst / "low_noise_model").mkdir(exist_ok=True)
    (dst / "low_noise_model" / "mindspore_model.safetensors.tmp.12345").write_bytes(b"half")
    monkeypatch.setattr(cli, "read_param", real)
    with pytest.raises(ValueError, match="--overwrite"):
        cli.convert_checkpoint(A14B, str(dst), progress=False)
    cli.convert_checkpoint(A14B, str(dst), progress=False, overwrite=True)
    assert not any(".tmp." in f for f in _files(dst))
    cli.verify_converted(str(dst))


def test_verify_detects_a_corrupted_output(converted, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(converted["ti2v", "bf16"], dst)
    path = dst / "mindspore_model.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0x01
    path.write_bytes(bytes(raw))
    assert cli.main(["--verify", str(dst)]) == 2
    with pytest.raises(CheckpointError, match="mindspore_model.safetensors"):
        cli.verify_converted(str(dst))


def test_weights_path_prefers_converted(converted):
    assert weights_path(converted["a14b", "bf16"], "Wan2.1_VAE.pth").endswith("Wan2.1_VAE.safetensors")
    assert weights_path(A14B, "Wan2.1_VAE.pth").endswith("Wan2.1_VAE.pth")
    with pytest.raises(FileNotFoundError, match="Wan2.2_VAE.pth"):
        weights_path(A14B, "Wan2.2_VAE.pth")


def _pipeline_params(ckpt_dir):
    from wan.configs import get_task
    from wan.pipeline import WanPipeline

    pipe = WanPipeline(get_task("t2v-A14B"), ckpt_dir)
    cells = {"t5": pipe.text_encoder.model, "vae": pipe.vae.model}
    cells.update({role: expert.model for role, expert in pipe.experts.items()})
    return {f"{c}/{n}": (str(p.dtype), _bits(p.asnumpy())) for c, cell in cells.items()
            for n, p in cell.parameters_and_names()}


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_generate_pipeline_loads_a_converted_folder_identically(tmp_path, dtype):
    """The generate.py pipeline built from a converted folder holds the same parameters as from the official one
    (fp32 CPU run: bf16-converted weights widen back exactly, as the official bf16 files do)."""
    src = os.path.join(os.path.dirname(__file__), "..", "examples", "tiny", "t2v-A14B")
    dst = str(tmp_path / "ms")
    cli.convert_checkpoint(src, dst, dtype, progress=False)
    assert os.path.isfile(os.path.join(dst, "wan_tiny.json"))  # small extras travel along
    official, converted = _pipeline_params(src), _pipeline_params(dst)
    assert len(official) > 100 and official.keys() == converted.keys()
    with open_checkpoint(os.path.join(src, "low_noise_model")) as ref:
        all_bf16 = all(ref.dtype(k) == "bfloat16" for k in ref.keys())
    differing = [k for k in official if official[k] != converted[k]]
    if dtype == "fp32" or all_bf16:
        assert differing == []
    else:  # fp32 sources narrowed to bf16 by the conversion: only DiT/T5 may differ, never the VAE
        assert not any(k.startswith("vae/") for k in differing)
