"""s2v-14B speech-to-video: a reference image, an audio track and optionally a pose video drive a long video made
of clips of ``infer_frames`` frames, each continuing from the last frames of the one before.

Sizing: --size is an area; the output keeps the reference's aspect ratio, padded to multiples of 64
(``size_within_area``). Per clip the DiT denoises ``(infer_frames + 3 + motion_frames) // 4 - ceil(motion / 4)``
latent frames; its extras are the reference latent, the motion latent (the VAE latent of the last
``motion_frames`` video frames so far; grey before the first clip), the pose latent (zeros without a pose
video), the clip's audio features and the motion-frame counts. The unconditional branch differs from the
conditional one by its text and by silent (zero) audio. The clip loop itself lives in the pipeline, which owns
the VAE; this module owns every rule about the inputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from .base import Conditions, ConditionsBuilder, Geometry, padded_seq_len
from .s2v_inputs import clip_latent_frames, reference_pixels, size_within_area


@dataclass(frozen=True)
class ClipPlan:
    """The shape of a speech-to-video request, fixed before any model runs.

    height / width: output pixels; latent_shape: [C, f, h, w] denoised per clip; motion_latent_frames: latent
    frames of the motion context; num_clips: clips to generate (from the audio length, capped by --num_clip).
    """
    height: int
    width: int
    latent_shape: Tuple[int, int, int, int]
    motion_latent_frames: int
    infer_frames: int
    num_clips: int = 0


class SpeechToVideo(ConditionsBuilder):
    kind = "s2v"
    needs_image = True
    accepts_image = True

    def check_image(self, image) -> None:
        if image is None:
            raise ValueError(f"{self.task.name} needs --image (the reference image of the speaker)")

    def plan(self, size: Tuple[int, int], infer_frames: int, image) -> ClipPlan:
        """The sizing rule: ``size`` is (width, height) whose product is the area; ``image`` a PIL image."""
        self.check_image(image)
        if infer_frames <= 0 or infer_frames % 4 != 0:
            raise ValueError(f"--infer_frames {infer_frames}: the frames per clip must be a positive multiple of "
                             f"4 (the official values are 80 and 48)")
        task = self.task
        height, width = size_within_area(image.height, image.width, size[0] * size[1])
        stride = task.vae_stride
        lat_f, lat_motion = clip_latent_frames(infer_frames, task.motion_frames, stride[0])
        shape = (task.z_dim, lat_f, height // stride[1], width // stride[2])
        return ClipPlan(height, width, shape, lat_motion, infer_frames)

    def geometry(self, size: Tuple[int, int], frame_num: int, image=None) -> Geometry:
        """One clip's geometry (``frame_num`` = frames per clip): what the sequence-parallel checks need."""
        plan = self.plan(size, frame_num, image)
        return Geometry(plan.latent_shape, (plan.width, plan.height))

    def reference(self, plan: ClipPlan, image) -> np.ndarray:
        """[3, 1, H, W] float32 in [-1, 1]: the reference image resized and centre-cropped to the output."""
        return reference_pixels(image, plan.height, plan.width)

    def initial_motion(self, plan: ClipPlan, ref: np.ndarray, start_from_ref: bool) -> np.ndarray:
        """[3, motion_frames, H, W] pixels of the motion context before the first clip: grey (0), or with
        ``start_from_ref`` the reference in its last 6 frames (the official ``init_first_frame``)."""
        motion = np.zeros((3, self.task.motion_frames, plan.height, plan.width), np.float32)
        if start_from_ref:
            motion[:, -6:] = ref
        return motion

    def clip_conditions(self, plan: ClipPlan, clip: int, *, ref_latent, motion_latent, pose_latent,
                        audio: np.ndarray, drop_first_motion: bool, seq_multiple: int = 1) -> Conditions:
        """The DiT extras of clip ``clip``.

        ref_latent [1, C, 1, h, w], motion_latent [1, C, motion_latent_frames, h, w], pose_latent [1, C, f, h, w]
        (Tensors); audio: [1, layers, audio_dim, frames] float32 features of the whole track (zero-padded to
        whole clips). drop_first_motion: the first clip ignores the (grey) motion context.
        """
        from mindspore import Tensor

        f = plan.infer_frames
        clip_audio = np.ascontiguousarray(audio[..., clip * f:(clip + 1) * f])
        common = dict(ref_latents=ref_latent, motion_latents=motion_latent, cond_states=pose_latent,
                      motion_frames=[self.task.motion_frames, plan.motion_latent_frames],
                      drop_motion_frames=bool(drop_first_motion and clip == 0))
        seq_len = padded_seq_len(plan.latent_shape, self.task.patch_size, seq_multiple)
        return Conditions(plan.latent_shape, seq_len, (plan.width, plan.height),
                          model_kwargs=dict(common, audio_input=Tensor(clip_audio)),
                          model_kwargs_null=dict(common, audio_input=Tensor(np.zeros_like(clip_audio))))

    @staticmethod
    def keep_frames(video: np.ndarray, infer_frames: int, dropped_motion: bool) -> np.ndarray:
        """The new frames of a decoded clip [3, F, H, W]: its last ``infer_frames``, minus the first 3 when the
        clip was decoded after the reference latent instead of the motion latent (official)."""
        video = video[:, -infer_frames:]
        return video[:, 3:] if dropped_motion else video

    @staticmethod
    def next_motion(motion: np.ndarray, frames: np.ndarray) -> np.ndarray:
        """Slide the motion context [3, M, H, W] by the newest frames (at most M of them)."""
        overlap = min(motion.shape[1], frames.shape[1])
        return np.concatenate([motion[:, overlap:], frames[:, -overlap:]], axis=1)

    def build(self, size, frame_num, image=None, *, encode=None, seq_multiple: int = 1):
        raise ValueError(f"{self.task.name} generates clip by clip: use WanPipeline.generate_speech")
