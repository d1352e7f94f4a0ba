"""S2V audio front end: wav2vec2 hidden states at the video rate, and their bucketing to video frames.

Same interface and numbers as the official ``wan.modules.s2v.audio_encoder.AudioEncoder``:
- ``extract_audio_feat(path, return_all_layers)``: audio read at 16 kHz (``wan.utils.audio.load_audio``, the
  samples of ``librosa.load``), normalised as ``Wav2Vec2FeatureExtractor`` does (zero mean, unit variance), run
  through wav2vec2 (50 frames/s), and linearly interpolated (``align_corners=True``) to 30 frames/s.
- ``get_audio_embed_bucket_fps(embed, fps, batch_frames, m)``: for each video frame at ``fps``, the audio frames
  around its time (2m+1 of them, ``30 // fps`` apart, clamped to the clip), zeros past the end of the audio; the
  frame count is rounded up to whole clips of ``batch_frames``.
The index and weight tables are computed on the host (O(frames)); the gathers and sums run as Tensor ops, so a
bf16 feature tensor on a device never comes back to the host.
"""
from __future__ import annotations

import json
import math
import os
from typing import Optional, Tuple, Union

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops

from .wav2vec2 import Wav2Vec2ForCTC

__all__ = ["AudioEncoder", "interpolation_table", "linear_interpolation", "bucket_indices_fps", "bucket_indices",
           "normalize_audio"]

AUDIO_FPS = 50     # wav2vec2 frames per second at 16 kHz (x320 downsampling)
VIDEO_RATE = 30    # the official encoder's intermediate frame rate


def normalize_audio(x: np.ndarray) -> np.ndarray:
    """Wav2Vec2FeatureExtractor's ``do_normalize`` for one unpadded clip: (x - mean) / sqrt(var + 1e-7), float32."""
    x = np.asarray(x, dtype=np.float32)
    return (x - x.mean()) / np.sqrt(x.var() + 1e-7)


