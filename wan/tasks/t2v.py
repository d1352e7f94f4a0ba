"""t2v-A14B: text only. --size is the frame; no image, no model extras."""
from __future__ import annotations

from typing import Optional, Tuple

from .base import Conditions, ConditionsBuilder, Encoder, Geometry, padded_seq_len


class TextToVideo(ConditionsBuilder):
    """Latent [z_dim, (F-1)/4+1, H/8, W/8] of pure noise; one timestep for every token."""
    kind = "t2v"

    def geometry(self, size: Tuple[int, int], frame_num: int, image=None) -> Geometry:
        self.check_image(image)
        return self._text_geometry(size, frame_num)

    def build(self, size: Tuple[int, int], frame_num: int, image=None, *, encode: Optional[Encoder] = None,
              seq_multiple: int = 1) -> Conditions:
        geo = self.geometry(size, frame_num, image)
        return Conditions(geo.latent_shape, padded_seq_len(geo.latent_shape, self.task.patch_size, seq_multiple),
                          geo.output_size)
