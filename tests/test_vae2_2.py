"""Wan2.2 VAE: parity with the official PyTorch code on a tiny config, loading, input checks, tiling.

Fixtures: tests/fixtures/make_vae_fixtures.py (section vae2_2), run in the reference environment.
"""
import json
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

from conftest import FIXTURES
from vae_checks import assert_bad_inputs_refused, assert_close_within, lazy_parameters
from wan.modules import kernels as K
from wan.modules import vae2_2 as V

HERE = os.path.join(FIXTURES, "vae2_2")
TINY_PTH = os.path.join(HERE, "tiny.pth")


@pytest.fixture(autouse=True)
def reference_backend():
    K.set_backend("reference")
    yield
    K.set_backend(None)


@pytest.fixture(scope="module")
def ref():
    return np.load(os.path.join(HERE, "tiny.npz"))


@pytest.fixture(scope="module")
def parts():
    return np.load(os.path.join(HERE, "parts.npz"))


def _tiny_config(ref):
    """The tiny architecture as model_config (dim 2, dec_dim 3 given explicitly, 1 residual block per level)."""
    config = json.loads(str(ref["config"]))
    assert config.pop("z_dim") == 48
    return config


@pytest.fixture(scope="module")
def vae(ref):
    K.set_backend("reference")
    return V.Wan2_2_VAE(vae_pth=TINY_PTH, model_config=_tiny_config(ref))


# ---------------------------------------------------------------------------------- parameter-free pieces

def test_patchify_matches_official(parts):
    x = parts["patchify_in"]
    np.testing.assert_array_equal(V.patchify(Tensor(x)).asnumpy(), parts["patchify_out"])
    np.testing.assert_array_equal(V.patchify(Tensor(x[:, :, 0])).asnumpy(), parts["patchify4d_out"])


def test_unpatchify_matches_official(parts):
    y = parts["unpatchify_in"]
    np.testing.assert_array_equal(V.unpatchify(Tensor(y)).asnumpy(), parts["unpatchify_out"])
    np.testing.assert_array_equal(V.unpatchify(Tensor(y[:, :, 0])).asnumpy(), parts["unpatchify_out"][:, :, 0])


@pytest.mark.parametrize("frames", [1, 4, 5])
def test_avg_down_matches_official(parts, frames):
    out = V.AvgDown3D(4, 8, factor_t=2, factor_s=2)(Tensor(parts[f"avgdown_t{frames}_in"])).asnumpy()
    np.testing.assert_allclose(out, parts[f"avgdown_t{frames}_out"], rtol=1e-6, atol=1e-6)