def interpolation_table(n_in: int, n_out: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """torch's 1-D linear resize with ``align_corners=True`` as (i0, i1, w0, w1): out[j] = w0 x[i0] + w1 x[i1].

    The source position is computed in float32 as torch's CPU kernel does (scale (n_in-1)/(n_out-1), times j),
    so the weights are the same float32 numbers.
    """
    if n_out == n_in:  # torch copies the input for equal sizes
        idx = np.arange(n_in, dtype=np.int64)
        return idx, idx, np.ones(n_in, np.float32), np.zeros(n_in, np.float32)
    scale = np.float32(n_in - 1) / np.float32(n_out - 1) if n_out > 1 else np.float32(0.0)
    src = scale * np.arange(n_out, dtype=np.float32)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    w1 = np.clip(src - i0.astype(np.float32), np.float32(0.0), np.float32(1.0)).astype(np.float32)
    w0 = (np.float32(1.0) - w1).astype(np.float32)
    i1 = i0 + (i0 < n_in - 1).astype(np.int64)
    return i0, i1, w0, w1


def linear_interpolation(features: Tensor, input_fps: float, output_fps: float,
                         output_len: Optional[int] = None) -> Tensor:
    """Resample features along time: [L, T, D] -> [L, T', D], T' = int(T / input_fps * output_fps) by default."""
    n_in = features.shape[1]
    if output_len is None:
        output_len = int(n_in / float(input_fps) * output_fps)
    if output_len < 1:
        raise ValueError(f"{n_in} audio frames at {input_fps} fps give no frame at {output_fps} fps; the audio is "
                         f"shorter than {1.0 / output_fps:.3f} s, pass a longer clip")
    i0, i1, w0, w1 = interpolation_table(n_in, output_len)
    x = features.astype(ms.float32)
    a = ops.gather(x, Tensor(i0, ms.int32), 1)
    b = ops.gather(x, Tensor(i1, ms.int32), 1)
    out = a * Tensor(w0[None, :, None]) + b * Tensor(w1[None, :, None])
    return out.astype(features.dtype)


def _window(centres: np.ndarray, m: int, stride: int, num_frames: int) -> np.ndarray:
    """[K] frame indices -> [K, 2m+1] indices centre - m*stride ... centre + m*stride, clamped to the clip."""
    offsets = np.arange(-m, m + 1, dtype=np.int64) * stride
    return np.clip(centres[:, None] + offsets[None, :], 0, num_frames - 1)


def bucket_indices_fps(audio_frame_num: int, fps: int = 16, batch_frames: int = 81, m: int = 0,
                       video_rate: int = VIDEO_RATE) -> Tuple[np.ndarray, np.ndarray, int]:
    """The official ``get_audio_embed_bucket_fps`` index math.

    Returns (idx [bucket_num, 2m+1] audio frames per video frame, valid [bucket_num] bool (False: past the audio,
    the row is zeros), min_batch_num clips of ``batch_frames``).
    """
    scale = video_rate / fps
    min_batch_num = int(audio_frame_num / (batch_frames * scale)) + 1
    bucket_num = min_batch_num * batch_frames
    padd_audio_num = math.ceil(min_batch_num * batch_frames / fps * video_rate) - audio_frame_num
    total_frames = audio_frame_num + padd_audio_num
    # The official get_sample_indices with fixed_start=0: bucket_num instants fps apart, rounded to video_rate.
    required_duration = bucket_num / fps
    if required_duration > total_frames / video_rate:
        raise ValueError(f"bucketing {audio_frame_num} audio frames: {bucket_num} frames at {fps} fps outlast "
                         f"the padded audio ({total_frames} frames at {video_rate} fps)")
    times = np.linspace(0.0, required_duration, bucket_num, endpoint=False)
    centres = np.clip(np.round(times * video_rate).astype(int), 0, total_frames - 1).astype(np.int64)
    stride = int(video_rate / fps)
    return _window(centres, m, stride, audio_frame_num), centres < audio_frame_num, min_batch_num


def bucket_indices(audio_frame_num: int, stride: int = 2, batch_frames: int = 12,
                   m: int = 2) -> Tuple[np.ndarray, np.ndarray, int]:
    """The official ``get_audio_embed_bucket`` index math (every ``stride``-th frame; windows 2 frames apart)."""
    min_batch_num = int(audio_frame_num / (batch_frames * stride)) + 1
    centres = stride * np.arange(min_batch_num * batch_frames, dtype=np.int64)
    return _window(centres, m, 2, audio_frame_num), centres < audio_frame_num, min_batch_num


def _gather_buckets(audio_embed, idx: np.ndarray, valid: np.ndarray):
    """embed [L, T, D] -> [K, L, (2m+1)*D] if L > 1 else [K, (2m+1)*D]; rows not ``valid`` are zeros.

    Invalid rows point at an appended zero frame, so one gather makes the whole result.
    """
    is_numpy = isinstance(audio_embed, np.ndarray)
    num_layers, num_frames, dim = audio_embed.shape
    k, width = idx.shape
    idx = np.where(valid[:, None], idx, num_frames)
    if is_numpy:
        padded = np.concatenate([audio_embed, np.zeros((num_layers, 1, dim), audio_embed.dtype)], 1)
        out = padded[:, idx.reshape(-1)]
    else:
        padded = ops.cat([audio_embed, ops.zeros((num_layers, 1, dim), audio_embed.dtype)], 1)
        out = ops.gather(padded, Tensor(idx.reshape(-1), ms.int32), 1)
    out = out.reshape(num_layers, k, width * dim)              # [L, K, (2m+1)*D], window-major
    if num_layers > 1:
        return out.transpose(1, 0, 2)                          # [K, L, (2m+1)*D]
    return out[0]                                              # [K, (2m+1)*D]


def _check_folder(model_id) -> str:
    folder = os.fspath(model_id)
    if not os.path.isdir(folder):
        raise ValueError(f"AudioEncoder model_id {folder!r} is not a folder; pass the local wav2vec2 folder (in the "
                         "S2V release: Wan2.2-S2V-14B/wav2vec2-large-xlsr-53-english); nothing is downloaded")
    return folder


class AudioEncoder:
    """wav2vec2 features for S2V (official ``AudioEncoder`` interface).

    Args:
        device: accepted for the official signature and ignored: placement follows MindSpore's context.
        model_id: the local Hugging Face wav2vec2 folder (``config.json``, ``preprocessor_config.json``, weights).
        dtype: parameter dtype of the network (the official runs it in float32).
    """

    def __init__(self, device=None, model_id: str = "facebook/wav2vec2-base-960h", dtype=ms.float32):
        folder = _check_folder(model_id)
        self.preprocessor = self._read_preprocessor(folder)
        self.sampling_rate = int(self.preprocessor.get("sampling_rate", 16000))
        self.do_normalize = bool(self.preprocessor.get("do_normalize", True))
        self.model = Wav2Vec2ForCTC.from_pretrained(folder, dtype=dtype)
        self.video_rate = VIDEO_RATE

    @staticmethod
    def _read_preprocessor(folder: str) -> dict:
        path = os.path.join(folder, "preprocessor_config.json")
        if not os.path.isfile(path):
            raise ValueError(f"wav2vec2 folder {folder!r} has no preprocessor_config.json; re-download the folder")
        with open(path, encoding="utf-8") as f:
            try:
                config = json.load(f)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} is not valid JSON ({err}); re-download the wav2vec2 folder") from None
        if int(config.get("feature_size", 1)) != 1:
            raise ValueError(f"{path}: feature_size {config.get('feature_size')} is not 1 (raw mono audio)")
        return config

    def input_values(self, audio: np.ndarray) -> np.ndarray:
        """16 kHz samples [N] -> the model input [1, N] (the processor's normalisation when configured)."""
        x = np.asarray(audio, dtype=np.float32)
        return (normalize_audio(x) if self.do_normalize else x)[None]

    def hidden_states(self, audio: np.ndarray):
        """16 kHz samples [N] -> wav2vec2 hidden states, num_layers + 1 Tensors [1, T, D] at 50 frames/s."""
        from wan.utils.audio import SAMPLE_RATE

        if self.sampling_rate != SAMPLE_RATE:
            raise ValueError(f"the wav2vec2 folder expects {self.sampling_rate} Hz audio; S2V reads 16 kHz")
        return self.model(Tensor(self.input_values(audio)))

    def extract_audio_feat(self, audio_path: str, return_all_layers: bool = False, dtype=ms.float32) -> Tensor:
        """Audio file -> features at 30 frames/s.

        Returns:
            [num_layers + 1, T30, D] (embeddings + every layer, as ``torch.cat(hidden_states)``) when
            ``return_all_layers``, else [1, T30, D] (the last hidden state); T30 = int(T / 50 * 30) for the T
            wav2vec2 frames of the clip. In ``dtype``.
        """
        from wan.utils.audio import load_audio

        audio = load_audio(audio_path, sr=self.sampling_rate)
        if self.model.config.num_frames(audio.shape[0]) < 1:
            raise ValueError(f"audio file {audio_path!r} is {audio.shape[0] / self.sampling_rate:.4f} s long, too "
                             "short for one wav2vec2 frame; pass a longer clip")
        states = self.hidden_states(audio)
        feat = ops.cat(states, 0) if return_all_layers else states[-1]
        feat = linear_interpolation(feat, input_fps=AUDIO_FPS, output_fps=self.video_rate)
        return feat.astype(dtype)

    def get_audio_embed_bucket(self, audio_embed: Union[Tensor, np.ndarray], stride: int = 2,
                               batch_frames: int = 12, m: int = 2):
        """Official ``get_audio_embed_bucket``: ([K, L, (2m+1)*D] or [K, (2m+1)*D], min_batch_num)."""
        idx, valid, min_batch_num = bucket_indices(audio_embed.shape[1], stride, batch_frames, m)
        return _gather_buckets(audio_embed, idx, valid), min_batch_num

    def get_audio_embed_bucket_fps(self, audio_embed: Union[Tensor, np.ndarray], fps: int = 16,
                                   batch_frames: int = 81, m: int = 0):
        """Features [L, T30, D] -> per-video-frame audio windows, as the official method.

        Returns:
            (buckets, min_batch_num): buckets [min_batch_num * batch_frames, L, (2m+1)*D] when L > 1, else
            [min_batch_num * batch_frames, (2m+1)*D]; rows for frames past the audio are zeros. A Tensor for a
            Tensor input (same dtype), a numpy array for a numpy input.
        """
        _check_bucket_args(fps=fps, batch_frames=batch_frames, m=m)
        idx, valid, min_batch_num = bucket_indices_fps(audio_embed.shape[1], fps, batch_frames, m, self.video_rate)
        return _gather_buckets(audio_embed, idx, valid), min_batch_num


def _check_bucket_args(**values):
    for name, value in values.items():
        low = 0 if name == "m" else 1
        if int(value) != value or value < low:
            raise ValueError(f"get_audio_embed_bucket_fps: {name}={value!r} must be an integer >= {low}")
