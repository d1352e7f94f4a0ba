"""Speech-to-video host inputs against the official WanS2V helpers (fixtures: make_s2v_inputs_fixtures.py)."""
import os
import time

import numpy as np
import pytest
from PIL import Image

from wan.tasks import s2v_inputs as s2v

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "s2v_inputs")


@pytest.fixture(scope="module")
def ref():
    with np.load(os.path.join(FIXTURES, "expected.npz")) as data:
        return {k: data[k] for k in data.files}


def test_output_size_rule_matches_the_official_one_for_every_shape_and_area(ref):
    for h, w, area, oh, ow in ref["sizes"]:
        try:
            got = s2v.size_within_area(int(h), int(w), int(area))
        except ValueError:
            # Refused only where the official rule gives an unusable 0-pixel side.
            assert oh == 0 or ow == 0, (h, w, area, oh, ow)
            continue
        assert got == (oh, ow), (h, w, area)
        assert got[0] * got[1] <= area and got[0] % 64 == 0 and got[1] % 64 == 0


def test_pose_resize_matches_torch_antialiased_bilinear(ref):
    for k in range(4):
        x, y = ref[f"resize{k}_in"], ref[f"resize{k}_out"]
        oh, ow = (int(v) for v in ref[f"resize{k}_target"])
        got = s2v.resize_shorter_side_center_crop(x, oh, ow)
        expect = s2v._center_crop(y, oh, ow)  # case 2 is smaller than the crop: zero-padded first
        assert got.shape == (3, 1, oh, ow)
        np.testing.assert_allclose(got, expect, atol=1e-5)  # float32 weights: 3.5e-6 measured


def test_frame_sampling_picks_the_official_frames(ref):
    video = os.path.join(FIXTURES, "pose_25fps.mp4")
    for n, rev in ((5, 1), (5, 0), (40, 1), (1, 0)):
        expect = ref[f"frames_{n}_{rev}"]
        got = s2v.read_video_frames(video, n, 16, from_start=bool(rev))
        assert got.shape == expect.shape
        # Same frames (the frame id is painted in a corner); decoders may differ by a level of YUV rounding.
        np.testing.assert_array_equal(got[:, 0, 0, 0] // 6, expect[:, 0, 0, 0] // 6)
        assert np.abs(got.astype(int) - expect.astype(int)).mean() < 2.0


def test_pose_clips_pad_short_videos_with_no_pose_and_repeat_the_first_frame(tmp_path):
    video = os.path.join(FIXTURES, "pose_25fps.mp4")  # 37 frames at 25 fps: 24 frames at 16 fps
    clips = list(s2v.pose_clips(video, num_clips=3, infer_frames=8, height=64, width=96, fps=16))
    assert len(clips) == 3 and all(c.shape == (1, 3, 9, 64, 96) for c in clips)
    np.testing.assert_array_equal(clips[0][:, :, 0], clips[0][:, :, 1])
    used = len(s2v.sample_frame_indices(37, 25.0, 24, 16, True))
    assert used == 19  # interval 2: frames 0, 2, ..., 36
    assert np.all(clips[2][:, :, 1 + used - 16:] == -1.0) and not np.all(clips[2][:, :, 1:1 + used - 16] == -1.0)


def test_reference_pixels_resize_the_shorter_side_then_centre_crop():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 500, 3), np.uint8))
    x = s2v.reference_pixels(img, 128, 192)
    assert x.shape == (3, 1, 128, 192) and x.dtype == np.float32
    resized = np.asarray(img.resize((213, 128), Image.BILINEAR), np.float32)  # 128 * 500 / 300 = 213.3
    top, left = s2v._crop_box(128, 213, 128, 192)
    np.testing.assert_allclose(x[:, 0], resized[top:top + 128, left:left + 192].transpose(2, 0, 1) / 255 * 2 - 1,
                               atol=1e-6)
    assert left == 10  # round(10.5) = 10, as torchvision


def test_latent_frames_per_clip_follow_the_official_rule():
    assert s2v.clip_latent_frames(80, 73) == (20, 19)
    assert s2v.clip_latent_frames(48, 73) == (12, 19)


def test_real_size_reference_and_pose_clip_are_fast():
    img = Image.fromarray(np.zeros((3000, 4000, 3), np.uint8))
    h, w = s2v.size_within_area(3000, 4000, 1024 * 704)
    start = time.perf_counter()
    x = s2v.reference_pixels(img, h, w)
    frames = np.zeros((3, 80, 720, 1280), np.float32)
    y = s2v.resize_shorter_side_center_crop(frames, h, w)
    took = time.perf_counter() - start
    assert x.shape == (3, 1, h, w) and y.shape == (3, 80, h, w)
    assert took < 30, f"reference + one 80-frame pose clip at {w}x{h} took {took:.1f} s"
