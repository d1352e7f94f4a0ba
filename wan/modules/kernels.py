"""Device-portable kernels: the only place that knows which MindSpore ops exist on which device.

Model code calls these functions and cells and never a device-specific op. Two backends, chosen once:

- ``"ascend"``: the fast fused kernels (``mint`` ops, ``ops.flash_attention_score``) in the model's dtype.
- ``"reference"``: ops that have CPU kernels in MindSpore 2.7 (classic ``ops``/``nn``), computed in float32
  (float64 where the official code uses float64). This is the path the tests run.

Both backends have the same contract (shapes, dtypes in and out, masking semantics), so a model behaves the
same on either, up to the rounding of the compute dtype.
"""
from __future__ import annotations

import functools
import math
from typing import Optional, Sequence, Union

import mindspore as ms
import numpy as np
from mindspore.common.initializer import Uniform, initializer
from mindspore import Parameter, Tensor, mint, nn, ops

BACKENDS = ("ascend", "reference")
_backend: Optional[str] = None

# Upper bound on the float32 score matrix of one attention chunk on the reference path (bytes). Chunking the
# queries keeps CPU memory flat for long sequences without changing the result (rows are independent).
_REFERENCE_SCORE_BYTES = 256 * 1024 * 1024


def backend() -> str:
    """The active backend, resolved from the MindSpore device target on first use."""
    global _backend
    if _backend is None:
        _backend = "ascend" if ms.get_context("device_target") == "Ascend" else "reference"
    return _backend


def set_backend(name: Optional[str]) -> None:
    """Force a backend ("ascend" or "reference"), or None to resolve it from the device target again."""
    global _backend
    if name is not None and name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; expected one of {BACKENDS} or None")
    _backend = name


def rotation_tables(cos: np.ndarray, sin: np.ndarray):
    """The form ``rotate_pairs`` wants its cos/sin in, made once per forward (not once per block).

    cos, sin: float64 numpy [B|1, L, 1, D // 2]. Reference backend: returned as is (rotation in float64 on the
    host). Ascend: float32 device Tensors, uploaded here once, so the block loop does no host transfer.
    """
    if backend() == "reference":
        return cos, sin
    return Tensor(np.ascontiguousarray(cos, np.float32)), Tensor(np.ascontiguousarray(sin, np.float32))


