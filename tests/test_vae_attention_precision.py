"""The VAE attention is exact float32 on every backend (the official float32 SDPA), never the fused kernel.

Fixtures: tests/fixtures/precision/vae_attention.npz from the official Wan2.2 VAE AttentionBlock at the real
middle widths (640 encoder, 1024 decoder); see tests/fixtures/make_precision_fixtures.py.
"""
import os
import sys

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, mint, ops

from conftest import FIXTURES
from ascend_standins import ContractError, Conv2dStandIn, FlashAttentionStandIn
from wan.modules import kernels as K
from wan.modules.vae2_1 import AttentionBlock

sys.path.insert(0, FIXTURES)
from precision_weights import VAE_WIDTHS, attention_weights  # noqa: E402

FIX = np.load(os.path.join(FIXTURES, "precision", "vae_attention.npz"))


@pytest.fixture(autouse=True)
def _restore_backend():
    yield
    K.set_backend(None)


def _block(c):
    weights, x = attention_weights(c, seed=c)
    block = AttentionBlock(c)
    block.norm.gamma.set_data(Tensor(weights["norm.gamma"].reshape(c, 1, 1)))
    block.to_qkv.weight.set_data(Tensor(weights["to_qkv.weight"].reshape(3 * c, c, 1, 1)))
    block.to_qkv.bias.set_data(Tensor(weights["to_qkv.bias"]))
    block.proj.weight.set_data(Tensor(weights["proj.weight"].reshape(c, c, 1, 1)))
    block.proj.bias.set_data(Tensor(weights["proj.bias"]))
    np.testing.assert_array_equal(x, FIX[f"x_{c}"])  # same draw as the fixture script
    return block, x


def _rel(got, want):
    # float32 budget: 640-1024-term dot products accumulate ~1e-6 relative error; bf16 is ~1e-2
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("c", VAE_WIDTHS)
def test_vae_attention_block_matches_official_float32_on_both_backends(monkeypatch, c):
    block, x = _block(c)
    K.set_backend("reference")
    ref = block(Tensor(x)).asnumpy()
    assert _rel(ref, FIX[f"y_{c}"]) < 1e-5

    # The Ascend branch, with the Ascend-only ops replaced by contract-checking stand-ins: the block must not
    # reach the fused kernel (which would reject C > 512 and round to bf16) and must stay float32-exact.
    fused, conv = FlashAttentionStandIn(), Conv2dStandIn()
    monkeypatch.setattr(ops, "flash_attention_score", fused)
    monkeypatch.setattr(mint.nn.functional, "conv2d", conv)
    K.set_backend("ascend")
    out = block(Tensor(x)).asnumpy()
    assert conv.calls == 2 and fused.calls == []
    assert _rel(out, FIX[f"y_{c}"]) < 1e-5


def test_fused_route_would_be_wrong_for_the_vae():
    """What exact_fp32 protects against: the fused kernel refuses D = 640 / 1024, and even at an accepted
    head size its bf16 rounding is far outside the float32 budget used above."""
    K.set_backend("ascend")
    rng = np.random.default_rng(0)
    for c in VAE_WIDTHS:
        q = Tensor(rng.standard_normal((1, 6, 1, c)).astype(np.float32))
        with pytest.raises(ValueError, match=f"head size {c} is not supported by ops.flash_attention_score"):
            K.attention(q, q, q)
        standin = FlashAttentionStandIn()
        with pytest.raises(ContractError, match=f"head size D={c} must be a multiple of 16 and at most 512"):
            standin(q.astype(ms.bfloat16), q.astype(ms.bfloat16), q.astype(ms.bfloat16), 1,
                    input_layout="BSND", scalar_value=1.0)


def test_exact_path_on_ascend_branch_is_float32(monkeypatch):
    fused = FlashAttentionStandIn()
    monkeypatch.setattr(ops, "flash_attention_score", fused)
    K.set_backend("ascend")
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((2, 9, 2, 64)).astype(np.float32) * 3 for _ in range(3))
    exact = K.attention(Tensor(q), Tensor(k), Tensor(v), exact_fp32=True).asnumpy()
    s = np.einsum("bqnd,bknd->bnqk", q.astype(np.float64), k) / 8.0
    p = np.exp(s - s.max(-1, keepdims=True))
    want = np.einsum("bnqk,bknd->bqnd", p / p.sum(-1, keepdims=True), v)
    assert fused.calls == [] and _rel(exact, want) < 1e-6
    fast = K.attention(Tensor(q), Tensor(k), Tensor(v)).asnumpy()  # the DiT route: bf16 fused kernel
    assert len(fused.calls) == 1 and _rel(fast, want) > 1e-3
