"""What every task's conditions builder shares: the request geometry, the conditions the loop reads, the base class.

The denoise loop knows nothing about tasks. It reads a ``Conditions`` object through three task-neutral hooks:
``timestep(t)`` (the model's ``t`` for one step: one value, or one per token), ``constrain(latent)`` (applied to
the initial latent and after every solver step: identity, or re-freezing a conditioned frame) and
``model_kwargs`` (extra keyword arguments for every DiT call, e.g. i2v's ``y``). A task changes what its builder
puts there, never the loop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from ..configs import TaskConfig

# encode(video [3, F, H, W] float32 in [-1, 1]) -> latent [C, f, h, w] float32. The pipeline supplies it (it owns
# the VAE and decides where the VAE lives while encoding), so a builder never touches placement.
Encoder = Callable[[np.ndarray], np.ndarray]


def latent_frames(frame_num: int, vae_stride: Sequence[int]) -> int:
    """Latent frames of a ``frame_num``-frame video: the causal VAE keeps frame 0 and folds each 4 after it."""
    return (frame_num - 1) // vae_stride[0] + 1


def padded_seq_len(latent_shape: Sequence[int], patch_size, multiple: int = 1) -> int:
    """Token count of a latent [C, F, H, W], rounded up to a multiple (the sequence-parallel degree).

    The official t2v formula; for i2v/ti2v latents (whole patches) it equals their floor-then-round-up form.
    """
    _, f, h, w = latent_shape
    tokens = math.ceil(h * w / (patch_size[1] * patch_size[2]) * f / multiple)
    return tokens * multiple


@dataclass(frozen=True)
class Geometry:
    """The shape of one request, decided by the task's sizing rule before any model exists.

    latent_shape: [C, F, h, w] of the denoised latent; output_size: (width, height) of the video in pixels.
    """
    latent_shape: Tuple[int, int, int, int]
    output_size: Tuple[int, int]

    def tokens(self, patch_size) -> int:
        """Unpadded DiT token count (what the sequence-parallel checks need)."""
        return padded_seq_len(self.latent_shape, patch_size)


@dataclass
class Conditions:
    """What the loop needs besides the text, for one request.

    latent_shape: [C, F, h, w]; seq_len: padded token count passed to the DiT; output_size: (width, height);
    model_kwargs: extra keyword arguments of every DiT call (both CFG branches unless ``model_kwargs_null`` is
    set: s2v silences the audio of the unconditional branch).
    The default hooks describe plain text-to-video: one timestep for all tokens, nothing frozen.
    """
    latent_shape: Tuple[int, int, int, int]
    seq_len: int
    output_size: Tuple[int, int]
    model_kwargs: Dict[str, object] = field(default_factory=dict)
    model_kwargs_null: Optional[Dict[str, object]] = None  # the unconditional branch's, when they differ (s2v)

    def timestep(self, t: float) -> np.ndarray:
        """The model's ``t`` for a step at timestep ``t``: float32 [1] here (one value for every token)."""
        return np.array([t], np.float32)

    def constrain(self, latent: np.ndarray) -> np.ndarray:
        """latent [C, F, h, w] -> the latent the sampler continues from (no constraint here)."""
        return latent


@dataclass
class FrozenFirstFrame(Conditions):
    """Conditions with a clean, fixed first latent frame (ti2v-5B with an image).

    keep: [C, F, h, w] float32, 1 where the latent is generated and 0 on the frozen frame; frozen: the clean latent
    there ([C, F, h, w], zero elsewhere). The frozen tokens are denoised at t = 0 (the official per-token mask).
    """
    keep: Optional[np.ndarray] = None
    frozen: Optional[np.ndarray] = None
    patch_size: Tuple[int, int, int] = (1, 2, 2)
    _token_scale: Optional[np.ndarray] = field(default=None, repr=False)

    def __post_init__(self):
        # One entry per token of the [F, h/2, w/2] patch grid, in sequence order, then 1.0 on the padding tokens
        # (they carry the step's t, as in the official code). Built once: a step is then one multiply.
        grid = self.keep[0][:, ::self.patch_size[1], ::self.patch_size[2]].reshape(-1)
        pad = np.ones(self.seq_len - grid.size, np.float32)
        self._token_scale = np.concatenate([grid, pad]).astype(np.float32)

    def timestep(self, t: float) -> np.ndarray:
        """float32 [1, seq_len]: 0 on the frozen frame's tokens, t everywhere else."""
        return (self._token_scale * np.float32(t))[None]

    def constrain(self, latent: np.ndarray) -> np.ndarray:
        return (1.0 - self.keep) * self.frozen + self.keep * latent


class ConditionsBuilder:
    """Base of the per-task builders. Subclasses set ``kind`` and implement ``geometry`` and ``build``.

    ``geometry`` is the sizing rule: cheap, pure, raising ValueError for a request the task cannot serve (called
    by generate.py's validation before any model loads). ``build`` also preprocesses the image and runs the VAE
    encoder through ``encode``.
    """
    kind = ""
    needs_image = False
    accepts_image = False

    def __init__(self, task: TaskConfig):
        self.task = task

    def check_image(self, image) -> None:
        if image is None and self.needs_image:
            raise ValueError(f"{self.task.name} needs --image (the first frame of the video)")
        if image is not None and not self.accepts_image:
            raise ValueError(f"{self.task.name} takes no --image; use i2v-A14B or ti2v-5B for image-to-video")

    def geometry(self, size: Tuple[int, int], frame_num: int, image=None) -> Geometry:
        """size: (width, height) from --size; image: an RGB PIL image or None."""
        raise NotImplementedError

    def build(self, size: Tuple[int, int], frame_num: int, image=None, *, encode: Optional[Encoder] = None,
              seq_multiple: int = 1) -> Conditions:
        raise NotImplementedError

    def _text_geometry(self, size: Tuple[int, int], frame_num: int) -> Geometry:
        """--size is the frame: latent = size / VAE stride (the official t2v and text-only ti2v rule)."""
        w, h = size
        stride = self.task.vae_stride
        shape = (self.task.z_dim, latent_frames(frame_num, stride), h // stride[1], w // stride[2])
        return Geometry(shape, (w, h))
