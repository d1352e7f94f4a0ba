"""The official precision rules for the DiT: --convert_model_dtype rounding and the LoRA merge order.

Official numbers: tests/fixtures/precision/dit_bf16.npz (the official WanModel after ``model.to(bf16)``; see
tests/fixtures/make_precision_fixtures.py).
"""
import os
import shutil

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor
from safetensors.numpy import save_file

from conftest import FIXTURES, ROOT
from wan.checkpoint import load_into_cell, open_checkpoint
from wan.checkpoint.dtypes import bf16_bits_to_float32, float32_to_bf16_bits
from wan.checkpoint.lora import LoraDeltas
from wan.modules import kernels
from wan.modules.model import WanModel

DIT = os.path.join(FIXTURES, "dit", "t2v")
OFFICIAL_BF16 = np.load(os.path.join(FIXTURES, "precision", "dit_bf16.npz"))


@pytest.fixture(autouse=True)
def reference_backend():
    kernels.set_backend("reference")
    yield
    kernels.set_backend(None)


def _values(param):
    return param.astype(ms.float32).asnumpy() if param.dtype == ms.bfloat16 else param.asnumpy()


def _round_bf16(x):
    return bf16_bits_to_float32(float32_to_bf16_bits(np.asarray(x, np.float32)))


# ------------------------------------------------------------------------------ --convert_model_dtype

def test_convert_model_dtype_rounds_every_parameter_like_official_model_to_bf16():
    """CPU form of the flag: float32 storage and compute holding bf16 values. Every parameter, the modulation
    tensors included, equals the official model.to(bf16) bit for bit."""
    model = WanModel.from_pretrained(DIT, dtype=ms.float32, value_dtype=ms.bfloat16)
    params = dict(model.parameters_and_names())
    assert set(params) == {k for k in OFFICIAL_BF16.files if not k.startswith("forward:")}
    for name, p in params.items():
        np.testing.assert_array_equal(_values(p), OFFICIAL_BF16[name], err_msg=name)
    # the fixture checkpoint is float32 with values off the bf16 grid: the rounding is visible
    raw = open_checkpoint(DIT)
    for name in ("blocks.0.modulation", "blocks.1.modulation", "head.modulation"):
        assert not np.array_equal(raw.read(name), OFFICIAL_BF16[name]), name
        assert params[name].dtype == ms.float32  # the modulation math runs in float32
    # without the flag the values stay float32
    plain = WanModel.from_pretrained(DIT)
    np.testing.assert_array_equal(_values(dict(plain.parameters_and_names())["blocks.0.modulation"]),
                                  raw.read("blocks.0.modulation"))


def test_convert_model_dtype_forward_matches_official_bf16_values_in_float32():
    """The forward of the rounded model (modulation additions in float32) against the official model with the
    same bf16 values computed in float32; far from the unrounded model's output."""
    inputs = np.load(os.path.join(DIT, "inputs.npz"))
    args = ([Tensor(inputs["x0"])], Tensor(inputs["t1"]), [Tensor(inputs["context0"])], int(inputs["seq_len"]))
    want = OFFICIAL_BF16["forward:single0"]
    out = WanModel.from_pretrained(DIT, value_dtype=ms.bfloat16)(*args)[0].asnumpy()
    err = np.abs(out - want).max() / np.abs(want).max()
    assert err < 2e-6
    unrounded = WanModel.from_pretrained(DIT)(*args)[0].asnumpy()
    assert np.abs(unrounded - want).max() / np.abs(want).max() > 100 * max(err, 1e-7)


def test_pipeline_applies_convert_model_dtype_on_cpu(tmp_path):
    """WanPipeline(dit_dtype=bf16) on CPU (what generate.py --convert_model_dtype passes): float32 parameters
    holding bf16-rounded values of a float32 checkpoint, modulation included."""
    from wan.configs import get_task
    from wan.pipeline import WanPipeline

    ckpt = tmp_path / "t2v"
    shutil.copytree(os.path.join(ROOT, "examples", "tiny", "t2v-A14B"), ckpt)
    rng = np.random.default_rng(0)
    originals = {}
    for expert in ("high_noise_model", "low_noise_model"):
        folder = ckpt / expert
        with open_checkpoint(str(folder)) as reader:  # bf16 on disk: make it float32 off the bf16 grid
            state = {k: (reader.read(k) * (1 + 1e-3 * rng.standard_normal(reader.shape(k)))).astype(np.float32)
                     for k in reader.keys()}
        for f in folder.glob("diffusion_pytorch_model*"):
            f.unlink()
        save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
        originals[expert] = state
    pipe = WanPipeline(get_task("t2v-A14B"), str(ckpt), dit_dtype=ms.bfloat16)
    for role, expert in (("high_noise", "high_noise_model"), ("low_noise", "low_noise_model")):
        params = dict(pipe.experts[role].model.parameters_and_names())
        for name, value in originals[expert].items():
            assert params[name].dtype == ms.float32, name
            np.testing.assert_array_equal(params[name].asnumpy(), _round_bf16(value), err_msg=name)
        assert not np.array_equal(params["blocks.0.modulation"].asnumpy(), originals[expert]["blocks.0.modulation"])


