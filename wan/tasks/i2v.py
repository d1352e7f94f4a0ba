"""i2v-A14B: the image is the first frame; --size is an area and the aspect ratio follows the image.

Conditions: ``y`` = [4 mask channels + C latent channels, F, h, w], the VAE latent of a clip made of the resized
image followed by black frames, with a mask that is 1 on the first frame. The DiT concatenates ``y`` to its input
channels; the sampler itself is plain (one timestep per step, nothing frozen).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..utils.media import resize_bicubic, to_tensor
from .base import Conditions, ConditionsBuilder, Encoder, Geometry, latent_frames, padded_seq_len


def i2v_latent_size(img_h: int, img_w: int, max_area: int, vae_stride, patch_size) -> Tuple[int, int]:
    """(lat_h, lat_w) of i2v-A14B: the area of ``max_area`` at the image's aspect ratio, in whole patches.

    The official rule; either side is 0 when the image is too narrow for the area (see ``ImageToVideo``).
    """
    aspect = img_h / img_w
    lat_h = round(np.sqrt(max_area * aspect) // vae_stride[1] // patch_size[1] * patch_size[1])
    lat_w = round(np.sqrt(max_area / aspect) // vae_stride[2] // patch_size[2] * patch_size[2])
    return int(lat_h), int(lat_w)


def first_frame_mask(frame_num: int, lat_h: int, lat_w: int) -> np.ndarray:
    """[4, (F-1)/4+1, lat_h, lat_w] float32: 1 on the first video frame, 0 elsewhere.

    The VAE folds 4 video frames into each latent frame after the first, so frame 0 is repeated 4 times to give
    every latent frame 4 mask channels.
    """
    msk = np.zeros((1, frame_num, lat_h, lat_w), np.float32)
    msk[:, 0] = 1.0
    msk = np.concatenate([np.repeat(msk[:, :1], 4, axis=1), msk[:, 1:]], axis=1)
    return msk.reshape(1, msk.shape[1] // 4, 4, lat_h, lat_w).transpose(0, 2, 1, 3, 4)[0]


class ImageToVideo(ConditionsBuilder):
    kind = "i2v"
    needs_image = True
    accepts_image = True

    def geometry(self, size: Tuple[int, int], frame_num: int, image=None) -> Geometry:
        self.check_image(image)
        task = self.task
        stride, patch = task.vae_stride, task.patch_size
        area = size[0] * size[1]
        lat_h, lat_w = i2v_latent_size(image.height, image.width, area, stride, patch)
        if lat_h == 0 or lat_w == 0:
            # The official code would build an empty latent and fail inside the VAE. A side is > 0 exactly when
            # sqrt(area * side ratio) reaches one patch (stride * patch pixels).
            unit = stride[1] * patch[1]
            lo, hi = unit * unit / area, area / (unit * unit)
            raise ValueError(
                f"--image is {image.width}x{image.height} pixels (width/height {image.width / image.height:.4g}): "
                f"at the --size {size[0]}*{size[1]} area the video would be {lat_w * stride[2]}x{lat_h * stride[1]}"
                f" pixels, narrower than one {unit}-pixel patch; crop the image to a width/height ratio between "
                f"{lo:.4g} and {hi:.4g}, or pass a larger --size")
        shape = (task.z_dim, latent_frames(frame_num, stride), lat_h, lat_w)
        return Geometry(shape, (lat_w * stride[2], lat_h * stride[1]))

    def build(self, size: Tuple[int, int], frame_num: int, image=None, *, encode: Optional[Encoder] = None,
              seq_multiple: int = 1) -> Conditions:
        from mindspore import Tensor

        geo = self.geometry(size, frame_num, image)
        _, _, lat_h, lat_w = geo.latent_shape
        w, h = geo.output_size
        # Official numerics: to_tensor on the full photo, then torch's bicubic interpolate (no antialias).
        frame = resize_bicubic(to_tensor(image), (h, w))                       # [3, h, w]
        clip = np.concatenate([frame[:, None], np.zeros((3, frame_num - 1, h, w), np.float32)], axis=1)
        z = encode(clip)                                                       # [C, F_lat, lat_h, lat_w]
        y = Tensor(np.concatenate([first_frame_mask(frame_num, lat_h, lat_w), z], axis=0))
        return Conditions(geo.latent_shape, padded_seq_len(geo.latent_shape, self.task.patch_size, seq_multiple),
                          geo.output_size, model_kwargs={"y": [y]})