def test_avg_down_spatial_only_matches_official(parts):
    out = V.AvgDown3D(4, 4, factor_t=1, factor_s=2)(Tensor(parts["avgdown_s_in"])).asnumpy()
    np.testing.assert_allclose(out, parts["avgdown_s_out"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("first_chunk,key", [(False, "dupup_out"), (True, "dupup_first_out")])
def test_dup_up_matches_official(parts, first_chunk, key):
    out = V.DupUp3D(8, 4, factor_t=2, factor_s=2)(Tensor(parts["dupup_in"]), first_chunk).asnumpy()
    np.testing.assert_array_equal(out, parts[key])


def test_dup_up_spatial_only_matches_official(parts):
    out = V.DupUp3D(8, 8, factor_t=1, factor_s=2)(Tensor(parts["dupup_in"])).asnumpy()
    np.testing.assert_array_equal(out, parts["dupup_s_out"])


# ------------------------------------------------------------------------------------------ the network

def test_full_size_names_and_shapes_equal_the_release():
    """The real architecture (as the official Wan2_2_VAE builds it: encoder 160, decoder 256 wide, z 48)
    has exactly the official parameter names and shapes; built without allocating its 705M weights."""
    with open(os.path.join(HERE, "full_keys.json")) as f:
        official = {k: tuple(v) for k, v in json.load(f).items()}
    with nn.no_init_parameters():
        model = V.WanVAE_(z_dim=48, **V.WAN22_CONFIG)
    ours = {name: tuple(p.shape) for name, p in model.parameters_and_names()}
    assert len(official) == 196
    assert ours == official


def test_latent_statistics_are_the_official_ones(vae, ref):
    np.testing.assert_allclose(vae.mean.asnumpy(), ref["mean"], rtol=0, atol=0)
    np.testing.assert_allclose(vae.std.asnumpy(), ref["std"], rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", ["wide", "tall", "image"])
def test_encode_matches_official(vae, ref, name):
    # wide: 9 frames 32x48 (chunks 1, 4, 4: the steady-state cache); tall: 5 frames 48x32; image: 1 frame
    out = vae.encode([Tensor(ref[f"enc_{name}_in"].astype(np.float32))])[0]
    assert out.dtype == ms.float32 and out.shape == ref[f"enc_{name}_out"].shape
    np.testing.assert_allclose(out.asnumpy(), ref[f"enc_{name}_out"], rtol=0, atol=2e-5)


@pytest.mark.parametrize("name", ["wide", "tall", "single"])
def test_decode_matches_official(vae, ref, name):
    # wide: 3 latent frames 2x3 -> 9 frames 32x48; tall: 2 frames 3x2 -> 5 frames 48x32; single: 1 -> 1
    raw = vae.model.decode(Tensor(ref[f"dec_{name}_in"])[None], vae.scale)[0].asnumpy()
    assert raw.shape == ref[f"dec_{name}_out"].shape
    np.testing.assert_allclose(raw, ref[f"dec_{name}_out"], rtol=0, atol=5e-5)


def test_wrapper_decode_clamps_like_official(vae, ref):
    out = vae.decode([Tensor(ref["dec_tall_in"])])[0]
    assert out.dtype == ms.float32
    assert (np.abs(ref["dec_tall_out"]) > 1).mean() > 0.01  # the clamp really acts on this sample
    np.testing.assert_allclose(out.asnumpy(), ref["dec_tall_clamped"], rtol=0, atol=5e-5)


def test_chunked_cache_differs_from_one_full_clip_pass(vae, ref):
    # The official numbers come from the chunked pass with the first-chunk rules; decoding the 3 latent
    # frames as if each were the first (no carried cache) gives other numbers, so the cache is exercised.
    z = Tensor(ref["dec_wide_in"])[None]
    frames = [vae.model.decode(z[:, :, i:i + 1], vae.scale) for i in range(3)]
    assert frames[0].shape[2] == 1
    assert np.abs(frames[1].asnumpy()[0] - ref["dec_wide_out"][:, 1:2]).max() > 1e-3


def test_bad_inputs_raise_value_error(vae):
    assert_bad_inputs_refused(vae, stride=16)


def test_wan2_1_checkpoint_is_refused_before_building(ref):
    with pytest.raises(ValueError, match=r"Wan2\.1 VAE checkpoint.*takes 3 input channels.*expects 12"):
        V.Wan2_2_VAE(vae_pth=os.path.join(HERE, "tiny_vae2_1.pth"), model_config=_tiny_config(ref))


def test_width_mismatch_names_found_and_expected(ref):
    config = dict(_tiny_config(ref), dec_dim=256)
    with pytest.raises(ValueError, match=r"'dec_dim': 3.*'dec_dim': 256"):
        V.Wan2_2_VAE(vae_pth=TINY_PTH, model_config=config)


def test_missing_checkpoint_raises_file_not_found():
    with pytest.raises(FileNotFoundError):
        V.Wan2_2_VAE(vae_pth=os.path.join(HERE, "no_such_file.pth"))


def test_loaded_wrapper_has_no_uninitialised_parameter(vae):
    assert lazy_parameters(vae.model) == []  # built under no_init_parameters, then every parameter loaded


def test_tiled_with_one_tile_equals_untiled(vae, ref):
    z = Tensor(ref["dec_wide_in"])
    np.testing.assert_array_equal(vae.decode([z], tiled=True, tile_size=64, tile_overlap=16)[0].asnumpy(),
                                  vae.decode([z])[0].asnumpy())


class _LocalStandIn:
    """Stands in for WanVAE_ with networks that have no spatial context (16x nearest up / 16x16 mean down),
    so tiling through the wrapper must reproduce the untiled result exactly."""

    @staticmethod
    def decode(z, scale):
        b, c, t, h, w = z.shape
        y = ops.broadcast_to(z.reshape(b, c, t, h, 1, w, 1), (b, c, t, h, 16, w, 16)).reshape(b, c, t, 16 * h, 16 * w)
        return ops.tanh(y[:, :3] + 0.5 * y[:, 3:6])

    @staticmethod
    def encode(x, scale):
        b, c, t, h, w = x.shape
        m = x.reshape(b, c, t, h // 16, 16, w // 16, 16).mean((4, 6))
        return ops.cat([m] * 16, 1)[:, :48]


def test_tiled_wrapper_is_exact_without_spatial_context():
    # Catches a wrong stride (the 2.1 value 8 would misplace every tile) or a wrong tile/crop in the wrapper.
    vae = V.Wan2_2_VAE(model_config=dict(dim=1, dec_dim=1, num_res_blocks=0))
    vae.model = _LocalStandIn()
    z = Tensor(np.random.default_rng(2).standard_normal((48, 2, 7, 9)).astype(np.float32))
    np.testing.assert_allclose(vae.decode([z], tiled=True, tile_size=64, tile_overlap=32)[0].asnumpy(),
                               vae.decode([z])[0].asnumpy(), rtol=0, atol=1e-6)
    x = Tensor(np.random.default_rng(3).uniform(-1, 1, (3, 1, 80, 112)).astype(np.float32))
    np.testing.assert_allclose(vae.encode([x], tiled=True, tile_size=48, tile_overlap=16)[0].asnumpy(),
                               vae.encode([x])[0].asnumpy(), rtol=0, atol=1e-6)


# Tiled vs untiled on a 128x128 frame with 96-pixel tiles and 32-pixel overlaps (2x2 tiles over an 8x8
# latent). The tiny random VAE's receptive field spans the whole latent (3x3 convs at latent resolution and a
# full-frame attention, random weights that do not decay with distance), and its output layer is 4x louder than
# initialised, so tiles differ from the whole frame far inside the tiles. Measured (float32, CPU): decode max
# 2.0 (some pixels saturate at opposite ends of the clamp), mean 0.20 (mean |output| 0.53); encode max 0.085,
# mean 0.012 (mean |latent| 0.32). The bounds add ~25% headroom: they catch a tiling that breaks the image
# (e.g. unblended seams or swapped tiles give mean errors near the mean |output|), while exact placement and
# blending are checked by the stand-in test above.
TILED_DECODE_TOL = dict(max=2.0 + 1e-6, mean=0.25)
TILED_ENCODE_TOL = dict(max=0.11, mean=0.015)


def test_tiled_decode_is_close_to_untiled(vae):
    z = Tensor(np.random.default_rng(0).standard_normal((48, 1, 8, 8)).astype(np.float32))
    full = vae.decode([z])[0].asnumpy()
    tiled = vae.decode([z], tiled=True, tile_size=96, tile_overlap=32)[0].asnumpy()
    assert_close_within(tiled, full, (3, 1, 128, 128), TILED_DECODE_TOL)


def test_tiled_encode_is_close_to_untiled(vae):
    x = Tensor(np.random.default_rng(1).uniform(-1, 1, (3, 1, 128, 128)).astype(np.float32))
    full = vae.encode([x])[0].asnumpy()
    tiled = vae.encode([x], tiled=True, tile_size=96, tile_overlap=32)[0].asnumpy()
    assert_close_within(tiled, full, (48, 1, 8, 8), TILED_ENCODE_TOL)


def test_bad_tile_sizes_raise_value_error(vae):
    z = Tensor(np.zeros((48, 1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="tile_size=40 must be a multiple of the VAE's spatial stride 16"):
        vae.decode([z], tiled=True, tile_size=40, tile_overlap=16)
