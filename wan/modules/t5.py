"""The UMT5-XXL text encoder as MindSpore Cells, with the official class names, arguments and parameter names.

Parameter names equal the keys of the official ``models_t5_umt5-xxl-enc-bf16.pth`` (``token_embedding.weight``,
``blocks.0.attn.q.weight``, ``blocks.0.pos_embedding.embedding.weight``, ``blocks.0.ffn.gate.0.weight``,
``norm.weight``), so loading is an identity mapping. Math runs through ``kernels`` (Linear, rms_norm, gelu_tanh)
and classic ops that exist on CPU and Ascend; the relative-position buckets are integers computed once in numpy.

Only the encoder exists here: Wan never runs the T5 decoder.
"""
from __future__ import annotations

import logging
import math
from typing import Dict, List, Optional, Sequence, Tuple

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, One, initializer

from . import kernels
from .kernels import Linear

__all__ = ["T5Encoder", "T5EncoderModel", "T5LayerNorm", "T5Attention", "T5FeedForward", "T5SelfAttention",
           "T5RelativeEmbedding", "relative_position_bucket", "umt5_xxl_config", "UMT5_XXL"]

logger = logging.getLogger(__name__)

# Constructor arguments of the umt5-xxl encoder (the official ``umt5_xxl(encoder_only=True)``).
UMT5_XXL = dict(vocab=256384, dim=4096, dim_attn=4096, dim_ffn=10240, num_heads=64, num_layers=24,
                num_buckets=32, shared_pos=False, dropout=0.1)


def umt5_xxl_config(**overrides) -> dict:
    """The umt5-xxl encoder's constructor arguments, with ``overrides`` applied (e.g. for tiny test models)."""
    unknown = sorted(set(overrides) - set(UMT5_XXL))
    if unknown:
        raise ValueError(f"unknown T5Encoder arguments {unknown}; expected a subset of {sorted(UMT5_XXL)}")
    cfg = dict(UMT5_XXL)
    cfg.update(overrides)
    return cfg


def _finfo_min(dtype) -> float:
    """The most negative finite value of a MindSpore float dtype (torch.finfo(dtype).min)."""
    if dtype == ms.bfloat16:
        return -3.3895313892515355e38
    if dtype == ms.float16:
        return float(np.finfo(np.float16).min)
    if dtype == ms.float64:
        return float(np.finfo(np.float64).min)
    return float(np.finfo(np.float32).min)


# ------------------------------------------------------------------------------------- relative positions

def relative_position_bucket(rel_pos: np.ndarray, num_buckets: int, bidirectional: bool,
                             max_dist: int = 128) -> np.ndarray:
    """T5's bucket index for each relative position ``key - query``, as the official formula computes it.

    Half the buckets (per direction when bidirectional) hold exact distances 0..max_exact-1; the rest cover
    max_exact..max_dist logarithmically, with everything farther in the last bucket. The logarithm is evaluated
    in float32 and truncated towards zero, as the official float32 torch code does, so that bucket boundaries
    (distances whose exact value is an integer) fall on the same side.

    Args:
        rel_pos: int array of any shape.
    Returns:
        int64 array of the same shape, values in [0, num_buckets).
    """
    rel_pos = np.asarray(rel_pos, dtype=np.int64)
    if bidirectional:
        num_buckets = num_buckets // 2
        buckets = (rel_pos > 0).astype(np.int64) * num_buckets
        rel_pos = np.abs(rel_pos)
    else:
        buckets = np.zeros_like(rel_pos)
        rel_pos = -np.minimum(rel_pos, 0)
    max_exact = num_buckets // 2
    with np.errstate(divide="ignore"):  # log(0) = -inf for the distances the exact branch handles anyway
        # float32 division then float32 log, then the two float32 products, matching torch's float32 ops
        scaled = np.log(rel_pos.astype(np.float32) / np.float32(max_exact))
        scaled = scaled / np.float32(math.log(max_dist / max_exact)) * np.float32(num_buckets - max_exact)
    large = max_exact + np.where(np.isfinite(scaled), scaled, 0).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    return buckets + np.where(rel_pos < max_exact, rel_pos, large)


