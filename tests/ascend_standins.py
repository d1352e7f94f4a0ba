"""CPU stand-ins for Ascend-only MindSpore 2.7 ops, for running the kernel layer's Ascend branch here.

Each stand-in first enforces the documented contract of the real op (argument names bound against
``inspect.signature`` of the installed op, accepted dtypes, layout, shape limits) and raises
``ContractError`` naming the op and the broken constraint; only then does it compute the result in float32
from the (already bf16/fp16-rounded) inputs and return it in the input dtype, as the fused kernel would.

Contract of ``ops.flash_attention_score`` (MindSpore 2.7 docstring): query/key/value float16 or bfloat16, one
dtype; layouts BSH, BNSD, SBH, BSND, TND; B in [1, 2048], S in [1, 512k], N1 in [1, 256], N2 divides N1, head
size D a multiple of 16 and at most 512; ``head_num`` equals N1; ``keep_prob`` 1.0 without ``drop_mask``.
"""
from __future__ import annotations

import inspect

import numpy as np
import mindspore as ms
from mindspore import Tensor, ops

FLASH_LAYOUTS = ("BSH", "BNSD", "SBH", "BSND", "TND")
HALF_DTYPES = (ms.float16, ms.bfloat16)


class ContractError(AssertionError):
    """A call that the real Ascend op would reject."""


def _fail(op, message):
    raise ContractError(f"{op}: {message}")


def _bind(real, op_name, args, kwargs):
    """Bind the call to the installed op's signature: unknown or duplicated argument names fail here."""
    try:
        bound = inspect.signature(real).bind(*args, **kwargs)
    except TypeError as e:
        _fail(op_name, f"arguments do not match {inspect.signature(real)}: {e}")
    bound.apply_defaults()
    return bound.arguments


def _float32(x: Tensor) -> np.ndarray:
    # bf16 cannot become numpy directly on CPU; the cast to float32 is exact
    return x.astype(ms.float32).asnumpy()


class FlashAttentionStandIn:
    """Replaces ``ops.flash_attention_score``; ``calls`` records (layout, q shape, k shape, dtype) per call."""

    op_name = "ops.flash_attention_score"

    def __init__(self, real=None):
        self.real = real if real is not None else ops.flash_attention_score
        self.calls = []

    def __call__(self, *args, **kwargs):
        a = _bind(self.real, self.op_name, args, kwargs)
        q, k, v = a["query"], a["key"], a["value"]
        layout = a["input_layout"]
        if layout not in FLASH_LAYOUTS:
            _fail(self.op_name, f"input_layout {layout!r} is not one of {FLASH_LAYOUTS}")
        for name, t in (("query", q), ("key", k), ("value", v)):
            if not isinstance(t, Tensor):
                _fail(self.op_name, f"{name} must be a Tensor, got {type(t).__name__}")
            if t.dtype not in HALF_DTYPES:
                _fail(self.op_name, f"{name} dtype {t.dtype} is not float16/bfloat16")
        if not (q.dtype == k.dtype == v.dtype):
            _fail(self.op_name, f"query/key/value dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
        if tuple(k.shape) != tuple(v.shape):
            _fail(self.op_name, f"key {tuple(k.shape)} and value {tuple(v.shape)} shapes differ")
        if layout not in ("BSND", "BNSD"):
            _fail(self.op_name, f"the stand-in computes BSND/BNSD only, got {layout!r}")
        if q.ndim != 4 or k.ndim != 4:
            _fail(self.op_name, f"{layout} needs 4-D query/key, got {tuple(q.shape)} / {tuple(k.shape)}")
        if layout == "BSND":
            (b, s1, n1, d), (bk, s2, n2, dk) = q.shape, k.shape
        else:
            (b, n1, s1, d), (bk, n2, s2, dk) = q.shape, k.shape
        if b != bk or d != dk:
            _fail(self.op_name, f"query {tuple(q.shape)} and key {tuple(k.shape)} disagree on B or D")
        if not 1 <= b <= 2048:
            _fail(self.op_name, f"batch B={b} outside [1, 2048]")
        for name, s in (("S1", s1), ("S2", s2)):
            if not 1 <= s <= 512 * 1024:
                _fail(self.op_name, f"sequence {name}={s} outside [1, 512k]")
        if not 1 <= n1 <= 256:
            _fail(self.op_name, f"head count N1={n1} outside [1, 256]")
        if n1 % n2 != 0:
            _fail(self.op_name, f"N2={n2} is not a factor of N1={n1}")
        if a["head_num"] != n1:
            _fail(self.op_name, f"head_num={a['head_num']} but query has N1={n1} heads")
        if d % 16 != 0 or d > 512:
            _fail(self.op_name, f"head size D={d} must be a multiple of 16 and at most 512")
        if a["keep_prob"] != 1.0 or a["drop_mask"] is not None:
            _fail(self.op_name, "inference calls must use keep_prob=1.0 and no drop_mask")
        if a["attn_mask"] is not None or a["real_shift"] is not None:
            _fail(self.op_name, "the stand-in models unmasked calls only (attn_mask/real_shift not None)")
        self.calls.append((layout, tuple(q.shape), tuple(k.shape), q.dtype))
        qn, kn, vn = (_float32(t) for t in (q, k, v))
        if layout == "BNSD":
            qn, kn, vn = (t.transpose(0, 2, 1, 3) for t in (qn, kn, vn))
        rep = n1 // n2
        kn, vn = np.repeat(kn, rep, axis=2), np.repeat(vn, rep, axis=2)
        s = np.einsum("bqnd,bknd->bnqk", qn, kn) * np.float32(a["scalar_value"])
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        out = np.einsum("bnqk,bknd->bqnd", p, vn).astype(np.float32)
        if layout == "BNSD":
            out = out.transpose(0, 2, 1, 3)
        return Tensor(out).astype(q.dtype)


class Conv2dStandIn:
    """Replaces ``mint.nn.functional.conv2d`` (no CPU kernel): signature-checked, float32 ``ops.conv2d``."""

    op_name = "mint.nn.functional.conv2d"

    def __init__(self, real=None):
        from mindspore import mint

        self.real = real if real is not None else mint.nn.functional.conv2d
        self.calls = 0

    def __call__(self, *args, **kwargs):
        a = _bind(self.real, self.op_name, args, kwargs)
        x, w, b = a["input"], a["weight"], a["bias"]
        if x.dtype != w.dtype:
            _fail(self.op_name, f"input dtype {x.dtype} differs from weight dtype {w.dtype}")
        if x.ndim != 4 or w.ndim != 4:
            _fail(self.op_name, f"needs 4-D input/weight, got {tuple(x.shape)} / {tuple(w.shape)}")
        if a["groups"] != 1:
            _fail(self.op_name, "the stand-in computes groups=1 only")
        self.calls += 1
        stride = tuple(a["stride"]) if not isinstance(a["stride"], int) else (a["stride"],) * 2
        pad = tuple(a["padding"]) if not isinstance(a["padding"], (int, str)) else (a["padding"],) * 2
        xf, wf = x.astype(ms.float32), w.astype(ms.float32)
        if any(pad):
            y = ops.conv2d(xf, wf, None, stride, "pad", (pad[0], pad[0], pad[1], pad[1]))
        else:
            y = ops.conv2d(xf, wf, None, stride, "valid", 0)
        if b is not None:
            y = ops.bias_add(y, b.astype(ms.float32))
        return y.astype(x.dtype)
