"""The Wan2.2 video VAE (stride 4x16x16, 48 latent channels) as MindSpore cells.

Only what differs from the Wan2.1 VAE lives here: the 2x2 pixel patchify in front of the encoder (3 -> 12
channels), the residual down/up blocks with parameter-free shortcuts (AvgDown3D / DupUp3D), an upsampler that
keeps the channel count, the 12-channel head, the 2.2 latent statistics and checkpoint check. The causal
convolution, its feature cache, RMS_norm, the residual and attention blocks, the chunked passes and the wrapper
base (:class:`~wan.modules.vae2_1.VideoVAE`) come from ``vae2_1``.

Parameter names equal the keys of the official ``Wan2.2_VAE.pth``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import mindspore as ms
from mindspore import Tensor, nn, ops

from .vae2_1 import (CausalConv3d, CausalDecoder3d, CausalEncoder3d, CausalVAE, FeatureCache, Resample,
                     ResidualBlock, VideoVAE, middle_blocks, output_head, read_vae_checkpoint_layout)

PATCH = 2  # the encoder sees 2x2 pixel patches as 12 channels
PATCHED_CHANNELS = 3 * PATCH * PATCH


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
        self.out_channels, self.factor_t, self.factor_s = out_channels, factor_t, factor_s
        folded = in_channels * factor_t * factor_s * factor_s
        assert folded % out_channels == 0, (in_channels, out_channels, factor_t, factor_s)
        self.group_size = folded // out_channels

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
        self.out_channels, self.factor_t, self.factor_s = out_channels, factor_t, factor_s
        unfolded = out_channels * factor_t * factor_s * factor_s
        assert unfolded % in_channels == 0, (in_channels, out_channels, factor_t, factor_s)
        self.repeats = unfolded // in_channels

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


# ---------------------------------------------------------------------------------------- residual up/down

class Down_ResidualBlock(nn.Cell):
    """One encoder level: ``mult`` residual blocks, then (if ``down_flag``) a 2x spatial (and optionally
    temporal) downsampler, plus the parameter-free ``avg_shortcut`` of the level's input.

    x: [B, in_dim, T, H, W] -> [B, out_dim, T', H/2, W/2] (H, W kept without ``down_flag``).
    """

    def __init__(self, in_dim: int, out_dim: int, dropout: float, mult: int, temperal_downsample: bool = False,
                 down_flag: bool = False, dtype=ms.float32):
        super().__init__()
        self.avg_shortcut = AvgDown3D(in_dim, out_dim, factor_t=2 if temperal_downsample else 1,
                                      factor_s=2 if down_flag else 1)
        blocks = []
        for _ in range(mult):
            blocks.append(ResidualBlock(in_dim, out_dim, dropout, dtype=dtype))
            in_dim = out_dim
        if down_flag:
            mode = "downsample3d" if temperal_downsample else "downsample2d"
            blocks.append(Resample(out_dim, mode=mode, dtype=dtype))
        self.downsamples = nn.CellList(blocks)

    def construct(self, x: Tensor, cache: Optional[FeatureCache] = None) -> Tensor:
        shortcut = self.avg_shortcut(x)
        for module in self.downsamples:
            x = module(x, cache)
        return x + shortcut


class Up_ResidualBlock(nn.Cell):
    """One decoder level: ``mult`` residual blocks, then (if ``up_flag``) a width-preserving 2x spatial (and
    optionally temporal) upsampler, plus the parameter-free ``avg_shortcut`` (only with ``up_flag``).

    x: [B, in_dim, T, H, W] -> [B, out_dim, T', 2H, 2W] (H, W kept without ``up_flag``).
    """

    def __init__(self, in_dim: int, out_dim: int, dropout: float, mult: int, temperal_upsample: bool = False,
                 up_flag: bool = False, dtype=ms.float32):
        super().__init__()
        self.avg_shortcut = DupUp3D(in_dim, out_dim, factor_t=2 if temperal_upsample else 1,
                                    factor_s=2) if up_flag else None
        blocks = []
        for _ in range(mult):
            blocks.append(ResidualBlock(in_dim, out_dim, dropout, dtype=dtype))
            in_dim = out_dim
        if up_flag:
            mode = "upsample3d" if temperal_upsample else "upsample2d"
            blocks.append(Resample(out_dim, mode=mode, out_dim=out_dim, dtype=dtype))
        self.upsamples = nn.CellList(blocks)

    def construct(self, x: Tensor, cache: Optional[FeatureCache] = None) -> Tensor:
        main = x
        for module in self.upsamples:
            main = module(main, cache)
        if self.avg_shortcut is None:
            return main
        # On the first latent frame of a chunked decode the temporal upsampler does not double time, so the
        # shortcut drops its extra frames too.
        first_chunk = cache is not None and cache.is_first_chunk
        return main + self.avg_shortcut(x, first_chunk)


# ---------------------------------------------------------------------------------------- encoder / decoder

class Encoder3d(CausalEncoder3d):
    """Patchified video [B, 12, T, H/2, W/2] -> [B, z_dim, T', H/16, W/16] (z_dim = 2x latent: mu, log_var).

    Args follow the official 2.2 ``Encoder3d``; ``attn_scales`` is accepted and unused there too.
    """

    def __init__(self, dim: int = 128, z_dim: int = 4, dim_mult: Sequence[int] = (1, 2, 4, 4),
                 num_res_blocks: int = 2, attn_scales: Sequence[float] = (),
                 temperal_downsample: Sequence[bool] = (True, True, False), dropout: float = 0.0,
                 dtype=ms.float32):
        super().__init__()
        dims = [dim * u for u in [1, *dim_mult]]
        self.conv1 = CausalConv3d(PATCHED_CHANNELS, dims[0], 3, padding=1, dtype=dtype)
        levels = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            t_down = temperal_downsample[i] if i < len(temperal_downsample) else False
            levels.append(Down_ResidualBlock(in_dim, out_dim, dropout, mult=num_res_blocks,
                                             temperal_downsample=t_down, down_flag=i != len(dim_mult) - 1,
                                             dtype=dtype))
        self.downsamples = nn.CellList(levels)
        self.middle = middle_blocks(out_dim, dropout, dtype)
        self.head = output_head(out_dim, z_dim, dtype)


class Decoder3d(CausalDecoder3d):
    """Latent [B, z_dim, T, h, w] -> patchified video [B, 12, T', 8h, 8w].

    ``dim`` is the decoder's own width (the official ``WanVAE_`` passes its ``dec_dim``).
    """

    def __init__(self, dim: int = 128, z_dim: int = 4, dim_mult: Sequence[int] = (1, 2, 4, 4),
                 num_res_blocks: int = 2, attn_scales: Sequence[float] = (),
                 temperal_upsample: Sequence[bool] = (False, True, True), dropout: float = 0.0,
                 dtype=ms.float32):
        super().__init__()
        dims = [dim * u for u in [dim_mult[-1], *dim_mult[::-1]]]
        self.conv1 = CausalConv3d(z_dim, dims[0], 3, padding=1, dtype=dtype)
        self.middle = middle_blocks(dims[0], dropout, dtype)
        levels = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            t_up = temperal_upsample[i] if i < len(temperal_upsample) else False
            levels.append(Up_ResidualBlock(in_dim, out_dim, dropout, mult=num_res_blocks + 1,
                                           temperal_upsample=t_up, up_flag=i != len(dim_mult) - 1,
                                           dtype=dtype))
        self.upsamples = nn.CellList(levels)
        self.head = output_head(out_dim, PATCHED_CHANNELS, dtype)


class WanVAE_(CausalVAE):
    """The official Wan2.2 VAE network: ``encoder`` (width ``dim``), ``conv1``, ``conv2``, ``decoder`` (width
    ``dec_dim``), with the 2x2 patchify around the chunked causal passes of :class:`CausalVAE`.

    ``encode``: video [B, 3, T, H, W] in [-1, 1], T = 1 + 4k -> normalized latent [B, z_dim, 1 + k, H/16, W/16];
    ``decode``: latent [B, z_dim, T, h, w] -> video [B, 3, 1 + 4(T-1), 16h, 16w] (not clamped).
    """

    def __init__(self, dim: int = 160, dec_dim: int = 256, z_dim: int = 16, dim_mult: Sequence[int] = (1, 2, 4, 4),
                 num_res_blocks: int = 2, attn_scales: Sequence[float] = (),
                 temperal_downsample: Sequence[bool] = (True, True, False), dropout: float = 0.0,
                 dtype=ms.float32):
        encoder = Encoder3d(dim, z_dim * 2, dim_mult, num_res_blocks, attn_scales, temperal_downsample,
                            dropout, dtype=dtype)
        decoder = Decoder3d(dec_dim, z_dim, dim_mult, num_res_blocks, attn_scales, temperal_downsample[::-1],
                            dropout, dtype=dtype)
        super().__init__(encoder, decoder, z_dim, dtype)

    def encode(self, x: Tensor, scale=(0.0, 1.0)) -> Tensor:
        return super().encode(patchify(x.astype(self.conv1.weight.dtype)), scale)

    def decode(self, z: Tensor, scale=(0.0, 1.0)) -> Tensor:
        return unpatchify(super().decode(z, scale))


# ------------------------------------------------------------------------------------------------- wrapper

# Per-channel statistics of the Wan2.2 latent space (official constants).
WAN22_LATENT_MEAN = (-0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
                     -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
                     -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
                     -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
                     -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
                     0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667)
WAN22_LATENT_STD = (0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
                    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
                    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
                    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
                    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
                    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744)

# The architecture the official wrapper builds: ``_video_vae`` with the wrapper's c_dim=160 and
# temperal_downsample, and WanVAE_'s default dec_dim=256 (the wrapper never passes it).
WAN22_CONFIG = dict(dim=160, dec_dim=256, dim_mult=(1, 2, 4, 4), num_res_blocks=2, attn_scales=(),
                    temperal_downsample=(False, True, True), dropout=0.0)

SPATIAL_STRIDE = 16
TEMPORAL_STRIDE = 4


def check_vae2_2_checkpoint(path, z_dim: int, dim: int, dec_dim: int, dim_mult: Sequence[int]) -> None:
    """Refuse, before building anything, a file that is not a Wan2.2 VAE state dict of the configured widths
    (e.g. Wan2.1_VAE.pth). Raises FileNotFoundError / ValueError naming what was expected and what was found.
    """
    required = ("encoder.conv1.weight", "decoder.conv1.weight", "conv2.weight")
    shapes, nested = read_vae_checkpoint_layout(path, required, "Wan2.2_VAE.pth of the TI2V-5B model folder")
    found_in = shapes["encoder.conv1.weight"][1]
    if found_in != PATCHED_CHANNELS or not nested:
        raise ValueError(f"{path} is a Wan2.1 VAE checkpoint (encoder.conv1.weight takes {found_in} input "
                         "channels, flat down-sampling blocks); the Wan2.2 VAE expects "
                         f"{PATCHED_CHANNELS} input channels (2x2-patchified RGB) and residual down blocks. "
                         "Use Wan2.2_VAE.pth with Wan2_2_VAE, or load this file with Wan2_1_VAE (A14B models)")
    found = dict(z_dim=shapes["conv2.weight"][0], dim=shapes["encoder.conv1.weight"][0],
                 dec_dim=shapes["decoder.conv1.weight"][0] // dim_mult[-1])
    wanted = dict(z_dim=z_dim, dim=dim, dec_dim=dec_dim)
    if found != wanted:
        raise ValueError(f"{path} holds a Wan2.2 VAE with {found}, the model is configured with {wanted}; "
                         "pass matching z_dim / model_config (the release is z_dim=48, dim=160, dec_dim=256)")


class Wan2_2_VAE(VideoVAE):
    """The official Wan2.2 VAE wrapper (stride 4x16x16, 48 latent channels; ``Wan2.2_VAE.pth`` of TI2V-5B).
    Arguments as :class:`VideoVAE`; ``model_config`` overrides :data:`WAN22_CONFIG`."""

    VERSION = "2.2"
    NETWORK = "vae2_2"
    MODEL = WanVAE_
    CONFIG = WAN22_CONFIG
    LATENT_MEAN = WAN22_LATENT_MEAN
    LATENT_STD = WAN22_LATENT_STD
    SPATIAL_STRIDE = SPATIAL_STRIDE
    TEMPORAL_STRIDE = TEMPORAL_STRIDE
    FRAME_COUNTS = "1, 5, ..., 121"

    def __init__(self, z_dim: int = 48, vae_pth=None, dtype=ms.float32, model_config: Optional[dict] = None):
        super().__init__(z_dim, vae_pth, dtype, model_config)

    @classmethod
    def check_checkpoint(cls, path, z_dim: int, config: dict) -> None:
        check_vae2_2_checkpoint(path, z_dim, config["dim"], config["dec_dim"], config["dim_mult"])