class Embedding(nn.Cell):
    """A lookup table ``weight`` [num, dim] (PyTorch's nn.Embedding layout), gathered with a CPU-capable op."""

    def __init__(self, num: int, dim: int, std: float = 1.0, dtype=ms.float32):
        super().__init__()
        self.num = num
        self.dim = dim
        self.weight = Parameter(initializer(Normal(std), (num, dim), dtype), name="weight")

    def construct(self, ids: Tensor) -> Tensor:
        """ids: int [...] -> [..., dim]."""
        return ops.gather(self.weight, ids, 0)


class T5RelativeEmbedding(nn.Cell):
    """Learned per-head bias for each relative-position bucket; ``embedding.weight`` [num_buckets, num_heads]."""

    def __init__(self, num_buckets: int, num_heads: int, bidirectional: bool, max_dist: int = 128,
                 dtype=ms.float32):
        super().__init__()
        self.num_buckets = num_buckets
        self.num_heads = num_heads
        self.bidirectional = bidirectional
        self.max_dist = max_dist
        self.embedding = Embedding(num_buckets, num_heads, std=(2 * num_buckets * num_heads) ** -0.5, dtype=dtype)
        self._buckets: Dict[Tuple[int, int], Tensor] = {}

    def buckets(self, lq: int, lk: int) -> Tensor:
        """int32 [lq, lk] bucket ids, cached per shape (they depend on the lengths only)."""
        key = (int(lq), int(lk))
        if key not in self._buckets:
            rel = np.arange(lk, dtype=np.int64)[None, :] - np.arange(lq, dtype=np.int64)[:, None]
            ids = relative_position_bucket(rel, self.num_buckets, self.bidirectional, self.max_dist)
            self._buckets[key] = Tensor(ids.astype(np.int32))
        return self._buckets[key]

    def construct(self, lq: int, lk: int) -> Tensor:
        """-> [1, num_heads, lq, lk] in the parameter dtype."""
        bias = self.embedding(self.buckets(lq, lk))  # [lq, lk, N]
        return bias.transpose(2, 0, 1).expand_dims(0)


# -------------------------------------------------------------------------------------------------- layers

class T5LayerNorm(nn.Cell):
    """RMS norm without mean subtraction or bias: weight * x / sqrt(mean(x^2) + eps), statistics in float32."""

    def __init__(self, dim: int, eps: float = 1e-6, dtype=ms.float32):
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.weight = Parameter(initializer(One(), (dim,), dtype), name="weight")

    def construct(self, x: Tensor) -> Tensor:
        return kernels.rms_norm(x, self.weight, self.eps)


class T5Attention(nn.Cell):
    """Multi-head attention without 1/sqrt(d) scaling, with an additive position bias and a key mask.

    Parameters ``q``, ``k``, ``v`` [dim_attn, dim] and ``o`` [dim, dim_attn], no biases.
    """

    def __init__(self, dim: int, dim_attn: int, num_heads: int, dropout: float = 0.1, dtype=ms.float32):
        if dim_attn % num_heads:
            raise ValueError(f"dim_attn={dim_attn} is not divisible by num_heads={num_heads}")
        super().__init__()
        self.dim = dim
        self.dim_attn = dim_attn
        self.num_heads = num_heads
        self.head_dim = dim_attn // num_heads
        self.q = Linear(dim, dim_attn, bias=False, dtype=dtype)
        self.k = Linear(dim, dim_attn, bias=False, dtype=dtype)
        self.v = Linear(dim, dim_attn, bias=False, dtype=dtype)
        self.o = Linear(dim_attn, dim, bias=False, dtype=dtype)
        self.dropout = nn.Dropout(p=dropout)

    def construct(self, x: Tensor, context: Optional[Tensor] = None, mask: Optional[Tensor] = None,
                  pos_bias: Optional[Tensor] = None) -> Tensor:
        """
        Args:
            x: [B, L1, dim]; context: [B, L2, dim] or None (self-attention).
            mask: [B, L2] or [B, L1, L2], nonzero = attend, or None.
            pos_bias: [1 or B, num_heads, L1, L2] or None.
        Returns:
            [B, L1, dim] in the dtype of x.
        """
        context = x if context is None else context
        b, n, c = x.shape[0], self.num_heads, self.head_dim
        q = self.q(x).reshape(b, -1, n, c).transpose(0, 2, 1, 3)        # [B, N, L1, C]
        k = self.k(context).reshape(b, -1, n, c).transpose(0, 2, 3, 1)  # [B, N, C, L2]
        v = self.v(context).reshape(b, -1, n, c).transpose(0, 2, 1, 3)  # [B, N, L2, C]
        lq, lk = q.shape[2], k.shape[3]

        # The official bias is zeros + pos_bias in x's dtype, with masked keys *replaced* by finfo.min.
        bias = ops.zeros((b, n, lq, lk), x.dtype)
        if pos_bias is not None:
            bias = bias + pos_bias.astype(x.dtype)
        if mask is not None:
            if mask.ndim == 2:
                masked = (mask == 0).reshape(b, 1, 1, lk)
            elif mask.ndim == 3:
                masked = (mask == 0).expand_dims(1)
            else:
                raise ValueError(f"mask must be [B, L2] or [B, L1, L2], got shape {tuple(mask.shape)}")
            bias = ops.masked_fill(bias, ops.broadcast_to(masked, bias.shape),
                                   Tensor(_finfo_min(x.dtype), x.dtype))

        # No 1/sqrt(head_dim): T5 folds it into the initialisation of q.
        scores = ops.matmul(q, k) + bias
        probs = ops.softmax(scores.astype(ms.float32), -1).astype(scores.dtype)
        out = ops.matmul(probs, v.astype(probs.dtype))                  # [B, N, L1, C]
        out = out.transpose(0, 2, 1, 3).reshape(b, -1, n * c)
        return self.dropout(self.o(out))


