"""Flow-matching DPM-Solver++ (multistep), numpy port of the official Wan2.2 `FlowDPMSolverMultistepScheduler`.

Same public names and `set_timesteps` / `step` semantics as the official module (wan/utils/fm_solvers.py), with
numpy state instead of torch. Only the deterministic `dpmsolver++` algorithm is provided (the one every official
pipeline uses); every intermediate keeps the official dtype (float64 schedule, float32 sigmas and sample
maths) so a trajectory matches the PyTorch one to float32 rounding.

Also here: `get_sampling_sigmas` and `retrieve_timesteps` (how the official pipelines set DPM++ up) and
`make_scheduler`, the one entry point the denoise loop uses for every solver.
"""
import inspect

import numpy as np

from .euler import EulerScheduler
from .fm_solvers_unipc import FlowUniPCMultistepScheduler
from .solver_common import (F32, FlowMultistepBase, SchedulerOutput, check_num_steps, check_shift, exp_f32,
                            flow_lambda, like, to_numpy)

SOLVER_NAMES = ("unipc", "dpm++", "euler")


def get_sampling_sigmas(sampling_steps: int, shift: float) -> np.ndarray:
    """[sampling_steps] float64 sigmas from 1 (pure noise) down to 1/steps, shifted: shift*s / (1 + (shift-1)*s)."""
    steps = check_num_steps(sampling_steps, "sampling_steps")
    shift = check_shift(shift)
    sigma = np.linspace(1, 0, steps + 1)[:steps]
    return shift * sigma / (1 + (shift - 1) * sigma)


def retrieve_timesteps(scheduler, num_inference_steps=None, device=None, timesteps=None, sigmas=None, **kwargs):
    """Call `scheduler.set_timesteps` with a step count, explicit sigmas or explicit timesteps.

    Returns (scheduler.timesteps, number of steps), as the official helper does.
    """
    if timesteps is not None and sigmas is not None:
        raise ValueError("pass either timesteps or sigmas to retrieve_timesteps, not both")
    accepted = set(inspect.signature(scheduler.set_timesteps).parameters)
    if timesteps is not None:
        if "timesteps" not in accepted:
            raise ValueError(f"{type(scheduler).__name__}.set_timesteps takes no custom timesteps; pass sigmas "
                             "or num_inference_steps instead")
        scheduler.set_timesteps(timesteps=timesteps, device=device, **kwargs)
        return scheduler.timesteps, len(scheduler.timesteps)
    if sigmas is not None:
        if "sigmas" not in accepted:
            raise ValueError(f"{type(scheduler).__name__}.set_timesteps takes no custom sigmas; pass "
                             "num_inference_steps instead")
        scheduler.set_timesteps(sigmas=sigmas, device=device, **kwargs)
        return scheduler.timesteps, len(scheduler.timesteps)
    scheduler.set_timesteps(num_inference_steps, device=device, **kwargs)
    return scheduler.timesteps, num_inference_steps


