"""The audio side of the S2V DiT: the causal audio encoder and the audio injector.

Parameter names equal the official keys (``casual_audio_encoder.encoder.conv1_local.conv.weight``,
``audio_injector.injector.3.q.weight``, ``audio_injector.injector_adain_layers.3.linear.weight``, ...).
The encoder is a float32 island (the official code runs it under a float32 autocast), whatever the model dtype.
"""
from __future__ import annotations

from typing import Dict, Sequence

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Constant, Uniform, initializer

from .. import kernels
from ..kernels import LayerNorm, Linear
from ..model import WanCrossAttention

__all__ = ["CausalConv1d", "MotionEncoder_tc", "CausalAudioEncoder", "AdaLayerNorm", "AudioInjector_WAN",
           "injected_block_ids", "causal_audio_length"]


class _Conv1dParams(nn.Cell):
    """Holds ``weight`` [out, in, k] and ``bias`` [out] under the name ``conv`` (PyTorch's Conv1d layout)."""

    def __init__(self, chan_in: int, chan_out: int, kernel_size: int, dtype=ms.float32):
        super().__init__()
        bound = 1.0 / np.sqrt(chan_in * kernel_size)
        self.weight = Parameter(initializer(Uniform(bound), (chan_out, chan_in, kernel_size), dtype), name="weight")
        self.bias = Parameter(initializer("zeros", (chan_out,), dtype), name="bias")


class CausalConv1d(nn.Cell):
    """1-D convolution that sees only the past: the time axis is padded at the front with k-1 copies of the
    first frame (replicate padding), as official; computed in float32.

    x: [B, C_in, T] -> [B, C_out, (T - 1) // stride + 1].
    """

    def __init__(self, chan_in: int, chan_out: int, kernel_size: int = 3, stride: int = 1, dtype=ms.float32):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.conv = _Conv1dParams(chan_in, chan_out, kernel_size, dtype=dtype)

    def construct(self, x: Tensor) -> Tensor:
        x = x.astype(ms.float32)
        if self.kernel_size > 1:
            x = ops.cat([x[:, :, :1]] * (self.kernel_size - 1) + [x], 2)
        return kernels.conv1d(x, self.conv.weight.astype(ms.float32), self.conv.bias.astype(ms.float32),
                              stride=self.stride)


def causal_audio_length(frames: int) -> int:
    """Audio feature frames out of ``MotionEncoder_tc`` for ``frames`` in (two stride-2 causal convs)."""
    for _ in range(2):
        frames = (frames - 1) // 2 + 1
    return frames


class MotionEncoder_tc(nn.Cell):
    """Audio features [B, T, in_dim] -> per-frame tokens [B, T', num_heads + 1, hidden_dim] (the last token is the
    learned ``padding_tokens``), and with ``need_global`` also one global token per frame [B, T', 1, hidden_dim].

    T' = ``causal_audio_length(T)`` (time downsampled 4x). ``num_heads`` is the number of audio tokens per frame.
    """

    def __init__(self, in_dim: int, hidden_dim: int, num_heads: int, need_global: bool = True, dtype=ms.float32):
        super().__init__()
        self.num_heads = num_heads
        self.need_global = need_global
        self.hidden_dim = hidden_dim
        quarter, half = hidden_dim // 4, hidden_dim // 2
        self.conv1_local = CausalConv1d(in_dim, quarter * num_heads, 3, stride=1, dtype=dtype)
        self.conv1_global = CausalConv1d(in_dim, quarter, 3, stride=1, dtype=dtype) if need_global else None
        self.conv2 = CausalConv1d(quarter, half, 3, stride=2, dtype=dtype)
        self.conv3 = CausalConv1d(half, hidden_dim, 3, stride=2, dtype=dtype)
        self.final_linear = (Linear(hidden_dim, hidden_dim, dtype=dtype, compute_dtype=ms.float32)
                             if need_global else None)
        self.norm1 = LayerNorm(quarter, 1e-6)
        self.norm2 = LayerNorm(half, 1e-6)
        self.norm3 = LayerNorm(hidden_dim, 1e-6)
        self.padding_tokens = Parameter(initializer("zeros", (1, 1, 1, hidden_dim), dtype), name="padding_tokens")

    def _tail(self, h: Tensor) -> Tensor:
        """h: [N, T, C/4] after conv1 -> [N, T', C]: norm/act, then the shared stride-2 convs (time last)."""
        h = kernels.silu(self.norm1(h))
        h = self.conv2(h.transpose(0, 2, 1)).transpose(0, 2, 1)
        h = kernels.silu(self.norm2(h))
        h = self.conv3(h.transpose(0, 2, 1)).transpose(0, 2, 1)
        return kernels.silu(self.norm3(h))

    def construct(self, x: Tensor):
        b, t, _ = x.shape
        n, quarter = self.num_heads, self.hidden_dim // 4
        xc = x.astype(ms.float32).transpose(0, 2, 1)  # [B, in_dim, T]
        # Local: conv1 makes num_heads groups of C/4 channels; each group runs the rest as its own sample.
        h = self.conv1_local(xc).reshape(b, n, quarter, t).transpose(0, 1, 3, 2).reshape(b * n, t, quarter)
        h = self._tail(h)  # [B*n, T', C]
        t2 = h.shape[1]
        h = h.reshape(b, n, t2, self.hidden_dim).transpose(0, 2, 1, 3)  # [B, T', n, C]
        pad = ops.broadcast_to(self.padding_tokens.astype(ms.float32), (b, t2, 1, self.hidden_dim))
        local = ops.cat([h, pad], 2)  # [B, T', n + 1, C]
        if not self.need_global:
            return local
        g = self._tail(self.conv1_global(xc).transpose(0, 2, 1))  # [B, T', C]
        g = self.final_linear(g).reshape(b, t2, 1, self.hidden_dim)
        return g, local


