"""Flow-matching Euler solver of the Wan2.2-Lightning release (its `EulerScheduler`), in numpy.

Lightning's 4-step LoRAs were distilled with this sampler (ModelTC/Wan2.2-Lightning,
wan/utils/fm_solvers_euler.py). Its schedule is float32 throughout: timesteps linspace(N, 0, steps + 1),
sigmas = shift(timesteps / N), timesteps = sigmas * N. Unlike UniPC/DPM++, the timesteps given to the model are
these float32 values (not truncated to integers), and the pipelines drop the final 0 from the loop.
"""
import numpy as np

from .solver_common import F32, SchedulerOutput, StepIndexMixin, check_num_steps, check_shift, find_step_index, like, \
    shift_sigmas_f32, to_numpy


class EulerScheduler(StepIndexMixin):
    """x_next = x + (sigma_next - sigma) * v, on a shifted linear schedule.

    Attributes: `timesteps` [S + 1] float32 ending at 0, `sigmas` [S + 1] float32 ending at 0,
    `num_train_timesteps`, `shift` (read-only here; use `set_shift`), `order` = 1.
    """
    order = 1

    def __init__(self, num_train_timesteps: int = 1000, shift: float = 1.0, device=None):
        self.num_train_timesteps = check_num_steps(num_train_timesteps, "num_train_timesteps")
        self._shift = check_shift(shift)
        self.init_noise_sigma = 1.0
        self.device = device
        # As in Lightning: a scheduler is usable (with one step per training timestep) before set_timesteps.
        self.set_timesteps(self.num_train_timesteps)

    @property
    def shift(self) -> float:
        return self._shift

    def set_shift(self, shift: float = 1.0):
        """Re-shift the current schedule: sigmas = shift * s / (1 + (shift - 1) * s) with s = timesteps_ori / N."""
        shift = check_shift(shift)
        self.sigmas = shift_sigmas_f32(self.timesteps_ori / F32(self.num_train_timesteps), shift)
        self.timesteps = self.sigmas * F32(self.num_train_timesteps)
        self._shift = shift

    def set_timesteps(self, num_inference_steps: int, device=None):
        """Build `steps + 1` float32 timesteps/sigmas from N down to 0. `device` is accepted and ignored."""
        steps = check_num_steps(num_inference_steps)
        self.timesteps_ori = np.linspace(self.num_train_timesteps, 0, steps + 1, dtype=np.float32)
        self.num_inference_steps = steps
        self.set_shift(self._shift)
        self._step_index = None
        self._begin_index = None

    def scale_model_input(self, sample, *args, **kwargs):
        return sample

    def step(self, model_output, timestep, sample, return_dict: bool = True, generator=None, **kwargs):
        """One Euler step from sigmas[i] to sigmas[i + 1].

        Args:
            model_output: v predicted at (sample, timestep), same shape as `sample` (e.g. [1, C, F, H, W]).
            timestep: the current element of `timesteps` (a float; integers are refused as in Lightning, which
                guards against passing loop indices).
            sample: current latents, numpy array or MindSpore Tensor.
        Returns:
            (prev_sample,) if not return_dict else SchedulerOutput(prev_sample); same kind as `sample`, float32.
            (Lightning's step returns the bare tensor and its loop indexes it with [0]; the tuple keeps one
            calling convention for all solvers and gives the same latents after the loop's squeeze(0).)
        """
        value = to_numpy(timestep)
        if isinstance(timestep, (bool, int, np.integer)) or np.issubdtype(value.dtype, np.integer):
            raise ValueError(f"timestep {timestep!r} is an integer; pass an element of scheduler.timesteps "
                             "(float32), not a loop index")
        if self._step_index is None:
            self._step_index = (find_step_index(self.timesteps, timestep) if self._begin_index is None
                                else self._begin_index)
        if self._step_index + 1 >= len(self.sigmas):
            raise ValueError(f"all {len(self.sigmas) - 1} steps were already taken; call set_timesteps again to "
                             "start a new trajectory")
        sample32 = to_numpy(sample).astype(np.float32, copy=False)
        output32 = to_numpy(model_output).astype(np.float32, copy=False)
        if output32.shape != sample32.shape:
            raise ValueError(f"model_output shape {output32.shape} differs from sample shape {sample32.shape}")
        sigma, sigma_next = self.sigmas[self._step_index], self.sigmas[self._step_index + 1]
        prev = sample32 + F32(sigma_next - sigma) * output32
        self._step_index += 1
        prev = like(prev, sample)
        return SchedulerOutput(prev) if return_dict else (prev,)