class GELU(nn.Cell):
    """GELU with the tanh approximation (the official ``GELU`` module), through the kernel layer."""

    def construct(self, x: Tensor) -> Tensor:
        return kernels.gelu_tanh(x)


class T5FeedForward(nn.Cell):
    """Gated FFN: fc2(fc1(x) * gelu_tanh(gate(x))); ``gate.0`` [dim_ffn, dim], ``fc1`` [dim_ffn, dim],
    ``fc2`` [dim, dim_ffn], no biases."""

    def __init__(self, dim: int, dim_ffn: int, dropout: float = 0.1, dtype=ms.float32):
        super().__init__()
        self.dim = dim
        self.dim_ffn = dim_ffn
        self.gate = nn.SequentialCell([Linear(dim, dim_ffn, bias=False, dtype=dtype), GELU()])
        self.fc1 = Linear(dim, dim_ffn, bias=False, dtype=dtype)
        self.fc2 = Linear(dim_ffn, dim, bias=False, dtype=dtype)
        self.dropout = nn.Dropout(p=dropout)

    def construct(self, x: Tensor) -> Tensor:
        """x: [B, L, dim] -> [B, L, dim]."""
        x = self.dropout(self.fc1(x) * self.gate(x))
        return self.dropout(self.fc2(x))


def _fp16_clamp(x: Tensor) -> Tensor:
    """Official overflow guard: float16 activations that reached inf are clamped to finite values."""
    if x.dtype == ms.float16 and bool(ops.isinf(x).any()):
        limit = float(np.finfo(np.float16).max) - 1000
        x = ops.clamp(x, -limit, limit)
    return x


class T5SelfAttention(nn.Cell):
    """One encoder block: x + attn(norm1(x)), then x + ffn(norm2(x)); own position bias unless shared."""

    def __init__(self, dim: int, dim_attn: int, dim_ffn: int, num_heads: int, num_buckets: int,
                 shared_pos: bool = True, dropout: float = 0.1, dtype=ms.float32):
        super().__init__()
        self.dim = dim
        self.dim_attn = dim_attn
        self.dim_ffn = dim_ffn
        self.num_heads = num_heads
        self.num_buckets = num_buckets
        self.shared_pos = shared_pos
        self.norm1 = T5LayerNorm(dim, dtype=dtype)
        self.attn = T5Attention(dim, dim_attn, num_heads, dropout, dtype=dtype)
        self.norm2 = T5LayerNorm(dim, dtype=dtype)
        self.ffn = T5FeedForward(dim, dim_ffn, dropout, dtype=dtype)
        self.pos_embedding = None if shared_pos else T5RelativeEmbedding(num_buckets, num_heads,
                                                                         bidirectional=True, dtype=dtype)

    def construct(self, x: Tensor, mask: Optional[Tensor] = None, pos_bias: Optional[Tensor] = None) -> Tensor:
        """x: [B, L, dim]; mask: [B, L]; pos_bias: [1, N, L, L] (used only when shared_pos)."""
        e = pos_bias if self.shared_pos else self.pos_embedding(x.shape[1], x.shape[1])
        x = _fp16_clamp(x + self.attn(self.norm1(x), mask=mask, pos_bias=e))
        return _fp16_clamp(x + self.ffn(self.norm2(x)))