# --------------------------------------------------------------------------------------------- LoRA

ULP = 2.0 ** -7  # bf16 spacing in [1, 2)


class _OneLinear(ms.nn.Cell):
    def __init__(self, dtype):
        super().__init__()
        self.proj = kernels.Linear(4, 2, bias=False, dtype=dtype)


def _lora_case(tmp_path, base_dtype):
    """A float32 (or bf16) base weight and a rank-1 LoRA whose delta is exactly d[j] on column j.

    W = 1 + 0.75 ulp rounds up to 1 + ulp; with delta = -0.3 ulp the float32 merge gives 1 + 0.45 ulp (rounds to
    1) but the twice-rounded merge gives 1 + 0.7 ulp (rounds to 1 + ulp): the two orders differ on column 0.
    Column 2 has delta = 0.5 ulp (1 + 2^-10) on W = 1: a merge in bf16 arithmetic (delta rounded to 0.5 ulp
    first, then a tie to even) stays at 1, the float32 merge rounds up to 1 + ulp, even for a bf16 base.
    """
    w = np.array([[1 + 0.75 * ULP, 1.5 + 0.25 * ULP, 1.0, -1 - 0.6 * ULP],
                  [1 + 0.75 * ULP, 2 - 0.75 * ULP, 1 + ULP, 1.25]], np.float32)
    d = np.array([-0.3 * ULP, 0.2 * ULP, 0.5 * ULP * (1 + 2.0 ** -10), -0.45 * ULP], np.float32)
    if base_dtype == "bfloat16":
        w = _round_bf16(w)
        _write_bf16(str(tmp_path / "base.safetensors"), {"proj.weight": float32_to_bf16_bits(w)})
    else:
        save_file({"proj.weight": w}, str(tmp_path / "base.safetensors"))
    save_file({"diffusion_model.proj.lora_down.weight": d[None, :],
               "diffusion_model.proj.lora_up.weight": np.ones((2, 1), np.float32),
               "diffusion_model.proj.alpha": np.array(1.0, np.float32)}, str(tmp_path / "lora.safetensors"))
    return w, d


def _write_bf16(path, tensors):
    """A safetensors file with BF16 tensors from uint16 bits (safetensors.numpy has no bfloat16)."""
    import json
    import struct

    header, blobs, offset = {}, [], 0
    for name, bits in tensors.items():
        blob = np.ascontiguousarray(bits, "<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(bits.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


@pytest.mark.parametrize("base_dtype", ["float32", "bfloat16"])
def test_lora_merges_in_float32_then_rounds_once(tmp_path, base_dtype):
    w, d = _lora_case(tmp_path, base_dtype)
    once = _round_bf16(w.astype(np.float64) + d[None, :])
    twice = _round_bf16(_round_bf16(w) + d[None, :])  # rounded at load, then again after the merge
    in_bf16 = _round_bf16(_round_bf16(w) + _round_bf16(d)[None, :])  # merged in bf16 arithmetic
    # the case separates the orders (a bf16 base is on the grid already, so only bf16 arithmetic differs there)
    assert not np.array_equal(once, in_bf16)
    assert np.array_equal(once, twice) == (base_dtype == "bfloat16")
    cell = _OneLinear(ms.bfloat16)
    load_into_cell(cell, str(tmp_path / "base.safetensors"), network="dit",
                   deltas=LoraDeltas(str(tmp_path / "lora.safetensors")))
    merged = cell.proj.weight.astype(ms.float32).asnumpy()
    assert cell.proj.weight.dtype == ms.bfloat16
    np.testing.assert_array_equal(merged, once)
    # float32 storage + bf16 values (the CPU form of --convert_model_dtype) rounds at the same single point
    cell32 = _OneLinear(ms.float32)
    load_into_cell(cell32, str(tmp_path / "base.safetensors"), network="dit", value_dtype="bfloat16",
                   deltas=LoraDeltas(str(tmp_path / "lora.safetensors")))
    np.testing.assert_array_equal(cell32.proj.weight.asnumpy(), once)
    # and a float32 model keeps the exact float32 sum
    full = _OneLinear(ms.float32)
    load_into_cell(full, str(tmp_path / "base.safetensors"), network="dit",
                   deltas=LoraDeltas(str(tmp_path / "lora.safetensors")))
    np.testing.assert_array_equal(full.proj.weight.asnumpy(), (w + d[None, :]).astype(np.float32))


def test_lora_deltas_refuse_a_lora_that_does_not_fit_before_loading(tmp_path):
    from wan.checkpoint import CheckpointError

    _lora_case(tmp_path, "float32")
    save_file({"diffusion_model.proj.lora_down.weight": np.ones((1, 5), np.float32),
               "diffusion_model.proj.lora_up.weight": np.ones((2, 1), np.float32)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match="does not fit parameter 'proj.weight'"):
        load_into_cell(_OneLinear(ms.float32), str(tmp_path / "base.safetensors"), network="dit",
                       deltas=LoraDeltas(str(tmp_path / "bad.safetensors")))
