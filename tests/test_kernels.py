"""The reference (CPU) kernels against numpy, and the backend switch."""
import math
import re

import mindspore as ms

import numpy as np
import pytest
from mindspore import Tensor

from wan.modules import kernels as K

RNG = np.random.default_rng(0)


def _np_attention(q, k, v, k_lens=None):
    b, lq, n, d = q.shape
    s = np.einsum("bqnd,bknd->bnqk", q.astype(np.float64), k.astype(np.float64)) / math.sqrt(d)
    if k_lens is not None:
        mask = np.arange(k.shape[1])[None, :] >= np.asarray(k_lens)[:, None]
        s = np.where(mask[:, None, None, :], -np.inf, s)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bnqk,bknd->bqnd", p, v.astype(np.float64))


@pytest.fixture(autouse=True)
def reference_backend():
    K.set_backend("reference")
    yield
    K.set_backend(None)


@pytest.mark.parametrize("k_lens", [None, [7, 3]])
def test_attention_matches_numpy(k_lens):
    q, k, v = (RNG.standard_normal((2, l, 3, 8)).astype(np.float32) for l in (5, 7, 7))
    out = K.attention(Tensor(q), Tensor(k), Tensor(v), k_lens=k_lens).asnumpy()
    np.testing.assert_allclose(out, _np_attention(q, k, v, k_lens), rtol=1e-5, atol=1e-5)


def test_attention_masks_keys_past_length():
    # Keys past k_lens must not matter at all: change them and the output stays identical.
    q, k, v = (RNG.standard_normal((1, 4, 2, 8)).astype(np.float32) for _ in range(3))
    k2, v2 = k.copy(), v.copy()
    k2[:, 2:] += 100.0
    v2[:, 2:] -= 50.0
    a = K.attention(Tensor(q), Tensor(k), Tensor(v), k_lens=[2]).asnumpy()
    b = K.attention(Tensor(q), Tensor(k2), Tensor(v2), k_lens=[2]).asnumpy()
    np.testing.assert_array_equal(a, b)


def test_attention_query_chunking_is_exact(monkeypatch):
    q, k, v = (RNG.standard_normal((1, l, 2, 4)).astype(np.float32) for l in (9, 6, 6))
    whole = K.attention(Tensor(q), Tensor(k), Tensor(v), k_lens=[4]).asnumpy()
    monkeypatch.setattr(K, "_REFERENCE_SCORE_BYTES", 4 * 2 * 6 * 2)  # two query rows per chunk
    chunked = K.attention(Tensor(q), Tensor(k), Tensor(v), k_lens=[4]).asnumpy()
    np.testing.assert_array_equal(whole, chunked)


def test_gelu_tanh_matches_formula():
    x = np.linspace(-8, 8, 1001).astype(np.float32)
    ref = 0.5 * x.astype(np.float64) * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x.astype(np.float64) ** 3)))
    np.testing.assert_allclose(K.gelu_tanh(Tensor(x)).asnumpy(), ref, rtol=2e-6, atol=1e-6)


def test_layer_norm_and_rms_norm():
    x = RNG.standard_normal((2, 3, 16)).astype(np.float32) * 3 + 1
    w = RNG.standard_normal(16).astype(np.float32)
    b = RNG.standard_normal(16).astype(np.float32)
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    ln = (x - mu) / np.sqrt(var + 1e-6)
    np.testing.assert_allclose(K.layer_norm(Tensor(x), eps=1e-6).asnumpy(), ln, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(K.layer_norm(Tensor(x), Tensor(w), Tensor(b), 1e-6).asnumpy(), ln * w + b,
                               rtol=1e-5, atol=1e-5)
    rms = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6) * w
    np.testing.assert_allclose(K.rms_norm(Tensor(x), Tensor(w), 1e-6).asnumpy(), rms, rtol=1e-5, atol=1e-5)


