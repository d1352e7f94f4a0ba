"""Pieces shared by the flow-matching solvers: array conversion, the step result, float32 scalar maths.

The solvers keep their state in numpy. They accept numpy arrays or MindSpore Tensors and hand back the kind
they were given; MindSpore is imported only when a MindSpore Tensor actually has to be built, so importing a
solver module never imports MindSpore (or torch).
"""
from dataclasses import dataclass
from typing import Any

import numpy as np

F32 = np.float32


@dataclass
class SchedulerOutput:
    """Result of `step(..., return_dict=True)`; `prev_sample` has the shape of the `sample` given to `step`."""
    prev_sample: Any


def is_mindspore_tensor(value) -> bool:
    # Checked by module name so that numpy-only callers never pay for a MindSpore import.
    return type(value).__module__.startswith("mindspore") and hasattr(value, "asnumpy")


def to_numpy(value) -> np.ndarray:
    """numpy view of a numpy array, a MindSpore Tensor, or a Python/numpy scalar."""
    if isinstance(value, np.ndarray):
        return value
    if is_mindspore_tensor(value):
        return value.asnumpy()
    return np.asarray(value)


def like(result: np.ndarray, reference):
    """Return `result` as the same kind of object as `reference` (numpy array or MindSpore Tensor)."""
    if is_mindspore_tensor(reference):
        import mindspore  # lazy on purpose: see the module docstring
        return mindspore.Tensor(np.ascontiguousarray(result))
    return result


def scalar_value(timestep):
    """The timestep as a numpy scalar, keeping its dtype (int64 for UniPC/DPM++, float32 for Euler)."""
    array = to_numpy(timestep)
    if array.size != 1:
        raise ValueError(f"timestep must be a single value, got an array of shape {array.shape}; pass one "
                         "element of `scheduler.timesteps`")
    return array.reshape(())[()]


def flow_lambda(sigma):
    """log-SNR of the flow-matching path x = (1 - sigma) x0 + sigma noise, in float32 like the official solvers.

    sigma = 0 gives +inf and sigma = 1 gives -inf on purpose: the official update formulas rely on the IEEE
    infinities there (exp(-inf) = 0, 1 / inf = 0); callers silence the warnings with np.errstate.
    """
    sigma = F32(sigma)
    alpha = F32(F32(1.0) - sigma)
    return F32(log_f32(alpha) - log_f32(sigma))


# float32 transcendental functions, correctly rounded (evaluated in float64, then rounded once). numpy's own
# float32 kernels are up to a few ulp off and differ by CPU; torch's scalar exp/expm1 on CPU return the
# correctly rounded value, so this reproduces the official coefficients bit for bit in most cases.
def exp_f32(x):
    return F32(np.exp(np.float64(x)))


def expm1_f32(x):
    return F32(np.expm1(np.float64(x)))


def log_f32(x):
    return F32(np.log(np.float64(x)))


def train_sigmas(num_train_timesteps: int, shift: float, use_dynamic_shifting: bool) -> np.ndarray:
    """The training sigma table [num_train_timesteps] float32, from 1 - 1/N down to 0, shifted unless dynamic.

    The official code builds it in float64, casts to float32, then shifts in float32 arithmetic (the Python
    scalars rounded to float32 first); every operation is mirrored so sigma_max/sigma_min agree bit for bit.
    """
    alphas = np.linspace(1.0, 1.0 / num_train_timesteps, num_train_timesteps)[::-1]
    sigmas = (1.0 - alphas).astype(np.float32)
    if not use_dynamic_shifting:
        sigmas = shift_sigmas_f32(sigmas, shift)
    return sigmas


def shift_sigmas_f32(sigmas: np.ndarray, shift: float) -> np.ndarray:
    """shift * s / (1 + (shift - 1) * s) on a float32 array, evaluated in float32 as torch does."""
    sigmas = sigmas.astype(np.float32, copy=False)
    return (F32(shift) * sigmas) / (F32(1.0) + F32(shift - 1) * sigmas)


def find_step_index(schedule_timesteps: np.ndarray, timestep) -> int:
    """Index of `timestep` in the schedule; the second match if it occurs twice.

    The official schedulers take the second match so that a schedule starting with a repeated timestep does
    not skip a sigma; copied here because it decides where a sampler starts.
    """
    value = scalar_value(timestep)
    if schedule_timesteps.dtype == np.float32:
        value = F32(value)
    matches = np.flatnonzero(schedule_timesteps == value)
    if matches.size == 0:
        raise ValueError(f"timestep {value!r} is not in this scheduler's timesteps {schedule_timesteps.tolist()}; "
                         "pass the values of `scheduler.timesteps` in order (or call set_begin_index)")
    return int(matches[1] if matches.size > 1 else matches[0])


def check_num_steps(num_steps, what: str = "num_inference_steps") -> int:
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"{what} must be an integer >= 1, got {num_steps!r}")
    return int(num_steps)