class FlowDPMSolverMultistepScheduler(FlowMultistepBase):
    """Multistep DPM-Solver++ on the flow-matching path x_s = (1 - s) x0 + s noise, model predicting v.

    The model output v is turned into a data prediction x0 = x - sigma * v; DPM-Solver++ then integrates in
    log-SNR lambda = log((1 - s) / s). Samples are [B, C, F, H, W] (any shape works; the maths is elementwise).
    """

    def __init__(self, num_train_timesteps: int = 1000, solver_order: int = 2,
                 prediction_type: str = "flow_prediction", shift: float = 1.0, use_dynamic_shifting: bool = False,
                 algorithm_type: str = "dpmsolver++", solver_type: str = "midpoint", lower_order_final: bool = True,
                 euler_at_final: bool = False, final_sigmas_type: str = "zero"):
        if algorithm_type != "dpmsolver++":
            raise ValueError(f"algorithm_type {algorithm_type!r} is not supported by this port; use 'dpmsolver++' "
                             "(the one the official Wan pipelines use)")
        if solver_type not in ("midpoint", "heun"):
            raise ValueError(f"solver_type {solver_type!r} is not supported; use 'midpoint' or 'heun'")
        if solver_order not in (1, 2, 3):
            raise ValueError(f"solver_order must be 1, 2 or 3 for DPM-Solver++, got {solver_order!r}")
        super().__init__(num_train_timesteps, solver_order, shift, use_dynamic_shifting, lower_order_final,
                         final_sigmas_type, prediction_type)
        self.algorithm_type = algorithm_type
        self.solver_type = solver_type
        self.euler_at_final = bool(euler_at_final)

    def convert_model_output(self, model_output: np.ndarray, sample: np.ndarray) -> np.ndarray:
        """Data prediction x0 = sample - sigma * v at the current step (float32, shape of `sample`)."""
        sigma = self.sigmas[self._step_index]
        return sample - sigma * model_output

    def _first_order(self, x0: np.ndarray, sample: np.ndarray) -> np.ndarray:
        i = self._step_index
        sigma_t, sigma_s = self.sigmas[i + 1], self.sigmas[i]
        alpha_t = F32(F32(1.0) - sigma_t)
        h = F32(flow_lambda(sigma_t) - flow_lambda(sigma_s))
        decay = F32(exp_f32(-h) - F32(1.0))
        return F32(sigma_t / sigma_s) * sample - F32(alpha_t * decay) * x0

    def _second_order(self, sample: np.ndarray) -> np.ndarray:
        i = self._step_index
        sigma_t, sigma_s0, sigma_s1 = self.sigmas[i + 1], self.sigmas[i], self.sigmas[i - 1]
        alpha_t = F32(F32(1.0) - sigma_t)
        lambda_t, lambda_s0, lambda_s1 = flow_lambda(sigma_t), flow_lambda(sigma_s0), flow_lambda(sigma_s1)
        m0, m1 = self.model_outputs[-1], self.model_outputs[-2]
        h = F32(lambda_t - lambda_s0)
        ratio = F32(F32(lambda_s0 - lambda_s1) / h)
        d0 = m0
        d1 = F32(F32(1.0) / ratio) * (m0 - m1)
        decay = F32(exp_f32(-h) - F32(1.0))
        base = F32(sigma_t / sigma_s0) * sample - F32(alpha_t * decay) * d0
        if self.solver_type == "midpoint":
            return base - F32(F32(0.5) * F32(alpha_t * decay)) * d1
        return base + F32(alpha_t * F32(F32(decay / h) + F32(1.0))) * d1

    def _third_order(self, sample: np.ndarray) -> np.ndarray:
        i = self._step_index
        sigma_t, sigma_s0 = self.sigmas[i + 1], self.sigmas[i]
        lambda_t = flow_lambda(sigma_t)
        lambda_s0, lambda_s1, lambda_s2 = (flow_lambda(self.sigmas[i - k]) for k in range(3))
        alpha_t = F32(F32(1.0) - sigma_t)
        m0, m1, m2 = self.model_outputs[-1], self.model_outputs[-2], self.model_outputs[-3]
        h = F32(lambda_t - lambda_s0)
        r0 = F32(F32(lambda_s0 - lambda_s1) / h)
        r1 = F32(F32(lambda_s1 - lambda_s2) / h)
        d1_0 = F32(F32(1.0) / r0) * (m0 - m1)
        d1_1 = F32(F32(1.0) / r1) * (m1 - m2)
        r_sum = F32(r0 + r1)
        d1 = d1_0 + F32(r0 / r_sum) * (d1_0 - d1_1)
        d2 = F32(F32(1.0) / r_sum) * (d1_0 - d1_1)
        decay = F32(exp_f32(-h) - F32(1.0))
        c1 = F32(alpha_t * F32(F32(decay / h) + F32(1.0)))
        c2 = F32(alpha_t * F32(F32(F32(decay + h) / F32(h * h)) - F32(0.5)))
        return (F32(sigma_t / sigma_s0) * sample - F32(alpha_t * decay) * m0) + c1 * d1 - c2 * d2

    def step(self, model_output, timestep, sample, generator=None, variance_noise=None, return_dict: bool = True):
        """Advance `sample` from timesteps[i] to the next sigma.

        Args:
            model_output: v predicted at (sample, timestep), same shape as `sample` (e.g. [1, C, F, H, W]).
            timestep: the current element of `timesteps` (int64), as the pipelines pass it.
            sample: current latents, numpy array or MindSpore Tensor.
            generator, variance_noise: accepted for signature compatibility; unused (deterministic solver).
        Returns:
            (prev_sample,) if not return_dict else SchedulerOutput(prev_sample); same kind as `sample`, in the
            dtype of `model_output` as in the official code.
        """
        self._begin_step(timestep)
        output_np = to_numpy(model_output)
        out_dtype = output_np.dtype
        sample32 = to_numpy(sample).astype(np.float32, copy=False)
        output32 = output_np.astype(np.float32, copy=False)
        if output32.shape != sample32.shape:
            raise ValueError(f"model_output shape {output32.shape} differs from sample shape {sample32.shape}")

        i, count = self._step_index, len(self.timesteps)
        final_low_order = i == count - 1 and (self.euler_at_final or (self.lower_order_final and count < 15)
                                              or self.final_sigmas_type == "zero")
        second_low_order = i == count - 2 and self.lower_order_final and count < 15

        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            x0 = self.convert_model_output(output32, sample32)
            self._push_model_output(x0)
            if self.solver_order == 1 or self.lower_order_nums < 1 or final_low_order:
                prev = self._first_order(x0, sample32)
            elif self.solver_order == 2 or self.lower_order_nums < 2 or second_low_order:
                prev = self._second_order(sample32)
            else:
                prev = self._third_order(sample32)

        self.lower_order_nums = min(self.lower_order_nums + 1, self.solver_order)
        self._step_index += 1
        prev = like(prev.astype(out_dtype, copy=False), sample)
        return SchedulerOutput(prev) if return_dict else (prev,)