class CausalAudioEncoder(nn.Cell):
    """wav2vec2 hidden states of every layer -> audio tokens per (4x downsampled) frame.

    features [B, num_layers, dim, T] are averaged over layers with weights silu(w) / sum(silu(w)) (w learned,
    ``weights`` [1, num_layers, 1, 1]), then ``MotionEncoder_tc``. Returns (global [B, T', 1, out_dim],
    local [B, T', num_token + 1, out_dim]) with ``need_global``, else local only. float32 throughout.
    """

    def __init__(self, dim: int = 5120, num_layers: int = 25, out_dim: int = 2048, video_rate: int = 8,
                 num_token: int = 4, need_global: bool = False, dtype=ms.float32):
        super().__init__()
        self.num_layers = num_layers
        self.encoder = MotionEncoder_tc(in_dim=dim, hidden_dim=out_dim, num_heads=num_token,
                                        need_global=need_global, dtype=dtype)
        self.weights = Parameter(initializer(Constant(0.01), (1, num_layers, 1, 1), dtype), name="weights")

    def construct(self, features: Tensor):
        w = kernels.silu(self.weights.astype(ms.float32))
        w_sum = w.sum(axis=1, keepdims=True)
        weighted = ((features.astype(ms.float32) * w) / w_sum).sum(axis=1)  # [B, dim, T]
        return self.encoder(weighted.transpose(0, 2, 1))


