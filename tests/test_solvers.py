"""Parity of the numpy solvers with the official PyTorch ones (fixtures: tests/fixtures/make_solver_fixtures.py)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import FIXTURES
from wan.utils.euler import EulerScheduler
from wan.utils.fm_solvers import (SOLVER_NAMES, FlowDPMSolverMultistepScheduler, get_sampling_sigmas,
                                  make_scheduler, retrieve_timesteps)
from wan.utils.fm_solvers_unipc import FlowUniPCMultistepScheduler
from wan.utils.solver_common import SchedulerOutput

sys.path.insert(0, FIXTURES)
from solver_model import velocity  # noqa: E402  (the function the fixtures were made with)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(REPO, "tests", "fixtures", "solvers", "solver_trajectories.npz")

# Every step of the replay is compared with the official latents after the same step. Both sides do the
# same float32 operations in the same order, so they differ only where a library rounds differently (float32
# log of numpy vs torch, LAPACK's small solve, einsum's summation): an ulp here and there, carried along the
# trajectory. Measured (latents of magnitude up to ~2): Euler bit-exact; UniPC/DPM++ at most 5.4e-7 absolute,
# 1.8e-7 relative to the largest latent, 60-100% of elements bit-exact. The bound atol + rtol*|ref| below is
# 2-5x that, and an error in a coefficient, an order switch or an off-by-one sigma moves latents by >1e-3.
RTOL = 2e-6
ATOL = 1e-6


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE) as data:
        return {key: data[key] for key in data.files}


def case_spec(ref, name: str):
    """(solver, shift, steps, extra constructor kwargs) of a fixture case."""
    spec = json.loads(str(ref[f"{name}/spec"]))
    return spec["solver"], spec["shift"], spec["steps"], spec["extra"]


def build(solver, shift, steps, extra):
    if not extra:
        return make_scheduler(solver, steps, shift)
    if solver == "unipc":
        sched = FlowUniPCMultistepScheduler(num_train_timesteps=1000, shift=1, use_dynamic_shifting=False, **extra)
        sched.set_timesteps(steps, shift=shift)
        return sched, sched.timesteps
    sched = FlowDPMSolverMultistepScheduler(num_train_timesteps=1000, shift=1, use_dynamic_shifting=False, **extra)
    timesteps, _ = retrieve_timesteps(sched, sigmas=get_sampling_sigmas(steps, shift))
    return sched, timesteps


def replay(sched, timesteps, noise):
    """The official loop: step(v[None], t, latents[None], return_dict=False)[0], then drop the batch axis."""
    latents = noise.copy()
    trajectory = [latents]
    for t in timesteps:
        latents = sched.step(velocity(latents, t)[None], t, latents[None], return_dict=False)[0][0]
        trajectory.append(latents)
    return np.stack(trajectory)


def case_names():
    with np.load(FIXTURE) as data:
        return [str(name) for name in data["case_names"]]


def test_fixture_covers_the_pipeline_setups():
    names = case_names()
    for solver in SOLVER_NAMES:
        assert {n for n in names if n.startswith(solver + "_") and n.count("=") == 0} == {
            f"{solver}_shift{shift}_steps{steps}" for shift in (5, 12) for steps in (4, 40)}


@pytest.mark.parametrize("name", case_names())
def test_schedule_matches_official(ref, name):
    sched, timesteps = build(*case_spec(ref, name))
    expected_t = ref[f"{name}/timesteps"]
    assert timesteps.dtype == expected_t.dtype  # int64 for unipc/dpm++, float32 for euler
    np.testing.assert_array_equal(timesteps, expected_t)
    assert sched.sigmas.dtype == np.float32
    np.testing.assert_array_equal(sched.sigmas, ref[f"{name}/sigmas"])


@pytest.mark.parametrize("name", case_names())
def test_trajectory_matches_official(ref, name):
    sched, timesteps = build(*case_spec(ref, name))
    trajectory = replay(sched, timesteps, ref["noise"])
    expected = ref[f"{name}/trajectory"]
    assert trajectory.shape == expected.shape and trajectory.dtype == np.float32
    for i in range(1, len(expected)):
        np.testing.assert_allclose(trajectory[i], expected[i], rtol=RTOL, atol=ATOL,
                                   err_msg=f"{name}: step {i - 1} (t={timesteps[i - 1]})")


@pytest.mark.parametrize("label,cls", [("unipc", FlowUniPCMultistepScheduler),
                                       ("dpm++", FlowDPMSolverMultistepScheduler)])
def test_schedule_options_match_official(ref, label, cls):
    sched = cls(num_train_timesteps=1000, shift=5.0)
    sched.set_timesteps(10)
    np.testing.assert_array_equal(sched.timesteps, ref[f"schedule_{label}_ctor_shift5/timesteps"])
    np.testing.assert_array_equal(sched.sigmas, ref[f"schedule_{label}_ctor_shift5/sigmas"])
    sched = cls(num_train_timesteps=1000, use_dynamic_shifting=True)
    sched.set_timesteps(10, mu=0.7)
    np.testing.assert_array_equal(sched.timesteps, ref[f"schedule_{label}_mu0.7/timesteps"])
    np.testing.assert_array_equal(sched.sigmas, ref[f"schedule_{label}_mu0.7/sigmas"])


def test_public_attributes_and_return_dict():
    sched, timesteps = make_scheduler("unipc", 4, 5.0)
    assert (sched.config.num_train_timesteps, sched.config.shift, sched.order) == (1000, 1, 1)
    assert (sched.solver_order, sched.lower_order_final, sched.num_inference_steps) == (2, True, 4)
    x = np.ones((1, 2, 1, 2, 2), np.float32)
    out = sched.step(np.zeros_like(x), timesteps[0], x)
    assert isinstance(out, SchedulerOutput) and out.prev_sample.shape == x.shape
    assert sched.step_index == 1


@pytest.mark.parametrize("solver", SOLVER_NAMES)
def test_mindspore_tensors_in_and_out(ref, solver):
    ms = pytest.importorskip("mindspore")
    noise = ref["noise"]
    sched_np, timesteps = make_scheduler(solver, 4, 5.0)
    sched_ms, _ = make_scheduler(solver, 4, 5.0)
    x_np, x_ms = noise[None], ms.Tensor(noise[None])
    for t in timesteps[:2]:
        v = velocity(x_np[0], t)[None]
        x_np = sched_np.step(v, t, x_np, return_dict=False)[0]
        x_ms = sched_ms.step(ms.Tensor(v), ms.Tensor(t), x_ms, return_dict=False)[0]
        assert isinstance(x_ms, ms.Tensor) and x_ms.dtype == ms.float32
        np.testing.assert_array_equal(x_ms.asnumpy(), x_np)


def test_solver_modules_import_without_mindspore_or_torch():
    code = ("import sys; import wan.utils.fm_solvers, wan.utils.fm_solvers_unipc, wan.utils.euler; "
            "bad = [m for m in ('mindspore', 'torch') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


@pytest.mark.parametrize("name", ["ddim", "UniPC", "", "dpm"])
def test_unknown_solver_name(name):
    with pytest.raises(ValueError, match="unipc, dpm\\+\\+, euler"):
        make_scheduler(name, 4, 5.0)


@pytest.mark.parametrize("steps", [0, -3, 2.5, True, "4"])
@pytest.mark.parametrize("solver", SOLVER_NAMES)
def test_bad_step_count(solver, steps):
    with pytest.raises(ValueError, match="num_steps"):
        make_scheduler(solver, steps, 5.0)


@pytest.mark.parametrize("shift", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_shift(shift):
    with pytest.raises(ValueError, match="shift"):
        make_scheduler("unipc", 4, shift)


def test_step_misuse_is_reported():
    x = np.zeros((1, 2, 1, 2, 2), np.float32)
    with pytest.raises(ValueError, match="set_timesteps"):
        FlowUniPCMultistepScheduler().step(x, 999, x)
    sched, timesteps = make_scheduler("dpm++", 4, 5.0)
    with pytest.raises(ValueError, match="not in this scheduler's timesteps"):
        sched.step(x, 123, x)
    with pytest.raises(ValueError, match="shape"):
        sched.step(x[:, :1], timesteps[0], x)
    euler, euler_t = make_scheduler("euler", 2, 5.0)
    with pytest.raises(ValueError, match="integer"):
        euler.step(x, 1000, x)
    for t in euler_t:
        euler.step(x, t, x)
    with pytest.raises(ValueError, match="already taken"):
        euler.step(x, euler_t[0], x)
    with pytest.raises(ValueError, match="bh2"):
        FlowUniPCMultistepScheduler(solver_type="bh1")
    with pytest.raises(ValueError, match="dpmsolver\\+\\+"):
        FlowDPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++")


def test_euler_is_plain_euler():
    """Independent of the fixtures: x_next = x + (sigma_next - sigma) * v with a constant v lands on x - sigma0 v."""
    sched, timesteps = make_scheduler("euler", 4, 5.0)
    assert isinstance(sched, EulerScheduler)
    x = np.full((1, 1, 1, 1, 1), 3.0, np.float32)
    v = np.full_like(x, 0.5)
    for t in timesteps:
        x = sched.step(v, t, x, return_dict=False)[0]
    np.testing.assert_allclose(x, 3.0 - 0.5, rtol=1e-6)


def test_repeated_first_timestep_starts_at_second_match(ref):
    """Official quirk kept: if the first timestep repeats, the scheduler starts at its second occurrence."""
    sched, timesteps = make_scheduler("unipc", 200, 12.0)
    np.testing.assert_array_equal(timesteps[:3], ref["repeated_start/timesteps"])
    expected = ref["repeated_start/trajectory"]
    latents = expected[0]
    for i, t in enumerate(timesteps[:3]):
        latents = sched.step(velocity(latents, t)[None], t, latents[None], return_dict=False)[0][0]
        if i == 0:
            assert sched.step_index == int(ref["repeated_start/step_index_after_first"])
        np.testing.assert_allclose(latents, expected[i + 1], rtol=RTOL, atol=ATOL)