def rotate_pairs(x: Tensor, cos, sin) -> Tensor:
    """Rotary embedding: rotate consecutive channel pairs (x[2i], x[2i+1]) of x by angles given as cos/sin.

    Args:
        x: [B, L, N, D]; cos, sin: [B|1, L, 1, D // 2] (broadcast over heads), float64 numpy or, from
            ``rotation_tables`` on Ascend, float32 Tensors.
    Returns:
        float32 [B, L, N, D].

    The reference path computes in float64 on the host, as the official code does (and MindSpore's CPU float64
    elementwise kernels are slow); the Ascend path uses float32 device ops (error ~1e-7 relative).
    """
    b, l, n, d = x.shape
    if backend() == "reference":
        cos = cos.asnumpy() if isinstance(cos, Tensor) else cos
        sin = sin.asnumpy() if isinstance(sin, Tensor) else sin
        pairs = x.asnumpy().astype(np.float64).reshape(b, l, n, d // 2, 2)
        real, imag = pairs[..., 0], pairs[..., 1]
        out = np.stack([real * cos - imag * sin, real * sin + imag * cos], axis=-1)
        return Tensor(out.reshape(b, l, n, d).astype(np.float32))
    c = cos if isinstance(cos, Tensor) else Tensor(cos, ms.float32)
    s = sin if isinstance(sin, Tensor) else Tensor(sin, ms.float32)
    real, imag = ops.unstack(x.astype(ms.float32).reshape(b, l, n, d // 2, 2), -1)
    return ops.stack([real * c - imag * s, real * s + imag * c], -1).reshape(b, l, n, d)


# ----------------------------------------------------------------------------------------------- activations

def gelu_tanh(x: Tensor) -> Tensor:
    """GELU with the tanh approximation, in the dtype of ``x``.

    The reference path uses the identity 0.5 * (1 + tanh(u)) == sigmoid(2u): MindSpore's CPU ``tanh`` is only
    accurate to ~1e-4 relative, while ``sigmoid`` is accurate to float32 rounding.
    """
    if backend() == "ascend":
        return mint.nn.functional.gelu(x, approximate="tanh")
    xf = x.astype(ms.float32)
    u = math.sqrt(2.0 / math.pi) * (xf + 0.044715 * xf * xf * xf)
    return (xf * ops.sigmoid(2.0 * u)).astype(x.dtype)


def silu(x: Tensor) -> Tensor:
    return ops.silu(x)


def gelu(x: Tensor) -> Tensor:
    """Exact GELU, x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2))), in the dtype of ``x`` (PyTorch's default GELU).

    The reference path spells it out with ``erf`` (float32 rounding on CPU): ``F.gelu``/``ops.gelu`` have no CPU
    kernel in MindSpore 2.7.
    """
    if backend() == "ascend":
        return mint.nn.functional.gelu(x)
    xf = x.astype(ms.float32)
    return (0.5 * xf * (1.0 + ops.erf(xf * (1.0 / math.sqrt(2.0))))).astype(x.dtype)


# ----------------------------------------------------------------------------------------------------- norms

def layer_norm(x: Tensor, weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
               eps: float = 1e-6) -> Tensor:
    """LayerNorm over the last axis, computed in float32 and returned in the dtype of ``x``.

    ``weight``/``bias`` of shape [C] or None (no affine).
    """
    c = x.shape[-1]
    xf = x.astype(ms.float32)
    ones, zeros = _unit_affine(c)
    w = ones if weight is None else weight.astype(ms.float32)
    b = zeros if bias is None else bias.astype(ms.float32)
    if backend() == "ascend":
        y = mint.nn.functional.layer_norm(xf, (c,), w, b, eps)
    else:
        y = _layer_norm_op(eps)(xf, w, b)[0]
    return y.astype(x.dtype)


@functools.lru_cache(maxsize=None)
def _unit_affine(c: int):
    return ops.ones((c,), ms.float32), ops.zeros((c,), ms.float32)


@functools.lru_cache(maxsize=None)
def _layer_norm_op(eps: float):
    return ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)


def rms_norm(x: Tensor, weight: Optional[Tensor], eps: float) -> Tensor:
    """x * rsqrt(mean(x^2) + eps) over the last axis in float32, cast back to x.dtype, then * weight.

    The cast happens before the weight multiply, as in the official ``WanRMSNorm``; a fused kernel would round
    differently in bf16, so both backends use these elementwise ops.
    """
    xf = x.astype(ms.float32)
    y = xf * ops.rsqrt(ops.mean(xf * xf, -1, keep_dims=True) + eps)
    y = y.astype(x.dtype)
    return y if weight is None else y * weight


def group_norm(x: Tensor, num_groups: int, weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
               eps: float = 1e-5) -> Tensor:
    """GroupNorm of x [B, C, *spatial] over (C // num_groups channels, *spatial), computed in float32, with an
    optional per-channel affine ``weight``/``bias`` [C]; returned in the dtype of ``x``.

    Biased variance, as ``torch.nn.GroupNorm``.
    """
    b, c = x.shape[0], x.shape[1]
    assert c % num_groups == 0, f"{c} channels do not split into {num_groups} groups"
    if backend() == "ascend":
        return mint.nn.functional.group_norm(x, num_groups, weight, bias, eps)
    xf = x.astype(ms.float32)
    g = xf.reshape(b, num_groups, -1)
    mean = ops.mean(g, -1, keep_dims=True)
    centred = g - mean
    var = ops.mean(centred * centred, -1, keep_dims=True)
    y = (centred * ops.rsqrt(var + eps)).reshape(x.shape)
    affine_shape = (1, c) + (1,) * (x.ndim - 2)
    if weight is not None:
        y = y * weight.astype(ms.float32).reshape(affine_shape)
    if bias is not None:
        y = y + bias.astype(ms.float32).reshape(affine_shape)
    return y.astype(x.dtype)


class LayerNorm(nn.Cell):
    """LayerNorm with optional affine, parameters named ``weight``/``bias`` like PyTorch's."""

    def __init__(self, dim: int, eps: float = 1e-6, elementwise_affine: bool = False, dtype=ms.float32):
        super().__init__()
        self.dim = dim
        self.eps = eps
        if elementwise_affine:
            self.weight = Parameter(initializer("ones", (dim,), dtype), name="weight")
            self.bias = Parameter(initializer("zeros", (dim,), dtype), name="bias")
        else:
            self.weight = None
            self.bias = None

    def construct(self, x: Tensor) -> Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps)


class RMSNorm(nn.Cell):
    """RMS norm over the last axis with a learned scale ``weight`` [dim]."""

    def __init__(self, dim: int, eps: float = 1e-5, dtype=ms.float32):
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.weight = Parameter(initializer("ones", (dim,), dtype), name="weight")

    def construct(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps)


# ---------------------------------------------------------------------------------------------------- linear

class Linear(nn.Cell):
    """y = x @ weight.T + bias with PyTorch's parameter layout (weight [out, in]).

    The input is cast to the compute dtype: the weight's dtype by default, or ``compute_dtype`` for the layers
    the official code runs in float32 under autocast (time embedding, modulation, head).

    ``weight_provider``: an optional hook set from outside (``wan.distributed.apply_zero3``), called as
    ``weight_provider(self.weight)`` on every call; it returns the full [out, in] weight (e.g. gathered from
    ZeRO3 row shards). None uses ``self.weight`` as is.
    """

    weight_provider = None

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype=ms.float32,
                 compute_dtype=None):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.compute_dtype = compute_dtype
        # A layer built with an explicit compute dtype keeps it (the float32 islands of the official model).
        self.fixed_compute_dtype = compute_dtype is not None
        bound = 1.0 / math.sqrt(in_features)
        self.weight = Parameter(
            initializer(Uniform(bound), (out_features, in_features),
                                              dtype), name="weight")
        self.bias = Parameter(initializer("zeros", (out_features,), dtype), name="bias") if bias else None

    def construct(self, x: Tensor) -> Tensor:
        w = self.weight if self.weight_provider is None else self.weight_provider(self.weight)
        dtype = self.compute_dtype or w.dtype
        w = w if w.dtype == dtype else w.astype(dtype)
        b = self.bias
        if b is not None and b.dtype != dtype:
            b = b.astype(dtype)
        return linear(x.astype(dtype), w, b)


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """x [..., in] @ weight[out, in].T + bias [out]."""
    if backend() == "ascend":
        return ops.dense(x, weight, bias)
    # MindSpore's CPU Dense/MatMul kernels are 2-5x slower than its batched matmul with a transposed operand.
    lead = x.shape[:-1]
    y = _matmul_nt(x.reshape(1, -1, x.shape[-1]), weight[None])
    y = y.reshape(*lead, weight.shape[0])
    return y if bias is None else y + bias