class T5Encoder(nn.Cell):
    """The T5 encoder stack (official ``T5Encoder``): token embedding, ``num_layers`` blocks, final RMS norm.

    Args:
        vocab: vocabulary size, or an existing embedding Cell with a ``weight`` [vocab, dim] to share.
        dim, dim_attn, dim_ffn, num_heads, num_layers, num_buckets: sizes (umt5-xxl: 4096, 4096, 10240, 64, 24,
            32).
        shared_pos: one position bias for all blocks (T5) or one per block (umT5: False).
        dropout: dropout rate; identity in inference (the Cell's default, eval, mode).
        dtype: parameter and activation dtype. The CPU backend computes float32 only.
    """

    def __init__(self, vocab, dim: int, dim_attn: int, dim_ffn: int, num_heads: int, num_layers: int,
                 num_buckets: int, shared_pos: bool = True, dropout: float = 0.1, dtype=ms.float32):
        super().__init__()
        self.dim = dim
        self.dim_attn = dim_attn
        self.dim_ffn = dim_ffn
        self.num_heads = num_heads
        self.num_layers = num_layers
        self.num_buckets = num_buckets
        self.shared_pos = shared_pos
        self.dtype = dtype
        self.token_embedding = vocab if isinstance(vocab, nn.Cell) else Embedding(vocab, dim, std=1.0, dtype=dtype)
        self.vocab = int(self.token_embedding.weight.shape[0])
        self.pos_embedding = T5RelativeEmbedding(num_buckets, num_heads, bidirectional=True, dtype=dtype) \
            if shared_pos else None
        self.dropout = nn.Dropout(p=dropout)
        self.blocks = nn.CellList([
            T5SelfAttention(dim, dim_attn, dim_ffn, num_heads, num_buckets, shared_pos, dropout, dtype=dtype)
            for _ in range(num_layers)])
        self.norm = T5LayerNorm(dim, dtype=dtype)

    def construct(self, ids: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """
        Args:
            ids: int [B, L] token ids.
            mask: [B, L] (1 = real token, 0 = padding) or None.
        Returns:
            [B, L, dim] hidden states in ``dtype`` (padded rows are computed too; callers slice them off).
        """
        if not isinstance(ids, Tensor):
            ids = Tensor(np.asarray(ids), ms.int32)
        if mask is not None and not isinstance(mask, Tensor):
            mask = Tensor(np.asarray(mask), ms.int32)
        x = self.dropout(self.token_embedding(ids))
        e = self.pos_embedding(x.shape[1], x.shape[1]) if self.shared_pos else None
        for block in self.blocks:
            x = block(x, mask, pos_bias=e)
        return self.dropout(self.norm(x))


# --------------------------------------------------------------------------------------------- the wrapper

_HALF = (ms.float16, ms.bfloat16)


class T5EncoderModel:
    """umt5-xxl encoder + its tokenizer: texts in, one [real_length, dim] embedding per text out.

    Same constructor and call as the official class, without torch devices:

    Args:
        text_len: tokens per prompt after padding/truncation (512 for every Wan2.2 task).
        dtype: parameter dtype; None picks bfloat16 on Ascend (the official default) and float32 on CPU,
            which has no bfloat16 arithmetic.
        device: accepted for signature compatibility; MindSpore places tensors by its context, so it must be
            None or the current device target ("cpu", "ascend", "npu", ...).
        checkpoint_path: ``models_t5_umt5-xxl-enc-bf16.pth`` (or any checkpoint ``checkpoint.open_checkpoint``
            reads with the same keys). None leaves the weights randomly initialised (tests only).
        tokenizer_path: folder of the tokenizer (``<ckpt_dir>/google/umt5-xxl``).
        shard_fn: optional hook called as ``shard_fn(encoder_cell)`` after loading; it returns the Cell to use
            (e.g. ZeRO3-wrapped). The multi-device layer plugs in here.
        config: T5Encoder constructor overrides (tiny test models); default the umt5-xxl sizes.
        strict: missing, unexpected or mis-shaped checkpoint keys are errors.
        shard: optional (rank, world_size) passed to ``checkpoint.load_into_cell``: each large weight is read as
            only this rank's ZeRO3 rows (for a ``shard_fn`` that gathers them).
    """

    def __init__(self, text_len: int, dtype=None, device=None, checkpoint_path: Optional[str] = None,
                 tokenizer_path: Optional[str] = None, shard_fn=None, config: Optional[dict] = None,
                 strict: bool = True, shard=None):
        from .tokenizers import HuggingfaceTokenizer

        if not isinstance(text_len, int) or isinstance(text_len, bool) or text_len < 1:
            raise ValueError(f"text_len={text_len!r}: pass a positive int (Wan2.2 uses 512)")
        on_ascend = kernels.backend() == "ascend"
        if dtype is None:
            dtype = ms.bfloat16 if on_ascend else ms.float32
        if dtype not in (ms.float32,) + _HALF:
            raise ValueError(f"dtype={dtype}: pass mindspore.float32, float16 or bfloat16")
        if dtype in _HALF and not on_ascend:
            raise ValueError(f"dtype={dtype} cannot be computed on the CPU backend; pass dtype=mindspore.float32 "
                             "(or None) on CPU")
        if device is not None:
            target = str(ms.get_context("device_target")).lower()
            name = str(device).split(":")[0].lower()
            if name not in (target, "npu" if target == "ascend" else target):
                raise ValueError(f"device={device!r} does not match MindSpore's device_target {target!r}; pass "
                                 "device=None and choose the device with mindspore.set_context(device_target=...)")
        if checkpoint_path is not None and not isinstance(checkpoint_path, (str, bytes)) and \
                not hasattr(checkpoint_path, "__fspath__"):
            raise ValueError(f"checkpoint_path={checkpoint_path!r}: pass the path of models_t5_umt5-xxl-enc-bf16.pth")

        self.text_len = text_len
        self.dtype = dtype
        self.device = device
        self.checkpoint_path = checkpoint_path
        self.tokenizer_path = tokenizer_path
        # The tokenizer first: it is cheap and catches a wrong folder before the 11 GB load.
        self.tokenizer = HuggingfaceTokenizer(name=tokenizer_path, seq_len=text_len, clean="whitespace")

        cfg = umt5_xxl_config(**(config or {}))
        if checkpoint_path is not None:
            from wan.checkpoint import load_into_cell  # lazy: the checkpoint layer is only needed for loading

            with nn.no_init_parameters():
                model = T5Encoder(**cfg, dtype=dtype)
            logger.info("loading %s", checkpoint_path)
            load_into_cell(model, checkpoint_path, network="t5", strict=strict, shard=shard)
        else:
            model = T5Encoder(**cfg, dtype=dtype)
        model.set_train(False)
        for p in model.get_parameters():
            p.requires_grad = False
        if self.tokenizer.vocab_size > model.vocab:
            raise ValueError(f"tokenizer {tokenizer_path!r} has {self.tokenizer.vocab_size} tokens but the encoder's "
                             f"embedding has {model.vocab} rows; use the tokenizer that ships with the checkpoint")
        self.model = shard_fn(model) if shard_fn is not None else model

    def encode_ids(self, texts: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        """Tokenize: -> ids int64 [B, text_len], mask int64 [B, text_len] (1 = real token)."""
        return self.tokenizer(texts, return_mask=True, add_special_tokens=True)

    def __call__(self, texts, device=None) -> List[Tensor]:
        """texts: a string or a non-empty list of strings -> list of [real_length_i, dim] Tensors.

        ``device`` exists for the official call signature and is ignored (outputs live where MindSpore put them).
        """
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
        if not texts:
            raise ValueError("texts is an empty list: pass at least one prompt (an empty string is allowed)")
        ids, mask = self.encode_ids(texts)
        seq_lens = (mask > 0).sum(axis=1).tolist()
        context = self.model(Tensor(ids.astype(np.int32)), Tensor(mask.astype(np.int32)))
        return [context[i, :n] for i, n in enumerate(seq_lens)]
