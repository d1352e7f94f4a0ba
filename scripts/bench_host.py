"""Host-side (numpy / PIL / ffmpeg) work of one real-size request, timed at the real shapes.

    python scripts/bench_host.py            # every row; about a minute on 2 cores
    python scripts/bench_host.py --quick    # smaller photo and fewer frames written

Rows: photo decode (4000x3000 JPEG), the i2v-A14B bicubic resize to the 1280*720 area, the ti2v-5B LANCZOS
resize + crop to 1280*704, rope tables for 75,600 tokens (21x45x80 patches, head dim 128), the initial noise of
a 720p latent, 40 UniPC steps on that latent, and writing 81 frames of 1280x720 (and 121 of 1280x704) to mp4.
Device work (DiT, VAE) is not here: see bench_dit.py / bench_vae.py.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from wan.configs import get_task  # noqa: E402
from wan.modules.model import rope_params, rope_tables  # noqa: E402
from wan.pipeline import make_noise  # noqa: E402
from wan.tasks import best_output_size, i2v_latent_size  # noqa: E402
from wan.utils.fm_solvers import make_scheduler  # noqa: E402
from wan.utils.media import load_image, resize_bicubic, resize_center_crop, save_video, to_tensor  # noqa: E402


def timed(rows, name, fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    rows.append((name, time.perf_counter() - start))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    photo_wh = (1600, 1200) if args.quick else (4000, 3000)
    frames = (9, 9) if args.quick else (81, 121)
    rows = []
    rng = np.random.default_rng(0)
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        # A photo-like JPEG: smooth gradients plus noise (pure noise would make an unusually large file).
        w, h = photo_wh
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], -1)
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        photo = os.path.join(tmp, "photo.jpg")
        Image.fromarray(pixels).save(photo, quality=92)
        img = timed(rows, f"decode {w}x{h} JPEG", load_image, photo)

        i2v = get_task("i2v-A14B")
        x = timed(rows, "to_tensor", to_tensor, img)
        lat_h, lat_w = i2v_latent_size(x.shape[1], x.shape[2], 1280 * 720, i2v.vae_stride, i2v.patch_size)
        size = (lat_h * i2v.vae_stride[1], lat_w * i2v.vae_stride[2])
        timed(rows, f"i2v bicubic resize -> {size[1]}x{size[0]}", resize_bicubic, x, size)

        ti2v = get_task("ti2v-5B")
        ow, oh = best_output_size(img.width, img.height, 32, 32, 1280 * 704)
        timed(rows, f"ti2v LANCZOS resize + crop -> {ow}x{oh}", resize_center_crop, img, ow, oh)

        freqs = rope_params(1024, 128)
        grid = (21, 45, 80)
        timed(rows, "rope tables, 75,600 tokens", rope_tables, [grid], 75600, freqs, 128)

        shape = (16, 21, 90, 160)
        latent = timed(rows, "noise 16x21x90x160", make_noise, shape, 42)
        scheduler, timesteps = make_scheduler("unipc", 40, 5.0, 1000)
        start = time.perf_counter()
        for t in timesteps:
            model_out = latent * np.float32(0.1)
            latent = np.asarray(scheduler.step(model_out[None], t, latent[None], return_dict=False)[0][0], np.float32)
        rows.append(("40 UniPC steps on a 720p latent", time.perf_counter() - start))

        for (vw, vh), n in (((1280, 720), frames[0]), ((1280, 704), frames[1])):
            video = rng.uniform(-1, 1, (3, n, vh, vw)).astype(np.float32)
            timed(rows, f"write {n} frames {vw}x{vh} mp4", save_video, video, os.path.join(tmp, f"v{vw}.mp4"), 16)

    width = max(len(name) for name, _ in rows)
    print(f"{'step':<{width}}  seconds")
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds:7.2f}")
    print(f"{'total':<{width}}  {sum(s for _, s in rows):7.2f}")


if __name__ == "__main__":
    main()
