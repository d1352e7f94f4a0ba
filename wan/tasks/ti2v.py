"""ti2v-5B: text-to-video, or image-to-video when an image is given.

Without an image it is t2v (--size is the frame). With an image, --size is an area: the frame is the largest
multiple of 32 pixels (VAE stride 16 x patch 2) at the image's aspect ratio (the official ``best_output_size``),
the image is LANCZOS-resized to cover it and center-cropped, its VAE latent becomes the clean first latent frame,
and those tokens are denoised at t = 0.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..utils.media import resize_center_crop, to_tensor
from .base import Conditions, ConditionsBuilder, Encoder, FrozenFirstFrame, Geometry, latent_frames, padded_seq_len


def best_output_size(w: int, h: int, dw: int, dh: int, expected_area: int) -> Optional[Tuple[int, int]]:
    """Largest (width, height), multiples of (dw, dh), with area <= expected_area and the aspect of w/h.

    Tries rounding the width first and the height first and keeps the one whose aspect ratio is closer (the
    official ti2v rule, same result wherever the official returns one). A candidate with a zero side is dropped:
    the official divides by it and raises ZeroDivisionError. None when neither candidate has a whole block.
    """
    ratio = w / h
    ow = (expected_area * ratio) ** 0.5
    oh = expected_area / ow
    candidates = []
    ow1 = int(ow // dw * dw)
    if ow1 > 0:
        oh1 = int(expected_area / ow1 // dh * dh)
        if oh1 > 0:
            candidates.append((ow1, oh1))
    oh2 = int(oh // dh * dh)
    if oh2 > 0:
        ow2 = int(expected_area / oh2 // dw * dw)
        if ow2 > 0:
            candidates.append((ow2, oh2))
    if not candidates:
        return None
    if len(candidates) == 1:
        return candidates[0]
    (ow1, oh1), (ow2, oh2) = candidates
    r1, r2 = ow1 / oh1, ow2 / oh2
    if max(ratio / r1, r1 / ratio) < max(ratio / r2, r2 / ratio):
        return ow1, oh1
    return ow2, oh2


class TextImageToVideo(ConditionsBuilder):
    kind = "ti2v"
    accepts_image = True

    def geometry(self, size: Tuple[int, int], frame_num: int, image=None) -> Geometry:
        self.check_image(image)
        if image is None:
            return self._text_geometry(size, frame_num)
        task = self.task
        stride, patch = task.vae_stride, task.patch_size
        dh, dw = patch[1] * stride[1], patch[2] * stride[2]
        area = size[0] * size[1]
        out = best_output_size(image.width, image.height, dw, dh, area)
        if out is None:
            raise ValueError(
                f"--image is {image.width}x{image.height} pixels (width/height {image.width / image.height:.4g}): "
                f"at the --size {size[0]}*{size[1]} area no frame of whole {dw}x{dh} blocks has that aspect ratio; "
                f"crop the image to a width/height ratio between about {dw * dh / area:.4g} and "
                f"{area / (dw * dh):.4g}, or pass a larger --size")
        ow, oh = out
        shape = (task.z_dim, latent_frames(frame_num, stride), oh // stride[1], ow // stride[2])
        return Geometry(shape, (ow, oh))

    def build(self, size: Tuple[int, int], frame_num: int, image=None, *, encode: Optional[Encoder] = None,
              seq_multiple: int = 1) -> Conditions:
        geo = self.geometry(size, frame_num, image)
        seq_len = padded_seq_len(geo.latent_shape, self.task.patch_size, seq_multiple)
        if image is None:
            return Conditions(geo.latent_shape, seq_len, geo.output_size)
        ow, oh = geo.output_size
        first = to_tensor(resize_center_crop(image, ow, oh))[:, None]          # [3, 1, oh, ow]
        z = encode(first)                                                      # [C, 1, h, w]
        keep = np.ones(geo.latent_shape, np.float32)
        keep[:, 0] = 0.0
        frozen = np.zeros(geo.latent_shape, np.float32)
        frozen[:, :1] = z
        return FrozenFirstFrame(geo.latent_shape, seq_len, geo.output_size, keep=keep, frozen=frozen,
                                patch_size=tuple(self.task.patch_size))