def _matmul_nt(a: Tensor, b: Tensor) -> Tensor:
    """a [B, M, K] @ b[B, N, K].T -> [B, M, N]."""
    return _batch_matmul_nt()(a, b)


@functools.lru_cache(maxsize=None)
def _batch_matmul_nt():
    return ops.BatchMatMul(transpose_b=True)


# ------------------------------------------------------------------------------------------------- attention

def _lengths(k_lens: Union[None, Sequence[int], np.ndarray, Tensor], batch: int, lk: int) -> Optional[np.ndarray]:
    """Key lengths as int64 numpy [B], or None when every key is valid."""
    if k_lens is None:
        return None
    lens = k_lens.asnumpy() if isinstance(k_lens, Tensor) else np.asarray(k_lens)
    lens = lens.astype(np.int64).reshape(-1)
    assert lens.shape[0] == batch, f"k_lens has {lens.shape[0]} entries for a batch of {batch}"
    assert (lens >= 1).all() and (lens <= lk).all(), f"k_lens {lens.tolist()} outside [1, {lk}]"
    return None if (lens == lk).all() else lens


def attention(q: Tensor, k: Tensor, v: Tensor, k_lens=None, softmax_scale: Optional[float] = None,
              exact_fp32: bool = False) -> Tensor:
    """Multi-head scaled dot-product attention without a causal mask.

    Args:
        q: [B, Lq, N, D]; k, v: [B, Lk, N, D].
        k_lens: per-sample count of valid keys [B] (list, numpy or Tensor); keys at or past it are ignored.
            None means all Lk keys are valid.
        softmax_scale: defaults to 1/sqrt(D).
        exact_fp32: compute in float32 on every backend (matmul, softmax, matmul; never the fused kernel).
            The VAE needs it: the official VAE attention is a float32 SDPA, and the Wan2.2 VAE's single-head
            middle attention has D = 640 (encoder) / 1024 (decoder), beyond the fused kernel's D <= 512.
    Returns:
        [B, Lq, N, D] in the dtype of q.
    """
    b, lq, n, d = q.shape
    lk = k.shape[1]
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    lens = _lengths(k_lens, b, lk)
    if exact_fp32 or backend() != "ascend":
        # Classic ops (BatchMatMul, Softmax) have float32 kernels on CPU and Ascend alike.
        return _attention_reference(q, k, v, lens, scale)
    return _attention_ascend(q, k, v, lens, scale)


