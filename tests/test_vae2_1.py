"""Wan2.1 VAE: parity with the official PyTorch code on a tiny config, loading, input checks, tiling.

Fixtures: tests/fixtures/make_vae_fixtures.py (section vae2_1), run in the reference environment.
"""
import json
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, ops

from conftest import FIXTURES
from vae_checks import assert_bad_inputs_refused, assert_close_within, lazy_parameters
from wan.modules import vae2_1 as V

HERE = os.path.join(FIXTURES, "vae2_1")
TINY_PTH = os.path.join(HERE, "tiny.pth")


@pytest.fixture(scope="module")
def ref():
    return np.load(os.path.join(HERE, "tiny.npz"))


@pytest.fixture(scope="module")
def vae(ref):
    return V.Wan2_1_VAE(vae_pth=TINY_PTH, model_config=json.loads(str(ref["config"])))


def test_parameter_names_and_shapes_equal_the_official_full_model():
    expected = json.load(open(os.path.join(HERE, "full_keys.json")))
    net = V.WanVAE_(z_dim=16, **V.WAN21_CONFIG)
    ours = {name: list(p.shape) for name, p in net.parameters_and_names()}
    assert ours == expected


@pytest.mark.parametrize("video, latent", [("video_a", "encode_a"), ("image_b", "encode_b")])
def test_encode_matches_official(vae, ref, video, latent):
    # video_a: 9 frames 16x24 (chunks 1, 4, 4: the steady-state cache); image_b: a single 8x16 frame.
    out = vae.encode([Tensor(ref[video])])[0]
    assert out.dtype == ms.float32 and out.shape == ref[latent].shape
    np.testing.assert_allclose(out.asnumpy(), ref[latent], rtol=0, atol=2e-5)


@pytest.mark.parametrize("latent, video", [("latent_c", "decode_c"), ("latent_d", "decode_d")])
def test_decode_matches_official(vae, ref, latent, video):
    raw = vae.model.decode(Tensor(ref[latent])[None], vae.scale)[0].asnumpy()
    assert raw.shape == ref[video].shape  # 3 latent frames -> 9 frames, 2x3 -> 16x24
    np.testing.assert_allclose(raw, ref[video], rtol=0, atol=5e-5)
    clamped = vae.decode([Tensor(ref[latent])])[0].asnumpy()
    np.testing.assert_allclose(clamped, np.clip(ref[video], -1, 1), rtol=0, atol=5e-5)


def test_chunked_cache_differs_from_one_full_clip_pass(vae, ref):
    # The official numbers come from the chunked pass; a single uncached pass gives other numbers, so the
    # feature cache is really exercised by the parity tests above.
    x = Tensor(ref["video_a"])[None]
    full = vae.model.conv1(vae.model.encoder(x))[:, :16]
    full = ((full - vae.mean.reshape(1, 16, 1, 1, 1)) / vae.std.reshape(1, 16, 1, 1, 1)).asnumpy()[0]
    assert full.shape != ref["encode_a"].shape or np.abs(full - ref["encode_a"]).max() > 1e-3


def test_feature_cache_slots():
    cache = V.FeatureCache()
    cache.begin_chunk()
    assert cache.is_first_chunk and cache.read() is None
    cache.write("a")
    cache.write("b")
    cache.begin_chunk()
    assert not cache.is_first_chunk and cache.read() == "a"
    cache.write("c")
    assert cache.read() == "b" and len(cache) == 2


def test_bad_inputs_raise_value_error(vae):
    assert_bad_inputs_refused(vae, stride=8)


def test_wan2_2_checkpoint_is_refused_before_building(ref):
    with pytest.raises(ValueError, match=r"Wan2\.2 VAE checkpoint.*12 input channels.*expects 3"):
        V.Wan2_1_VAE(vae_pth=os.path.join(HERE, "tiny_vae2_2.pth"),
                     model_config=json.loads(str(ref["config"])))


def test_config_mismatch_names_both_shapes(ref):
    config = dict(json.loads(str(ref["config"])), dim=8)
    with pytest.raises(ValueError, match=r"encoder\.conv1\.weight.*\(4, 3, 3, 3, 3\).*\(8, 3, 3, 3, 3\)"):
        V.Wan2_1_VAE(vae_pth=TINY_PTH, model_config=config)


def test_missing_checkpoint_raises_file_not_found():
    with pytest.raises(FileNotFoundError):
        V.Wan2_1_VAE(vae_pth=os.path.join(HERE, "no_such_file.pth"))


def test_loaded_wrapper_has_no_uninitialised_parameter(vae):
    assert lazy_parameters(vae.model) == []  # built under no_init_parameters, then every parameter loaded


def test_checkpoint_without_one_parameter_is_refused(ref, tmp_path):
    # With lazy (uninitialised) parameters, a key the file lacks must be an error, not a silent hole.
    from wan import checkpoint
    from safetensors.numpy import save_file

    dropped = "decoder.middle.0.residual.2.weight"
    with checkpoint.open_checkpoint(TINY_PTH) as reader:
        tensors = {k: np.ascontiguousarray(reader.read(k)) for k in reader.keys() if k != dropped}
    path = str(tmp_path / "partial.safetensors")
    save_file(tensors, path)
    with pytest.raises(ValueError, match=r"missing.*decoder\.middle\.0\.residual\.2\.weight"):
        V.Wan2_1_VAE(vae_pth=path, model_config=json.loads(str(ref["config"])))


