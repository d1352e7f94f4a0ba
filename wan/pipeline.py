"""One generation pipeline for every task: components, conditions, one denoising loop, decode.

Tasks differ only in their conditions, built by the task's builder in ``wan.tasks`` (text-only noise for t2v, an
image latent + first-frame mask as ``y`` for i2v-A14B, a frozen first latent frame with per-token timesteps for
ti2v-5B with an image). The loop (``denoise``) is shared and task-blind: expert choice at the boundary,
classifier-free guidance (skipped at scale 1.0), solver step, progress; it reads the conditions only through
``timestep``, ``constrain`` and ``model_kwargs``.
"""
from __future__ import annotations

import logging
import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .placement.offload import Offloader
from .configs import TaskConfig
from .tasks import Conditions, get_builder

log = logging.getLogger("wan")


# -------------------------------------------------------------------------------------------- noise

def make_noise(shape: Sequence[int], seed: int) -> np.ndarray:
    """Standard normal float32 noise from a seeded PCG64 generator (same seed -> same noise everywhere)."""
    return np.random.default_rng(seed).standard_normal(tuple(shape), dtype=np.float32)


# ---------------------------------------------------------------------------------------------- loop

@dataclass
class Expert:
    """A denoiser with the guide scale it uses and the timestep range it serves."""
    model: object
    guide_scale: float
    name: str = "dit"


@dataclass
class StepTiming:
    """Seconds per denoising step and the number of DiT forward passes run."""
    times: List[float] = field(default_factory=list)
    forwards: int = 0


def choose_expert(t: float, experts: Dict[str, Expert], boundary: Optional[float]) -> Expert:
    """High-noise expert while t >= boundary (in timestep units), then the low-noise one."""
    if boundary is None:
        return experts["dit"]
    return experts["high_noise"] if t >= boundary else experts["low_noise"]


def denoise(latent: np.ndarray, timesteps: Sequence, scheduler, experts: Dict[str, Expert],
            boundary: Optional[float], context, context_null, cond: Conditions,
            on_expert: Optional[Callable[[Expert], None]] = None, progress: bool = True,
            timing: Optional[StepTiming] = None) -> np.ndarray:
    """Run the sampler from ``latent`` ([C, F, h, w] float32) to the clean latent.

    Args:
        timesteps: one model timestep per step (what the solver's set-up returned).
        experts: {"dit": Expert} or {"high_noise": Expert, "low_noise": Expert}.
        boundary: expert switch in timestep units (boundary * num_train_timesteps), None for one model.
        context / context_null: lists with one [L, text_dim] Tensor (prompt / negative prompt).
        cond: the task's conditions (wan.tasks): ``seq_len``, ``model_kwargs`` for every DiT call,
            ``timestep(t)`` (the model's t: [1] or per token [1, seq_len]) and ``constrain(latent)`` (applied to
            the start latent and after every step).
        on_expert: called with the expert before it runs (the offload policy moves weights here).
    """
    from mindspore import Tensor
    from tqdm import tqdm

    latent = cond.constrain(latent)
    extras = cond.model_kwargs
    extras_null = cond.model_kwargs if cond.model_kwargs_null is None else cond.model_kwargs_null
    steps = tqdm(list(timesteps), desc="denoising", unit="step", disable=not progress, file=sys.stdout)
    for t in steps:
        start = time.perf_counter()
        t_value = float(t)
        expert = choose_expert(t_value, experts, boundary)
        if on_expert is not None:
            on_expert(expert)
        t_model = Tensor(cond.timestep(t_value))
        x = [Tensor(latent)]
        cond_pred = expert.model(x, t=t_model, context=context, seq_len=cond.seq_len, **extras)[0]
        if expert.guide_scale == 1.0:
            noise_pred = cond_pred.asnumpy()
        else:
            uncond = expert.model(x, t=t_model, context=context_null, seq_len=cond.seq_len,
                                  **extras_null)[0].asnumpy()
            noise_pred = uncond + np.float32(expert.guide_scale) * (cond_pred.asnumpy() - uncond)
        latent = scheduler.step(noise_pred[None], t, latent[None], return_dict=False)[0][0]
        latent = cond.constrain(np.asarray(latent, np.float32))
        if timing is not None:
            timing.times.append(time.perf_counter() - start)
            timing.forwards += 1 if expert.guide_scale == 1.0 else 2
        steps.set_postfix(expert=expert.name, t=f"{t_value:.1f}")
    return latent


