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
    "no_motion_latents": dict(pose="pose", motion="empty_motion", drop=False, last=2, t="t_a"),
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
    def attributes():  # MindSpore's own lazy hook slots change on the first call; everything else must not
        return {k: v for k, v in vars(fp32_model).items() if not k.startswith("_lazy")}

    before = attributes()
    _call(fp32_model, inputs, CASES["first_clip"])
    _assert_close(_call(fp32_model, inputs, CASES["later_clip"]), expected["fp32/later_clip"])
    after = attributes()
    assert after.keys() == before.keys(), sorted(set(after) ^ set(before))
    public = [k for k in before if not k.startswith("_")]  # (private ones include MindSpore's call flags)
    assert all(after[k] is before[k] for k in public), [k for k in public if after[k] is not before[k]]


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


# ------------------------------------------------------------------------------------ seams (sequence layout)

def test_sequence_padding_seam_leaves_the_result_unchanged(data):
    """A plan that pads the sequence (as Ulysses does to a multiple of its ranks): the padded rows are masked
    keys with identity rope in the zero-timestep segment, so the output is the official one."""
    from wan.modules.model import SequencePlan

    class Padding(SequencePlan):
        def pad_multiple(self):
            return 7  # 528 tokens -> 532

    inputs, expected = data
    model = WanModel_S2V.from_pretrained(os.path.join(FOLDER, "fp32"))
    model.plan = Padding()
    _assert_close(_call(model, inputs, CASES["later_clip"]), expected["fp32/later_clip"])


def test_audio_injection_on_shards_equals_the_whole_sequence(fp32_model):
    """Each device injects audio into its own rows: two shards split inside a frame give the whole result."""
    rng = np.random.default_rng(0)
    frames, frame_tokens, extra, dim = 3, 96, 40, 32
    x = Tensor(rng.standard_normal((1, frames * frame_tokens + extra, dim)).astype(np.float32))
    local = Tensor(rng.standard_normal((1, frames, 5, dim)).astype(np.float32))
    glob = Tensor(rng.standard_normal((1, frames, 1, dim)).astype(np.float32))
    injector = fp32_model.audio_injector
    whole = injector.inject(1, x, local, glob, 0, frames * frame_tokens, frame_tokens).asnumpy()
    cut = 150  # inside frame 1
    a = injector.inject(1, x[:, :cut], local, glob, 0, frames * frame_tokens, frame_tokens).asnumpy()
    b = injector.inject(1, x[:, cut:], local, glob, cut, frames * frame_tokens, frame_tokens).asnumpy()
    np.testing.assert_allclose(np.concatenate([a, b], 1), whole, rtol=1e-5, atol=1e-5)
    assert np.abs(whole - x.asnumpy())[:, :frames * frame_tokens].max() > 1e-2  # the injection did something
    np.testing.assert_array_equal(whole[:, frames * frame_tokens:], x.asnumpy()[:, frames * frame_tokens:])


# ------------------------------------------------------------------------------------------ checkpoints