def check_shift(shift) -> float:
    if isinstance(shift, bool) or not isinstance(shift, (int, float, np.floating, np.integer)) \
            or not np.isfinite(shift) or shift <= 0:
        raise ValueError(f"shift must be a finite number > 0 (the official configs use 5.0 or 12.0), got {shift!r}")
    return float(shift)


class StepIndexMixin:
    """The diffusers-style read-only step bookkeeping every solver exposes (``config`` is the solver itself)."""

    @property
    def config(self):
        return self

    @property
    def step_index(self):
        """Index of the next step into `timesteps`; None until the first `step`."""
        return self._step_index

    @property
    def begin_index(self):
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0):
        self._begin_index = begin_index


class FlowMultistepBase(StepIndexMixin):
    """Schedule and bookkeeping shared by FlowUniPCMultistepScheduler and FlowDPMSolverMultistepScheduler.

    Public attributes as in the official schedulers: `timesteps` [S] int64 (after set_timesteps), `sigmas`
    [S + 1] float32 ending at 0, `num_inference_steps`, `sigma_min`/`sigma_max` (of the training table),
    `config` (this object itself, so `scheduler.config.shift` works as in diffusers), `order` = 1.
    """
    order = 1

    def __init__(self, num_train_timesteps: int, solver_order: int, shift: float, use_dynamic_shifting: bool,
                 lower_order_final: bool, final_sigmas_type: str, prediction_type: str):
        check_num_steps(num_train_timesteps, "num_train_timesteps")
        check_num_steps(solver_order, "solver_order")
        if prediction_type != "flow_prediction":
            raise ValueError(f"prediction_type {prediction_type!r} is not supported; flow-matching models use "
                             "'flow_prediction'")
        if final_sigmas_type != "zero":
            raise ValueError(f"final_sigmas_type {final_sigmas_type!r} is not supported; use 'zero' (the only "
                             "value the official flow solvers can run with)")
        self.num_train_timesteps = int(num_train_timesteps)
        self.solver_order = int(solver_order)
        self.shift = check_shift(shift)
        self.use_dynamic_shifting = bool(use_dynamic_shifting)
        self.lower_order_final = bool(lower_order_final)
        self.final_sigmas_type = final_sigmas_type
        self.prediction_type = prediction_type

        self.sigmas = train_sigmas(self.num_train_timesteps, shift, self.use_dynamic_shifting)
        self.timesteps = self.sigmas * F32(self.num_train_timesteps)
        self.sigma_min = float(self.sigmas[-1])
        self.sigma_max = float(self.sigmas[0])
        self.num_inference_steps = None
        self._reset_state()

    def _reset_state(self):
        self.model_outputs = [None] * self.solver_order
        self.lower_order_nums = 0
        self._step_index = None
        self._begin_index = None

    def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None, shift=None):
        """Build the sampling schedule. `device` is accepted for signature compatibility and ignored.

        Either `num_inference_steps` (sigmas spaced linearly from sigma_max to sigma_min, then shifted) or
        explicit `sigmas` [S] (then shifted by the scheduler's own shift, 1 in the official pipelines).
        """
        if self.use_dynamic_shifting and mu is None:
            raise ValueError("mu is required when use_dynamic_shifting=True; pass set_timesteps(..., mu=...)")
        if sigmas is None:
            steps = check_num_steps(num_inference_steps)
            sigmas = np.linspace(self.sigma_max, self.sigma_min, steps + 1)[:-1]
        else:
            sigmas = np.asarray(sigmas)
            if not np.issubdtype(sigmas.dtype, np.floating):
                sigmas = sigmas.astype(np.float64)
            if sigmas.ndim != 1 or sigmas.size < 1:
                raise ValueError(f"sigmas must be a non-empty 1-D sequence, got shape {sigmas.shape}")
        with np.errstate(divide="ignore"):
            if self.use_dynamic_shifting:
                scale = float(np.exp(mu))
                sigmas = scale / (scale + (1 / sigmas - 1) ** 1.0)
            else:
                shift = self.shift if shift is None else check_shift(shift)
                sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
        # int64 truncation of sigma * N is what the official pipelines feed to the model as t.
        self.timesteps = (sigmas * self.num_train_timesteps).astype(np.int64)
        self.sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)
        self.num_inference_steps = len(self.timesteps)
        self._reset_state()

    def _begin_step(self, timestep):
        if self.num_inference_steps is None:
            raise ValueError("set_timesteps must be called before step")
        if self._step_index is None:
            self._step_index = (find_step_index(self.timesteps, timestep) if self._begin_index is None
                                else self._begin_index)
        if self._step_index >= self.num_inference_steps:
            raise ValueError(f"all {self.num_inference_steps} steps were already taken; call set_timesteps "
                             "again to start a new trajectory")

    def _push_model_output(self, converted: np.ndarray):
        self.model_outputs = self.model_outputs[1:] + [converted]

    def scale_model_input(self, sample, *args, **kwargs):
        return sample

    def __len__(self):
        return self.num_train_timesteps
