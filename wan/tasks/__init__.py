"""One conditions builder per task: sizing rule, image preprocessing, latent shape and model extras.

The pipeline's single denoise loop reads only the task-neutral ``Conditions`` hooks (see ``base``), so adding a
task is: a builder module here (a ``ConditionsBuilder`` subclass with its ``kind``), one line in ``BUILDERS``, and
a ``TaskConfig`` entry with that ``kind`` in ``wan.configs``. No loop or pipeline branch changes.

    t2v   text only; --size is the frame                                   (t2v.py)
    i2v   image = first frame; --size is an area; y = mask + image latent  (i2v.py)
    ti2v  t2v, or with an image a frozen first latent frame at t = 0       (ti2v.py)
    s2v   speech-to-video: reference image, audio and pose conditions      (s2v.py, s2v_inputs.py)

Dependencies point down: this package imports wan.configs, wan.utils (and wan.modules when a task needs a network
of its own), never wan.pipeline.
"""
from __future__ import annotations

from typing import Dict, Type

from ..configs import TaskConfig
from .base import (Conditions, ConditionsBuilder, Encoder, FrozenFirstFrame, Geometry, latent_frames,
                   padded_seq_len)
from .i2v import ImageToVideo, first_frame_mask, i2v_latent_size
from .t2v import TextToVideo
from .s2v import SpeechToVideo
from .ti2v import TextImageToVideo, best_output_size

# kind (TaskConfig.kind) -> builder class.
BUILDERS: Dict[str, Type[ConditionsBuilder]] = {
    TextToVideo.kind: TextToVideo,
    ImageToVideo.kind: ImageToVideo,
    TextImageToVideo.kind: TextImageToVideo,
    SpeechToVideo.kind: SpeechToVideo,
}


def get_builder(task: TaskConfig) -> ConditionsBuilder:
    """The conditions builder of ``task`` (by its ``kind``)."""
    if task.kind not in BUILDERS:
        raise ValueError(f"task {task.name}: no conditions builder for kind {task.kind!r}; known kinds: "
                         f"{', '.join(BUILDERS)} (add one in wan/tasks)")
    return BUILDERS[task.kind](task)


__all__ = ["BUILDERS", "get_builder", "Conditions", "ConditionsBuilder", "Encoder", "FrozenFirstFrame", "Geometry",
           "latent_frames", "padded_seq_len", "TextToVideo", "ImageToVideo", "TextImageToVideo", "SpeechToVideo", "best_output_size",
           "i2v_latent_size", "first_frame_mask"]
