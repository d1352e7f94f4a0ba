"""Wan2.1 causal 3-D video VAE (MindSpore), numerically equal to the official ``wan/modules/vae2_1.py``.

Tensor layout is channel-first video ``[B, C, T, H, W]`` throughout. Parameter names equal the official
state-dict keys (``encoder.conv1.weight``, ``encoder.downsamples.0.residual.0.gamma``,
``decoder.upsamples.3.resample.1.weight``, ``conv1.weight``, ...), so a ``Wan2.1_VAE.pth`` loads without renames.

Causality and chunking. Every temporal convolution pads time at the front only. The official model never runs
a whole clip through the network at once: encode feeds frame chunks [1, 4, 4, ...] and decode one latent frame
at a time, and each cached layer keeps the last ``CACHE_T`` input frames of the previous chunk in a
:class:`FeatureCache`. Because the chunk boundaries change what the temporal up/down-samplers see, the result is
NOT the same as one full-clip convolution; this module reproduces the chunked computation exactly.

Shared with ``vae2_2``: the building blocks (:data:`CACHE_T`, :class:`FeatureCache`, :class:`CausalConv3d`,
:class:`RMS_norm`, :class:`Conv2d`, :class:`Upsample`, :class:`ZeroPad2d`, :class:`Resample`,
:class:`ResidualBlock`, :class:`AttentionBlock`, :func:`middle_blocks`, :func:`output_head`), the cached runs
(:func:`run_conv`, :func:`run_layers`, :func:`chunked_encode`, :func:`chunked_decode`), the network bases
(:class:`CausalEncoder3d`, :class:`CausalDecoder3d`, :class:`CausalVAE`: forward passes and latent scaling),
the spatial tiling (:func:`tiled_decode`, :func:`tiled_encode`) and the wrapper base :class:`VideoVAE` with
its checkpoint probe (:func:`read_vae_checkpoint_layout`).
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Tuple

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from . import kernels as K

__all__ = [
    "CACHE_T", "FeatureCache", "UPSAMPLE_FIRST_CHUNK_DONE", "CausalConv3d", "RMS_norm", "Conv2d", "Upsample",
    "ZeroPad2d", "SiLU", "Resample", "ResidualBlock", "AttentionBlock", "CausalEncoder3d", "CausalDecoder3d",
    "CausalVAE", "Encoder3d", "Decoder3d", "WanVAE_",
    "VideoVAE", "Wan2_1_VAE", "check_vae2_1_checkpoint", "read_vae_checkpoint_layout", "frames_to_images",
    "images_to_frames", "run_conv", "run_layers", "middle_blocks", "output_head", "encode_chunks",
    "chunked_encode", "chunked_decode", "normalize_latent", "denormalize_latent", "tiled_apply", "tiled_decode",
    "tiled_encode",
]

# Number of trailing input frames a cached causal conv keeps for the next chunk (its temporal kernel is 3).
CACHE_T = 2


# -------------------------------------------------------------------------------------------- feature cache

class _Marker:
    def __init__(self, name: str):
        self._name = name

    def __repr__(self) -> str:
        return self._name


# Slot value of a temporal upsampler after the first chunk. The first chunk is not doubled in time (the first
# latent frame becomes one frame); the next chunk then runs the time conv with zero history (official "Rep").
UPSAMPLE_FIRST_CHUNK_DONE = _Marker("UPSAMPLE_FIRST_CHUNK_DONE")


class FeatureCache:
    """State carried from one chunk to the next during one chunked causal pass (one encode or one decode).

    Every cached layer owns one slot, allocated in call order during the first chunk; each chunk visits the
    layers in the same order, so the k-th ``read``/``write`` of a chunk always refers to the k-th layer.
    Usage per chunk::

        cache.begin_chunk()
        y = encoder(x_chunk, cache)      # layers call cache.read() then cache.write(value) exactly once each

    A slot holds ``None`` (layer not seen yet), a Tensor ``[B, C, <=CACHE_T, H, W]`` (trailing input frames of
    the previous chunk), or :data:`UPSAMPLE_FIRST_CHUNK_DONE`.
    """

    def __init__(self):
        self._slots: List[object] = []
        self._cursor = 0
        self.chunks_started = 0

    def begin_chunk(self) -> None:
        """Rewind to the first slot; call before running the network on each chunk."""
        self._cursor = 0
        self.chunks_started += 1

    @property
    def is_first_chunk(self) -> bool:
        """True while the first chunk of the pass runs."""
        return self.chunks_started <= 1

    def read(self):
        """The current layer's slot value (None on the layer's first chunk)."""
        return self._slots[self._cursor] if self._cursor < len(self._slots) else None

    def write(self, value) -> None:
        """Store the current layer's value for the next chunk and move on to the next layer's slot."""
        if self._cursor == len(self._slots):
            self._slots.append(value)
        else:
            self._slots[self._cursor] = value
        self._cursor += 1

    def __len__(self) -> int:
        return len(self._slots)


def _keep_tail(x: Tensor, previous) -> Tensor:
    """The last CACHE_T frames of ``x`` [B, C, T, H, W]; when the chunk is shorter, prepend the last frame of
    the previous chunk's cache so the next chunk still sees two frames of history."""
    tail = x[:, :, -CACHE_T:]
    if tail.shape[2] < CACHE_T and isinstance(previous, Tensor):
        tail = ops.cat([previous[:, :, -1:].astype(tail.dtype), tail], 2)
    return tail


# ------------------------------------------------------------------------------------------- layout helpers

