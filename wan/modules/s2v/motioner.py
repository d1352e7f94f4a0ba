"""Frame packing of the motion latents (the frames generated before this clip) into few tokens.

The most recent latent frames keep the DiT's patch size; older ones are packed harder: with the released buckets
(1, 2, 16), the last frame at (1, 2, 2), the two before it at (2, 4, 4), the sixteen before those at (4, 8, 8).
Parameter names equal the official ``frame_packer.proj*`` keys.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ..kernels import PatchEmbed3d

__all__ = ["FramePackMotioner", "Grid"]

# One rope grid: (signed time positions [nf], row positions [nh], column positions [nw]); tokens are ordered
# frame-major, then row, then column.
Grid = Tuple[np.ndarray, np.ndarray, np.ndarray]


def sampled_positions(start: int, span: int, count: int) -> np.ndarray:
    """``count`` integer positions spread over ``span`` positions from ``start``, as the official rope does it
    (numpy linspace truncated toward zero). A negative ``start`` counts back in time: positions are returned
    negative (the official code conjugates the rotation, i.e. rotates by the negated angle)."""
    if start >= 0:
        return np.linspace(start, span + start - 1, count).astype(int)
    return -np.linspace(-start, -span - start + 1, count).astype(int)


class FramePackMotioner(nn.Cell):
    """motion latents [16, T_m, H, W] (one sample) -> tokens [1, n, inner_dim] and their rope grids.

    ``drop_mode="padd"`` (the release): the buckets are always all present; with ``add_last_motion`` < 2 the most
    recent latent frames are zeroed first (1 frame for 1, 3 frames for 0) instead of their tokens being removed.
    """

    def __init__(self, inner_dim: int = 1024, num_heads: int = 16, zip_frame_buckets: Sequence[int] = (1, 2, 16),
                 drop_mode: str = "drop", in_channels: int = 16, dtype=ms.float32):
        super().__init__()
        if drop_mode != "padd":
            raise ValueError(f"framepack_drop_mode={drop_mode!r} is not supported; only 'padd' (the released "
                             "S2V-14B setting) is implemented")
        if tuple(zip_frame_buckets) != (1, 2, 16):
            raise ValueError(f"zip_frame_buckets={tuple(zip_frame_buckets)}: the official model fixes (1, 2, 16)")
        self.proj = PatchEmbed3d(in_channels, inner_dim, (1, 2, 2), dtype=dtype)
        self.proj_2x = PatchEmbed3d(in_channels, inner_dim, (2, 4, 4), dtype=dtype)
        self.proj_4x = PatchEmbed3d(in_channels, inner_dim, (4, 8, 8), dtype=dtype)
        self.zip_frame_buckets = tuple(int(b) for b in zip_frame_buckets)
        self.inner_dim = inner_dim
        self.num_heads = num_heads
        self.in_channels = in_channels
        self.drop_mode = drop_mode

    def token_count(self, lat_h: int, lat_w: int) -> int:
        return sum(len(f) * len(h) * len(w) for f, h, w in self.grids(lat_h, lat_w))

    def grids(self, lat_h: int, lat_w: int) -> List[Grid]:
        """Rope grids of the packed tokens, in token order [recent | 2x | 4x], for latents of H x W = lat_h x lat_w.

        Time: the recent frame at -1, the 2x group at -3, the 4x groups at -19, -14, -9, -4 (released buckets).
        Space: each packed token takes positions spread over the full-resolution grid (lat_h // 2 rows).
        """
        b = self.zip_frame_buckets
        full_h, full_w = lat_h // 2, lat_w // 2
        out = []
        for level, (stride, span) in enumerate(((1, b[0]), (2, b[1]), (4, b[2]))):
            start = -sum(b[:level + 1])
            frames = span // stride
            rows, cols = lat_h // (2 * stride), lat_w // (2 * stride)
            out.append((sampled_positions(start, span, frames), sampled_positions(0, full_h, rows),
                        sampled_positions(0, full_w, cols)))
        return out

    def construct(self, motion: Tensor, add_last_motion: int = 2) -> Tensor:
        """motion: [16, T_m, H, W] -> [1, n, inner_dim] tokens (recent, then 2x, then 4x)."""
        c, frames, h, w = motion.shape
        total = sum(self.zip_frame_buckets)
        keep = min(total, frames)
        # The last `total` frames, zero-padded in front when fewer are given.
        if keep == 0:
            padded = ops.zeros((c, total, h, w), motion.dtype)
        elif keep < total:
            padded = ops.cat([ops.zeros((c, total - keep, h, w), motion.dtype), motion[:, frames - keep:]], 1)
        else:
            padded = motion[:, frames - keep:]
        if add_last_motion < 2:
            zeroed = sum(self.zip_frame_buckets[:len(self.zip_frame_buckets) - add_last_motion - 1])
            padded = ops.cat([padded[:, :total - zeroed], ops.zeros((c, zeroed, h, w), padded.dtype)], 1)
        padded = padded[None]
        b = self.zip_frame_buckets
        far, mid, recent = padded[:, :, :b[2]], padded[:, :, b[2]:b[2] + b[1]], padded[:, :, b[2] + b[1]:]
        tokens = [_flat(self.proj(recent)), _flat(self.proj_2x(mid)), _flat(self.proj_4x(far))]
        return ops.cat(tokens, 1)


def _flat(p: Tensor) -> Tensor:
    """[B, dim, f, h, w] -> [B, f*h*w, dim]."""
    return p.reshape(p.shape[0], p.shape[1], -1).transpose(0, 2, 1)
