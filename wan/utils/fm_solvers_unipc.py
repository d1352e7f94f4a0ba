"""Flow-matching UniPC (multistep predictor-corrector), numpy port of the official `FlowUniPCMultistepScheduler`.

The official default solver of Wan2.2. Same public names and `set_timesteps` / `step` semantics as the
official module (wan/utils/fm_solvers_unipc.py) with numpy state: float64 schedule, float32 sigmas, float32
scalar and sample maths, so a trajectory matches the PyTorch one to float32 rounding. Provided: the data
prediction form (predict_x0=True) with the bh2 B(h), any solver order, optional disabled corrector
steps; not provided: `solver_p`, thresholding.
"""
import numpy as np

from .solver_common import F32, expm1_f32, FlowMultistepBase, SchedulerOutput, flow_lambda, like, to_numpy


class FlowUniPCMultistepScheduler(FlowMultistepBase):
    """UniPC on the flow-matching path x_s = (1 - s) x0 + s noise, model predicting v.

    Each `step` first corrects the sample it is given (UniC, using the model output just computed at that
    sample) and then predicts the next one (UniP). Samples are [B, C, F, H, W] (any shape works).
    """

    def __init__(self, num_train_timesteps: int = 1000, solver_order: int = 2,
                 prediction_type: str = "flow_prediction", shift: float = 1.0, use_dynamic_shifting: bool = False,
                 predict_x0: bool = True, solver_type: str = "bh2", lower_order_final: bool = True,
                 disable_corrector=(), final_sigmas_type: str = "zero"):
        if not predict_x0:
            raise ValueError("predict_x0=False is not supported by this port; use predict_x0=True (the default "
                             "of the official pipelines)")
        if solver_type != "bh2":
            # The official bh1 variant returns NaN on the final step to sigma 0 (B(h) = -inf times 0).
            raise ValueError(f"solver_type {solver_type!r} is not supported; use 'bh2' (the official default)")
        self.predict_x0 = True
        self.solver_type = solver_type
        self.disable_corrector = tuple(disable_corrector)
        super().__init__(num_train_timesteps, solver_order, shift, use_dynamic_shifting, lower_order_final,
                         final_sigmas_type, prediction_type)

    def _reset_state(self):
        super()._reset_state()
        self.timestep_list = [None] * self.solver_order
        self.last_sample = None
        self.this_order = None

    def convert_model_output(self, model_output: np.ndarray, sample: np.ndarray) -> np.ndarray:
        """Data prediction x0 = sample - sigma * v at the current step (float32, shape of `sample`)."""
        sigma = self.sigmas[self._step_index]
        return sample - sigma * model_output

    def _bh_coefficients(self, h, rks, order):
        """phi-function coefficients of UniPC for step size h in lambda.

        Returns h_phi_1 = expm1(-h), B(h), the Vandermonde matrix R [order, order] of the ratios rks, and the
        right-hand side b [order], all float32 as the official code computes them.
        """
        hh = F32(-h)
        h_phi_1 = expm1_f32(hh)
        h_phi_k = F32(F32(h_phi_1 / hh) - F32(1.0))
        b_h = expm1_f32(hh)  # B(h) of the bh2 variant
        ratios = np.asarray(rks, dtype=np.float32)
        rows, rhs = [], []
        factorial = 1
        for i in range(1, order + 1):
            rows.append(ratios ** (i - 1))
            rhs.append(F32(F32(h_phi_k * F32(factorial)) / b_h))
            factorial *= i + 1
            h_phi_k = F32(F32(h_phi_k / hh) - F32(1 / factorial))
        return h_phi_1, b_h, np.stack(rows), np.asarray(rhs, dtype=np.float32)

    def _history_differences(self, step_of_m0: int, lambda_s0, h, order):
        """Ratios r_k = (lambda_{s_k} - lambda_{s_0}) / h and divided differences (m_k - m_0) / r_k, k < order."""
        m0 = self.model_outputs[-1]
        rks, diffs = [], []
        for k in range(1, order):
            lambda_sk = flow_lambda(self.sigmas[step_of_m0 - k])
            rk = F32(F32(lambda_sk - lambda_s0) / h)
            rks.append(rk)
            diffs.append((self.model_outputs[-(k + 1)] - m0) / rk)
        rks.append(F32(1.0))
        return rks, diffs

    def _predict(self, sample: np.ndarray, order: int) -> np.ndarray:
        """UniP: extrapolate from sigmas[i] to sigmas[i + 1] with the last `order` data predictions."""
        i = self._step_index
        sigma_t, sigma_s0 = self.sigmas[i + 1], self.sigmas[i]
        alpha_t = F32(F32(1.0) - sigma_t)
        lambda_s0 = flow_lambda(sigma_s0)
        h = F32(flow_lambda(sigma_t) - lambda_s0)
        rks, diffs = self._history_differences(i, lambda_s0, h, order)
        h_phi_1, b_h, rows, rhs = self._bh_coefficients(h, rks, order)
        m0 = self.model_outputs[-1]
        x_t = F32(sigma_t / sigma_s0) * sample - F32(alpha_t * h_phi_1) * m0
        if diffs:
            # Order 2 uses the fixed weight 1/2 instead of solving the 1x1 system, as the official code does.
            rhos = (np.asarray([0.5], dtype=np.float32) if order == 2
                    else np.linalg.solve(rows[:-1, :-1], rhs[:-1]).astype(np.float32))
            pred_res = rhos[0] * diffs[0]
            for rho, diff in zip(rhos[1:], diffs[1:]):
                pred_res = pred_res + rho * diff
            x_t = x_t - F32(alpha_t * b_h) * pred_res
        return x_t

    def _correct(self, model_t: np.ndarray, last_sample: np.ndarray, this_sample: np.ndarray,
                 order: int) -> np.ndarray:
        """UniC: redo the last step from `last_sample` using also the new data prediction `model_t`."""
        i = self._step_index
        sigma_t, sigma_s0 = self.sigmas[i], self.sigmas[i - 1]
        alpha_t = F32(F32(1.0) - sigma_t)
        lambda_s0 = flow_lambda(sigma_s0)
        h = F32(flow_lambda(sigma_t) - lambda_s0)
        rks, diffs = self._history_differences(i - 1, lambda_s0, h, order)
        h_phi_1, b_h, rows, rhs = self._bh_coefficients(h, rks, order)
        rhos = (np.asarray([0.5], dtype=np.float32) if order == 1
                else np.linalg.solve(rows, rhs).astype(np.float32))
        m0 = self.model_outputs[-1]
        x_t = F32(sigma_t / sigma_s0) * last_sample - F32(alpha_t * h_phi_1) * m0
        correction = rhos[-1] * (model_t - m0)
        if diffs:
            corr_res = rhos[0] * diffs[0]
            for rho, diff in zip(rhos[1:-1], diffs[1:]):
                corr_res = corr_res + rho * diff
            correction = corr_res + correction
        return x_t - F32(alpha_t * b_h) * correction

    def step(self, model_output, timestep, sample, return_dict: bool = True, generator=None):
        """Correct `sample` with the new model output, then predict the sample at the next sigma.

        Args:
            model_output: v predicted at (sample, timestep), same shape as `sample` (e.g. [1, C, F, H, W]).
            timestep: the current element of `timesteps` (int64), as the pipelines pass it.
            sample: current latents, numpy array or MindSpore Tensor.
            generator: accepted for signature compatibility; unused.
        Returns:
            (prev_sample,) if not return_dict else SchedulerOutput(prev_sample); same kind and dtype as `sample`.
        """
        self._begin_step(timestep)
        sample_np = to_numpy(sample)
        out_dtype = sample_np.dtype
        sample32 = sample_np.astype(np.float32, copy=False)
        output32 = to_numpy(model_output).astype(np.float32, copy=False)
        if output32.shape != sample32.shape:
            raise ValueError(f"model_output shape {output32.shape} differs from sample shape {sample32.shape}")

        i = self._step_index
        use_corrector = i > 0 and (i - 1) not in self.disable_corrector and self.last_sample is not None
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            converted = self.convert_model_output(output32, sample32)
            if use_corrector:
                sample32 = self._correct(converted, self.last_sample, sample32, self.this_order)
            self._push_model_output(converted)
            self.timestep_list = self.timestep_list[1:] + [timestep]
            order = (min(self.solver_order, len(self.timesteps) - i) if self.lower_order_final
                     else self.solver_order)
            # Warm-up: a multistep method cannot use more history than it has.
            self.this_order = min(order, self.lower_order_nums + 1)
            self.last_sample = sample32
            prev = self._predict(sample32, self.this_order)

        self.lower_order_nums = min(self.lower_order_nums + 1, self.solver_order)
        self._step_index += 1
        prev = like(prev.astype(out_dtype, copy=False), sample)
        return SchedulerOutput(prev) if return_dict else (prev,)