class AdaLayerNorm(nn.Cell):
    """LayerNorm (no affine, eps 1e-5) modulated by an embedding: the diffusers ``AdaLayerNorm`` with
    ``chunk_dim=1`` as the S2V injector builds it: ``linear(silu(temb))`` splits into (shift, scale), in that order.

    x: [N, L, dim], temb: [N, embedding_dim] -> [N, L, dim].
    """

    def __init__(self, embedding_dim: int, output_dim: int, norm_eps: float = 1e-5, dtype=ms.float32):
        super().__init__()
        self.linear = Linear(embedding_dim, output_dim, dtype=dtype)
        self.norm = LayerNorm(output_dim // 2, norm_eps)
        self.half = output_dim // 2

    def construct(self, x: Tensor, temb: Tensor) -> Tensor:
        emb = self.linear(kernels.silu(temb)).astype(ms.float32)
        shift, scale = emb[:, None, :self.half], emb[:, None, self.half:]
        return self.norm(x).astype(ms.float32) * (1 + scale) + shift


def injected_block_ids(inject_layer: Sequence[int], num_layers: int) -> Dict[int, int]:
    """{block index: injector index} as the official ``AudioInjector_WAN`` assigns them.

    The official code matches ``f"transformer_blocks.{i}"`` as a substring of each block's module name, so a layer
    such as 1 also matches blocks 10-19 and silently creates injectors that are never used. Only lists for which
    the rule is one-to-one are accepted (every released configuration is).
    """
    layers = [int(i) for i in inject_layer]
    mapping, count = {}, 0
    for block in range(num_layers):
        name = f"root.transformer_blocks.{block}"
        for layer in layers:
            if f"transformer_blocks.{layer}" in name:
                mapping[layer] = count
                count += 1
    if count != len(layers) or len(set(layers)) != len(layers) or sorted(mapping) != sorted(layers):
        raise ValueError(f"audio_inject_layers={layers} with num_layers={num_layers}: the official model would "
                         f"build {count} injectors for {len(set(layers))} layers (its block-name matching is a "
                         "substring test, and layers past num_layers are ignored); use distinct layers in "
                         f"[0, {num_layers}) with no layer number being a prefix of another block's number")
    return mapping


class AudioInjector_WAN(nn.Cell):
    """Per injected block: an adaptive LayerNorm driven by the frame's global audio token, then cross-attention
    from each video token to the audio tokens of its own frame. Holds ``injector`` (cross-attentions) and
    ``injector_adain_layers``; ``injected_block_id`` maps a block index to its injector.

    Only the released mode is built: ``enable_adain`` with ``adain_mode="attn_norm"`` (no pre-norm or adain-output
    layers, which hold no parameters or are unused in that mode).
    """

    def __init__(self, num_layers: int, dim: int = 2048, num_heads: int = 32, inject_layer=(0, 27),
                 adain_dim: int = 2048, eps: float = 1e-6, dtype=ms.float32):
        super().__init__()
        self.injected_block_id = injected_block_ids(inject_layer, num_layers)
        count = len(self.injected_block_id)
        self.injector = nn.CellList([WanCrossAttention(dim, num_heads, (-1, -1), True, eps, dtype=dtype)
                                     for _ in range(count)])
        self.injector_adain_layers = nn.CellList([AdaLayerNorm(adain_dim, dim * 2, dtype=dtype)
                                                  for _ in range(count)])

    def inject(self, index: int, x: Tensor, audio_local: Tensor, audio_global: Tensor, start: int,
               noisy_tokens: int, frame_tokens: int) -> Tensor:
        """Add injector ``index``'s audio residual to the noisy video tokens of this device's shard.

        Args:
            x: [B, L_local, dim] float32, the tokens [start, start + L_local) of the sequence.
            audio_local: [B, F, n_audio, dim] per-frame audio tokens; audio_global: [B, F, 1, dim].
            noisy_tokens: F * frame_tokens, the noisy video tokens at the front of the sequence.
            frame_tokens: h * w tokens per latent frame.
        Returns:
            x with the residual added to its noisy tokens (the reference and motion tokens are untouched).

        Every token only needs its own frame's audio, so a shard injects locally: its noisy rows are padded out
        to whole frames (padded query rows attend harmlessly and are dropped), with no gather of the sequence.
        """
        length = x.shape[1]
        a, b = max(start, 0), min(start + length, noisy_tokens)
        if b <= a:
            return x
        f0, f1 = a // frame_tokens, -(-b // frame_tokens)
        lo, hi = a - f0 * frame_tokens, f1 * frame_tokens - b
        bsz, dim, frames = x.shape[0], x.shape[2], f1 - f0
        rows = x[:, a - start:b - start]
        if lo or hi:
            rows = ops.cat(([ops.zeros((bsz, lo, dim), rows.dtype)] if lo else []) + [rows]
                           + ([ops.zeros((bsz, hi, dim), rows.dtype)] if hi else []), 1)
        rows = rows.reshape(bsz * frames, frame_tokens, dim)
        temb = audio_global[:, f0:f1, 0].reshape(bsz * frames, -1)
        ctx = audio_local[:, f0:f1]
        ctx = ctx.reshape(bsz * frames, ctx.shape[2], ctx.shape[3])
        h = self.injector_adain_layers[index](rows, temb)
        res = self.injector[index](h, ctx).astype(ms.float32).reshape(bsz, frames * frame_tokens, dim)
        res = res[:, lo:lo + (b - a)]
        parts = ([x[:, :a - start]] if a > start else []) + [x[:, a - start:b - start] + res]
        if b - start < length:
            parts.append(x[:, b - start:])
        return parts[0] if len(parts) == 1 else ops.cat(parts, 1)
