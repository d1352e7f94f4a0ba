"""WanModel against the official PyTorch WanModel (fixtures from tests/fixtures/make_dit_fixtures.py).

Tolerance: both sides compute in float32 with the same weights; they differ only in the order of float32
accumulations (matmul blocking, reductions), ~1e-7 relative per op. Measured max error is ~6e-7 of the output
scale; we allow 1e-4 of the output scale, far below what any semantic slip (mask, rope split, modulation order,
channel order in unpatchify) produces (O(1) of the scale).
"""
import os

import numpy as np
import pytest
from mindspore import Tensor

from conftest import FIXTURES
from wan.modules import kernels
from wan.modules.model import WanModel

CASES = ["t2v", "i2v", "ti2v"]


@pytest.fixture(autouse=True)
def reference_backend():
    kernels.set_backend("reference")
    yield
    kernels.set_backend(None)


def _load(case):
    folder = os.path.join(FIXTURES, "dit", case)
    inputs = dict(np.load(os.path.join(folder, "inputs.npz")))
    expected = dict(np.load(os.path.join(folder, "expected.npz")))
    return folder, inputs, expected


def _args(inputs, batch):
    n = 1 if batch == 1 else 2
    x = [Tensor(inputs[f"x{i}"]) for i in range(n)]
    context = [Tensor(inputs[f"context{i}"]) for i in range(n)]
    y = [Tensor(inputs[f"y{i}"]) for i in range(n)] if "y0" in inputs else None
    t = Tensor(inputs["t1"] if batch == 1 else inputs["t2"])
    return x, t, context, int(inputs["seq_len"]), y


def _assert_close(actual, expected):
    scale = max(1.0, float(np.abs(expected).max()))
    err = float(np.abs(actual - expected).max())
    assert actual.shape == expected.shape
    assert err <= 1e-4 * scale, f"max abs error {err:.3g} > {1e-4 * scale:.3g}"


@pytest.mark.parametrize("case", CASES)
def test_matches_official(case):
    folder, inputs, expected = _load(case)
    model = WanModel.from_pretrained(folder)
    out = model(*_args(inputs, 1))
    assert len(out) == 1
    _assert_close(out[0].asnumpy(), expected["single0"])
    out = model(*_args(inputs, 2))
    assert len(out) == 2
    for i in range(2):
        _assert_close(out[i].asnumpy(), expected[f"batch{i}"])


def test_batched_equals_single_calls():
    # Padding and the key mask must make each sample independent of its batch neighbour.
    folder, inputs, _ = _load("t2v")
    model = WanModel.from_pretrained(folder)
    x, t, context, seq_len, _ = _args(inputs, 2)
    both = model(x, t, context, seq_len)
    alone = model(x[1:], Tensor(inputs["t2"][1:]), context[1:], seq_len)
    np.testing.assert_allclose(both[1].asnumpy(), alone[0].asnumpy(), rtol=1e-5, atol=1e-5)


def test_bad_input_is_rejected_before_work():
    folder, inputs, _ = _load("t2v")
    config = WanModel.config_from_file(os.path.join(folder, "config.json"))
    with pytest.raises(ValueError, match="model_type 'x2v'"):
        WanModel(**{**config, "model_type": "x2v"})
    with pytest.raises(ValueError, match="dim=48 is not divisible by num_heads=5"):
        WanModel(**{**config, "num_heads": 5})
    model = WanModel.from_pretrained(folder)
    x, t, context, seq_len, _ = _args(inputs, 1)
    with pytest.raises(ValueError, match="makes 36 tokens, more than seq_len=20"):
        model([Tensor(np.zeros((4, 3, 8, 6), np.float32))], t, context, seq_len)
    with pytest.raises(ValueError, match="t has shape"):
        model(x, Tensor(np.zeros((3,), np.float32)), context, seq_len)

    i2v = WanModel.from_pretrained(os.path.join(FIXTURES, "dit", "i2v"))
    with pytest.raises(ValueError, match="needs y"):
        i2v(x, t, context, seq_len)


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        WanModel.from_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text('{"dim": 8, "not_a_key": 1}')
    with pytest.raises(ValueError, match="not_a_key"):
        WanModel.from_pretrained(str(tmp_path))


@pytest.mark.parametrize("name", ["t2v-A14B", "i2v-A14B", "ti2v-5B"])
def test_full_size_names_and_shapes_equal_the_release(name):
    """The released configurations, built without allocating weights, have exactly the official keys/shapes."""
    import json

    import mindspore as ms
    from mindspore import nn

    with open(os.path.join(FIXTURES, "dit", "full_manifest.json")) as f:
        manifest = json.load(f)[name]
    with nn.no_init_parameters():
        model = WanModel(**manifest["config"], dtype=ms.bfloat16)
    ours = {n: list(p.shape) for n, p in model.parameters_and_names()}
    assert ours == manifest["shapes"]


def test_compute_dtype_runs_matmuls_in_half_precision():
    """set_compute_dtype (bf16 on Ascend, like the official autocast) on CPU with float16, which CPU can compute:
    close to the float32 result at half-precision accuracy, and not identical (so it really took effect)."""
    import mindspore as ms

    folder, inputs, expected = _load("t2v")
    model = WanModel.from_pretrained(folder).set_compute_dtype(ms.float16)
    assert model.blocks[0].self_attn.q.compute_dtype == ms.float16
    assert model.head.head.compute_dtype == ms.float32  # float32 island kept
    out = model(*_args(inputs, 1))[0].asnumpy()
    err = np.abs(out - expected["single0"]).max()
    scale = np.abs(expected["single0"]).max()
    assert 0 < err < 2e-2 * scale, err