def frames_to_images(x: Tensor) -> Tensor:
    """[B, C, T, H, W] -> [B*T, C, H, W] (frame-major, like einops 'b c t h w -> (b t) c h w')."""
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def images_to_frames(x: Tensor, t: int) -> Tensor:
    """[B*T, C, H, W] -> [B, C, T, H, W]."""
    bt, c, h, w = x.shape
    return x.reshape(bt // t, t, c, h, w).permute(0, 2, 1, 3, 4)


def _uniform(shape, fan_in: int, dtype) -> Parameter:
    # PyTorch's default conv init (kaiming_uniform a=sqrt(5) == U(+-1/sqrt(fan_in))); weights are normally
    # overwritten by a checkpoint.
    bound = 1.0 / math.sqrt(fan_in)
    return Parameter(ms.common.initializer.initializer(ms.common.initializer.Uniform(bound), shape, dtype))


# ---------------------------------------------------------------------------------------------- primitives

class CausalConv3d(nn.Cell):
    """3-D convolution, causal in time: zero padding of 2*pad_t frames at the front, none at the back.

    Same parameters as ``torch.nn.Conv3d(in_channels, out_channels, kernel_size, stride, padding)``:
    ``weight`` [Cout, Cin, kt, kh, kw], ``bias`` [Cout]. Spatial padding is symmetric.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dtype=ms.float32):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = K._triple(kernel_size)
        self.stride = K._triple(stride)
        pad_t, pad_h, pad_w = K._triple(padding)
        self.time_pad = 2 * pad_t
        self.spatial_padding = (0, pad_h, pad_w)
        fan_in = in_channels * int(np.prod(self.kernel_size))
        self.weight = _uniform((out_channels, in_channels, *self.kernel_size), fan_in, dtype)
        self.bias = _uniform((out_channels,), fan_in, dtype)

    def construct(self, x: Tensor, cache_x: Optional[Tensor] = None) -> Tensor:
        """x: [B, Cin, T, H, W]; cache_x: [B, Cin, <=2, H, W] frames preceding x (replace as much front
        padding). Returns [B, Cout, T', H', W'] in the weight dtype."""
        time_pad = self.time_pad
        if cache_x is not None and time_pad > 0:
            x = ops.cat([cache_x.astype(x.dtype), x], 2)
            time_pad -= cache_x.shape[2]
        _, ph, pw = self.spatial_padding
        # Front-only time padding and symmetric spatial padding, inside the convolution (no padded copy).
        return K.conv3d(x, self.weight, self.bias, self.stride, (max(time_pad, 0), 0, ph, ph, pw, pw))

    def cached(self, x: Tensor, cache: FeatureCache) -> Tensor:
        """Run on one chunk, using and updating this layer's slot in ``cache`` (official feat_cache step)."""
        previous = cache.read()
        tail = _keep_tail(x, previous)
        out = self(x, previous)
        cache.write(tail)
        return out


class Conv2d(nn.Cell):
    """2-D convolution with ``torch.nn.Conv2d``'s parameters: ``weight`` [Cout, Cin, kh, kw], ``bias`` [Cout]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dtype=ms.float32):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = K._pair(kernel_size)
        self.stride = K._pair(stride)
        self.padding = K._pair(padding)
        fan_in = in_channels * int(np.prod(self.kernel_size))
        self.weight = _uniform((out_channels, in_channels, *self.kernel_size), fan_in, dtype)
        self.bias = _uniform((out_channels,), fan_in, dtype)

    def construct(self, x: Tensor) -> Tensor:
        """x: [N, Cin, H, W] -> [N, Cout, H', W']."""
        return K.conv2d(x, self.weight, self.bias, self.stride, self.padding)


class RMS_norm(nn.Cell):
    """normalize(x, dim=channel) * sqrt(C) * gamma (+ bias), computed in float32, returned in x's dtype.

    ``gamma`` has the official shape: [C, 1, 1, 1] for video (``images=False``), [C, 1, 1] for images,
    [C] when ``channel_first=False``.
    """

    def __init__(self, dim: int, channel_first: bool = True, images: bool = True, bias: bool = False,
                 dtype=ms.float32):
        super().__init__()
        broadcast = (1, 1) if images else (1, 1, 1)
        shape = (dim, *broadcast) if channel_first else (dim,)
        self.channel_first = channel_first
        self.scale = dim ** 0.5
        self.gamma = Parameter(ops.ones(shape, dtype))
        self.bias = Parameter(ops.zeros(shape, dtype)) if bias else None

    def construct(self, x: Tensor) -> Tensor:
        axis = 1 if self.channel_first else -1
        xf = x.astype(ms.float32)
        # F.normalize: x / max(||x||_2, 1e-12)
        norm = ops.sqrt(ops.sum(xf * xf, axis, keepdim=True))
        y = xf / ops.maximum(norm, 1e-12) * self.scale * self.gamma.astype(ms.float32)
        if self.bias is not None:
            y = y + self.bias.astype(ms.float32)
        return y.astype(x.dtype)


class SiLU(nn.Cell):
    def construct(self, x: Tensor) -> Tensor:
        return K.silu(x)


class Identity(nn.Cell):
    """Pass-through (also stands in for inference-time Dropout, keeping the official Sequential indices)."""

    def construct(self, x: Tensor) -> Tensor:
        return x


class Upsample(nn.Cell):
    """Nearest 2x spatial upsampling of images [N, C, H, W].

    The official layer uses mode "nearest-exact"; for an integer factor of 2 both pick source pixel i // 2,
    so a broadcast copy is exact (and has no dtype restriction).
    """

    def construct(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        x = ops.broadcast_to(x.reshape(n, c, h, 1, w, 1), (n, c, h, 2, w, 2))
        return x.reshape(n, c, 2 * h, 2 * w)


class ZeroPad2d(nn.Cell):
    """Zero padding of images [N, C, H, W]; ``padding`` = (left, right, top, bottom) like torch."""

    def __init__(self, padding: Sequence[int]):
        super().__init__()
        self.padding = tuple(int(p) for p in padding)

    def construct(self, x: Tensor) -> Tensor:
        return K.zero_pad(x, self.padding)


def run_conv(conv: CausalConv3d, x: Tensor, cache: Optional[FeatureCache]) -> Tensor:
    """One causal conv; during a chunked pass (``cache`` given) it reads and updates its cache slot."""
    return conv(x) if cache is None else conv.cached(x, cache)


def run_layers(layers: Sequence[nn.Cell], x: Tensor, cache: Optional[FeatureCache]) -> Tensor:
    """Single-input layers in order (norms, activations, causal convs); the causal convs go through ``cache``."""
    for layer in layers:
        x = run_conv(layer, x, cache) if isinstance(layer, CausalConv3d) else layer(x)
    return x


# ------------------------------------------------------------------------------------------------- blocks

class Resample(nn.Cell):
    """Spatial 2x up/down-sampling, optionally with a causal 2x temporal up/down-sampling.

    Modes: "none", "upsample2d", "upsample3d", "downsample2d", "downsample3d". Children follow the official
    tree: ``resample`` (a sequence whose index 1 is the conv: ``resample.1.weight``) and ``time_conv``.

    Args:
        dim: input channels.
        out_dim: channels after an upsampling conv; default ``dim // 2`` (Wan2.1). Wan2.2 passes ``dim``.
            Downsampling always keeps ``dim``.
    """

    MODES = ("none", "upsample2d", "upsample3d", "downsample2d", "downsample3d")

    def __init__(self, dim: int, mode: str, out_dim: Optional[int] = None, dtype=ms.float32):
        super().__init__()
        assert mode in self.MODES, f"unknown Resample mode {mode!r}"
        self.dim = dim
        self.mode = mode
        up_dim = dim // 2 if out_dim is None else out_dim
        if mode in ("upsample2d", "upsample3d"):
            self.resample = nn.SequentialCell([Upsample(), Conv2d(dim, up_dim, 3, padding=1, dtype=dtype)])
        elif mode in ("downsample2d", "downsample3d"):
            self.resample = nn.SequentialCell([ZeroPad2d((0, 1, 0, 1)), Conv2d(dim, dim, 3, stride=2, dtype=dtype)])
        else:
            self.resample = Identity()
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0), dtype=dtype)
        elif mode == "downsample3d":
            self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), padding=0, dtype=dtype)
        else:
            self.time_conv = None

    def construct(self, x: Tensor, cache: Optional[FeatureCache] = None) -> Tensor:
        """x: [B, C, T, H, W] -> [B, C', T', H*2 or H/2, W*2 or W/2].

        Temporal resampling happens only with a cache (chunked pass), as in the official code: upsample3d
        leaves the first chunk at T frames and doubles later chunks; downsample3d leaves the first chunk
        alone and halves later chunks (prefixed with the previous chunk's last frame).
        """
        b, c, t, h, w = x.shape
        if self.mode == "upsample3d" and cache is not None:
            previous = cache.read()
            if previous is None:
                cache.write(UPSAMPLE_FIRST_CHUNK_DONE)
            else:
                tail = x[:, :, -CACHE_T:]
                if tail.shape[2] < CACHE_T:
                    if previous is UPSAMPLE_FIRST_CHUNK_DONE:
                        history = ops.zeros(tail.shape, tail.dtype)
                    else:
                        history = previous[:, :, -1:].astype(tail.dtype)
                    tail = ops.cat([history, tail], 2)
                x = self.time_conv(x, None if previous is UPSAMPLE_FIRST_CHUNK_DONE else previous)
                cache.write(tail)
                # channels [2, C] -> frames interleaved: (t0 a, t0 b, t1 a, t1 b, ...)
                x = x.reshape(b, 2, c, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * t, h, w)
        t = x.shape[2]
        x = images_to_frames(self.resample(frames_to_images(x)), t)

        if self.mode == "downsample3d" and cache is not None:
            previous = cache.read()
            if previous is None:
                # only the last frame is ever read back (the official code stores the whole chunk)
                cache.write(x[:, :, -1:])
            else:
                tail = x[:, :, -1:]
                x = self.time_conv(ops.cat([previous[:, :, -1:].astype(x.dtype), x], 2))
                cache.write(tail)
        return x


class ResidualBlock(nn.Cell):
    """RMS_norm, SiLU, CausalConv3d(3), RMS_norm, SiLU, Dropout, CausalConv3d(3), plus a 1x1x1 shortcut when
    the width changes. ``residual.{0,2,3,6}`` and ``shortcut`` as in the official state dict."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0, dtype=ms.float32):
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.residual = nn.CellList([
            RMS_norm(in_dim, images=False, dtype=dtype), SiLU(),
            CausalConv3d(in_dim, out_dim, 3, padding=1, dtype=dtype),
            RMS_norm(out_dim, images=False, dtype=dtype), SiLU(), Identity(),
            CausalConv3d(out_dim, out_dim, 3, padding=1, dtype=dtype)])
        self.shortcut = CausalConv3d(in_dim, out_dim, 1, dtype=dtype) if in_dim != out_dim else Identity()

    def construct(self, x: Tensor, cache: Optional[FeatureCache] = None) -> Tensor:
        """x: [B, in_dim, T, H, W] -> [B, out_dim, T, H, W]."""
        h = self.shortcut(x)
        return run_layers(self.residual, x, cache) + h


class AttentionBlock(nn.Cell):
    """Single-head self-attention over the H*W positions of each frame separately (no temporal mixing)."""

    def __init__(self, dim: int, dtype=ms.float32):
        super().__init__()
        self.dim = dim
        self.norm = RMS_norm(dim, dtype=dtype)
        self.to_qkv = Conv2d(dim, dim * 3, 1, dtype=dtype)
        self.proj = Conv2d(dim, dim, 1, dtype=dtype)
        # official init: the block starts as an identity (matters only for random-weight runs)
        self.proj.weight.set_data(ops.zeros(self.proj.weight.shape, dtype))

    def construct(self, x: Tensor, cache: Optional[FeatureCache] = None) -> Tensor:
        """x: [B, C, T, H, W] -> same shape. ``cache`` is accepted and unused (the block is per-frame)."""
        identity = x
        b, c, t, h, w = x.shape
        y = self.norm(frames_to_images(x))
        qkv = self.to_qkv(y).reshape(b * t, 3 * c, h * w).permute(0, 2, 1)  # [BT, HW, 3C]
        q = qkv[:, :, :c].reshape(b * t, h * w, 1, c)
        k = qkv[:, :, c:2 * c].reshape(b * t, h * w, 1, c)
        v = qkv[:, :, 2 * c:].reshape(b * t, h * w, 1, c)
        # float32 on every device, as the official SDPA on float32 inputs (and C = 640/1024 > the fused limit)
        y = K.attention(q, k, v, exact_fp32=True)  # [BT, HW, 1, C]
        y = y.reshape(b * t, h * w, c).permute(0, 2, 1).reshape(b * t, c, h, w)
        y = self.proj(y)
        return images_to_frames(y, t) + identity


def middle_blocks(dim: int, dropout: float, dtype=ms.float32) -> nn.CellList:
    """The encoder's and decoder's ``middle``: ResidualBlock, AttentionBlock, ResidualBlock at width ``dim``."""
    return nn.CellList([ResidualBlock(dim, dim, dropout, dtype=dtype), AttentionBlock(dim, dtype=dtype),
                        ResidualBlock(dim, dim, dropout, dtype=dtype)])


def output_head(in_dim: int, out_dim: int, dtype=ms.float32) -> nn.CellList:
    """The encoder's and decoder's ``head``: RMS_norm, SiLU, 3x3x3 CausalConv3d (``head.0.gamma``,
    ``head.2.weight``); [B, in_dim, T, H, W] -> [B, out_dim, T, H, W] through :func:`run_layers`."""
    return nn.CellList([RMS_norm(in_dim, images=False, dtype=dtype), SiLU(),
                        CausalConv3d(in_dim, out_dim, 3, padding=1, dtype=dtype)])


# ---------------------------------------------------------------------------------------- encoder / decoder

class CausalEncoder3d(nn.Cell):
    """The causal encoder's forward pass: ``conv1``, the ``downsamples`` levels, ``middle``, ``head``, every
    cached layer through ``cache`` during a chunked pass. Subclasses (the 2.1 and 2.2 ``Encoder3d``) build the
    layers; each level and middle block is called as ``layer(x, cache)``."""

    def construct(self, x: Tensor, cache: Optional[FeatureCache] = None) -> Tensor:
        """x: [B, C, T, H, W] (one chunk when ``cache`` is given) -> [B, z_dim, T', H/s, W/s]."""
        x = run_conv(self.conv1, x, cache)
        for layer in self.downsamples:
            x = layer(x, cache)
        for layer in self.middle:
            x = layer(x, cache)
        return run_layers(self.head, x, cache)


class CausalDecoder3d(nn.Cell):
    """The causal decoder's forward pass: ``conv1``, ``middle``, the ``upsamples`` levels, ``head`` (see
    :class:`CausalEncoder3d`)."""

    def construct(self, x: Tensor, cache: Optional[FeatureCache] = None) -> Tensor:
        """x: [B, z_dim, T, h, w] (one latent frame when ``cache`` is given) -> [B, C, T', s*h, s*w]."""
        x = run_conv(self.conv1, x, cache)
        for layer in self.middle:
            x = layer(x, cache)
        for layer in self.upsamples:
            x = layer(x, cache)
        return run_layers(self.head, x, cache)


class Encoder3d(CausalEncoder3d):
    """Video [B, 3, T, H, W] -> [B, z_dim, T', H/8, W/8] (z_dim here is 2x the latent channels: mu, log_var).

    Args follow the official ``Encoder3d``; ``temperal_downsample[i]`` (official spelling) says whether level
    i also halves time.
    """

    def __init__(self, dim: int = 128, z_dim: int = 4, dim_mult: Sequence[int] = (1, 2, 4, 4),
                 num_res_blocks: int = 2, attn_scales: Sequence[float] = (),
                 temperal_downsample: Sequence[bool] = (True, True, False), dropout: float = 0.0,
                 dtype=ms.float32):
        super().__init__()
        dims = [dim * u for u in [1, *dim_mult]]
        scale = 1.0
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1, dtype=dtype)
        blocks = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(num_res_blocks):
                blocks.append(ResidualBlock(in_dim, out_dim, dropout, dtype=dtype))
                if scale in attn_scales:
                    blocks.append(AttentionBlock(out_dim, dtype=dtype))
                in_dim = out_dim
            if i != len(dim_mult) - 1:
                mode = "downsample3d" if temperal_downsample[i] else "downsample2d"
                blocks.append(Resample(out_dim, mode=mode, dtype=dtype))
                scale /= 2.0
        self.downsamples = nn.CellList(blocks)
        self.middle = middle_blocks(out_dim, dropout, dtype)
        self.head = output_head(out_dim, z_dim, dtype)


class Decoder3d(CausalDecoder3d):
    """Latent [B, z_dim, T, h, w] -> video [B, 3, T', 8h, 8w]; ``temperal_upsample[i]`` says whether level i
    doubles time (official spelling)."""

    def __init__(self, dim: int = 128, z_dim: int = 4, dim_mult: Sequence[int] = (1, 2, 4, 4),
                 num_res_blocks: int = 2, attn_scales: Sequence[float] = (),
                 temperal_upsample: Sequence[bool] = (False, True, True), dropout: float = 0.0,
                 dtype=ms.float32):
        super().__init__()
        dims = [dim * u for u in [dim_mult[-1], *dim_mult[::-1]]]
        scale = 1.0 / 2 ** (len(dim_mult) - 2)
        self.conv1 = CausalConv3d(z_dim, dims[0], 3, padding=1, dtype=dtype)
        self.middle = middle_blocks(dims[0], dropout, dtype)
        blocks = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            if i in (1, 2, 3):  # the previous level's Resample halved the channels
                in_dim = in_dim // 2
            for _ in range(num_res_blocks + 1):
                blocks.append(ResidualBlock(in_dim, out_dim, dropout, dtype=dtype))
                if scale in attn_scales:
                    blocks.append(AttentionBlock(out_dim, dtype=dtype))
                in_dim = out_dim
            if i != len(dim_mult) - 1:
                mode = "upsample3d" if temperal_upsample[i] else "upsample2d"
                blocks.append(Resample(out_dim, mode=mode, dtype=dtype))
                scale *= 2.0
        self.upsamples = nn.CellList(blocks)
        self.head = output_head(out_dim, 3, dtype)


# ------------------------------------------------------------------------------------------------ chunking

def encode_chunks(num_frames: int) -> List[Tuple[int, int]]:
    """Frame ranges of the official encode chunks: [0,1), [1,5), [5,9), ... (1 + 4k frames are consumed;
    the official code silently drops a remainder)."""
    return [(0, 1)] + [(1 + 4 * (i - 1), 1 + 4 * i) for i in range(1, 1 + (num_frames - 1) // 4)]


def chunked_encode(encoder: nn.Cell, x: Tensor) -> Tensor:
    """Run ``encoder(chunk, cache)`` over the official frame chunks of x [B, C, T, H, W] with one fresh
    :class:`FeatureCache`; the outputs are concatenated in time."""
    cache = FeatureCache()
    outs = []
    for start, stop in encode_chunks(x.shape[2]):
        cache.begin_chunk()
        outs.append(encoder(x[:, :, start:stop], cache))
    return outs[0] if len(outs) == 1 else ops.cat(outs, 2)


def chunked_decode(decoder: Callable[[Tensor, FeatureCache], Tensor], x: Tensor) -> Tensor:
    """Run ``decoder(frame, cache)`` on one latent frame of x [B, C, T, h, w] at a time (the official decode
    chunking) with one fresh :class:`FeatureCache`; the outputs are concatenated in time."""
    cache = FeatureCache()
    outs = []
    for i in range(x.shape[2]):
        cache.begin_chunk()
        outs.append(decoder(x[:, :, i:i + 1], cache))
    return outs[0] if len(outs) == 1 else ops.cat(outs, 2)


def _scale_param(s, z_dim: int, dtype):
    if isinstance(s, Tensor):
        return s.astype(dtype).reshape(1, z_dim, 1, 1, 1)
    return float(s)


def normalize_latent(mu: Tensor, scale, z_dim: int) -> Tensor:
    """mu [B, z_dim, T, h, w] -> (mu - mean) * (1/std), ``scale`` = (mean, 1/std) as floats or [z_dim] Tensors."""
    return (mu - _scale_param(scale[0], z_dim, mu.dtype)) * _scale_param(scale[1], z_dim, mu.dtype)


def denormalize_latent(z: Tensor, scale, z_dim: int) -> Tensor:
    """Inverse of :func:`normalize_latent`: z / (1/std) + mean."""
    return z / _scale_param(scale[1], z_dim, z.dtype) + _scale_param(scale[0], z_dim, z.dtype)


class CausalVAE(nn.Cell):
    """A causal video VAE around a built ``encoder`` (output 2*z_dim channels: mu, log_var) and ``decoder``:
    ``conv1`` (2*z_dim -> 2*z_dim) after the encoder, ``conv2`` (z_dim -> z_dim) before the decoder.
    ``encode``/``decode`` run the official chunked causal passes, each with a fresh :class:`FeatureCache`."""

    def __init__(self, encoder: nn.Cell, decoder: nn.Cell, z_dim: int, dtype=ms.float32):
        super().__init__()
        self.z_dim = z_dim
        self.encoder = encoder
        self.conv1 = CausalConv3d(z_dim * 2, z_dim * 2, 1, dtype=dtype)
        self.conv2 = CausalConv3d(z_dim, z_dim, 1, dtype=dtype)
        self.decoder = decoder

    def encode(self, x: Tensor, scale=(0.0, 1.0)) -> Tensor:
        """x: encoder input [B, C, T, H, W], T = 1 + 4k -> normalized mean latent [B, z_dim, 1 + k, H/s, W/s].

        ``scale`` = (mean, 1/std) as floats or [z_dim] Tensors: mu -> (mu - mean) * (1/std).
        """
        mu = self.conv1(chunked_encode(self.encoder, x))[:, :self.z_dim]
        return normalize_latent(mu, scale, self.z_dim)

    def decode(self, z: Tensor, scale=(0.0, 1.0)) -> Tensor:
        """z: normalized latent [B, z_dim, T, h, w] -> decoder output [B, C, 1 + 4(T-1), s*h, s*w]."""
        z = denormalize_latent(z.astype(self.conv2.weight.dtype), scale, self.z_dim)
        return chunked_decode(self.decoder, self.conv2(z))


class WanVAE_(CausalVAE):
    """The official Wan2.1 VAE network (parameters ``encoder.*``, ``conv1``, ``conv2``, ``decoder.*``).

    ``encode``: video [B, 3, T, H, W] in [-1, 1] -> normalized latent [B, z_dim, 1 + (T-1)//4, H/8, W/8];
    ``decode``: latent [B, z_dim, T, h, w] -> video [B, 3, 1 + 4(T-1), 8h, 8w] (not clamped).
    """

    def __init__(self, dim: int = 128, z_dim: int = 4, dim_mult: Sequence[int] = (1, 2, 4, 4),
                 num_res_blocks: int = 2, attn_scales: Sequence[float] = (),
                 temperal_downsample: Sequence[bool] = (True, True, False), dropout: float = 0.0,
                 dtype=ms.float32):
        encoder = Encoder3d(dim, z_dim * 2, dim_mult, num_res_blocks, attn_scales, temperal_downsample,
                            dropout, dtype=dtype)
        decoder = Decoder3d(dim, z_dim, dim_mult, num_res_blocks, attn_scales, temperal_downsample[::-1],
                            dropout, dtype=dtype)
        super().__init__(encoder, decoder, z_dim, dtype)


# --------------------------------------------------------------------------------------------- spatial tiling

def _tile_starts(length: int, tile: int, overlap: int) -> List[int]:
    """Start offsets of evenly spaced tiles of size ``tile`` covering [0, length), neighbours sharing at least
    ``overlap`` cells; the first tile starts at 0 and the last one ends at ``length``."""
    if length <= tile:
        return [0]
    count = 1 + -(-(length - tile) // (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def _blend_weights(starts: List[int], tile: int, length: int, unit: int) -> List[np.ndarray]:
    """Per-tile 1-D weights in output cells (``unit`` output cells per grid cell): a linear ramp over the region
    shared with the previous/next tile, 1 elsewhere. Complementary ramps make overlapping weights sum to 1."""
    weights = []
    for i, start in enumerate(starts):
        size = min(tile, length - start) * unit
        w = np.ones(size, np.float32)
        if i > 0:
            shared = (starts[i - 1] + tile - start) * unit
            w[:shared] = np.minimum(w[:shared], (np.arange(shared, dtype=np.float32) + 0.5) / shared)
        if i + 1 < len(starts):
            shared = (start + tile - starts[i + 1]) * unit
            ramp = 1.0 - (np.arange(shared, dtype=np.float32) + 0.5) / shared
            w[size - shared:] = np.minimum(w[size - shared:], ramp)
        weights.append(w)
    return weights


def tiled_apply(fn: Callable[[Tensor], Tensor], x: Tensor, in_unit: int, out_unit: int, tile: int,
                overlap: int) -> Tensor:
    """Apply a spatially equivariant video network tile by tile and blend the overlaps linearly.

    The spatial axes are measured in grid cells: a cell is ``in_unit`` input pixels and ``out_unit`` output
    pixels (decode: 1 latent pixel -> 8 video pixels; encode: 8 video pixels -> 1 latent pixel). Every tile
    runs the whole clip through ``fn`` (so each tile is its own causal chunked pass); only one tile's
    activations are alive at a time, and the blended result is accumulated on the host.

    Args:
        fn: [B, Cin, T, h*in_unit, w*in_unit] -> [B, Cout, T', h*out_unit, w*out_unit].
        x: [B, Cin, T, H, W] with H, W multiples of ``in_unit``.
        tile, overlap: tile size and minimum overlap in grid cells (0 <= overlap < tile).
    Returns:
        [B, Cout, T', H/in_unit*out_unit, W/in_unit*out_unit] float32.
    """
    assert 0 <= overlap < tile, f"overlap {overlap} must be in [0, tile={tile})"
    gh, gw = x.shape[3] // in_unit, x.shape[4] // in_unit
    rows, cols = _tile_starts(gh, tile, overlap), _tile_starts(gw, tile, overlap)
    row_w, col_w = _blend_weights(rows, tile, gh, out_unit), _blend_weights(cols, tile, gw, out_unit)
    acc = None
    for r, r0 in enumerate(rows):
        for c, c0 in enumerate(cols):
            r1, c1 = min(r0 + tile, gh), min(c0 + tile, gw)
            part = fn(x[:, :, :, r0 * in_unit:r1 * in_unit, c0 * in_unit:c1 * in_unit])
            part = part.astype(ms.float32).asnumpy()
            if acc is None:
                acc = np.zeros(part.shape[:3] + (gh * out_unit, gw * out_unit), np.float32)
                norm = np.zeros((gh * out_unit, gw * out_unit), np.float32)
            w = row_w[r][:, None] * col_w[c][None, :]
            ys, xs = slice(r0 * out_unit, r1 * out_unit), slice(c0 * out_unit, c1 * out_unit)
            acc[:, :, :, ys, xs] += part * w
            norm[ys, xs] += w
            del part
    return Tensor(acc / norm)


def _tile_cells(tile_size: int, tile_overlap: int, stride: int) -> Tuple[int, int]:
    """Tile size and overlap in video pixels -> in grid cells (latent pixels); ValueError for unusable values."""
    for name, pixels in (("tile_size", tile_size), ("tile_overlap", tile_overlap)):
        if pixels % stride:
            raise ValueError(f"{name}={pixels} must be a multiple of the VAE's spatial stride {stride} (pixels)")
    if not 0 <= tile_overlap < tile_size:
        raise ValueError(f"tile_overlap={tile_overlap} must be >= 0 and smaller than tile_size={tile_size}")
    return tile_size // stride, tile_overlap // stride


def tiled_decode(decode_fn: Callable[[Tensor], Tensor], z: Tensor, stride: int, tile_size: int,
                 tile_overlap: int) -> Tensor:
    """Decode latent ``z`` [B, C, T, h, w] in spatial tiles. ``tile_size``/``tile_overlap`` are in video pixels
    (multiples of ``stride``, the VAE's spatial compression); ``decode_fn`` maps a latent tile to video."""
    return tiled_apply(decode_fn, z, 1, stride, *_tile_cells(tile_size, tile_overlap, stride))


def tiled_encode(encode_fn: Callable[[Tensor], Tensor], x: Tensor, stride: int, tile_size: int,
                 tile_overlap: int) -> Tensor:
    """Encode video ``x`` [B, 3, T, H, W] in spatial tiles (same pixel units as :func:`tiled_decode`)."""
    return tiled_apply(encode_fn, x, stride, 1, *_tile_cells(tile_size, tile_overlap, stride))


# ------------------------------------------------------------------------------------------------- wrapper

# A key prefix only the Wan2.2 encoder has: its levels are residual blocks holding their own down-samplers.
NESTED_DOWN_PREFIX = "encoder.downsamples.0.downsamples."


def read_vae_checkpoint_layout(path, required: Sequence[str], file_hint: str) -> Tuple[dict, bool]:
    """Shapes of the ``required`` keys of a VAE checkpoint, and whether its encoder has the Wan2.2 nested
    down-sampling blocks; reads the header only.

    Raises FileNotFoundError for a missing file, ValueError when a required key is absent (``file_hint`` says
    which file to pass instead).
    """
    from wan import checkpoint  # the checkpoint layer (numpy only)

    with checkpoint.open_checkpoint(path) as reader:
        keys = list(reader.keys())
        if any(k not in keys for k in required):
            raise ValueError(f"{path} is not a Wan VAE checkpoint: expected keys "
                             f"{', '.join(repr(k) for k in required)}, found {len(keys)} keys starting with "
                             f"{keys[:3]}; pass the {file_hint}")
        shapes = {k: tuple(reader.shape(k)) for k in required}
        nested = any(k.startswith(NESTED_DOWN_PREFIX) for k in keys)
    return shapes, nested


class VideoVAE:
    """A Wan video VAE as the official wrappers present it: fixed per-channel latent statistics, lists of videos
    in, lists of float32 latents out. A version subclass sets the class attributes below and
    :meth:`check_checkpoint`.

    Args:
        z_dim: latent channels; must equal the number of latent statistics.
        vae_pth: checkpoint path (official ``.pth`` or a converted file). None keeps the random init (tests,
            benches). With a path the network is built without initialising its parameters and every parameter
            must come from the file (a missing key raises ``checkpoint.CheckpointError``, a ValueError).
        dtype: compute/parameter dtype (float32 on CPU; bfloat16/float16 on Ascend). Outputs are float32.
        model_config: overrides of ``CONFIG`` (tiny test models); the releases need none.
    """

    # Set by every version subclass.
    VERSION: str                        # "2.1" / "2.2", for messages
    NETWORK: str                        # the convert KeyMap name
    MODEL: type                         # the network Cell, built as MODEL(z_dim=, dtype=, **config)
    CONFIG: dict                        # the release architecture (read only: __init__ copies it)
    LATENT_MEAN: Tuple[float, ...]      # per-channel latent statistics
    LATENT_STD: Tuple[float, ...]
    SPATIAL_STRIDE: int                 # video pixels per latent pixel
    TEMPORAL_STRIDE: int                # video frames per latent frame after the first
    FRAME_COUNTS: str                   # examples of valid clip lengths, for messages

    def __init__(self, z_dim: int, vae_pth=None, dtype=ms.float32, model_config: Optional[dict] = None):
        channels = len(self.LATENT_MEAN)
        if z_dim != channels:
            raise ValueError(f"z_dim={z_dim}: the Wan{self.VERSION} latent statistics have {channels} channels; "
                             f"use z_dim={channels}")
        config = dict(self.CONFIG)
        config.update(model_config or {})
        if config.pop("z_dim", z_dim) != z_dim:
            raise ValueError(f"model_config z_dim={model_config['z_dim']} contradicts z_dim={z_dim}")
        if vae_pth is not None:
            self.check_checkpoint(vae_pth, z_dim, config)
        self.dtype = dtype
        self.z_dim = z_dim
        if vae_pth is None:
            self.model = self.MODEL(z_dim=z_dim, dtype=dtype, **config)
        else:
            from wan import checkpoint

            # Random init of the full-size network takes seconds and would be overwritten; the strict load
            # below raises for any parameter the file lacks, so none is left uninitialised.
            with nn.no_init_parameters():
                self.model = self.MODEL(z_dim=z_dim, dtype=dtype, **config)
            checkpoint.load_into_cell(self.model, vae_pth, network=self.NETWORK, strict=True)
        self.model.set_train(False)
        self.mean = Tensor(np.array(self.LATENT_MEAN, np.float32))
        self.std = Tensor(np.array(self.LATENT_STD, np.float32))
        self.scale = [self.mean, 1.0 / self.std]

    @classmethod
    def check_checkpoint(cls, path, z_dim: int, config: dict) -> None:
        """Refuse, before building anything, a file that is not this version's VAE (ValueError)."""
        raise NotImplementedError

    # -- validation -----------------------------------------------------------------------------------
    @staticmethod
    def _as_list(items, what: str) -> list:
        if isinstance(items, (Tensor, np.ndarray)) or not isinstance(items, (list, tuple)):
            raise ValueError(f"{what} must be a list of tensors (one per sample), got {type(items).__name__}; "
                             "wrap a single tensor in a list")
        return [u if isinstance(u, Tensor) else Tensor(np.asarray(u, np.float32)) for u in items]

    def _check_video(self, i: int, u: Tensor) -> None:
        if u.ndim != 4 or u.shape[0] != 3:
            raise ValueError(f"video {i} has shape {tuple(u.shape)}; expected [3, T, H, W] (RGB, channel first) "
                             "with values in [-1, 1]")
        t, h, w = u.shape[1:]
        st, ss = self.TEMPORAL_STRIDE, self.SPATIAL_STRIDE
        if (t - 1) % st:
            raise ValueError(f"video {i} has {t} frames; the Wan{self.VERSION} VAE encodes 1 + {st}k frames "
                             f"({self.FRAME_COUNTS}): trim to {1 + (t - 1) // st * st} or pad to "
                             f"{1 + -(-(t - 1) // st) * st} frames")
        if h % ss or w % ss:
            raise ValueError(f"video {i} is {h}x{w} (HxW); height and width must be multiples of {ss} for the "
                             f"Wan{self.VERSION} VAE")

    def _check_latent(self, i: int, z: Tensor) -> None:
        if z.ndim != 4 or z.shape[0] != self.z_dim:
            raise ValueError(f"latent {i} has shape {tuple(z.shape)}; expected [{self.z_dim}, T, h, w] "
                             f"(a Wan{self.VERSION} latent)")

    # -- API --------------------------------------------------------------------------------------------
    def encode(self, videos, tiled: bool = False, tile_size: int = 256, tile_overlap: int = 64) -> List[Tensor]:
        """videos: list of [3, T, H, W] in [-1, 1], T = 1 + 4k -> list of float32 latents
        [z_dim, 1 + k, H/s, W/s] (s = SPATIAL_STRIDE).

        ``tiled=True`` encodes overlapping ``tile_size`` x ``tile_size`` pixel tiles (overlap ``tile_overlap``
        pixels, both multiples of s) and blends them linearly: less memory, approximately equal output.
        """
        videos = self._as_list(videos, "videos")
        for i, u in enumerate(videos):
            self._check_video(i, u)

        def run(x):
            return self.model.encode(x, self.scale)

        outs = []
        for u in videos:
            x = u.astype(self.dtype)[None]
            y = tiled_encode(run, x, self.SPATIAL_STRIDE, tile_size, tile_overlap) if tiled else run(x)
            outs.append(y.astype(ms.float32)[0])
        return outs

    def decode(self, zs, tiled: bool = False, tile_size: int = 256, tile_overlap: int = 64) -> List[Tensor]:
        """zs: list of [z_dim, T, h, w] -> list of float32 videos [3, 1 + 4(T-1), s*h, s*w] clamped to [-1, 1].

        ``tiled=True``: decode overlapping spatial tiles (sizes in video pixels, multiples of s) and blend.
        """
        zs = self._as_list(zs, "zs")
        for i, z in enumerate(zs):
            self._check_latent(i, z)

        def run(z):
            return self.model.decode(z, self.scale)

        outs = []
        for z in zs:
            z = z.astype(self.dtype)[None]
            y = tiled_decode(run, z, self.SPATIAL_STRIDE, tile_size, tile_overlap) if tiled else run(z)
            outs.append(ops.clamp(y.astype(ms.float32), -1.0, 1.0)[0])
        return outs


# Per-channel statistics of the Wan2.1 latent space (official constants).
WAN21_LATENT_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                     0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN21_LATENT_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)

# The architecture the official wrapper builds (``_video_vae``).
WAN21_CONFIG = dict(dim=96, dim_mult=(1, 2, 4, 4), num_res_blocks=2, attn_scales=(),
                    temperal_downsample=(False, True, True), dropout=0.0)

SPATIAL_STRIDE = 8
TEMPORAL_STRIDE = 4


def check_vae2_1_checkpoint(path, in_channels: int = 3) -> None:
    """Refuse, before building anything, a file that is not a Wan2.1 VAE state dict (e.g. Wan2.2_VAE.pth).

    Raises FileNotFoundError / ValueError naming what was expected and what was found.
    """
    shapes, nested = read_vae_checkpoint_layout(path, ("encoder.conv1.weight", "decoder.head.2.weight"),
                                                "Wan2.1_VAE.pth of the model folder")
    found_in = shapes["encoder.conv1.weight"][1]
    if found_in == 12 or nested:
        raise ValueError(f"{path} is a Wan2.2 VAE checkpoint (encoder.conv1.weight takes {found_in} input "
                         "channels of a 2x2-patchified video, with nested down-sampling blocks); the "
                         f"Wan2.1 VAE expects {in_channels} input channels. Use Wan2.1_VAE.pth with "
                         "Wan2_1_VAE, or load this file with Wan2_2_VAE (the TI2V-5B model)")
    if found_in != in_channels:
        raise ValueError(f"{path}: encoder.conv1.weight takes {found_in} input channels, the Wan2.1 VAE "
                         f"expects {in_channels}; this is not a Wan2.1_VAE.pth")


class Wan2_1_VAE(VideoVAE):
    """The official Wan2.1 VAE wrapper (stride 4x8x8, 16 latent channels; ``Wan2.1_VAE.pth`` of the A14B
    models). Arguments as :class:`VideoVAE`; ``model_config`` overrides :data:`WAN21_CONFIG`."""

    VERSION = "2.1"
    NETWORK = "vae2_1"
    MODEL = WanVAE_
    CONFIG = WAN21_CONFIG
    LATENT_MEAN = WAN21_LATENT_MEAN
    LATENT_STD = WAN21_LATENT_STD
    SPATIAL_STRIDE = SPATIAL_STRIDE
    TEMPORAL_STRIDE = TEMPORAL_STRIDE
    FRAME_COUNTS = "1, 5, 9, ..., 81"

    def __init__(self, z_dim: int = 16, vae_pth=None, dtype=ms.float32, model_config: Optional[dict] = None):
        super().__init__(z_dim, vae_pth, dtype, model_config)

    @classmethod
    def check_checkpoint(cls, path, z_dim: int, config: dict) -> None:
        check_vae2_1_checkpoint(path)