# ----------------------------------------------------------------------------------------- components

def checkpoint_files(task: TaskConfig, ckpt_dir: str) -> Dict[str, str]:
    """The files/folders a task needs inside ``ckpt_dir`` (official layout), by role."""
    files = {"t5": os.path.join(ckpt_dir, task.t5_checkpoint),
             "tokenizer": os.path.join(ckpt_dir, task.t5_tokenizer),
             "vae": os.path.join(ckpt_dir, task.vae_checkpoint)}
    if task.two_experts:
        files["high_noise"] = os.path.join(ckpt_dir, task.high_noise_checkpoint)
        files["low_noise"] = os.path.join(ckpt_dir, task.low_noise_checkpoint)
    else:
        files["dit"] = ckpt_dir
    if task.audio_encoder:
        files["audio"] = os.path.join(ckpt_dir, task.audio_encoder)
    return files


def check_checkpoint_dir(task: TaskConfig, ckpt_dir: str) -> Dict[str, str]:
    """Fail fast, naming every missing file, before anything is loaded."""
    if not ckpt_dir or not os.path.isdir(ckpt_dir):
        raise ValueError(f"--ckpt_dir {ckpt_dir!r} is not a folder; download Wan2.2-{task.name.split('-')[1]} "
                         f"(Hugging Face / ModelScope) and pass its folder")
    files = checkpoint_files(task, ckpt_dir)
    missing = []
    for role, path in files.items():
        if role in ("tokenizer",) and not os.path.isdir(path):
            missing.append(path + "/ (tokenizer folder)")
        elif role in ("dit", "high_noise", "low_noise", "audio"):
            if not os.path.isfile(os.path.join(path, "config.json")):
                missing.append(os.path.join(path, "config.json"))
        elif role in ("t5", "vae") and not os.path.isfile(path) and not _converted(path):
            missing.append(path)
    if missing:
        raise ValueError(f"--ckpt_dir {ckpt_dir!r} is not a complete {task.name} checkpoint; missing: "
                         + ", ".join(missing))
    return files


def _converted(path: str) -> bool:
    """A converted MindSpore file may stand in for an official .pth (same stem, .safetensors: what
    ``python -m convert`` writes)."""
    return os.path.isfile(os.path.splitext(path)[0] + ".safetensors")


def _resolve(path: str) -> str:
    return path if os.path.isfile(path) else os.path.splitext(path)[0] + ".safetensors"


def infer_t5_config(path: str) -> dict:
    """T5Encoder sizes read from the checkpoint's tensor shapes (the official file has no config)."""
    from wan import checkpoint

    ckpt = checkpoint.open_checkpoint(path)
    keys = set(ckpt.keys())
    vocab, dim = ckpt.shape("token_embedding.weight")
    layers = len({k.split(".")[1] for k in keys if k.startswith("blocks.")})
    shared = "pos_embedding.embedding.weight" in keys
    buckets, heads = ckpt.shape("pos_embedding.embedding.weight" if shared
                                else "blocks.0.pos_embedding.embedding.weight")
    return dict(vocab=vocab, dim=dim, dim_attn=ckpt.shape("blocks.0.attn.q.weight")[0],
                dim_ffn=ckpt.shape("blocks.0.ffn.fc1.weight")[0], num_heads=heads, num_layers=layers,
                num_buckets=buckets, shared_pos=shared)


def infer_vae_config(path: str, version: str) -> dict:
    """VAE widths read from the checkpoint (the release sizes give the official defaults)."""
    from wan import checkpoint

    ckpt = checkpoint.open_checkpoint(path)
    config = {"dim": ckpt.shape("encoder.conv1.weight")[0]}
    if version == "2.2":
        config["dec_dim"] = ckpt.shape("decoder.conv1.weight")[0] // 4
    return config