def test_patch_embed_equals_strided_convolution():
    pe = K.PatchEmbed3d(3, 5, (1, 2, 2))
    w = RNG.standard_normal((5, 3, 1, 2, 2)).astype(np.float32)
    bias = RNG.standard_normal(5).astype(np.float32)
    pe.weight.set_data(Tensor(w))
    pe.bias.set_data(Tensor(bias))
    x = RNG.standard_normal((1, 3, 2, 4, 7)).astype(np.float32)  # odd width: last column dropped
    out = pe(Tensor(x)).asnumpy()
    ref = np.zeros((1, 5, 2, 2, 3), np.float64)
    for f in range(2):
        for i in range(2):
            for j in range(3):
                patch = x[0, :, f, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
                ref[0, :, f, i, j] = np.einsum("cpq,ocpq->o", patch, w[:, :, 0]) + bias
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def _np_conv3d(x, w, b, stride, pads):
    """Direct convolution: np.pad with (t_front, t_back, h_top, h_bottom, w_left, w_right), then a sliding window."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), pads[0:2], pads[2:4], pads[4:6]))
    kt, kh, kw = w.shape[2:]
    st, sh, sw = stride
    ot, oh, ow = ((xp.shape[2] - kt) // st + 1, (xp.shape[3] - kh) // sh + 1, (xp.shape[4] - kw) // sw + 1)
    out = np.zeros((x.shape[0], w.shape[0], ot, oh, ow))
    for t in range(ot):
        for i in range(oh):
            for j in range(ow):
                win = xp[:, :, t * st:t * st + kt, i * sh:i * sh + kh, j * sw:j * sw + kw]
                out[:, :, t, i, j] = np.einsum("bcpqr,ocpqr->bo", win, w) + b
    return out


@pytest.mark.parametrize("stride, pads", [((1, 1, 1), (2, 0, 1, 1, 1, 1)), ((1, 2, 2), (2, 0, 0, 1, 1, 0)),
                                          ((1, 1, 1), (1, 1, 1, 1, 1, 1))])
def test_conv3d_with_per_side_padding_matches_numpy(stride, pads):
    # The causal VAE pads time at the front only; the CPU path pads inside the Conv3D primitive.
    x = RNG.standard_normal((1, 3, 4, 5, 6)).astype(np.float32)
    w = RNG.standard_normal((2, 3, 3, 3, 3)).astype(np.float32)
    b = RNG.standard_normal(2).astype(np.float32)
    out = K.conv3d(Tensor(x), Tensor(w), Tensor(b), stride, pads).asnumpy()
    ref = _np_conv3d(x, w, b, stride, pads)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_linear_matches_numpy():
    lin = K.Linear(6, 4)
    x = RNG.standard_normal((2, 3, 6)).astype(np.float32)
    np.testing.assert_allclose(lin(Tensor(x)).asnumpy(), x @ lin.weight.asnumpy().T + lin.bias.asnumpy(),
                               rtol=1e-5, atol=1e-5)


def test_backend_choice():
    K.set_backend(None)
    assert K.backend() == "reference"  # this machine has no Ascend device
    with pytest.raises(ValueError, match="unknown kernel backend"):
        K.set_backend("cuda")


def test_ascend_attention_glue_with_a_stand_in_kernel(monkeypatch):
    """The Ascend branch's own logic (ragged keys per sample, layout, scale, dtypes) around the fused kernel.

    ``ops.flash_attention_score`` has no CPU kernel: tests/ascend_standins.py replaces it with a stand-in that
    first enforces the op's documented contract (argument names against the installed signature, fp16/bf16,
    layout, D a multiple of 16 and <= 512, head_num == N) and then computes in float32.
    """
    from mindspore import ops

    from ascend_standins import FlashAttentionStandIn

    fused = FlashAttentionStandIn()
    monkeypatch.setattr(ops, "flash_attention_score", fused)
    K.set_backend("ascend")
    q, k, v = (RNG.standard_normal((2, l, 2, 16)).astype(np.float16) for l in (3, 6, 6))
    out = K.attention(Tensor(q), Tensor(k), Tensor(v), k_lens=[6, 2])
    assert [c[2] for c in fused.calls] == [(1, 6, 2, 16), (1, 2, 2, 16)]  # each sample sees only its valid keys
    assert out.dtype == Tensor(q).dtype
    ref = _np_attention(q.astype(np.float32), k.astype(np.float32), v.astype(np.float32), [6, 2])
    np.testing.assert_allclose(out.asnumpy().astype(np.float32), ref, rtol=2e-3, atol=2e-3)
    fused.calls.clear()
    K.attention(Tensor(q), Tensor(k), Tensor(v), k_lens=[6, 6])  # all keys valid: one fused call
    assert [c[2] for c in fused.calls] == [(2, 6, 2, 16)]
    # float32 inputs go to the kernel as bf16 (the kernel takes half precision only)
    fused.calls.clear()
    K.attention(Tensor(q.astype(np.float32)), Tensor(k.astype(np.float32)), Tensor(v.astype(np.float32)))
    assert fused.calls[0][3] == ms.bfloat16


def test_attention_stand_in_enforces_the_fused_contract():
    """Each documented constraint of ops.flash_attention_score is refused, naming the op and the constraint."""
    from ascend_standins import ContractError, FlashAttentionStandIn

    fused = FlashAttentionStandIn()
    half = lambda *s: Tensor(RNG.standard_normal(s).astype(np.float16))  # noqa: E731
    q = half(1, 4, 2, 16)
    cases = [
        (lambda: fused(q, q, q, 2, input_layout="BSND", scale=0.25), "arguments do not match"),
        (lambda: fused(q.astype(ms.float32), q, q, 2, input_layout="BSND"), "query dtype Float32"),
        (lambda: fused(q, q.astype(ms.bfloat16), q, 2, input_layout="BSND"), "dtypes differ"),
        (lambda: fused(q, q, q, 2, input_layout="BLND"), "input_layout 'BLND'"),
        (lambda: fused(q, q, q, 3, input_layout="BSND"), "head_num=3 but query has N1=2"),
        (lambda: fused(half(1, 4, 2, 24), half(1, 4, 2, 24), half(1, 4, 2, 24), 2, input_layout="BSND"),
         "head size D=24 must be a multiple of 16"),
        (lambda: fused(half(1, 2, 1, 528), half(1, 2, 1, 528), half(1, 2, 1, 528), 1, input_layout="BSND"),
         "head size D=528 must be a multiple of 16 and at most 512"),
        (lambda: fused(half(1, 4, 3, 16), half(1, 4, 2, 16), half(1, 4, 2, 16), 3, input_layout="BSND"),
         "N2=2 is not a factor of N1=3"),
        (lambda: fused(q, q, q, 2, input_layout="BSND", keep_prob=0.9), "keep_prob=1.0"),
    ]
    for call, message in cases:
        with pytest.raises(ContractError, match="ops.flash_attention_score: .*" + re.escape(message)):
            call()
    assert fused.calls == []
    out = fused(q, q, q, 2, input_layout="BSND", scalar_value=0.25)  # a valid call computes
    assert out.dtype == ms.float16 and fused.calls


def test_ascend_attention_refuses_head_sizes_the_kernel_cannot_take(monkeypatch):
    K.set_backend("ascend")
    x = Tensor(RNG.standard_normal((1, 3, 2, 8)).astype(np.float16))
    with pytest.raises(ValueError, match="head size 8 is not supported by ops.flash_attention_score"):
        K.attention(x, x, x)
