"""Put an audio track into a video file (speech-to-video output), with the ffmpeg that imageio-ffmpeg ships."""
from __future__ import annotations

import os
import subprocess

from .fileio import atomic_output

__all__ = ["ffmpeg_exe", "mux_audio", "probe_streams"]


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def mux_audio(video_path: str, audio_path: str, out_path: str = None) -> str:
    """Copy the video stream of ``video_path`` and the first audio stream of ``audio_path`` (encoded AAC
    192 kb/s) into ``out_path`` (default: replace ``video_path``), cut to the shorter of the two, as the
    official ``merge_video_audio``. The result appears atomically; on failure the input video is untouched
    and the error carries ffmpeg's message."""
    for what, path in (("video", video_path), ("audio", audio_path)):
        if not os.path.isfile(path):
            raise ValueError(f"cannot add audio: the {what} file {path!r} does not exist")
    out_path = out_path or video_path
    with atomic_output(out_path) as tmp:
        cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-i", video_path, "-i", audio_path, "-c:v", "copy",
               "-c:a", "aac", "-b:a", "192k", "-map", "0:v:0", "-map", "1:a:0", "-shortest", tmp]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"ffmpeg could not add {audio_path!r} to {video_path!r}: {run.stderr.strip()}")
    return out_path


def probe_streams(path: str) -> str:
    """ffmpeg's description of the streams in ``path`` (its ``-i`` banner), for checks and logs."""
    run = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", path], capture_output=True, text=True)
    return "\n".join(line for line in run.stderr.splitlines() if "Stream #" in line or "Duration" in line)
