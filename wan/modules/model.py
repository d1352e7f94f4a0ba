"""The Wan diffusion transformer (DiT) as a MindSpore Cell.

Parameter names equal the official PyTorch state-dict keys (``blocks.0.self_attn.q.weight``, ...), so loading an
official checkpoint is an identity mapping. Device specifics live in ``kernels``; parallelism plugs into the
seams this file exposes (``SequencePlan``: split after patch embedding, self-attention, gather before the head)
and never into a copy of ``construct``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import mindspore as ms
import numpy as np
from mindspore.common.initializer import initializer
from mindspore import Parameter, Tensor, nn, ops

from . import kernels
from .kernels import LayerNorm, Linear, PatchEmbed3d, RMSNorm

__all__ = ["WanModel", "SequencePlan", "sinusoidal_embedding_1d", "rope_params", "rope_apply"]

MODEL_TYPES = ("t2v", "i2v", "ti2v")


# ------------------------------------------------------------------------------------ positional helpers

def sinusoidal_embedding_1d(dim: int, position) -> np.ndarray:
    """Timestep embedding [cos | sin] with base 10000, computed in float64 like the official code.

    Args:
        dim: even embedding size.
        position: [M] timesteps (numpy or Tensor).
    Returns:
        float64 numpy [M, dim].
    """
    assert dim % 2 == 0
    pos = position.asnumpy() if isinstance(position, Tensor) else np.asarray(position)
    pos = pos.astype(np.float64).reshape(-1)
    half = dim // 2
    inv = np.power(10000.0, -np.arange(half, dtype=np.float64) / half)
    angles = np.outer(pos, inv)
    return np.concatenate([np.cos(angles), np.sin(angles)], axis=1)


def rope_params(max_seq_len: int, dim: int, theta: float = 10000.0) -> np.ndarray:
    """Rotary angles for positions 0..max_seq_len-1: float64 numpy [max_seq_len, dim // 2].

    The official code stores the unit complex numbers exp(i * angle); the angles carry the same information and
    need no complex dtype.
    """
    assert dim % 2 == 0
    inv = 1.0 / np.power(theta, np.arange(0, dim, 2, dtype=np.float64) / dim)
    return np.outer(np.arange(max_seq_len, dtype=np.float64), inv)


def rope_tables(grid_sizes: Sequence[Tuple[int, int, int]], seq_len: int, freqs: np.ndarray,
                head_dim: int) -> Tuple[np.ndarray, np.ndarray]:
    """cos/sin of the 3-D rotary angles for every token of a padded batch.

    Channels pairs split into (frame, height, width) groups of sizes c - 2(c//3), c//3, c//3 (c = head_dim/2).
    Tokens past each sample's f*h*w get angle 0 (cos 1, sin 0), i.e. they pass through unrotated, as official.

    Returns:
        cos, sin: float64 numpy [B, seq_len, 1, head_dim // 2].
    """
    c = head_dim // 2
    sizes = (c - 2 * (c // 3), c // 3, c // 3)
    parts = np.split(freqs, np.cumsum(sizes)[:-1], axis=1)
    angles = np.zeros((len(grid_sizes), seq_len, c), np.float64)
    for i, (f, h, w) in enumerate(grid_sizes):
        grid = np.concatenate([
            np.broadcast_to(parts[0][:f, None, None, :], (f, h, w, sizes[0])),
            np.broadcast_to(parts[1][None, :h, None, :], (f, h, w, sizes[1])),
            np.broadcast_to(parts[2][None, None, :w, :], (f, h, w, sizes[2])),
        ], axis=-1)
        angles[i, :f * h * w] = grid.reshape(f * h * w, c)
    return np.cos(angles)[:, :, None, :], np.sin(angles)[:, :, None, :]


def rope_apply(x: Tensor, cos: np.ndarray, sin: np.ndarray) -> Tensor:
    """Apply the 3-D rotary embedding: x [B, L, N, D], cos/sin from ``rope_tables`` -> float32 [B, L, N, D]."""
    return kernels.rotate_pairs(x, cos, sin)


# ----------------------------------------------------------------------------------------- parallel seam

class SequencePlan:
    """How the token sequence is laid out across devices. The default keeps everything local.

    A sequence-parallel plan (``wan.distributed``) overrides the three hooks; the model calls them at fixed
    points and stays unaware of communication.
    """

    def pad_multiple(self) -> int:
        """The padded sequence length must be a multiple of this (the number of sequence shards)."""
        return 1

    def shard_range(self, length: int) -> Tuple[int, int]:
        """[start, stop) of the padded sequence that this device computes."""
        return 0, length

    def split(self, x: Tensor, dim: int = 1) -> Tensor:
        """Keep this device's part (``shard_range``) of the sequence axis ``dim``."""
        return x

    def gather(self, x: Tensor, dim: int = 1) -> Tensor:
        """Reassemble the full sequence along ``dim`` (called before unpatchify)."""
        return x

    def self_attention(self, q: Tensor, k: Tensor, v: Tensor, k_lens) -> Tensor:
        """q, k, v: this device's [B, L_local, N, D] -> [B, L_local, N, D]."""
        return kernels.attention(q, k, v, k_lens=k_lens)


LOCAL_PLAN = SequencePlan()


@dataclass
class _Step:
    """Per-forward values the blocks share (computed once in ``WanModel.construct``).

    ``segments`` is the seam for models whose modulation changes along the sequence in contiguous runs (S2V: the
    noisy tokens take the timestep, the reference and motion tokens timestep 0): row i of ``e0`` then applies to
    the local tokens [segments[i][0], segments[i][1]). None: ``e0`` broadcasts (or is per token) as usual.
    """
    e0: Tensor           # [B, L or 1, 6, dim] float32 modulation input ([B, S, 6, dim] with segments)
    seq_lens: np.ndarray  # [B] valid tokens per sample (keys past it are masked in self-attention)
    rope_cos: object     # [B|1, L_local, 1, head_dim // 2]: float64 numpy (reference) or float32 Tensor (Ascend)
    rope_sin: object
    context: Tensor      # [B, text_len, dim]
    plan: SequencePlan
    segments: Optional[Tuple[Tuple[int, int], ...]] = None

    def modulate(self, x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
        """x [B, L, C] * (1 + scale) + shift, with shift/scale [B, L|1, C] (or [B, S, C] per segment)."""
        if self.segments is None:
            return x * (1 + scale) + shift
        return _per_segment(x, self.segments, lambda u, i: u * (1 + scale[:, i:i + 1]) + shift[:, i:i + 1])

    def gate(self, y: Tensor, gate: Tensor) -> Tensor:
        """y [B, L, C] * gate, with gate [B, L|1, C] (or [B, S, C] per segment)."""
        if self.segments is None:
            return y * gate
        return _per_segment(y, self.segments, lambda u, i: u * gate[:, i:i + 1])


def _per_segment(x: Tensor, segments, fn) -> Tensor:
    """Apply fn(x[:, a:b], i) to each non-empty run (a, b) = segments[i] and concatenate along the sequence."""
    parts = [fn(x[:, a:b], i) for i, (a, b) in enumerate(segments) if b > a]
    return parts[0] if len(parts) == 1 else ops.cat(parts, 1)


# ------------------------------------------------------------------------------------------------ blocks

class WanSelfAttention(nn.Cell):
    def __init__(self, dim: int, num_heads: int, window_size=(-1, -1), qk_norm: bool = True, eps: float = 1e-6,
                 dtype=ms.float32):
        super().__init__()
        assert dim % num_heads == 0
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window_size = tuple(window_size)
        self.qk_norm = qk_norm
        self.eps = eps
        self.q = Linear(dim, dim, dtype=dtype)
        self.k = Linear(dim, dim, dtype=dtype)
        self.v = Linear(dim, dim, dtype=dtype)
        self.o = Linear(dim, dim, dtype=dtype)
        # RMS norm over the full width, before the head split (as official).
        self.norm_q = RMSNorm(dim, eps=eps, dtype=dtype) if qk_norm else None
        self.norm_k = RMSNorm(dim, eps=eps, dtype=dtype) if qk_norm else None

    def _qkv(self, x: Tensor, context: Tensor):
        b, n, d = x.shape[0], self.num_heads, self.head_dim
        q, k = self.q(x), self.k(context)
        if self.qk_norm:
            q, k = self.norm_q(q), self.norm_k(k)
        return q.reshape(b, -1, n, d), k.reshape(b, -1, n, d), self.v(context).reshape(b, -1, n, d)

    def construct(self, x: Tensor, step: _Step) -> Tensor:
        """x: [B, L, dim] -> [B, L, dim]."""
        q, k, v = self._qkv(x, x)
        q = rope_apply(q, step.rope_cos, step.rope_sin).astype(v.dtype)
        k = rope_apply(k, step.rope_cos, step.rope_sin).astype(v.dtype)
        out = step.plan.self_attention(q, k, v, step.seq_lens)
        return self.o(out.reshape(x.shape[0], x.shape[1], self.dim))


class WanCrossAttention(WanSelfAttention):
    def construct(self, x: Tensor, context: Tensor) -> Tensor:
        """x: [B, L, dim], context: [B, text_len, dim] -> [B, L, dim].

        No key mask: the official model attends to the zero-padded text rows too.
        """
        q, k, v = self._qkv(x, context)
        out = kernels.attention(q, k, v)
        return self.o(out.reshape(x.shape[0], x.shape[1], self.dim))


class FeedForward(nn.SequentialCell):
    """Linear -> GELU(tanh) -> Linear; a SequentialCell so that parameter names are ``0.weight``, ``2.weight``."""

    def __init__(self, dim: int, hidden: int, out: int, dtype=ms.float32):
        super().__init__([Linear(dim, hidden, dtype=dtype), _GeluTanh(), Linear(hidden, out, dtype=dtype)])


class _GeluTanh(nn.Cell):
    def construct(self, x):
        return kernels.gelu_tanh(x)


class _SiLU(nn.Cell):
    def construct(self, x):
        return kernels.silu(x)


class WanAttentionBlock(nn.Cell):
    def __init__(self, dim: int, ffn_dim: int, num_heads: int, window_size=(-1, -1), qk_norm: bool = True,
                 cross_attn_norm: bool = False, eps: float = 1e-6, dtype=ms.float32):
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.norm1 = LayerNorm(dim, eps)
        self.self_attn = WanSelfAttention(dim, num_heads, window_size, qk_norm, eps, dtype=dtype)
        self.norm3 = LayerNorm(dim, eps, elementwise_affine=True, dtype=dtype) if cross_attn_norm else None
        self.cross_attn = WanCrossAttention(dim, num_heads, (-1, -1), qk_norm, eps, dtype=dtype)
        self.norm2 = LayerNorm(dim, eps)
        self.ffn = FeedForward(dim, ffn_dim, dim, dtype=dtype)
        # Kept in float32 whatever the model dtype: the official modulation math runs in float32.
        self.modulation = Parameter(initializer("zeros", (1, 6, dim), ms.float32), name="modulation")

    def construct(self, x: Tensor, step: _Step) -> Tensor:
        """x: [B, L, dim] float32 residual stream -> same."""
        mod = self.modulation.astype(ms.float32)[:, None] + step.e0  # [B, L|1, 6, dim]
        shift1, scale1, gate1, shift2, scale2, gate2 = [mod[:, :, i] for i in range(6)]

        y = self.self_attn(step.modulate(self.norm1(x).astype(ms.float32), shift1, scale1), step)
        x = x + step.gate(y.astype(ms.float32), gate1)

        h = x if self.norm3 is None else self.norm3(x)
        x = x + self.cross_attn(h, step.context).astype(x.dtype)

        y = self.ffn(step.modulate(self.norm2(x).astype(ms.float32), shift2, scale2))
        return x + step.gate(y.astype(ms.float32), gate2)


class Head(nn.Cell):
    def __init__(self, dim: int, out_dim: int, patch_size, eps: float = 1e-6, dtype=ms.float32):
        super().__init__()
        self.dim = dim
        self.out_dim = out_dim
        self.patch_size = tuple(patch_size)
        self.norm = LayerNorm(dim, eps)
        self.head = Linear(dim, int(np.prod(self.patch_size)) * out_dim, dtype=dtype, compute_dtype=ms.float32)
        self.modulation = Parameter(initializer("zeros", (1, 2, dim), ms.float32), name="modulation")

    def construct(self, x: Tensor, e: Tensor) -> Tensor:
        """x: [B, L, dim], e: [B, L|1, dim] float32 -> [B, L, prod(patch) * out_dim] float32."""
        mod = self.modulation.astype(ms.float32)[:, None] + e[:, :, None]  # [B, L|1, 2, dim]
        shift, scale = mod[:, :, 0], mod[:, :, 1]
        return self.head(self.norm(x).astype(ms.float32) * (1 + scale) + shift)


# ------------------------------------------------------------------------------------------------- model

class WanModel(nn.Cell):
    """Wan diffusion backbone for text-to-video, image-to-video and text-image-to-video.

    Constructor arguments and call semantics follow the official ``WanModel``.
    """

    MODEL_TYPES = MODEL_TYPES  # a subclass (the S2V model) widens this
    NETWORK = "dit"  # key map used by from_pretrained (wan/checkpoint/keymaps.py)

    def __init__(self, model_type: str = "t2v", patch_size=(1, 2, 2), text_len: int = 512, in_dim: int = 16,
                 dim: int = 2048, ffn_dim: int = 8192, freq_dim: int = 256, text_dim: int = 4096,
                 out_dim: int = 16, num_heads: int = 16, num_layers: int = 32, window_size=(-1, -1),
                 qk_norm: bool = True, cross_attn_norm: bool = True, eps: float = 1e-6, dtype=ms.float32):
        super().__init__()
        _check_config(self.MODEL_TYPES, model_type=model_type, patch_size=patch_size, dim=dim, num_heads=num_heads,
                      freq_dim=freq_dim, window_size=window_size)
        self.model_type = model_type
        self.patch_size = tuple(int(p) for p in patch_size)
        self.text_len = text_len
        self.in_dim = in_dim
        self.dim = dim
        self.ffn_dim = ffn_dim
        self.freq_dim = freq_dim
        self.text_dim = text_dim
        self.out_dim = out_dim
        self.num_heads = num_heads
        self.num_layers = num_layers
        self.window_size = tuple(window_size)
        self.qk_norm = qk_norm
        self.cross_attn_norm = cross_attn_norm
        self.eps = eps
        self.dtype = dtype
        self.plan: SequencePlan = LOCAL_PLAN

        self.patch_embedding = PatchEmbed3d(in_dim, dim, self.patch_size, dtype=dtype)
        self.text_embedding = FeedForward(text_dim, dim, dim, dtype=dtype)
        # The time embedding and modulation run in float32 even in a bf16 model (autocast in the official code).
        self.time_embedding = nn.SequentialCell([
            Linear(freq_dim, dim, dtype=dtype, compute_dtype=ms.float32), _SiLU(),
            Linear(dim, dim, dtype=dtype, compute_dtype=ms.float32)])
        self.time_projection = nn.SequentialCell([
            _SiLU(), Linear(dim, dim * 6, dtype=dtype, compute_dtype=ms.float32)])
        self.blocks = nn.CellList([
            WanAttentionBlock(dim, ffn_dim, num_heads, window_size, qk_norm, cross_attn_norm, eps, dtype=dtype)
            for _ in range(num_layers)])
        self.head = Head(dim, out_dim, self.patch_size, eps, dtype=dtype)

        d = dim // num_heads
        self.freqs = np.concatenate([rope_params(1024, d - 4 * (d // 6)), rope_params(1024, 2 * (d // 6)),
                                     rope_params(1024, 2 * (d // 6))], axis=1)  # [1024, d // 2] angles
        self._rope_cache = None  # ((grid sizes, padded length), (cos, sin)) of the last call

    def set_compute_dtype(self, dtype) -> "WanModel":
        """Run the matmuls in ``dtype`` whatever the storage dtype (bf16 on Ascend, as the official autocast
        does); the float32 islands (time embedding, time projection, head) and the modulation math stay float32.
        """
        for _, cell in self.cells_and_names():
            if isinstance(cell, Linear) and not cell.fixed_compute_dtype:
                cell.compute_dtype = dtype
        self.patch_embedding.compute_dtype = dtype
        return self

    # ---------------------------------------------------------------------------------------------- config
    CONFIG_KEYS = ("model_type", "patch_size", "text_len", "in_dim", "dim", "ffn_dim", "freq_dim", "text_dim",
                   "out_dim", "num_heads", "num_layers", "window_size", "qk_norm", "cross_attn_norm", "eps")

    @property
    def config(self) -> dict:
        return {k: getattr(self, k) for k in self.CONFIG_KEYS}

    @classmethod
    def config_from_file(cls, path: str) -> dict:
        """Constructor arguments from an official diffusers-style ``config.json``."""
        with open(path, "r", encoding="utf-8") as f:
            raw = json.load(f)
        unknown = sorted(k for k in raw if not k.startswith("_") and k not in cls.CONFIG_KEYS)
        if unknown:
            raise ValueError(f"{path}: unknown WanModel config keys {unknown}; expected a subset of "
                             f"{list(cls.CONFIG_KEYS)}. Is this a Wan2.2 DiT config.json?")
        return {k: v for k, v in raw.items() if k in cls.CONFIG_KEYS}

    @classmethod
    def from_pretrained(cls, path: str, dtype=ms.float32, shard=None, strict: bool = True, value_dtype=None,
                        deltas=None) -> "WanModel":
        """Build and load a model from an official folder (``config.json`` + ``diffusion_pytorch_model*``
        safetensors, sharded or not, fp32 or bf16) or from a folder written by ``python -m convert``.

        Args:
            path: the model folder.
            dtype: parameter dtype; the modulation vectors are stored in float32 but hold values of ``dtype``
                (rounded like the official ``model.to(dtype)``).
            shard: optional (rank, world_size): read only this rank's ZeRO3 rows of each large weight.
            strict: missing, unexpected or mis-shaped keys are errors naming the key.
            value_dtype: round every value to this dtype (default ``dtype``): bf16 values in a float32 model is
                ``--convert_model_dtype`` on CPU. deltas: added in float32 before that one rounding (a LoRA);
                see ``checkpoint.load_into_cell``.
        """
        from wan.checkpoint import load_into_cell  # lazy: the checkpoint layer is only needed for loading

        config_path = os.path.join(path, "config.json")
        if not os.path.isfile(config_path):
            raise FileNotFoundError(f"{path!r} has no config.json; point to a Wan2.2 DiT folder (for A14B, the "
                                    f"high_noise_model/ or low_noise_model/ subfolder)")
        config = cls.config_from_file(config_path)
        with nn.no_init_parameters():
            model = cls(**config, dtype=dtype)
        load_into_cell(model, path, network=cls.NETWORK, strict=strict, shard=shard, deltas=deltas,
                       value_dtype=_dtype_name(dtype if value_dtype is None else value_dtype))
        model.set_train(False)
        return model

    # --------------------------------------------------------------------------------------------- forward
    def construct(self, x: List[Tensor], t: Tensor, context: List[Tensor], seq_len: int,
                  y: Optional[List[Tensor]] = None) -> List[Tensor]:
        """Predict the flow velocity.

        Args:
            x: B latents, each [C_in, F, H, W] (sizes may differ between samples).
            t: timesteps [B], or per token [B, seq_len] (TI2V with an image).
            context: B text embeddings, each [L_i, text_dim] with L_i <= text_len.
            seq_len: padded token count; must be >= every sample's F*H*W / prod(patch_size).
            y: i2v only: B conditions [C_y, F, H, W], concatenated to x along channels.
        Returns:
            B float32 tensors [out_dim, F, H, W].
        """
        self._check_inputs(x, t, context, seq_len, y)
        if y is not None:
            x = [ops.cat([u, v.astype(u.dtype)], 0) for u, v in zip(x, y)]
        plan = self.plan

        # Patch embedding; pad every sample to the same length (a multiple of the sequence shards).
        tokens, grid_sizes = [], []
        for u in x:
            p = self.patch_embedding(u[None])  # [1, dim, f, h, w]
            grid_sizes.append(tuple(int(s) for s in p.shape[2:]))
            tokens.append(p.reshape(1, self.dim, -1).transpose(0, 2, 1))
        seq_lens = np.array([int(np.prod(g)) for g in grid_sizes], np.int64)
        padded_len = _round_up(seq_len, plan.pad_multiple())
        x = ops.cat([_pad_rows(u, padded_len) for u in tokens], 0).astype(ms.float32)  # [B, L, dim]

        # Time embedding in float32. A timestep shared by all tokens of a sample is embedded once and
        # broadcast over the sequence (identical to the official per-token expansion, without its memory).
        t_np = t.asnumpy() if isinstance(t, Tensor) else np.asarray(t)
        if t_np.ndim == 2:
            t_np = np.pad(t_np, ((0, 0), (0, padded_len - t_np.shape[1])), mode="edge")
        else:
            t_np = t_np.reshape(-1, 1)
        lt = t_np.shape[1]
        e, e0 = self.embed_time(t_np)  # [B, L|1, dim], [B, L|1, 6, dim]
        ctx = self.embed_text(context)

        # Every denoising step calls the model twice (cond / uncond) on the same grid: build the tables once.
        key = (tuple(grid_sizes), padded_len)
        if self._rope_cache is None or self._rope_cache[0] != key:
            self._rope_cache = (key, rope_tables(grid_sizes, padded_len, self.freqs, self.dim // self.num_heads))
        cos, sin = self._rope_cache[1]
        start, stop = plan.shard_range(padded_len)
        cos, sin = kernels.rotation_tables(cos[:, start:stop], sin[:, start:stop])  # one upload per forward
        step = _Step(e0=plan.split(e0) if lt > 1 else e0, seq_lens=seq_lens, rope_cos=cos, rope_sin=sin,
                     context=ctx, plan=plan)
        x = plan.split(x)
        for block in self.blocks:
            x = block(x, step)
        x = self.head(x, plan.split(e) if lt > 1 else e)
        x = plan.gather(x)
        return self.unpatchify(x, grid_sizes)

    def embed_time(self, t_np: np.ndarray) -> Tuple[Tensor, Tensor]:
        """Timesteps float [B, Lt] -> e [B, Lt, dim], e0 [B, Lt, 6, dim], float32 (the official autocast island).

        Lt is 1 for a timestep shared by all tokens (broadcast later), the padded length for per-token timesteps,
        or one entry per token segment (S2V).
        """
        bt, lt = t_np.shape
        sincos = Tensor(sinusoidal_embedding_1d(self.freq_dim, t_np.reshape(-1)).astype(np.float32))
        e = self.time_embedding(sincos).reshape(bt, lt, self.dim)
        e0 = self.time_projection(e).reshape(bt, lt, 6, self.dim)
        return e, e0

    def embed_text(self, context: Sequence[Tensor]) -> Tensor:
        """B text embeddings [L_i <= text_len, text_dim] -> [B, text_len, dim].

        Zero-padded to text_len before the embedding: the padded rows take part in cross-attention, as official.
        """
        ctx = ops.stack([_pad_rows(u[None], self.text_len)[0] for u in context]).astype(self.dtype)
        return self.text_embedding(ctx)

    def unpatchify(self, x: Tensor, grid_sizes: Sequence[Tuple[int, int, int]]) -> List[Tensor]:
        """x: [B, L, pt*ph*pw*C] with channels ordered (pt, ph, pw, C), C fastest -> B tensors [C, F, H, W]."""
        c = self.out_dim
        pt, ph, pw = self.patch_size
        out = []
        for i, (f, h, w) in enumerate(grid_sizes):
            u = x[i, :f * h * w].reshape(f, h, w, pt, ph, pw, c)
            u = u.transpose(6, 0, 3, 1, 4, 2, 5).reshape(c, f * pt, h * ph, w * pw)
            out.append(u.astype(ms.float32))
        return out

    # ------------------------------------------------------------------------------------------ validation
    def _check_inputs(self, x, t, context, seq_len, y):
        if not isinstance(x, (list, tuple)) or not x:
            raise ValueError("x must be a non-empty list of latents [C, F, H, W]")
        if len(context) != len(x):
            raise ValueError(f"got {len(x)} latents but {len(context)} text contexts; pass one context per latent")
        if self.model_type == "i2v" and y is None:
            raise ValueError("model_type 'i2v' needs y (the image condition, one [C_y, F, H, W] per latent)")
        if y is not None and len(y) != len(x):
            raise ValueError(f"got {len(x)} latents but {len(y)} conditions y")
        pt, ph, pw = self.patch_size
        for i, u in enumerate(x):
            channels = u.shape[0] + (y[i].shape[0] if y is not None else 0)
            if u.ndim != 4 or channels != self.in_dim:
                raise ValueError(f"latent {i} has shape {tuple(u.shape)}"
                                 + (f" (+ y {tuple(y[i].shape)})" if y is not None else "")
                                 + f"; expected [C, F, H, W] with {self.in_dim} channels in total")
            tokens = (u.shape[1] // pt) * (u.shape[2] // ph) * (u.shape[3] // pw)
            if tokens > seq_len:
                raise ValueError(f"latent {i} of shape {tuple(u.shape)} makes {tokens} tokens, more than "
                                 f"seq_len={seq_len}; raise seq_len to at least {tokens}")
        for i, c in enumerate(context):
            if c.ndim != 2 or c.shape[1] != self.text_dim or c.shape[0] > self.text_len:
                raise ValueError(f"context {i} has shape {tuple(c.shape)}; expected [L <= {self.text_len}, "
                                 f"{self.text_dim}]")
        t_shape = tuple(t.shape)
        if t_shape not in ((len(x),), (len(x), seq_len)):
            raise ValueError(f"t has shape {t_shape}; expected [{len(x)}] or per token [{len(x)}, {seq_len}]")


def _check_config(model_types, model_type, patch_size, dim, num_heads, freq_dim, window_size):
    if model_type not in model_types:
        raise ValueError(f"model_type {model_type!r} is not supported; expected one of {model_types}")
    if len(tuple(patch_size)) != 3:
        raise ValueError(f"patch_size {patch_size!r} must have 3 entries (t, h, w)")
    if num_heads <= 0 or dim % num_heads != 0:
        raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
    if (dim // num_heads) % 2 != 0:
        raise ValueError(f"head dim {dim // num_heads} (dim/num_heads) must be even for rotary embeddings")
    if freq_dim % 2 != 0:
        raise ValueError(f"freq_dim={freq_dim} must be even")
    if tuple(window_size) != (-1, -1):
        raise ValueError(f"window_size={tuple(window_size)}: only global attention (-1, -1) is supported, as in "
                         f"every released Wan2.2 checkpoint")


def _dtype_name(dtype) -> str:
    """ms.bfloat16 / "bf16" ... -> a name ``checkpoint.canonical_dtype`` accepts."""
    return str(dtype).lower() if not isinstance(dtype, str) else dtype


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _pad_rows(u: Tensor, length: int) -> Tensor:
    """u: [1, L, C] -> [1, length, C] with zero rows appended."""
    missing = length - u.shape[1]
    if missing == 0:
        return u
    return ops.cat([u, ops.zeros((1, missing, u.shape[2]), u.dtype)], 1)
