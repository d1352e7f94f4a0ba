"""Checks shared by tests/test_vae2_1.py and tests/test_vae2_2.py: both wrappers are thin subclasses of
wan.modules.vae2_1.VideoVAE and differ only in strides, channel counts and the network."""
import numpy as np
import pytest
from mindspore import Tensor


def _zeros(*shape):
    return Tensor(np.zeros(shape, np.float32))


def assert_bad_inputs_refused(vae, stride: int) -> None:
    """Every malformed input to ``vae.encode``/``vae.decode`` raises a ValueError naming the value."""
    with pytest.raises(ValueError, match=r"6 frames.*1 \+ 4k"):
        vae.encode([_zeros(3, 6, 16, 16)])
    with pytest.raises(ValueError, match=r"\(4, 5, 16, 16\).*\[3, T, H, W\]"):
        vae.encode([_zeros(4, 5, 16, 16)])
    odd = stride + stride // 2
    with pytest.raises(ValueError, match=f"{odd}x16.*multiples of {stride}"):
        vae.encode([_zeros(3, 5, odd, 16)])
    with pytest.raises(ValueError, match="list"):
        vae.encode(_zeros(3, 5, 16, 16))
    wrong = vae.z_dim // 4
    with pytest.raises(ValueError, match=rf"latent 0 has shape \({wrong}, 2, 2, 2\).*\[{vae.z_dim}, T, h, w\]"):
        vae.decode([_zeros(wrong, 2, 2, 2)])


def assert_close_within(tiled: np.ndarray, full: np.ndarray, shape: tuple, tol: dict) -> None:
    """Same shape, and the max / mean absolute difference below ``tol["max"]`` / ``tol["mean"]``."""
    assert tiled.shape == full.shape == shape
    err = np.abs(tiled - full)
    assert err.max() < tol["max"] and err.mean() < tol["mean"], (err.max(), err.mean())


def lazy_parameters(cell) -> list:
    """Names of the parameters still holding a lazy initializer (built under no_init_parameters, never set)."""
    return [name for name, p in cell.parameters_and_names() if p.has_init]
