"""Image input and video/image output, without torch.

The image preprocessing reproduces the official pipelines' numerics: ``to_tensor`` scaling, torch's bicubic
``interpolate`` (align_corners=False, a=-0.75, no antialias) for i2v-A14B, PIL's LANCZOS resize + center crop
for ti2v-5B. Writers are atomic: a temporary file in the target folder, renamed when complete.
"""
from __future__ import annotations

import logging
import os
from typing import Tuple

import numpy as np

from .fileio import atomic_output

log = logging.getLogger("wan")

VIDEO_SUFFIXES = (".mp4",)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


# EXIF tag 0x0112 values -> what a viewer does to show the photo upright.
_EXIF_ORIENTATION = {2: "mirrored", 3: "rotated 180", 4: "flipped", 5: "transposed", 6: "rotated 90 clockwise",
                     7: "transversed", 8: "rotated 90 counter-clockwise"}
_16BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def load_image(path: str):
    """Open an image file as an RGB PIL image, the official ``Image.open(path).convert("RGB")`` where that is sound.

    Same as the official: the first frame of an animated GIF/WebP; alpha (RGBA, LA, PA, palette transparency)
    dropped, not composited, so transparent pixels show the colour stored under them; CMYK, palette and grey
    converted by PIL; the EXIF orientation NOT applied (pixels as stored, so a phone photo tagged "rotated" comes
    out sideways, as in the official run; a warning says so and how to fix the file). Different from the
    official: 16-bit grey (I;16*, and I holding 0..65535) is scaled to 8 bits (v / 257, rounded); PIL's
    ``convert("RGB")`` clips it at 255, turning a 16-bit photo white. 32-bit float (F) is refused.
    Raises ValueError naming the file and the fix for a missing path, a folder, a non-image, truncated or corrupt
    data and images beyond PIL's decompression-bomb limit; nothing heavier than the decode has run by then.
    """
    from PIL import Image

    if not isinstance(path, str) or not path:
        raise ValueError(f"--image {path!r} is not a file path; pass the path of an image file (PNG, JPEG, WebP)")
    if not os.path.exists(path):
        raise ValueError(f"--image {path!r} does not exist; pass the path of an image file (PNG, JPEG, WebP)")
    if os.path.isdir(path):
        raise ValueError(f"--image {path!r} is a folder; pass the path of an image file (PNG, JPEG, WebP)")
    try:
        img = Image.open(path)
    except Image.DecompressionBombError as e:
        raise ValueError(f"--image {path!r} is too large to decode safely ({e}); downscale it first") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # PIL's errors for unknown or broken headers
        raise ValueError(f"--image {path!r} could not be read as an image ({e}); pass a PNG, JPEG or WebP "
                         f"file") from e
    with img:
        try:
            img.load()  # decode frame 0 now: truncated or corrupt pixel data fails here, not inside the pipeline
        except (OSError, SyntaxError, ValueError, EOFError, IndexError) as e:
            raise ValueError(f"--image {path!r} is truncated or corrupt ({e}); re-export or re-download it") from e
        _warn_about(path, img)
        return _to_rgb(img, path)


def _warn_about(path: str, img) -> None:
    """Warnings for inputs used as the official code uses them, which may surprise."""
    frames = getattr(img, "n_frames", 1)
    if frames > 1:
        log.warning("--image %r has %d frames; using the first (as the official code does)", path, frames)
    try:
        orientation = int(img.getexif().get(0x0112, 1))
    except Exception:  # unreadable EXIF is ignored, as the official code never reads it
        orientation = 1
    if orientation in _EXIF_ORIENTATION:
        log.warning("--image %r has EXIF orientation %d (%s to be shown upright); it is used as stored, not "
                    "rotated, as the official code does. To use it upright, save it rotated first (e.g. "
                    "PIL.ImageOps.exif_transpose)", path, orientation, _EXIF_ORIENTATION[orientation])
    see_through = "transparency" in img.info
    if "A" in img.getbands():
        see_through = see_through or int(np.asarray(img.getchannel("A")).min()) < 255
    if see_through:
        log.warning("--image %r has transparency; it is dropped, not composited (as the official code does): "
                    "transparent pixels show the colour stored under them", path)


