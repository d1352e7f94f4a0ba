"""The Wan2.2 video VAE (stride 4x16x16, 48 latent channels) as MindSpore cells.

Only what differs from the Wan2.1 VAE lives here: the 2x2 pixel patchify in front of the encoder (3 -> 12
channels), the residual down/up blocks with parameter-free shortcuts (AvgDown3D / DupUp3D), an upsampler that
keeps the channel count, the 12-channel head and the 2.2 latent statistics. The causal convolution, its feature
cache, RMS_norm, the residual and attention blocks come from ``vae2_1``.

Parameter names equal the keys of the official ``Wan2.2_VAE.pth``.
"""
from __future__ import annotations

from mindspore import Tensor, nn, ops

PATCH = 2  # the encoder sees 2x2 pixel patches as 12 channels


# ------------------------------------------------------------------------------------------- patchify

def patchify(x: Tensor, patch_size: int = PATCH) -> Tensor:
    """Fold p x p pixel patches into channels, channel order (c, r, q) with q the row and r the column offset.

    x: [B, C, F, H, W] or [B, C, H, W] -> [B, C*p*p, F, H/p, W/p] or [B, C*p*p, H/p, W/p].
    """
    if patch_size == 1:
        return x
    p = patch_size
    if x.ndim == 5:
        b, c, f, h, w = x.shape
        x = x.reshape(b, c, f, h // p, p, w // p, p)  # b c f h q w r
        return x.transpose(0, 1, 6, 4, 2, 3, 5).reshape(b, c * p * p, f, h // p, w // p)
    if x.ndim == 4:
        b, c, h, w = x.shape
        x = x.reshape(b, c, h // p, p, w // p, p)  # b c h q w r
        return x.transpose(0, 1, 5, 3, 2, 4).reshape(b, c * p * p, h // p, w // p)
    raise ValueError(f"patchify expects a 4-D or 5-D tensor, got shape {tuple(x.shape)}")


def unpatchify(x: Tensor, patch_size: int = PATCH) -> Tensor:
    """Inverse of ``patchify``: [B, C*p*p, F, h, w] -> [B, C, F, h*p, w*p] (or the 4-D equivalent)."""
    if patch_size == 1:
        return x
    p = patch_size
    if x.ndim == 5:
        b, cpp, f, h, w = x.shape
        x = x.reshape(b, cpp // (p * p), p, p, f, h, w)  # b c r q f h w
        return x.transpose(0, 1, 4, 5, 3, 6, 2).reshape(b, cpp // (p * p), f, h * p, w * p)
    if x.ndim == 4:
        b, cpp, h, w = x.shape
        x = x.reshape(b, cpp // (p * p), p, p, h, w)  # b c r q h w
        return x.transpose(0, 1, 4, 3, 5, 2).reshape(b, cpp // (p * p), h * p, w * p)
    raise ValueError(f"unpatchify expects a 4-D or 5-D tensor, got shape {tuple(x.shape)}")


# ------------------------------------------------------------------------------- parameter-free shortcuts

class AvgDown3D(nn.Cell):
    """Space/time-to-channel fold followed by a mean over channel groups (the down blocks' shortcut).

    x: [B, C_in, T, H, W] -> [B, C_out, ceil(T/ft), H/fs, W/fs]. When T is not a multiple of ft, zero frames are
    put in front (the first chunk of a causal encode has one frame), and they count in the mean.
    """

    def __init__(self, in_channels: int, out_channels: int, factor_t: int, factor_s: int = 1):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.factor_t = factor_t
        self.factor_s = factor_s
        self.factor = factor_t * factor_s * factor_s
        assert in_channels * self.factor % out_channels == 0, (in_channels, out_channels, self.factor)
        self.group_size = in_channels * self.factor // out_channels

    def construct(self, x: Tensor) -> Tensor:
        ft, fs = self.factor_t, self.factor_s
        pad_t = (ft - x.shape[2] % ft) % ft
        if pad_t:
            b, c, _, h, w = x.shape
            x = ops.cat([ops.zeros((b, c, pad_t, h, w), x.dtype), x], 2)
        b, c, t, h, w = x.shape
        x = x.reshape(b, c, t // ft, ft, h // fs, fs, w // fs, fs)
        # channel index = ((c * ft + dt) * fs + dh) * fs + dw, grouped in runs of group_size
        x = x.transpose(0, 1, 3, 5, 7, 2, 4, 6)
        x = x.reshape(b, self.out_channels, self.group_size, t // ft, h // fs, w // fs)
        return x.mean(axis=2)


class DupUp3D(nn.Cell):
    """Channel-to-space/time unfold of repeated channels (the up blocks' shortcut).

    x: [B, C_in, T, H, W] -> [B, C_out, T*ft, H*fs, W*fs]; with ``first_chunk`` the first ft-1 frames are dropped,
    matching the main path, whose temporal upsampler turns the first latent frame into a single frame.
    """

    def __init__(self, in_channels: int, out_channels: int, factor_t: int, factor_s: int = 1):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.factor_t = factor_t
        self.factor_s = factor_s
        self.factor = factor_t * factor_s * factor_s
        assert out_channels * self.factor % in_channels == 0, (in_channels, out_channels, self.factor)
        self.repeats = out_channels * self.factor // in_channels

    def construct(self, x: Tensor, first_chunk: bool = False) -> Tensor:
        ft, fs = self.factor_t, self.factor_s
        b, c, t, h, w = x.shape
        # repeat_interleave over channels (each channel `repeats` times in a row) as a broadcast
        x = ops.broadcast_to(x.reshape(b, c, 1, t, h, w), (b, c, self.repeats, t, h, w))
        x = x.reshape(b, self.out_channels, ft, fs, fs, t, h, w)
        x = x.transpose(0, 1, 5, 2, 6, 3, 7, 4)
        x = x.reshape(b, self.out_channels, t * ft, h * fs, w * fs)
        if first_chunk:
            x = x[:, :, ft - 1:]
        return x