def make_scheduler(name: str, num_steps: int, shift: float, num_train_timesteps: int = 1000):
    """Build a solver the way the official pipelines do and return (scheduler, timesteps).

    name: "unipc" (official default), "dpm++", or "euler" (Wan2.2-Lightning's 4-step LoRA sampler).
    timesteps: what the loop feeds to the model, one per step: [num_steps] int64 for unipc/dpm++
    (truncated sigma * N), [num_steps] float32 for euler (its final 0 is dropped, as Lightning's loop does).
    The expert switch compares these values with boundary * num_train_timesteps (t >= boundary: high noise).
    """
    if name not in SOLVER_NAMES:
        raise ValueError(f"unknown solver {name!r}; valid names are {', '.join(SOLVER_NAMES)}")
    num_steps = check_num_steps(num_steps, "num_steps")
    shift = check_shift(shift)
    check_num_steps(num_train_timesteps, "num_train_timesteps")
    if name == "unipc":
        scheduler = FlowUniPCMultistepScheduler(num_train_timesteps=num_train_timesteps, shift=1,
                                                use_dynamic_shifting=False)
        scheduler.set_timesteps(num_steps, shift=shift)
        return scheduler, scheduler.timesteps
    if name == "dpm++":
        scheduler = FlowDPMSolverMultistepScheduler(num_train_timesteps=num_train_timesteps, shift=1,
                                                    use_dynamic_shifting=False)
        timesteps, _ = retrieve_timesteps(scheduler, sigmas=get_sampling_sigmas(num_steps, shift))
        return scheduler, timesteps
    scheduler = EulerScheduler(num_train_timesteps=num_train_timesteps, shift=shift)
    scheduler.set_timesteps(num_steps)
    return scheduler, scheduler.timesteps[:-1].copy()
