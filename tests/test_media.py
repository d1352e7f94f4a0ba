"""Image preprocessing against torch (fixtures from make_media_fixtures.py), and its cost at real size."""
import os
import time

import numpy as np

from conftest import FIXTURES
from wan.utils.media import resize_bicubic

FIX = os.path.join(FIXTURES, "media", "bicubic.npz")


def test_bicubic_resize_matches_torch_interpolate():
    data = np.load(FIX)
    x = data["x"]
    for key in data.files:
        if key == "x":
            continue
        h, w = map(int, key[2:].split("x"))
        y = resize_bicubic(x, (h, w))
        assert y.shape == (3, h, w) and y.dtype == np.float32
        # torch sums 16 float32 products per pixel (we use float64): a few float32 ulps of |y| <= ~1.2
        np.testing.assert_allclose(y, data[key], rtol=0, atol=1e-5, err_msg=key)


def test_bicubic_resize_of_a_full_size_photo_takes_seconds_not_hours():
    # 4000x3000 photo to the i2v-A14B 1280*720 area (the old three-operand einsum was O(h*H*W*w): hours).
    x = np.random.default_rng(1).uniform(-1, 1, (3, 3000, 4000)).astype(np.float32)
    start = time.perf_counter()
    y = resize_bicubic(x, (720, 960))
    seconds = time.perf_counter() - start
    assert y.shape == (3, 720, 960)
    assert seconds < 30, f"resize took {seconds:.1f}s"
