"""Host-side inputs of speech-to-video: output size, reference image, pose clips, motion-frame bookkeeping.

Everything here is numpy / PIL and bounded at real size: a 1024*704 clip of 80 pose frames is 690 MB as float32,
so pose frames are read and resized one clip at a time (the official code holds every clip in memory at once).
"""
from __future__ import annotations

import math
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["size_within_area", "resize_shorter_side_center_crop", "reference_pixels", "sample_frame_indices",
           "read_video_frames", "pose_clips", "clip_latent_frames", "S2V_DIVISOR"]

S2V_DIVISOR = 64  # the official S2V size rule pads each side to a multiple of 64


def size_within_area(height: int, width: int, target_area: int, divisor: int = S2V_DIVISOR) -> Tuple[int, int]:
    """The official S2V output size (height, width) for a reference of ``height x width`` pixels.

    The largest scale (tried in 100 steps from "no padding needed" down to "maximum padding") whose size, padded
    up to multiples of 64, fits in ``target_area``; failing that, the aspect-preserving multiple-of-``divisor``
    size inside the area, not larger than the image.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"reference image has size {width}x{height}; it must be at least 1x1 pixels")
    if height * width <= target_area:
        min_scale, max_scale = 0.1, 1.0
    else:
        d = divisor - 1
        a, b, c = height * width, d * (height + width), d ** 2 - target_area
        min_scale = (-b + math.sqrt(b ** 2 - 2 * a * c)) / (2 * a)
        max_scale = math.sqrt(target_area / (height * width))
    for i in range(100):
        scale = max_scale - (max_scale - min_scale) * i / 100
        new_h, new_w = int(height * scale), int(width * scale)
        # The official code pads to 64 here whatever ``divisor`` is.
        padded_h = new_h + (64 - new_h % 64) % 64
        padded_w = new_w + (64 - new_w % 64) % 64
        if padded_h * padded_w <= target_area:
            return padded_h, padded_w
    aspect = width / height
    out_w = int((target_area * aspect) ** 0.5 // divisor * divisor)
    out_h = int((target_area / aspect) ** 0.5 // divisor * divisor)
    if out_w >= width or out_h >= height:
        out_w, out_h = int(width // divisor * divisor), int(height // divisor * divisor)
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"reference image of {width}x{height} pixels is too small for speech-to-video; it needs "
                         f"at least {divisor} pixels on each side")
    return out_h, out_w


def _shorter_side_size(h: int, w: int, shorter: int) -> Tuple[int, int]:
    """torchvision ``Resize(int)``: the shorter side becomes ``shorter``, the longer one keeps the aspect
    (truncated)."""
    if h <= w:
        return shorter, int(shorter * w / h)
    return int(shorter * h / w), shorter


def _crop_box(h: int, w: int, out_h: int, out_w: int) -> Tuple[int, int]:
    """torchvision ``CenterCrop``: the top-left corner, rounded half to even like Python's ``round``."""
    return int(round((h - out_h) / 2.0)), int(round((w - out_w) / 2.0))