def _write_folder(tmp_path, drop=(), add=None):
    """A copy of the fp32 fixture as one safetensors file, with keys dropped or added."""
    from safetensors.numpy import load_file, save_file

    src = os.path.join(FOLDER, "fp32")
    state = {}
    for name in sorted(os.listdir(src)):
        if name.endswith(".safetensors"):
            state.update(load_file(os.path.join(src, name)))
    for key in drop:
        del state[key]
    state.update(add or {})
    save_file(state, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    with open(os.path.join(src, "config.json")) as f:
        (tmp_path / "config.json").write_text(f.read())
    return str(tmp_path)


def test_released_key_groups_are_all_present():
    with open(os.path.join(FOLDER, "fp32", "diffusion_pytorch_model.safetensors.index.json")) as f:
        keys = set(json.load(f)["weight_map"])
    model = WanModel_S2V.from_pretrained(os.path.join(FOLDER, "fp32"))
    ours = {n for n, _ in model.parameters_and_names()}
    assert ours == keys
    for prefix in ("casual_audio_encoder.", "audio_injector.injector.", "audio_injector.injector_adain_layers.",
                   "frame_packer.proj_4x.", "cond_encoder.", "trainable_cond_mask."):
        assert any(k.startswith(prefix) for k in keys), prefix


@pytest.mark.parametrize("kind", ["missing", "extra"])
def test_missing_or_extra_key_fails_naming_it(tmp_path, kind):
    if kind == "missing":
        folder, key = _write_folder(tmp_path, drop=["audio_injector.injector_adain_layers.1.linear.weight"]), \
            "audio_injector.injector_adain_layers.1.linear.weight"
        what = "missing from the checkpoint"
    else:
        key = "motioner.patch_embedding.weight"  # e.g. a checkpoint trained with the transformer motioner
        folder = _write_folder(tmp_path, add={key: np.zeros((4, 4), np.float32)})
        what = "unexpected checkpoint key"
    with pytest.raises(CheckpointError, match=what) as info:
        WanModel_S2V.from_pretrained(folder)
    assert key in str(info.value)


def test_full_size_names_and_shapes_equal_the_release():
    """The released S2V-14B (our constructor defaults), built without allocating weights: exactly the official
    1260 names and shapes."""
    import mindspore as ms
    from mindspore import nn

    with open(os.path.join(FOLDER, "full_manifest.json")) as f:
        manifest = json.load(f)
    with nn.no_init_parameters():
        model = WanModel_S2V(dtype=ms.bfloat16)
    for key, value in manifest["config"].items():  # the released values are the defaults
        assert getattr(model, key) == value, key
    ours = {n: list(p.shape) for n, p in model.parameters_and_names()}
    assert len(ours) == 1260
    assert ours == manifest["shapes"]


# --------------------------------------------------------------------------------------------- config

def _config(**changes):
    with open(os.path.join(FOLDER, "fp32", "config.json")) as f:
        config = json.load(f)
    config.update(changes)
    return config


def test_config_missing_keys_take_the_official_defaults(tmp_path):
    config = _config()
    del config["enable_framepack"]  # the official default is False (the transformer motioner)
    (tmp_path / "config.json").write_text(json.dumps(config))
    args = WanModel_S2V.config_from_file(str(tmp_path / "config.json"))
    assert args["enable_framepack"] is False and args["dim"] == 32
    with pytest.raises(ValueError, match="only frame packing"):
        WanModel_S2V(**args)


def test_config_unknown_keys_are_ignored_and_other_classes_refused(tmp_path, caplog):
    (tmp_path / "config.json").write_text(json.dumps(_config(motion_frames=73)))
    args = WanModel_S2V.config_from_file(str(tmp_path / "config.json"))
    assert "motion_frames" not in args and "motion_frames" in caplog.text
    (tmp_path / "config.json").write_text(json.dumps(_config(_class_name="WanModel")))
    with pytest.raises(ValueError, match="not a WanModel_S2V"):
        WanModel_S2V.config_from_file(str(tmp_path / "config.json"))


@pytest.mark.parametrize("change, message", [
    (dict(framepack_drop_mode="drop"), "framepack_drop_mode='drop'"),
    (dict(enable_adain=False), "enable_adain=False"),
    (dict(cond_dim=0), "cond_dim=0"),
    (dict(audio_inject_layers=[1], num_layers=12), "substring"),
    (dict(audio_inject_layers=[0, 5]), "layers past num_layers"),
])
def test_unsupported_configs_are_refused(change, message):
    args = WanModel_S2V.config_from_file(os.path.join(FOLDER, "fp32", "config.json"))
    with pytest.raises(ValueError, match=message):
        WanModel_S2V(**{**args, **change})


# ------------------------------------------------------------------------------------------ bad input

def test_bad_input_is_rejected_before_work(data, fp32_model):
    inputs, _ = data
    x, t, ctx = [Tensor(inputs["x"])], Tensor(inputs["t_a"]), [Tensor(inputs["context"])]
    ref, mot, pose, audio = ([Tensor(inputs["ref"])], [Tensor(inputs["motion"])], [Tensor(inputs["pose"])],
                             Tensor(inputs["audio"]))
    with pytest.raises(ValueError, match="encodes to 4 latent frames, but the latent has 3"):
        fp32_model(x, t, ctx, 0, ref, mot, pose, Tensor(inputs["audio"][..., :1].repeat(16, -1)), MOTION_FRAMES)
    with pytest.raises(ValueError, match="audio_input is required"):
        fp32_model(x, t, ctx, 0, ref, mot, pose, None, MOTION_FRAMES)
    with pytest.raises(ValueError, match=r"cond_states\[0\] has shape \(16, 3, 16, 24\)"):
        fp32_model(x, t, ctx, 0, ref, mot, x, audio, MOTION_FRAMES)
    with pytest.raises(ValueError, match="t has shape"):
        fp32_model(x, Tensor(np.zeros((2,), np.float32)), ctx, 0, ref, mot, pose, audio, MOTION_FRAMES)
    with pytest.raises(ValueError, match="add_last_motion=3"):
        fp32_model(x, t, ctx, 0, ref, mot, pose, audio, MOTION_FRAMES, 3)
    with pytest.raises(ValueError, match="ref_latents"):
        fp32_model(x, t, ctx, 0, mot, mot, pose, audio, MOTION_FRAMES)
    with pytest.raises(ValueError, match="audio_input has shape"):
        fp32_model(x, t, ctx, 0, ref, mot, pose, audio[:, :24], MOTION_FRAMES)


def test_compute_dtype_runs_matmuls_in_half_precision(data):
    """set_compute_dtype (bf16 on Ascend; float16 here, which CPU computes) reaches the S2V parts too: close to
    the official float32 result at half-precision accuracy, not identical; the audio encoder stays float32."""
    import mindspore as ms

    inputs, expected = data
    model = WanModel_S2V.from_pretrained(os.path.join(FOLDER, "fp32")).set_compute_dtype(ms.float16)
    assert model.audio_injector.injector[0].q.compute_dtype == ms.float16
    assert model.frame_packer.proj_4x.compute_dtype == ms.float16
    assert model.casual_audio_encoder.encoder.final_linear.compute_dtype == ms.float32
    out = _call(model, inputs, CASES["later_clip"])
    ref = expected["fp32/later_clip"]
    err = np.abs(out - ref).max()
    assert 0 < err < 2e-2 * np.abs(ref).max(), err


# ------------------------------------------------------------------------------------------ multi-device

def test_ulysses_and_zero3_with_two_msrun_ranks_match_official(tmp_path):
    """A real 2-rank msrun job (tests/distributed/worker_s2v_parity.py): the S2V forward under Ulysses (audio
    injected on each rank's own shard, no gather), and under ZeRO3 + Ulysses, equals the official output on
    every rank."""
    from test_distributed import _log, _msrun

    code, seconds, log_dir = _msrun(tmp_path, "worker_s2v_parity.py", tmp_path)
    assert code == 0, f"msrun failed ({seconds:.0f}s):\n{_log(log_dir, 0)[-3000:]}\n{_log(log_dir, 1)[-3000:]}"
    for rank in range(2):
        with open(tmp_path / f"rank{rank}.json") as f:
            result = json.load(f)
        assert result["gathered_per_call"] > 0  # ZeRO3 really sharded weights
        for case in ("later_clip", "first_clip"):
            rec = result[case]
            tol = 1e-4 * max(1.0, rec["scale"])
            assert rec["ulysses_vs_official"] <= tol, (rank, case, rec)
        assert result["later_clip"]["both_vs_official"] <= tol, (rank, result["later_clip"])