# The documented limits of ops.flash_attention_score (MindSpore 2.7): D a multiple of 16, at most 512.
FUSED_MAX_HEAD_DIM = 512
FUSED_HEAD_DIM_MULTIPLE = 16


def fused_attention_supports(head_dim: int) -> bool:
    """True when ``ops.flash_attention_score`` accepts this head size."""
    return head_dim % FUSED_HEAD_DIM_MULTIPLE == 0 and head_dim <= FUSED_MAX_HEAD_DIM


def _attention_reference(q, k, v, lens, scale):
    if lens is not None:  # ragged keys: each sample attends to its valid keys only (exactly a -inf mask)
        return ops.cat([_attention_reference(q[i:i + 1], k[i:i + 1, :int(lens[i])], v[i:i + 1, :int(lens[i])],
                                             None, scale) for i in range(q.shape[0])], 0)
    b, lq, n, d = q.shape
    lk = k.shape[1]
    qh = q.astype(ms.float32).transpose(0, 2, 1, 3)  # [B, N, Lq, D]
    kh = k.astype(ms.float32).transpose(0, 2, 1, 3)  # [B, N, Lk, D]
    vh = v.astype(ms.float32).transpose(0, 2, 1, 3)  # [B, N, Lk, D]
    rows = max(1, _REFERENCE_SCORE_BYTES // (4 * b * n * lk))
    outs = []
    for start in range(0, lq, rows):
        scores = _matmul_nt(qh[:, :, start:start + rows], kh) * scale
        outs.append(ops.matmul(ops.softmax(scores, -1), vh))
    out = outs[0] if len(outs) == 1 else ops.cat(outs, 2)
    return out.transpose(0, 2, 1, 3).astype(q.dtype)


def _attention_ascend(q, k, v, lens, scale):
    d = q.shape[-1]
    if not fused_attention_supports(d):
        raise ValueError(f"attention head size {d} is not supported by ops.flash_attention_score (a multiple of "
                         f"{FUSED_HEAD_DIM_MULTIPLE}, at most {FUSED_MAX_HEAD_DIM}); call attention(..., "
                         f"exact_fp32=True) for this layer")
    # The fused kernel takes half precision only; the official GPU path also casts float32 inputs to bf16.
    out_dtype = q.dtype
    half = q.dtype if q.dtype in (ms.float16, ms.bfloat16) else ms.bfloat16
    q, k, v = q.astype(half), k.astype(half), v.astype(half)
    n = q.shape[2]

    def fused(qi, ki, vi):
        return ops.flash_attention_score(qi, ki, vi, n, input_layout="BSND", scalar_value=scale)

    if lens is None:
        out = fused(q, k, v)
    else:  # ragged keys: run each sample on its valid keys (batches here are 1 or 2 samples)
        out = ops.cat([fused(q[i:i + 1], k[i:i + 1, :int(lens[i])], v[i:i + 1, :int(lens[i])])
                       for i in range(q.shape[0])], 0)
    return out.astype(out_dtype)


# ------------------------------------------------------------------------------------------ patch embedding

class PatchEmbed3d(nn.Cell):
    """A Conv3d whose kernel equals its stride (non-overlapping patches), as a single matmul.

    Same parameters as ``torch.nn.Conv3d(in_dim, dim, kernel_size=patch, stride=patch)``:
    ``weight`` [dim, in_dim, pt, ph, pw] and ``bias`` [dim]. Trailing frames/rows that do not fill a patch are
    dropped, as a strided convolution does. Exact on every device and avoids Conv3d, which has no CPU kernel
    in ``mint``.
    """

    def __init__(self, in_dim: int, dim: int, patch_size: Sequence[int], dtype=ms.float32):
        super().__init__()
        self.in_dim = in_dim
        self.dim = dim
        self.patch_size = tuple(int(p) for p in patch_size)
        fan_in = in_dim * int(np.prod(self.patch_size))
        bound = 1.0 / math.sqrt(fan_in)
        self.weight = Parameter(initializer(
            Uniform(bound), (dim, in_dim, *self.patch_size), dtype), name="weight")
        self.bias = Parameter(initializer("zeros", (dim,), dtype), name="bias")
        self.compute_dtype = None  # None: the weight's dtype

    def construct(self, x: Tensor) -> Tensor:
        """x: [B, C, F, H, W] -> [B, dim, F/pt, H/ph, W/pw]."""
        bsz, c, f, h, w = x.shape
        pt, ph, pw = self.patch_size
        gf, gh, gw = f // pt, h // ph, w // pw
        dtype = self.compute_dtype or self.weight.dtype
        x = x[:, :, :gf * pt, :gh * ph, :gw * pw].astype(dtype)
        x = x.reshape(bsz, c, gf, pt, gh, ph, gw, pw).transpose(0, 2, 4, 6, 1, 3, 5, 7)
        x = x.reshape(bsz, gf * gh * gw, c * pt * ph * pw)
        y = linear(x, self.weight.reshape(self.dim, -1).astype(dtype), self.bias.astype(dtype))  # [B, L, dim]
        return y.transpose(0, 2, 1).reshape(bsz, self.dim, gf, gh, gw)


# ------------------------------------------------------------------------------------------- convolutions

def conv3d(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride=1, padding=0) -> Tensor:
    """3-D convolution with PyTorch's layout and zero padding.

    Args:
        x: [B, Cin, T, H, W]; weight: [Cout, Cin, kt, kh, kw]; bias: [Cout] or None.
        stride: int or (t, h, w).
        padding: int or (t, h, w), applied on both sides of each axis; or six values
            (t_front, t_back, h_top, h_bottom, w_left, w_right), e.g. the causal VAE's front-only time padding.
    Returns:
        [B, Cout, T', H', W'] in the dtype of ``weight`` (x is cast to it).
    """
    stride = _triple(stride)
    pads = tuple(int(p) for p in padding) if isinstance(padding, (tuple, list)) and len(padding) == 6 else None
    if pads is None:
        return _conv(x, weight, bias, stride, _triple(padding))
    if pads[0::2] == pads[1::2]:
        return _conv(x, weight, bias, stride, pads[0::2])
    if backend() == "ascend":
        # mint's conv3d pads symmetrically: pad the uneven part explicitly, the even part inside the conv.
        even = tuple(min(lo, hi) for lo, hi in zip(pads[0::2], pads[1::2]))
        rest = [p - even[i // 2] for i, p in enumerate(pads)]
        x = zero_pad(x, (rest[4], rest[5], rest[2], rest[3], rest[0], rest[1]))
        return _conv(x, weight, bias, stride, even)
    # CPU: the Conv3D primitive takes per-side padding. A separate Pad op would copy the whole input first:
    # at 1104x816 with few channels that copy cost about twice the convolution itself.
    x = x.astype(weight.dtype)
    y = _conv3d_primitive(int(weight.shape[0]), tuple(int(k) for k in weight.shape[2:]), stride, pads)(x, weight)
    return ops.bias_add(y, bias) if bias is not None else y


@functools.lru_cache(maxsize=None)
def _conv3d_primitive(out_channels: int, kernel: tuple, stride: tuple, pads: tuple):
    return ops.Conv3D(out_channels, kernel, pad_mode="pad", pad=pads, stride=stride)


def conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride=1, padding=0) -> Tensor:
    """2-D convolution: x [B, Cin, H, W], weight [Cout, Cin, kh, kw] -> [B, Cout, H', W'] (see ``conv3d``)."""
    return _conv(x, weight, bias, _pair(stride), _pair(padding))


def conv1d(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride: int = 1, padding: int = 0,
           groups: int = 1) -> Tensor:
    """1-D convolution with PyTorch's layout, symmetric zero padding and channel groups.

    Args:
        x: [B, Cin, T]; weight: [Cout, Cin // groups, k]; bias: [Cout] or None.
    Returns:
        [B, Cout, (T + 2 * padding - k) // stride + 1] in the dtype of ``weight`` (x is cast to it).
    """
    x = x.astype(weight.dtype)
    stride, padding, groups = int(stride), int(padding), int(groups)
    if backend() == "ascend":
        return mint.nn.functional.conv1d(x, weight, bias, stride, padding, 1, groups)
    # The CPU path runs a 2-D convolution over a height-1 image: MindSpore 2.7 has CPU kernels for that
    # (grouped too), not for mint's conv1d.
    y = ops.conv2d(x[:, :, None, :], weight[:, :, None, :], None, (1, stride), "pad" if padding else "valid",
                   (0, padding) if padding else 0, 1, groups)[:, :, 0, :]
    if bias is not None:
        y = ops.bias_add(y, bias)
    return y


def _conv(x, weight, bias, stride, padding):
    x = x.astype(weight.dtype)
    three_d = len(stride) == 3
    if backend() == "ascend":
        fn = mint.nn.functional.conv3d if three_d else mint.nn.functional.conv2d
        return fn(x, weight, bias, stride, padding)
    fn = ops.conv3d if three_d else ops.conv2d
    y = fn(x, weight, None, stride, "pad" if any(padding) else "valid", padding if any(padding) else 0)
    if bias is not None:  # added separately so both conv paths treat bias alike
        y = ops.bias_add(y, bias)
    return y


def zero_pad(x: Tensor, pads: Sequence[int]) -> Tensor:
    """Constant-zero padding in ``torch.nn.functional.pad`` order: (last_lo, last_hi, prev_lo, prev_hi, ...).

    ``F.pad`` has no CPU kernel in MindSpore 2.7; the ``Pad`` primitive does.
    """
    pads = [int(p) for p in pads]
    assert len(pads) % 2 == 0 and len(pads) // 2 <= x.ndim, f"bad pads {pads} for a {x.ndim}-D tensor"
    if not any(pads):
        return x
    if backend() == "ascend":
        return mint.nn.functional.pad(x, tuple(pads))
    spec = [(0, 0)] * x.ndim
    for i in range(len(pads) // 2):
        spec[x.ndim - 1 - i] = (pads[2 * i], pads[2 * i + 1])
    return ops.Pad(tuple(spec))(x)


def _triple(v) -> tuple:
    return (int(v),) * 3 if isinstance(v, (int, np.integer)) else tuple(int(i) for i in v)


def _pair(v) -> tuple:
    return (int(v),) * 2 if isinstance(v, (int, np.integer)) else tuple(int(i) for i in v)


# ------------------------------------------------------------------------------- decoder (LLM) attention

def rotate_halves(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embedding in the "rotate half" layout (Llama / Qwen): channel i pairs with channel i + D/2.

    Args:
        x: [B, L, N, D]; cos, sin: [B, L, 1, D] float32 (each angle repeated in both halves).
    Returns:
        [B, L, N, D] in the dtype of x, computed in float32 (exact float32 elementwise ops on every device).
    """
    d = x.shape[-1]
    xf = x.astype(ms.float32)
    rotated = ops.cat([-xf[..., d // 2:], xf[..., :d // 2]], -1)
    return (xf * cos + rotated * sin).astype(x.dtype)


def masked_attention(q: Tensor, k: Tensor, v: Tensor, mask: Union[np.ndarray, Tensor],
                     softmax_scale: Optional[float] = None) -> Tensor:
    """Scaled dot-product attention with an explicit boolean mask and grouped-query heads.

    Args:
        q: [B, Lq, N, D]; k, v: [B, Lk, Nkv, D] with N a multiple of Nkv (query head h reads key/value head
            h // (N / Nkv), as in Hugging Face's ``repeat_kv``).
        mask: bool [B, Lq, Lk] (numpy, or a bool Tensor to upload it once for many layers), True where the query
            may attend the key. Every row must allow at least one key (the caller lets padded query rows see
            themselves), so no backend meets an empty row; numpy masks are checked.
        softmax_scale: defaults to 1/sqrt(D).
    Returns:
        [B, Lq, N, D] in the dtype of q.
    """
    b, lq, n, d = q.shape
    lk, nkv = k.shape[1], k.shape[2]
    assert n % nkv == 0, f"{n} query heads are not a multiple of {nkv} key/value heads"
    assert tuple(mask.shape) == (b, lq, lk), f"mask shape {tuple(mask.shape)} != {(b, lq, lk)}"
    if isinstance(mask, np.ndarray):
        assert mask.any(-1).all(), "a query row with no visible key"
        mask = Tensor(np.ascontiguousarray(mask, dtype=np.bool_))
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    if backend() == "ascend":
        # Documented contract of flash_attention_score: BSND layout, key heads N2 a factor of N1 (GQA), an
        # attn_mask of shape [B, 1, S1, S2] where 1 DISCARDS a position, half-precision inputs.
        out_dtype = q.dtype
        half = q.dtype if q.dtype in (ms.float16, ms.bfloat16) else ms.bfloat16
        discard = ops.logical_not(mask).astype(ms.uint8).reshape(b, 1, lq, lk)
        out = ops.flash_attention_score(q.astype(half), k.astype(half), v.astype(half), n, attn_mask=discard,
                                        input_layout="BSND", scalar_value=scale, sparse_mode=0)
        return out.astype(out_dtype)
    rep = n // nkv
    # Group the query heads by their key/value head instead of repeating k and v: [B, Nkv, rep * Lq, D].
    qh = q.astype(ms.float32).reshape(b, lq, nkv, rep, d).transpose(0, 2, 3, 1, 4).reshape(b * nkv, rep * lq, d)
    kh = k.astype(ms.float32).transpose(0, 2, 1, 3).reshape(b * nkv, lk, d)
    vh = v.astype(ms.float32).transpose(0, 2, 1, 3).reshape(b * nkv, lk, d)
    scores = _matmul_nt(qh, kh).reshape(b, nkv, rep, lq, lk) * scale
    keep = ops.broadcast_to(mask.reshape(b, 1, 1, lq, lk), scores.shape)
    # A finite fill (not -inf) keeps softmax NaN-free; masked weights still underflow to exactly 0.
    scores = ops.select(keep, scores, ops.fill(ms.float32, scores.shape, -3.0e38))
    probs = ops.softmax(scores, -1).reshape(b * nkv, rep * lq, lk)
    out = ops.matmul(probs, vh).reshape(b, nkv, rep, lq, d)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, lq, n, d).astype(q.dtype)


def gelu_erf(x: Tensor) -> Tensor:
    """GELU without approximation, 0.5 * x * (1 + erf(x / sqrt(2))), computed in float32 (erf has CPU kernels,
    ``F.gelu`` does not)."""
    if backend() == "ascend":
        return mint.nn.functional.gelu(x)
    xf = x.astype(ms.float32)
    return (0.5 * xf * (1.0 + ops.erf(xf * (1.0 / math.sqrt(2.0))))).astype(x.dtype)


def embedding(weight: Tensor, ids: Tensor) -> Tensor:
    """Rows of ``weight`` [V, C] picked by integer ``ids`` [...] -> [..., C] (a gather with CPU kernels)."""
    return ops.gather(weight, ids, 0)


def linear_2d(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """x [..., in] @ weight[out, in].T + bias [out], as one 2-D matmul of the flattened rows.

    Same contract as :func:`linear`. On the reference path it avoids the batched matmul's expanded weight, which
    MindSpore's CPU backend materialises as a copy: for the few rows of a decoding step (one token) that copy
    dominates (a 151936 x 896 vocabulary projection: 190 ms batched vs 70 ms here; equal at 400 rows).
    """
    if backend() == "ascend":
        return ops.dense(x, weight, bias)
    lead = x.shape[:-1]
    y = _matmul_2d_nt()(x.reshape(-1, x.shape[-1]), weight).reshape(*lead, weight.shape[0])
    return y if bias is None else y + bias


@functools.lru_cache(maxsize=None)
def _matmul_2d_nt():
    return ops.MatMul(transpose_b=True)