def test_tile_layout_covers_and_blends_to_one():
    assert V._tile_starts(10, 4, 1) == [0, 3, 6]
    assert V._tile_starts(10, 4, 2) == [0, 2, 4, 6]
    assert V._tile_starts(11, 4, 1) == [0, 2, 5, 7]  # evenly spaced, last tile flush with the end
    assert V._tile_starts(3, 4, 1) == [0]
    for length, tile, overlap in [(10, 4, 1), (11, 4, 1), (9, 5, 0), (23, 8, 3)]:  # stride > tile/2
        starts = V._tile_starts(length, tile, overlap)
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))
        total = np.zeros(length * 8, np.float32)
        for s, w in zip(starts, V._blend_weights(starts, tile, length, 8)):
            total[s * 8:s * 8 + w.size] += w
        np.testing.assert_allclose(total, 1.0, atol=1e-6)


def _local_decoder(z):
    """A stand-in decoder without spatial context: 8x nearest upsampling and a pointwise map."""
    b, c, t, h, w = z.shape
    y = ops.broadcast_to(z.reshape(b, c, t, h, 1, w, 1), (b, c, t, h, 8, w, 8)).reshape(b, c, t, 8 * h, 8 * w)
    return ops.sigmoid(y[:, :3] * 2 + y[:, 3:6])


def test_tiled_apply_is_exact_for_a_network_without_spatial_context():
    # Any misplaced tile or a blend that is not a partition of unity shows up here.
    z = Tensor(np.random.default_rng(0).standard_normal((1, 16, 2, 11, 13)).astype(np.float32))
    tiled = V.tiled_decode(_local_decoder, z, 8, tile_size=32, tile_overlap=16).asnumpy()
    np.testing.assert_allclose(tiled, _local_decoder(z).asnumpy(), rtol=0, atol=1e-6)
    x = Tensor(np.random.default_rng(1).standard_normal((1, 3, 1, 40, 56)).astype(np.float32))

    def local_encoder(v):  # 8x8 average pooling as a reshape-mean
        b, c, t, h, w = v.shape
        return v.reshape(b, c, t, h // 8, 8, w // 8, 8).mean((4, 6))
    tiled = V.tiled_encode(local_encoder, x, 8, tile_size=24, tile_overlap=8).asnumpy()
    np.testing.assert_allclose(tiled, local_encoder(x).asnumpy(), rtol=0, atol=1e-6)


def test_tiled_with_one_tile_equals_untiled(vae, ref):
    z = Tensor(ref["latent_c"])
    np.testing.assert_array_equal(vae.decode([z], tiled=True, tile_size=64, tile_overlap=16)[0].asnumpy(),
                                  vae.decode([z])[0].asnumpy())


# Tiled vs untiled on a 128x128 frame with 96-pixel tiles and 32-pixel overlaps (2x2 tiles). The tiny random
# VAE has a receptive field wider than the whole latent (about 11 latent pixels of 3x3 convs before the first
# upsampling, plus a full-frame attention) and random weights do not decay with distance, so tiles differ from
# the whole frame well inside the overlaps. Measured: decode max 0.35, mean 0.026 (mean |output| 0.16);
# encode max 0.019, mean 0.0022 (mean |latent| 0.26); with 2 latent frames the decode error was max 0.89, mean
# 0.042. The bounds add headroom; tile-placement or blending
# bugs are caught exactly by the test above.
TILED_DECODE_TOL = dict(max=0.5, mean=0.04)
TILED_ENCODE_TOL = dict(max=0.04, mean=0.004)


def test_tiled_decode_is_close_to_untiled(vae):
    rng = np.random.default_rng(0)
    z = Tensor(rng.standard_normal((16, 1, 16, 16)).astype(np.float32))
    full = vae.decode([z])[0].asnumpy()
    tiled = vae.decode([z], tiled=True, tile_size=96, tile_overlap=32)[0].asnumpy()
    assert_close_within(tiled, full, (3, 1, 128, 128), TILED_DECODE_TOL)


def test_tiled_encode_is_close_to_untiled(vae):
    rng = np.random.default_rng(1)
    x = Tensor(rng.uniform(-1, 1, (3, 1, 128, 128)).astype(np.float32))
    full = vae.encode([x])[0].asnumpy()
    tiled = vae.encode([x], tiled=True, tile_size=96, tile_overlap=32)[0].asnumpy()
    assert_close_within(tiled, full, (16, 1, 16, 16), TILED_ENCODE_TOL)


def test_bad_tile_sizes_raise_value_error(vae):
    z = Tensor(np.zeros((16, 1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="tile_size=30 must be a multiple"):
        vae.decode([z], tiled=True, tile_size=30, tile_overlap=8)
    with pytest.raises(ValueError, match="tile_overlap=32 must be >= 0 and smaller"):
        vae.decode([z], tiled=True, tile_size=32, tile_overlap=32)