def _center_crop(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Centre crop of [..., H, W], zero-padded first where the image is smaller (as torchvision does)."""
    h, w = x.shape[-2:]
    if h < out_h or w < out_w:
        ph, pw = max(out_h - h, 0), max(out_w - w, 0)
        pads = [(0, 0)] * (x.ndim - 2) + [(ph // 2, (ph + 1) // 2), (pw // 2, (pw + 1) // 2)]
        x = np.pad(x, pads)
        h, w = x.shape[-2:]
    top, left = _crop_box(h, w, out_h, out_w)
    return x[..., top:top + out_h, left:left + out_w]


def _linear_antialias_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of antialiased linear resampling (torch ``interpolate(bilinear, antialias=True,
    align_corners=False)``, the same triangle filter as PIL): when shrinking, the filter widens by the scale."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    m = np.zeros((n_out, n_in))
    for i in range(n_out):  # n_out <= a few thousand: a cheap loop, O(n_out * support)
        center = (i + 0.5) * scale
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), n_in)
        j = np.arange(lo, hi)
        w = np.clip(1.0 - np.abs((j - center + 0.5) / support), 0.0, None)
        m[i, lo:hi] = w / w.sum()
    return m


def resize_shorter_side_center_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """[..., H, W] float -> [..., height, width]: the official pose transform (torchvision ``Resize(min(h, w))``
    on a tensor, i.e. antialiased bilinear, then ``CenterCrop``). Two separable matmuls: O(H*W*(h+w))."""
    h, w = frames.shape[-2:]
    rh, rw = _shorter_side_size(h, w, min(height, width))
    rows = _linear_antialias_matrix(h, rh).astype(np.float32)
    cols = _linear_antialias_matrix(w, rw).astype(np.float32)
    resized = np.matmul(np.matmul(rows, frames.astype(np.float32)), cols.T)
    return _center_crop(resized, height, width)


def reference_pixels(image, height: int, width: int) -> np.ndarray:
    """PIL image -> [3, 1, height, width] float32 in [-1, 1]: the official reference transform (torchvision
    ``Resize(min(h, w))`` on the PIL image, i.e. PIL bilinear, ``CenterCrop``, ``ToTensor``, then 2x - 1)."""
    from PIL import Image

    image = image.convert("RGB")
    rh, rw = _shorter_side_size(image.height, image.width, min(height, width))
    resized = np.asarray(image.resize((rw, rh), Image.BILINEAR), dtype=np.float32)
    chw = resized.transpose(2, 0, 1) / np.float32(255.0)
    return (_center_crop(chw, height, width) * 2.0 - 1.0)[:, None].astype(np.float32)


def sample_frame_indices(total_frames: int, source_fps: float, n_frames: int, target_fps: float,
                         from_start: bool) -> List[int]:
    """Indices of ``n_frames`` frames sampled at about ``target_fps``: the first ones (``from_start``) or the
    last ones of the video, as the official ``read_last_n_frames``; fewer when the video is short."""
    interval = max(1, round(source_fps / target_fps))
    start = 0 if from_start else max(0, total_frames - (n_frames - 1) * interval - 1)
    return [i for i in (start + k * interval for k in range(n_frames)) if i < total_frames]


def read_video_frames(path: str, n_frames: int, target_fps: float, from_start: bool) -> np.ndarray:
    """uint8 [n, H, W, 3] frames of a video file at the indices :func:`sample_frame_indices` picks; only those
    frames are kept in memory."""
    import imageio

    try:
        reader = imageio.get_reader(path)
    except Exception as e:  # noqa: BLE001 - imageio raises several types for unreadable files
        raise ValueError(f"cannot read video {path!r}: {e}") from e
    try:
        meta = reader.get_meta_data()
        fps = float(meta.get("fps") or 0.0)
        total = reader.count_frames()
        if total <= 0 or fps <= 0:
            raise ValueError(f"video {path!r} has no frames (or no frame rate)")
        wanted = sample_frame_indices(total, fps, n_frames, target_fps, from_start)
        keep = set(wanted)
        frames = {}
        for i, frame in enumerate(reader):
            if i in keep:
                frames[i] = np.asarray(frame)[..., :3]
            if i >= wanted[-1]:
                break
    finally:
        reader.close()
    return np.stack([frames[i] for i in wanted if i in frames])


def pose_clips(pose_video: str, num_clips: int, infer_frames: int, height: int, width: int,
               fps: float) -> Iterator[np.ndarray]:
    """One pose condition per clip, [1, 3, infer_frames + 1, height, width] float32 in [-1, 1] (the first frame
    repeated in front, as the official code does before the VAE encode, which drops that frame's latent).

    The video's first ``num_clips * infer_frames`` frames at ``fps`` are used, padded with -1 ("no pose") where
    the video is shorter. Frames are decoded once; the float32 clips are made one at a time. (Without a pose
    video the official condition is the encoded blank clip times 0, i.e. zeros: the caller needs no encode.)
    """
    frames = read_video_frames(pose_video, num_clips * infer_frames, fps, from_start=True)
    for r in range(num_clips):
        part = frames[r * infer_frames:(r + 1) * infer_frames]
        clip = -np.ones((3, infer_frames, height, width), np.float32)
        if len(part):
            x = part.transpose(3, 0, 1, 2).astype(np.float32) / np.float32(255.0) * 2.0 - 1.0
            clip[:, :len(part)] = resize_shorter_side_center_crop(x, height, width)
        yield np.concatenate([clip[:, :1], clip], axis=1)[None]


def clip_latent_frames(infer_frames: int, motion_frames: int, time_stride: int = 4) -> Tuple[int, int]:
    """(latent frames generated per clip, latent frames of the motion context): the official
    ``(infer_frames + 3 + motion_frames) // 4 - lat_motion_frames`` and ``(motion_frames + 3) // 4``."""
    lat_motion = (motion_frames + time_stride - 1) // time_stride
    return (infer_frames + time_stride - 1 + motion_frames) // time_stride - lat_motion, lat_motion
