"""Qwen2.5-VL: image preprocessing, vision tower, multimodal rope, logits and greedy decoding against Hugging Face
transformers (fixtures from make_qwen_fixtures.py, tests/fixtures/qwen/vl)."""
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import FIXTURES
from wan.modules.qwen2_5_vl import (Qwen2_5_VLForConditionalGeneration, QwenVLImageProcessor, rope_index,
                                    smart_resize, window_index)

FIX = os.path.join(FIXTURES, "qwen", "vl")
FOLDER = os.path.join(FIX, "tiny_vl")
ATOL = 5e-5


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(os.path.join(FIX, "vl_expected.npz")))


@pytest.fixture(scope="module")
def model():
    return Qwen2_5_VLForConditionalGeneration.from_pretrained(FOLDER)


def _image(name):
    return Image.open(os.path.join(FIX, "images", f"{name}.png"))


# ------------------------------------------------------------------------------------------ preprocessing

@pytest.mark.parametrize("name", ["a", "b", "c"])  # a: rounded, b: above max_pixels, c: below min_pixels
def test_image_processor_matches_hf(name):
    pre = np.load(os.path.join(FIX, "preprocess.npz"))
    proc = QwenVLImageProcessor(min_pixels=int(pre["min_pixels"]), max_pixels=int(pre["max_pixels"]))
    pixels, grid = proc([_image(name)])
    np.testing.assert_array_equal(grid, pre[f"{name}_grid"])
    assert pixels.shape == pre[f"{name}_pixel_values"].shape
    assert np.abs(pixels - pre[f"{name}_pixel_values"]).max() < 1e-6


def test_smart_resize_rule():
    assert smart_resize(90, 130) == (84, 140)
    assert smart_resize(200, 150, max_pixels=28 * 28 * 30) == (168, 112)
    assert smart_resize(20, 30) == (56, 84)
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10, 2500)


def test_window_index_partitions_every_token_once():
    grid = np.array([[1, 12, 8], [1, 4, 6]])
    order, cu = window_index(grid, 2, 2)
    assert sorted(order.tolist()) == list(range(24 + 6))
    assert cu[-1] == (12 * 8 + 4 * 6) and (np.diff(cu) > 0).all()


# ------------------------------------------------------------------------------------------- the network

def test_loads_release_key_names_and_config(model):
    cfg = model.vl_config
    assert cfg.mrope_section == (2, 3, 3) and cfg.vision.fullatt_block_indexes == (1, 3)
    names = {n for n, _ in model.parameters_and_names()}
    with open(os.path.join(FOLDER, "model.safetensors.index.json")) as f:
        assert names == set(json.load(f)["weight_map"])


def test_vision_tower_matches_hf(model, ref):
    got = model.visual(ref["batch_pixel_values"], ref["batch_grid"]).asnumpy()
    want = ref["vision_b_c"]
    assert got.shape == want.shape == (30, 64)
    assert np.abs(got - want).max() < 2e-5, np.abs(got - want).max()


def test_rope_index_matches_hf(model, ref):
    pos, deltas = rope_index(ref["batch_ids"], ref["batch_mask"], ref["batch_grid"], model.vl_config)
    m = ref["batch_mask"].astype(bool)
    np.testing.assert_array_equal(pos[:, m], ref["batch_positions"][:, m])
    np.testing.assert_array_equal(deltas, ref["batch_deltas"])


def test_logits_with_an_image_match_hf(model, ref):
    got = model(ref["single_ids"], ref["single_pixel_values"], ref["single_grid"]).asnumpy()
    want = ref["single_logits"]
    assert got.shape == want.shape
    assert np.abs(got - want).max() < ATOL, np.abs(got - want).max()


def test_logits_of_a_padded_batch_with_two_images_match_hf(model, ref):
    m = ref["batch_mask"]
    got = model(ref["batch_ids"], ref["batch_pixel_values"], ref["batch_grid"], attention_mask=m).asnumpy()
    err = np.abs(got[m.astype(bool)] - ref["batch_logits"][m.astype(bool)]).max()
    assert err < ATOL, err


def test_text_only_logits_match_hf(model, ref):
    got = model(ref["text_ids"]).asnumpy()
    assert np.abs(got - ref["text_logits"]).max() < ATOL


def test_greedy_tokens_equal_hf(model, ref):
    kw = dict(max_new_tokens=12, eos_token_id=[])
    np.testing.assert_array_equal(
        model.generate(ref["single_ids"], pixel_values=ref["single_pixel_values"], image_grid_thw=ref["single_grid"],
                       **kw), ref["single_greedy"])
    np.testing.assert_array_equal(
        model.generate(ref["batch_ids"], attention_mask=ref["batch_mask"], pixel_values=ref["batch_pixel_values"],
                       image_grid_thw=ref["batch_grid"], **kw), ref["batch_greedy"])
    np.testing.assert_array_equal(model.generate(ref["text_ids"], **kw), ref["text_greedy"])


# ------------------------------------------------------------------------------------------- bad input

def test_mismatched_images_and_tokens_are_rejected(model, ref):
    with pytest.raises(ValueError, match="image tokens"):
        model(ref["single_ids"], ref["batch_pixel_values"], ref["batch_grid"])
    with pytest.raises(ValueError, match="no pixel_values"):
        model(ref["single_ids"])
    with pytest.raises(ValueError, match="pixel_values has shape"):
        model.visual(ref["single_pixel_values"][:-4], ref["single_grid"])
    with pytest.raises(ValueError, match="image_grid_thw"):
        model.visual(ref["single_pixel_values"], np.array([[1, 5, 10]]))


@pytest.mark.parametrize("change, match", [
    ({"model_type": "qwen2"}, "not 'qwen2_5_vl'"),
    ({"vision_config": None}, "vision_config"),
])
def test_bad_config_is_a_clear_error(tmp_path, change, match):
    d = tmp_path / "vl"
    shutil.copytree(FOLDER, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(change)
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=match):
        Qwen2_5_VLForConditionalGeneration.from_pretrained(str(d))


def test_bad_mrope_section_is_a_clear_error(tmp_path):
    d = tmp_path / "vl"
    shutil.copytree(FOLDER, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["text_config"]["rope_scaling"]["mrope_section"] = [2, 2, 2]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="mrope_section"):
        Qwen2_5_VLForConditionalGeneration.from_pretrained(str(d))
