"""LoRA merging against the official Lightning formula (expected values computed in torch by the fixture script)."""
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from wan.checkpoint import CheckpointError, load_into_cell, open_checkpoint
from wan.checkpoint.dtypes import float32_to_bf16_bits
from wan.checkpoint.lora import lightning_lora_file, merge_lora

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "checkpoint")
LOW = os.path.join(FIX, "a14b_tiny", "low_noise_model")
LORA = os.path.join(FIX, "lora")
EXPECTED = dict(np.load(os.path.join(LORA, "expected_merged.npz")))


def _base_state():
    with open_checkpoint(LOW) as ckpt:
        return {k: ckpt.read(k) for k in ckpt.keys()}


def _expected(fname):
    return {k.split("|", 1)[1]: v for k, v in EXPECTED.items() if k.startswith(fname + "|")}


def _tiny_model(**load_kwargs):
    from wan.modules.model import WanModel

    with nn.no_init_parameters():
        model = WanModel(**WanModel.config_from_file(os.path.join(LOW, "config.json")))
    load_into_cell(model, LOW, network="dit", **load_kwargs)
    return model


def _numpy_merge(base, lora_file, scale):
    """W + float32(scale * alpha / rank) * (up @ down), written independently of convert.lora."""
    out = {}
    with open_checkpoint(lora_file) as lora:
        for key in lora.keys():
            if key.endswith(".lora_down.weight"):
                stem = key[: -len(".lora_down.weight")]
                down, up = lora.read(key), lora.read(stem + ".lora_up.weight")
                alpha = float(lora.read(stem + ".alpha"))
                name = stem[len("diffusion_model."):] + ".weight"
                out[name] = base[name] + np.float32(scale * alpha / down.shape[0]) * (up @ down)
    return out


@pytest.mark.parametrize("fname", ["lightning/low_noise_model.safetensors", "diffusers.safetensors",
                                   "kohya.safetensors", "distill_style.safetensors"])
def test_key_forms_match_the_official_formula(fname):
    state = _base_state()
    changed = merge_lora(state, os.path.join(LORA, fname), scale=1.0)
    expected = _expected(fname)
    assert changed == sorted(expected)
    for name, want in expected.items():
        np.testing.assert_allclose(state[name], want, rtol=2e-6, atol=1e-7, err_msg=name)
    untouched = _base_state()
    for name in set(state) - set(expected):
        assert np.array_equal(state[name], untouched[name]), name


def test_merge_into_wan_model_is_exact_with_scale():
    base = _base_state()
    lora_file = lightning_lora_file(os.path.join(LORA, "lightning"), "low_noise_model")
    want = _numpy_merge(base, lora_file, scale=0.7)
    model = _tiny_model()
    changed = merge_lora(model, lora_file, scale=0.7)
    assert changed == sorted(want) and len(changed) == 20
    params = dict(model.parameters_and_names())
    for name in params:
        expected = want.get(name, base[name])
        assert params[name].asnumpy().tobytes() == expected.astype(np.float32).tobytes(), name


def test_merge_into_bf16_parameters_rounds_once():
    base = _base_state()
    lora_file = os.path.join(LORA, "lightning", "low_noise_model.safetensors")
    want = _numpy_merge(base, lora_file, scale=1.0)
    model = _tiny_model(dtype="bf16")
    merge_lora(model, lora_file)
    q = model.blocks[1].self_attn.q.weight
    assert q.dtype == ms.bfloat16
    assert np.array_equal(q.asnumpy().view(np.uint16), float32_to_bf16_bits(want["blocks.1.self_attn.q.weight"]))


def test_merge_into_zero3_shards_equals_rows_of_full_merge():
    lora_file = os.path.join(LORA, "lightning", "low_noise_model.safetensors")
    full = _tiny_model()
    merge_lora(full, lora_file, scale=0.5)
    full_params = dict(full.parameters_and_names())
    for rank in range(2):
        model = _tiny_model(shard=(rank, 2))
        merge_lora(model, lora_file, scale=0.5, shard=(rank, 2))
        w = model.blocks[0].ffn[0].weight
        rows = w.shape[0]
        assert rows == full_params["blocks.0.ffn.0.weight"].shape[0] // 2
        np.testing.assert_array_equal(w.asnumpy(), full_params["blocks.0.ffn.0.weight"].asnumpy()[rank * rows:
                                                                                                  (rank + 1) * rows])


def test_lora_for_another_dit_names_key_and_shapes():
    with pytest.raises(CheckpointError) as err:
        merge_lora(_base_state(), os.path.join(LORA, "other_dit.safetensors"))
    msg = str(err.value)
    assert "blocks.0.self_attn.q.lora_down.weight" in msg and "(4, 32)" in msg and "(24, 24)" in msg
    assert "other_dit.safetensors" in msg


def test_unknown_lora_keys_are_named():
    with pytest.raises(CheckpointError, match="lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"):
        merge_lora(_base_state(), os.path.join(LORA, "unet.safetensors"))


def test_half_a_pair_is_an_error(tmp_path):
    from wan.checkpoint.safetensors_io import write_safetensors

    path = str(tmp_path / "half.safetensors")
    down = np.ones((2, 24), np.float32)
    write_safetensors(path, [("diffusion_model.blocks.0.self_attn.q.lora_down.weight", "float32", (2, 24),
                              lambda: down)])
    with pytest.raises(CheckpointError, match="no matching lora_up"):
        merge_lora(_base_state(), path)


def test_lightning_folder_lookup():
    folder = os.path.join(LORA, "lightning")
    assert lightning_lora_file(folder, "high_noise_model").endswith("high_noise_model.safetensors")
    with pytest.raises(FileNotFoundError, match="middle_model.safetensors"):
        lightning_lora_file(folder, "middle_model")