@dataclass
class ParallelHooks:
    """How the multi-device layer plugs into the pipeline (single device: all defaults).

    ``dit_shard`` / ``t5_shard``: (rank, world) to load only this rank's ZeRO3 rows. ``prepare_dit`` /
    ``prepare_t5`` wrap a loaded Cell (ZeRO3 gather, Ulysses plan). ``sequence_multiple``: the token sequence is
    padded to a multiple of it. ``is_main``: this rank decodes and writes outputs.
    """
    dit_shard: Optional[Tuple[int, int]] = None
    t5_shard: Optional[Tuple[int, int]] = None
    prepare_dit: Optional[Callable] = None
    prepare_t5: Optional[Callable] = None
    sequence_multiple: int = 1
    is_main: bool = True


class WanPipeline:
    """Text encoder + VAE + one or two DiT experts for a task, loaded from an official checkpoint folder."""

    def __init__(self, task: TaskConfig, ckpt_dir: str, *, dit_dtype=None, offload_model: bool = False,
                 t5_cpu: bool = False, lora_dir: Optional[str] = None, lora_scale: float = 1.0,
                 parallel: Optional[ParallelHooks] = None, vae_tiled: bool = False):
        import mindspore as ms

        from .modules import kernels
        from .modules.model import WanModel
        from .modules.t5 import T5EncoderModel

        self.task = task
        self.builder = get_builder(task)
        self.parallel = parallel or ParallelHooks()
        self.vae_tiled = vae_tiled
        files = check_checkpoint_dir(task, ckpt_dir)
        on_ascend = kernels.backend() == "ascend"
        if dit_dtype is None:
            dit_dtype = ms.float32
        dit_values = dit_dtype  # --convert_model_dtype: every DiT value rounded to it (official model.to(bf16))
        if self.parallel.dit_shard is not None and on_ascend:  # FSDP MixedPrecision(bf16): every value is bf16
            dit_values = getattr(ms, task.param_dtype)
        if dit_dtype != ms.float32 and not on_ascend:
            dit_dtype = ms.float32  # CPU has no bf16 arithmetic: bf16 values, float32 storage and compute
        if t5_cpu and self.parallel.t5_shard is not None:
            raise ValueError("--t5_cpu and --t5_zero3 exclude each other: choose where T5 lives")
        # the official init_on_cpu: one device without ZeRO3 / Ulysses keeps only the expert in use resident
        self.offload = Offloader(offload_model, swap_experts=self.parallel.dit_shard is None and
                                 self.parallel.t5_shard is None and self.parallel.sequence_multiple == 1)

        t0 = time.perf_counter()
        t5_path = _resolve(files["t5"])
        t5_args = dict(text_len=task.text_len, checkpoint_path=t5_path, tokenizer_path=files["tokenizer"],
                       config=infer_t5_config(t5_path))
        comm = getattr(self.parallel, "world_comm", None)
        if t5_cpu and comm is not None and comm.size > 1:  # one T5 for the job, on rank 0; embeddings broadcast
            from .placement.t5_cpu import CpuTextEncoder, SharedTextEncoder
            self.text_encoder = SharedTextEncoder(comm, lambda: CpuTextEncoder(**t5_args) if on_ascend else
                                                  T5EncoderModel(**t5_args, dtype=None))
        elif t5_cpu and on_ascend:  # a CPU worker process; on a CPU target the encoder is on the CPU already
            from .placement.t5_cpu import CpuTextEncoder
            self.text_encoder = CpuTextEncoder(**t5_args)
        else:
            self.text_encoder = T5EncoderModel(**t5_args, dtype=None, shard=self.parallel.t5_shard,
                                               shard_fn=self.parallel.prepare_t5)
        log.info("text encoder loaded in %.1fs", time.perf_counter() - t0)

        t0 = time.perf_counter()
        vae_path = _resolve(files["vae"])
        vae_dtype = ms.float32  # the official pipelines run both VAEs in float32
        if task.vae_version == "2.1":
            from .modules.vae2_1 import Wan2_1_VAE
            self.vae = Wan2_1_VAE(vae_pth=vae_path, dtype=vae_dtype,
                                  model_config=infer_vae_config(vae_path, "2.1"))
        else:
            from .modules.vae2_2 import Wan2_2_VAE
            self.vae = Wan2_2_VAE(vae_pth=vae_path, dtype=vae_dtype,
                                  model_config=infer_vae_config(vae_path, "2.2"))
        log.info("VAE %s loaded in %.1fs", task.vae_version, time.perf_counter() - t0)

        dit_class = WanModel
        self.audio_encoder = None
        if task.kind == "s2v":
            from .modules.s2v.audio_encoder import AudioEncoder
            from .modules.s2v.model_s2v import WanModel_S2V

            dit_class = WanModel_S2V
            t0 = time.perf_counter()
            self.audio_encoder = AudioEncoder(model_id=files["audio"])
            log.info("audio encoder loaded in %.1fs", time.perf_counter() - t0)

        lora_files = find_lora_files(task, lora_dir) if lora_dir else {}
        self.experts: Dict[str, Expert] = {}
        roles = ("high_noise", "low_noise") if task.two_experts else ("dit",)
        for role in roles:
            t0 = time.perf_counter()
            lora = None
            if role in lora_files:  # merged while loading: float32 base + delta, then one rounding
                from wan.checkpoint.lora import LoraDeltas
                lora = LoraDeltas(lora_files[role], scale=lora_scale)
            model = dit_class.from_pretrained(files[role], dtype=dit_dtype, shard=self.parallel.dit_shard,
                                               value_dtype=dit_values, deltas=lora)
            if lora is not None:
                lora.close()
                log.info("merged LoRA %s into %s (%d weights)", lora_files[role], role, len(lora.applied))
            if on_ascend:  # the official pipeline computes under bf16 autocast whatever the storage dtype
                model.set_compute_dtype(getattr(ms, task.param_dtype))
            if self.parallel.prepare_dit is not None:
                model = self.parallel.prepare_dit(model)
            self.experts[role] = Expert(model=model, guide_scale=0.0, name=role)
            log.info("DiT %s loaded in %.1fs", role, time.perf_counter() - t0)
            self.offload.add_expert(model)
        self.lora = bool(lora_files)

    # ------------------------------------------------------------------------------------ conditions
    def prepare_conditions(self, size: Tuple[int, int], frame_num: int, image=None) -> Conditions:
        """The task builder's conditions. ``size`` is (width, height), an area's shape for i2v / ti2v images."""
        return self.builder.build(size, frame_num, image, encode=self._encode,
                                  seq_multiple=self.parallel.sequence_multiple)

    def _encode(self, video: np.ndarray) -> np.ndarray:
        """VAE-encode [3, F, H, W] in [-1, 1] -> [C, f, h, w] float32, with the VAE resident for the call."""
        from mindspore import Tensor

        self.offload.use(self.vae.model, *self._dits())
        return self.vae.encode([Tensor(video)], tiled=self.vae_tiled)[0].asnumpy()

    def _dits(self):
        return [e.model for e in self.experts.values()]

    # -------------------------------------------------------------------------------------- generate
    def encode_text(self, prompt: str, n_prompt: str):
        self.offload.use(self.text_encoder.model, *self._dits())
        return self.text_encoder([prompt]), self.text_encoder([n_prompt])

    def generate(self, prompt: str, *, size: Tuple[int, int], frame_num: int, shift: float,
                 sample_solver: str = "unipc", sampling_steps: int = 50, guide_scale=5.0, n_prompt: str = "",
                 seed: int = -1, image=None, noise: Optional[np.ndarray] = None, progress: bool = True,
                 timings: Optional[dict] = None) -> Optional[np.ndarray]:
        """Generate one video. Returns float32 [3, F, H, W] in [-1, 1] on the main rank, None elsewhere.

        ``size`` is (width, height); for i2v / ti2v with an image it is the target area's shape and the
        aspect ratio follows the image. ``noise`` overrides the seeded initial noise (same shape as the latent).
        ``guide_scale`` is a float or (low-noise, high-noise).
        """
        from .utils.fm_solvers import make_scheduler

        task = self.task
        scales = (guide_scale, guide_scale) if np.isscalar(guide_scale) else tuple(guide_scale)
        if task.two_experts:
            self.experts["low_noise"].guide_scale = float(scales[0])
            self.experts["high_noise"].guide_scale = float(scales[1])
        else:
            self.experts["dit"].guide_scale = float(scales[0])
        n_prompt = n_prompt or task.sample_neg_prompt
        seed = seed if seed >= 0 else random.randint(0, 2 ** 63 - 1)
        timings = timings if timings is not None else {}

        t0 = time.perf_counter()
        context, context_null = self.encode_text(prompt, n_prompt)
        timings["text"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        cond = self.prepare_conditions(size, frame_num, image)
        timings["conditions"] = time.perf_counter() - t0
        if noise is None:
            noise = make_noise(cond.latent_shape, seed)
        elif tuple(noise.shape) != tuple(cond.latent_shape):
            raise ValueError(f"noise has shape {tuple(noise.shape)}; this request needs {cond.latent_shape}")

        scheduler, timesteps = make_scheduler(sample_solver, sampling_steps, shift, task.num_train_timesteps)
        boundary = task.boundary * task.num_train_timesteps if task.two_experts else None
        step_timing = StepTiming()
        dits = self._dits()
        latent = denoise(np.asarray(noise, np.float32), timesteps, scheduler, self.experts, boundary, context,
                         context_null, cond,
                         on_expert=lambda e: self.offload.use(e.model, self.text_encoder.model, *dits),
                         progress=progress, timing=step_timing)
        timings["steps"] = step_timing.times
        timings["dit_forwards"] = step_timing.forwards
        if not self.parallel.is_main:
            return None
        from mindspore import Tensor

        t0 = time.perf_counter()
        self.offload.use(self.vae.model, *dits)
        video = self.vae.decode([Tensor(latent)], tiled=self.vae_tiled)[0].asnumpy()
        timings["decode"] = time.perf_counter() - t0
        return video


    # ----------------------------------------------------------------------------- speech to video
    def generate_speech(self, prompt: str, *, image, audio: str, size: Tuple[int, int], infer_frames: int,
                        shift: float, pose_video: Optional[str] = None, num_clips: Optional[int] = None,
                        start_from_ref: bool = False, sample_solver: str = "unipc", sampling_steps: int = 40,
                        guide_scale=4.5, n_prompt: str = "", seed: int = -1, noise: Optional[Sequence] = None,
                        progress: bool = True, timings: Optional[dict] = None) -> Optional[np.ndarray]:
        """s2v: a video of whole clips driven by ``audio`` (a file path), from the reference ``image`` (PIL).

        ``size`` (width, height) gives the area; the output follows the image's aspect ratio. ``num_clips``
        caps the clip count (default: as many as the audio needs). ``noise``: one initial latent per clip
        (overrides the seeds ``seed + clip``). Returns float32 [3, F, H, W] in [-1, 1] on the main rank.
        """
        from mindspore import Tensor

        from .tasks.s2v_inputs import pose_clips
        from .utils.fm_solvers import make_scheduler

        task, builder = self.task, self.builder
        plan = builder.plan(size, infer_frames, image)
        scale = float(guide_scale if np.isscalar(guide_scale) else guide_scale[0])
        self.experts["dit"].guide_scale = 1.0 if scale <= 1.0 else scale  # official: CFG only above 1
        n_prompt = n_prompt or task.sample_neg_prompt
        seed = seed if seed >= 0 else random.randint(0, 2 ** 63 - 1)
        timings = timings if timings is not None else {}
        dit = self.experts["dit"].model

        t0 = time.perf_counter()
        context, context_null = self.encode_text(prompt, n_prompt)
        timings["text"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        features = self.audio_encoder.extract_audio_feat(audio, return_all_layers=True)
        buckets, audio_clips = self.audio_encoder.get_audio_embed_bucket_fps(
            features, fps=task.sample_fps, batch_frames=infer_frames, m=0)
        buckets = np.asarray(buckets.asnumpy() if hasattr(buckets, "asnumpy") else buckets, np.float32)
        # [frames, layers, dim] -> [1, layers, dim, frames]: the DiT slices one clip's frames off the end axis.
        audio_features = buckets.transpose(1, 2, 0)[None] if buckets.ndim == 3 else buckets.T[None]
        clips = audio_clips if num_clips is None else min(num_clips, audio_clips)
        timings["audio"] = time.perf_counter() - t0
        if noise is not None and len(noise) < clips:
            raise ValueError(f"noise has {len(noise)} clip latents; this request needs {clips}")

        t0 = time.perf_counter()
        ref = builder.reference(plan, image)
        motion = builder.initial_motion(plan, ref, start_from_ref)
        drop_first = task.drop_first_motion and not start_from_ref
        ref_latent = self._encode(ref)[None]
        motion_latent = self._encode(motion)[None]
        poses = pose_clips(pose_video, clips, infer_frames, plan.height, plan.width, task.sample_fps) \
            if pose_video else None
        timings["conditions"] = time.perf_counter() - t0

        step_timing = StepTiming()
        frames = []
        for r in range(clips):
            if poses is not None:
                pose_latent = self._encode(next(poses)[0])[None][:, :, 1:]
            else:  # the official code encodes a blank clip and multiplies it by 0
                pose_latent = np.zeros((1,) + plan.latent_shape[:1] + (infer_frames // task.vae_stride[0],)
                                       + plan.latent_shape[2:], np.float32)
            cond = builder.clip_conditions(plan, r, ref_latent=Tensor(ref_latent),
                                           motion_latent=Tensor(motion_latent), pose_latent=Tensor(pose_latent),
                                           audio=audio_features, drop_first_motion=drop_first,
                                           seq_multiple=self.parallel.sequence_multiple)
            start = noise[r] if noise is not None else make_noise(plan.latent_shape, seed + r)
            scheduler, timesteps = make_scheduler(sample_solver, sampling_steps, shift, task.num_train_timesteps)
            latent = denoise(np.asarray(start, np.float32), timesteps, scheduler, self.experts, None, context,
                             context_null, cond,
                             on_expert=lambda e: self.offload.use(e.model, self.text_encoder.model),
                             progress=progress, timing=step_timing)
            dropped = drop_first and r == 0
            # Every rank decodes: the next clip's motion latent is the encode of the newest frames.
            head = ref_latent[0] if dropped else motion_latent[0]
            self.offload.use(self.vae.model, dit)
            video = self.vae.decode([Tensor(np.concatenate([head, latent], axis=1))],
                                    tiled=self.vae_tiled)[0].asnumpy()
            new = builder.keep_frames(video, infer_frames, dropped)
            motion = builder.next_motion(motion, new)
            if r + 1 < clips:
                motion_latent = self._encode(motion)[None]
            frames.append(new)
            log.info("clip %d/%d: %d frames", r + 1, clips, new.shape[1])
        timings["steps"] = step_timing.times
        timings["dit_forwards"] = step_timing.forwards
        timings["clips"] = clips
        if not self.parallel.is_main:
            return None
        return np.concatenate(frames, axis=1)


def find_lora_files(task: TaskConfig, lora_dir: str) -> Dict[str, str]:
    """LoRA file per expert: ``high_noise_model.safetensors`` / ``low_noise_model.safetensors`` (the
    Wan2.2-Lightning layout) for A14B tasks; one ``.safetensors`` file (or the file itself) otherwise."""
    if os.path.isfile(lora_dir):
        if task.two_experts:
            raise ValueError(f"--lora_dir {lora_dir!r} is a file; {task.name} needs a folder with "
                             f"high_noise_model.safetensors and low_noise_model.safetensors")
        return {"dit": lora_dir}
    if not os.path.isdir(lora_dir):
        raise ValueError(f"--lora_dir {lora_dir!r} does not exist")
    if task.two_experts:
        files = {role: os.path.join(lora_dir, f"{role}_model.safetensors") for role in ("high_noise", "low_noise")}
        missing = [p for p in files.values() if not os.path.isfile(p)]
        if missing:
            raise ValueError(f"--lora_dir {lora_dir!r}: missing {', '.join(missing)} (Wan2.2-Lightning layout)")
        return files
    found = sorted(f for f in os.listdir(lora_dir) if f.endswith(".safetensors"))
    if len(found) != 1:
        raise ValueError(f"--lora_dir {lora_dir!r}: expected exactly one .safetensors LoRA for {task.name}, found "
                         f"{found or 'none'}")
    return {"dit": os.path.join(lora_dir, found[0])}
