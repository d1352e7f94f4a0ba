"""WanModel_S2V against the official PyTorch WanModel_S2V (fixtures from tests/fixtures/make_s2v_model_fixtures.py).

The tiny model has every S2V part (pose encoder, reference and frame-packed motion tokens, zero-timestep
segments, causal audio encoder, adaptive-norm audio injection after blocks 0 and 2) with random weights, saved by
the official ``save_pretrained`` as sharded safetensors in float32 and bfloat16. Both sides compute in float32
on the same weights, so they differ only by float32 accumulation order; we allow 1e-4 of the output scale, while
any semantic slip (a rope position, a segment boundary, the token-type ids, the frame packing order, the audio
frame alignment) moves the output by O(1e-1) of the scale or more.
"""
import json
import os

import numpy as np
import pytest
from mindspore import Tensor

from conftest import FIXTURES
from wan.checkpoint.errors import CheckpointError
from wan.modules import kernels
from wan.modules.s2v.model_s2v import WanModel_S2V, s2v_rope_tables

FOLDER = os.path.join(FIXTURES, "s2v_model")
MOTION_FRAMES = [73, 19]
CASES = {  # mirrors make_s2v_model_fixtures.CASES
    "later_clip": dict(pose="pose", motion="motion", drop=False, last=2, t="t_a"),
    "first_clip": dict(pose="zero_pose", motion="motion", drop=True, last=2, t="t_a"),
    "later_clip_no_pose": dict(pose="zero_pose", motion="motion", drop=False, last=2, t="t_b"),
    "last_motion_1": dict(pose="pose", motion="motion", drop=False, last=1, t="t_b"),
    "last_motion_0": dict(pose="pose", motion="motion", drop=False, last=0, t="t_b"),
    "short_motion": dict(pose="pose", motion="short_motion", drop=False, last=2, t="t_a"),
    "zero_audio": dict(pose="pose", motion="motion", drop=False, last=2, t="t_a", audio_scale=0.0),
}


@pytest.fixture(autouse=True)
def reference_backend():
    kernels.set_backend("reference")
    yield
    kernels.set_backend(None)


@pytest.fixture(scope="module")
def data():
    return dict(np.load(os.path.join(FOLDER, "inputs.npz"))), dict(np.load(os.path.join(FOLDER, "expected.npz")))


@pytest.fixture(scope="module")
def fp32_model():
    return WanModel_S2V.from_pretrained(os.path.join(FOLDER, "fp32"))


def _call(model, inputs, spec):
    audio = inputs["audio"] * spec.get("audio_scale", 1.0)
    out = model([Tensor(inputs["x"])], Tensor(inputs[spec["t"]]), [Tensor(inputs["context"])], 0,
                [Tensor(inputs["ref"])], [Tensor(inputs[spec["motion"]])], [Tensor(inputs[spec["pose"]])],
                Tensor(audio), MOTION_FRAMES, spec["last"], spec["drop"])
    assert len(out) == 1
    return out[0].asnumpy()


def _assert_close(actual, expected):
    assert actual.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max()))
    err = float(np.abs(actual - expected).max())
    assert err <= 1e-4 * scale, f"max abs error {err:.3g} > {1e-4 * scale:.3g}"


@pytest.mark.parametrize("case", list(CASES))
def test_matches_official_fp32(case, data, fp32_model):
    inputs, expected = data
    _assert_close(_call(fp32_model, inputs, CASES[case]), expected[f"fp32/{case}"])


@pytest.mark.parametrize("case", ["later_clip", "first_clip"])
def test_matches_official_bf16_checkpoint(case, data):
    """bf16 on disk (as released), loaded into a float32 model: the official ran on the same bf16-rounded weights."""
    inputs, expected = data
    model = WanModel_S2V.from_pretrained(os.path.join(FOLDER, "bf16"))
    _assert_close(_call(model, inputs, CASES[case]), expected[f"bf16/{case}"])