def _to_rgb(img, path: str):
    """A loaded PIL image of any mode -> RGB (PIL's conversion, except for 16-bit and float grey)."""
    from PIL import Image

    if img.mode in _16BIT_MODES or img.mode == "I":
        grey = np.asarray(img).astype(np.int64)
        if grey.size and (grey.min() < 0 or grey.max() > 65535):
            raise ValueError(f"--image {path!r} is a 32-bit integer image with values {grey.min()}..{grey.max()}, "
                             f"outside 0..65535; save it as an 8- or 16-bit PNG")
        # 16 -> 8 bits by v / 257 (65535 -> 255, and 257 * k -> k exactly), rounded half up.
        eight = ((grey * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(eight, "L").convert("RGB")
    if img.mode == "F":
        raise ValueError(f"--image {path!r} is a 32-bit float image (mode F), which has no standard range; save it "
                         f"as an 8- or 16-bit PNG")
    try:
        return img.convert("RGB")
    except (OSError, ValueError) as e:
        raise ValueError(f"--image {path!r}: PIL cannot convert mode {img.mode} to RGB ({e}); save it as an RGB "
                         f"PNG or JPEG") from e


def to_tensor(img) -> np.ndarray:
    """PIL RGB image -> float32 [3, H, W] in [-1, 1] (official: to_tensor().sub(0.5).div(0.5))."""
    arr = np.asarray(img, dtype=np.uint8).astype(np.float32) / 255.0
    return ((arr - 0.5) / 0.5).transpose(2, 0, 1).copy()


def _cubic_weights(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    """Keys' cubic convolution weights for the 4 taps at offsets -1, 0, 1, 2 from floor(src): [N, 4]."""
    t = t[:, None]
    x = np.concatenate([t + 1, t, 1 - t, 2 - t], axis=1)
    near = ((a + 2) * x - (a + 3)) * x * x + 1          # |x| <= 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a    # 1 < |x| < 2
    return np.where(x <= 1, near, far)


def _bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] interpolation matrix of torch's bicubic resize along one axis (borders clamped)."""
    scale = n_in / n_out
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
    base = np.floor(src)
    w = _cubic_weights(src - base)
    m = np.zeros((n_out, n_in), np.float64)
    for tap in range(4):
        idx = np.clip(base.astype(np.int64) - 1 + tap, 0, n_in - 1)
        np.add.at(m, (np.arange(n_out), idx), w[:, tap])
    return m


def resize_bicubic(x: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """x: [C, H, W] float -> [C, h, w] float32, like torch.nn.functional.interpolate(mode='bicubic')."""
    h, w = size
    rows = _bicubic_matrix(x.shape[1], h)
    cols = _bicubic_matrix(x.shape[2], w)
    # Separable: columns first, then rows, as two matrix products: O(C*H*W*w + C*H*w*h). The single
    # three-operand einsum this replaces was evaluated without contraction order, O(C*h*H*W*w): about an
    # hour for a 1104x832 photo at 1280*720.
    along_w = np.matmul(x.astype(np.float64), cols.T)      # [C, H, w]
    return np.matmul(rows, along_w).astype(np.float32)     # [C, h, w]


def resize_center_crop(img, width: int, height: int):
    """Scale (LANCZOS) so the image covers width x height, then crop the center (official ti2v)."""
    from PIL import Image

    iw, ih = img.width, img.height
    scale = max(width / iw, height / ih)
    img = img.resize((round(iw * scale), round(ih * scale)), Image.LANCZOS)
    x1 = (img.width - width) // 2
    y1 = (img.height - height) // 2
    return img.crop((x1, y1, x1 + width, y1 + height))


def video_to_uint8(video: np.ndarray) -> np.ndarray:
    """[3, F, H, W] in [-1, 1] -> uint8 [F, H, W, 3] (official: clamp, map to [0, 1], *255, truncate)."""
    v = np.clip(video.astype(np.float32), -1.0, 1.0)
    v = (v + 1.0) / 2.0
    return (v * 255.0).astype(np.uint8).transpose(1, 2, 3, 0)


def check_output_path(path: str) -> str:
    """Validate an output file path before any work: folder exists and is writable, suffix supported."""
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise ValueError(f"--save_file {path!r}: folder {folder!r} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"--save_file {path!r}: folder {folder!r} is not writable")
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in VIDEO_SUFFIXES + IMAGE_SUFFIXES:
        raise ValueError(f"--save_file {path!r}: unsupported suffix {suffix!r}; use .mp4 for video or .png")
    return path


def _atomic_write(path: str, write) -> str:
    with atomic_output(path) as tmp:
        write(tmp)
    return path


def save_video(video: np.ndarray, path: str, fps: int) -> str:
    """Write [3, F, H, W] in [-1, 1] as H.264 mp4 (imageio-ffmpeg, quality 8 as official)."""
    import imageio

    frames = video_to_uint8(video)

    def write(tmp):
        writer = imageio.get_writer(tmp, fps=fps, codec="libx264", quality=8, macro_block_size=1)
        try:
            for frame in frames:
                writer.append_data(frame)
        finally:
            writer.close()

    return _atomic_write(path, write)


def save_image(video: np.ndarray, path: str) -> str:
    """Write the first frame of [3, F, H, W] in [-1, 1] as an image file."""
    from PIL import Image

    frame = video_to_uint8(video)[0]
    return _atomic_write(path, lambda tmp: Image.fromarray(frame).save(tmp))


def read_video(path: str) -> Tuple[np.ndarray, float]:
    """Read an mp4 back: uint8 [F, H, W, 3] and its fps (used by tests and users checking output)."""
    import imageio

    reader = imageio.get_reader(path)
    try:
        fps = float(reader.get_meta_data().get("fps", 0.0))
        frames = np.stack([np.asarray(f) for f in reader])
    finally:
        reader.close()
    return frames, fps
