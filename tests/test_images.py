"""Input images of every kind: real files written with PIL, read by ``load_image`` and sized by the task builders.

What the official code does is the reference: ``Image.open(path).convert("RGB")`` (generate.py), then the task's
sizing rule. Where that is sound we must equal it pixel for pixel (CMYK, palette, alpha dropped, first frame of an
animation, EXIF orientation not applied); where it is not, we differ on purpose (16-bit grey is scaled, not
clipped white) or refuse with a ValueError naming the file and the fix, before any model is built.
"""
import io
import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

import generate
from conftest import FIXTURES, ROOT
from wan.configs import get_task
from wan.tasks import best_output_size, get_builder
from wan.utils.media import load_image

TINY = os.path.join(ROOT, "examples", "tiny")


def official(path):
    """What the official generate.py hands its pipeline."""
    return np.asarray(Image.open(path).convert("RGB"))


def photo(w, h, seed=0):
    """uint8 [h, w, 3]: smooth gradients plus noise, like a photo."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255.0 / max(w, 1), yy * 255.0 / max(h, 1), np.full((h, w), 90.0)], -1)
    noise = np.random.default_rng(seed).normal(0, 10, base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------ decoded as official

@pytest.mark.parametrize("w, h", [(4000, 3000), (1, 100), (100, 1), (1, 1), (7, 5)])
def test_rgb_photos_of_any_size_equal_the_official_decode(tmp_path, w, h):
    path = str(tmp_path / f"p{w}x{h}.png")
    Image.fromarray(photo(w, h)).save(path)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (w, h)
    np.testing.assert_array_equal(np.asarray(img), official(path))


def test_cmyk_jpeg_equals_the_official_conversion(tmp_path):
    path = str(tmp_path / "cmyk.jpg")
    Image.fromarray(photo(64, 48)).convert("CMYK").save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    img = load_image(path)
    assert img.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(img), official(path))


@pytest.mark.parametrize("fmt", ["png", "gif"])
def test_palette_with_transparency_equals_the_official_conversion(tmp_path, fmt, caplog):
    pal = Image.new("P", (8, 4))
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    pal.putdata([i % 3 for i in range(32)])
    path = str(tmp_path / f"pal.{fmt}")
    pal.save(path, transparency=0)
    assert Image.open(path).mode == "P" and "transparency" in Image.open(path).info
    with caplog.at_level(logging.WARNING, logger="wan"):
        img = load_image(path)
    # Index 0 is transparent; like the official convert("RGB") we keep its palette colour (red), no compositing.
    np.testing.assert_array_equal(np.asarray(img), official(path))
    assert tuple(np.asarray(img)[0, 0]) == (255, 0, 0)
    assert "transparency" in caplog.text


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_dropped_as_official(tmp_path, mode, caplog):
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., :3] = photo(6, 4)
    rgba[..., 3] = 255
    rgba[0, 0] = (10, 200, 30, 0)  # fully transparent, a colour stored under it
    src = Image.fromarray(rgba, "RGBA")
    if mode == "LA":
        src = src.convert("LA")
    path = str(tmp_path / f"{mode}.png")
    src.save(path)
    with caplog.at_level(logging.WARNING, logger="wan"):
        img = load_image(path)
    expected = official(path)
    np.testing.assert_array_equal(np.asarray(img), expected)
    stored = np.asarray(src.convert("RGB"))[0, 0]
    assert tuple(np.asarray(img)[0, 0]) == tuple(stored)  # not composited onto black or white
    assert "dropped, not composited" in caplog.text


def test_16bit_grey_is_scaled_not_clipped_white(tmp_path):
    # The official convert("RGB") clips every value above 255: this gradient would come out almost all white.
    grey16 = np.linspace(0, 65535, 64 * 8).reshape(8, 64).astype(np.uint16)
    path = str(tmp_path / "grey16.png")
    Image.fromarray(grey16).save(path)
    assert Image.open(path).mode.startswith("I")
    img = np.asarray(load_image(path))
    expected = np.round(grey16.astype(np.float64) / 257).astype(np.uint8)
    assert np.abs(img[..., 0].astype(int) - expected).max() <= 1  # half-way rounding may differ by one
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()
    assert img[0, 0, 0] == 0 and img[-1, -1, 0] == 255
    assert (official(path) == 255).mean() > 0.9  # what we avoid


def test_32bit_integer_image_in_16bit_range_is_scaled_and_out_of_range_refused(tmp_path):
    grey = np.array([[0, 257, 65535]], np.int32)
    path = str(tmp_path / "i.tif")
    Image.fromarray(grey, "I").save(path)
    assert Image.open(path).mode == "I"
    assert np.asarray(load_image(path))[0, :, 0].tolist() == [0, 1, 255]
    bad = str(tmp_path / "wide.tif")
    Image.fromarray(np.array([[0, 70000]], np.int32), "I").save(bad)
    with pytest.raises(ValueError, match=r"values 0\.\.70000, outside 0\.\.65535"):
        load_image(bad)


def test_float_image_is_refused(tmp_path):
    path = str(tmp_path / "f.tif")
    Image.fromarray(np.ones((4, 4), np.float32) * 0.5, "F").save(path)
    with pytest.raises(ValueError, match="32-bit float image"):
        load_image(path)


def test_exif_orientation_is_not_applied_as_official(tmp_path, caplog):
    pixels = photo(40, 20)
    path = str(tmp_path / "phone.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=95)
    with caplog.at_level(logging.WARNING, logger="wan"):
        img = load_image(path)
    assert img.size == (40, 20)  # stored orientation; exif_transpose would give 20x40
    np.testing.assert_array_equal(np.asarray(img), official(path))
    assert "EXIF orientation 6" in caplog.text and "exif_transpose" in caplog.text


@pytest.mark.parametrize("fmt", ["gif", "webp"])
def test_animation_uses_the_first_frame(tmp_path, fmt, caplog):
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    frames = [Image.new("RGB", (16, 12), c) for c in colours]
    path = str(tmp_path / f"anim.{fmt}")
    extra = {"lossless": True} if fmt == "webp" else {}
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0, **extra)
    assert Image.open(path).n_frames == 3
    with caplog.at_level(logging.WARNING, logger="wan"):
        img = np.asarray(load_image(path))
    np.testing.assert_array_equal(img, official(path))
    assert np.abs(img.astype(int) - colours[0]).max() <= 2  # the first frame (GIF palette may round)
    assert "has 3 frames; using the first" in caplog.text


# ------------------------------------------------------------------------------------------------- refused

def _truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(photo(256, 256)).save(buf, "JPEG", quality=95)
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return str(path)


def _truncated_png(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(photo(256, 256)).save(buf, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return str(path)


def _corrupt_png(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(photo(64, 64)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[60:400] = bytes(340)  # zero the compressed pixel data
    path = tmp_path / "corrupt.png"
    path.write_bytes(bytes(data))
    return str(path)


BAD_FILES = {
    "missing": (lambda tmp: str(tmp / "nope.png"), "does not exist"),
    "folder": (lambda tmp: str(tmp), "is a folder"),
    "text file": (lambda tmp: (tmp / "notes.png").write_text("hello") and str(tmp / "notes.png"),
                  "could not be read as an image"),
    "empty file": (lambda tmp: (tmp / "empty.jpg").write_bytes(b"") or str(tmp / "empty.jpg"),
                   "could not be read as an image"),
    "truncated jpeg": (_truncated_jpeg, "truncated or corrupt"),
    "truncated png": (_truncated_png, "truncated or corrupt"),
    "corrupt png": (_corrupt_png, "truncated or corrupt"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_raise_value_error_naming_the_file(tmp_path, case):
    make, message = BAD_FILES[case]
    path = make(tmp_path)
    with pytest.raises(ValueError, match=message) as err:
        load_image(path)
    assert repr(path) in str(err.value)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    path = str(tmp_path / "big.png")
    Image.fromarray(photo(100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 pixels > 2x the limit
    with pytest.raises(ValueError, match="too large to decode safely"):
        load_image(path)


# ------------------------------------------------------------------------------------------------- sizing

def _official_sizes():
    with open(os.path.join(FIXTURES, "images", "best_output_size.json"), encoding="utf-8") as f:
        return json.load(f)


def test_ti2v_sizing_equals_official_and_never_divides_by_zero():
    rows = _official_sizes()
    assert sum(isinstance(r[5], str) for r in rows) >= 10  # the fixture does hold official failures
    for w, h, dw, dh, area, expected in rows:
        ours = best_output_size(w, h, dw, dh, area)
        if isinstance(expected, list):
            assert ours == tuple(expected), (w, h, area)
        elif ours is not None:  # official raised; ours may still find a whole-block frame, a valid one
            ow, oh = ours
            assert ow % dw == 0 and oh % dh == 0 and 0 < ow * oh <= area, (w, h, area, ours)


def test_i2v_one_pixel_wide_image_is_resized_to_the_area():
    # The official rule upsamples any image to the area at its aspect ratio: 1x100 at 1280*720 -> 96x9600.
    img = Image.new("RGB", (1, 100))
    geo = get_builder(get_task("i2v-A14B")).geometry((1280, 720), 81, img)
    assert geo.output_size == (96, 9600) and geo.latent_shape == (16, 21, 1200, 12)
    assert geo.output_size[0] * geo.output_size[1] <= 1280 * 720


@pytest.mark.parametrize("task, size, wh", [("i2v-A14B", (64, 64), (1, 100)), ("i2v-A14B", (1280, 720), (1, 4000)),
                                            ("i2v-A14B", (1280, 720), (4000, 1)), ("ti2v-5B", (128, 128), (1, 100)),
                                            ("ti2v-5B", (1280, 704), (1, 3000))])
def test_images_too_narrow_for_the_area_get_a_clear_error(task, size, wh):
    img = Image.new("RGB", wh)
    with pytest.raises(ValueError, match=rf"--image is {wh[0]}x{wh[1]} pixels .* crop the image to a width/height "
                                         r"ratio between .* or pass a larger --size"):
        get_builder(get_task(task)).geometry(size, 5, img)


# ---------------------------------------------------------------------------------- through generate.py

@pytest.fixture
def no_model_loads(monkeypatch):
    """Fail the test if generate.py gets as far as building the pipeline."""
    import wan.pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was refused")

    monkeypatch.setattr(wan.pipeline, "WanPipeline", refuse)


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_generate_refuses_bad_images_before_any_model_loads(tmp_path, case, capsys, no_model_loads):
    folder = tmp_path / "in"
    folder.mkdir()
    path = BAD_FILES[case][0](folder)
    code = generate.main(["--task", "i2v-A14B", "--ckpt_dir", os.path.join(TINY, "i2v-A14B"), "--image", path,
                          "--frame_num", "5", "--save_file", str(tmp_path / "out.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --image ") and BAD_FILES[case][1] in err, err
    assert not (tmp_path / "out.mp4").exists()


def test_generate_refuses_an_image_too_narrow_for_the_area(tmp_path, capsys, no_model_loads):
    path = str(tmp_path / "line.png")
    Image.fromarray(photo(1, 100)).save(path)
    code = generate.main(["--task", "ti2v-5B", "--ckpt_dir", os.path.join(TINY, "ti2v-5B"), "--image", path,
                          "--size", "128*128", "--frame_num", "5", "--save_file", str(tmp_path / "out.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and "error: --image is 1x100 pixels" in err and "pass a larger --size" in err, err


@pytest.mark.parametrize("kind", ["cmyk", "grey16", "gif"])
def test_generate_runs_on_unusual_images(tmp_path, kind):
    from wan.utils.media import read_video

    path = str(tmp_path / {"cmyk": "in.jpg", "grey16": "in.png", "gif": "in.gif"}[kind])
    pixels = photo(90, 60)
    if kind == "cmyk":
        Image.fromarray(pixels).convert("CMYK").save(path)
    elif kind == "grey16":
        Image.fromarray(pixels[..., 0].astype(np.uint16) * 257).save(path)
    else:
        frames = [Image.fromarray(pixels), Image.fromarray(255 - pixels)]
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    out = tmp_path / "out.mp4"
    assert generate.main(["--task", "ti2v-5B", "--ckpt_dir", os.path.join(TINY, "ti2v-5B"), "--image", path,
                          "--size", "128*128", "--frame_num", "5", "--sample_steps", "1", "--base_seed", "3",
                          "--save_file", str(out)]) == 0
    frames, _ = read_video(str(out))
    # 90x60 at the 128*128 area in 32-pixel blocks: best_output_size -> 160x96 (W x H)
    assert frames.shape == (5, 96, 160, 3)