def test_batch_of_two_matches_official(data, fp32_model):
    inputs, expected = data
    out = fp32_model([Tensor(inputs["x"]), Tensor(inputs["x_b1"])], Tensor(np.array([873.0, 250.0], np.float32)),
                     [Tensor(inputs["context"]), Tensor(inputs["context_b1"])], 0, [Tensor(inputs["ref"])] * 2,
                     [Tensor(inputs["motion"])] * 2, [Tensor(inputs["pose"])] * 2,
                     Tensor(np.concatenate([inputs["audio"], inputs["audio_b1"]])), MOTION_FRAMES, 2, False)
    for i in range(2):
        _assert_close(out[i].asnumpy(), expected[f"fp32/batch{i}"])


def test_audio_motion_and_pose_each_matter(data):
    """The tiny weights make every conditioning path move the output (so the parity cases above test them)."""
    _, expected = data
    ref = expected["fp32/later_clip"]
    scale = np.abs(ref).max()
    for other in ("zero_audio", "first_clip", "last_motion_1", "short_motion"):
        assert np.abs(expected[f"fp32/{other}"] - ref).max() > 0.05 * scale, other


def test_batched_tensors_equal_lists(data, fp32_model):
    """The official pipeline passes batched tensors [1, ...] for ref / motion / pose: same result as lists."""
    inputs, expected = data
    out = fp32_model(Tensor(inputs["x"][None]), Tensor(inputs["t_a"]), [Tensor(inputs["context"])], 0,
                     Tensor(inputs["ref"][None]), Tensor(inputs["motion"][None]), Tensor(inputs["pose"][None]),
                     Tensor(inputs["audio"]), MOTION_FRAMES)
    _assert_close(out[0].asnumpy(), expected["fp32/later_clip"])


def test_no_state_kept_between_calls(data, fp32_model):
    """A call with other inputs in between does not change a result (nothing is cached on the Cell)."""
    inputs, expected = data
    before = {k: v for k, v in vars(fp32_model).items() if not k.startswith("_")}
    _call(fp32_model, inputs, CASES["first_clip"])
    _assert_close(_call(fp32_model, inputs, CASES["later_clip"]), expected["fp32/later_clip"])
    after = {k: v for k, v in vars(fp32_model).items() if not k.startswith("_")}
    assert before.keys() == after.keys()


def test_rope_positions_follow_the_official_layout():
    """Hand-worked positions of the official rope_precompute for a 2 x (4 x 6)-token clip of an 8 x 12 latent:
    noisy (f, h, w) from 0; the reference frame at time 30; motion tokens at time -1 (recent), -3 (2x) and
    -19, -14, -9, -4 (4x), their rows / columns spread over the full grid by a truncated linspace."""
    from wan.modules.s2v.motioner import FramePackMotioner

    packer = FramePackMotioner.__new__(FramePackMotioner)  # grids() needs only the buckets
    packer.zip_frame_buckets = (1, 2, 16)
    grids = [(np.arange(2), np.arange(4), np.arange(6)), (np.array([30]), np.arange(4), np.arange(6))]
    grids += FramePackMotioner.grids(packer, 8, 12)
    freqs = 0.01 * np.arange(1024, dtype=np.float64)[:, None] * np.ones((1, 8))  # angle = position / 100
    cos, sin = s2v_rope_tables(grids, 48 + 24 + 24 + 6 + 4 + 2, freqs, 16)
    pos = np.rint(100 * np.arctan2(sin[0, :, 0], cos[0, :, 0])).astype(int)  # [L, 8]
    time, row, col = pos[:, 0], pos[:, 4], pos[:, 6]  # channel pairs 0-3: time, 4-5: rows, 6-7: columns
    assert (pos[:, :4] == time[:, None]).all() and (pos[:, 5] == row).all() and (pos[:, 7] == col).all()
    assert time[:48].tolist() == [0] * 24 + [1] * 24
    assert row[:24].tolist() == np.repeat(np.arange(4), 6).tolist() and col[:24].tolist() == list(range(6)) * 4
    assert time[48:72].tolist() == [30] * 24
    assert time[72:96].tolist() == [-1] * 24 and row[72:96].tolist() == row[:24].tolist()
    assert time[96:102].tolist() == [-3] * 6
    assert row[96:102].tolist() == [0, 0, 0, 3, 3, 3] and col[96:102].tolist() == [0, 2, 5, 0, 2, 5]
    assert time[102:106].tolist() == [-19, -14, -9, -4] and row[102:106].tolist() == [0] * 4
    assert (pos[106:] == 0).all()  # padding rows: identity rotation
