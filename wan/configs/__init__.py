"""Task configurations as data: one frozen dataclass per task, one registry.

Values are the official Wan2.2 ones (``wan/configs`` of the official release). ``generate.py`` reads defaults from
here; pipelines read the network settings. Nothing here imports MindSpore.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

# The official default negative prompt (kept verbatim: it is an input of the model, not prose).
SAMPLE_NEG_PROMPT = ("色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
                     "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
                     "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走")

# The official S2V negative prompt (wan/configs/wan_s2v_14B.py), verbatim for the same reason.
S2V_NEG_PROMPT = ("画面模糊，最差质量，画面模糊，细节模糊不清，情绪激动剧烈，手快速抖动，字幕，丑陋的，残缺的，多余的手指，"
                  "画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，"
                  "三条腿，背景人很多，倒着走")


@dataclass(frozen=True)
class TaskConfig:
    """Everything a task needs besides the weights. ``size`` strings are "W*H" as on the official CLI."""
    name: str
    kind: str                        # "t2v" | "i2v" | "ti2v" | "s2v": which builder (wan.tasks) it uses
    vae_version: str                 # "2.1" | "2.2"
    vae_checkpoint: str
    vae_stride: Tuple[int, int, int]
    z_dim: int
    supported_sizes: Tuple[str, ...]
    default_size: str
    sample_shift: float
    sample_steps: int
    sample_guide_scale: Tuple[float, float]  # (low-noise expert, high-noise expert); equal for one-model tasks
    frame_num: int = 81
    sample_fps: int = 16
    boundary: Optional[float] = None         # A14B: switch experts when t < boundary * num_train_timesteps
    low_noise_checkpoint: Optional[str] = None
    high_noise_checkpoint: Optional[str] = None
    needs_image: bool = False                # i2v: --image is required; ti2v: optional
    accepts_image: bool = False
    t5_checkpoint: str = "models_t5_umt5-xxl-enc-bf16.pth"
    t5_tokenizer: str = "google/umt5-xxl"
    text_len: int = 512
    num_train_timesteps: int = 1000
    patch_size: Tuple[int, int, int] = (1, 2, 2)
    param_dtype: str = "bfloat16"
    sample_neg_prompt: str = SAMPLE_NEG_PROMPT
    # s2v: the audio front end's folder inside the checkpoint, the video frames of motion context carried from
    # clip to clip, and whether the first clip ignores that (still grey) context.
    audio_encoder: Optional[str] = None
    motion_frames: int = 0
    drop_first_motion: bool = False

    def __post_init__(self):
        if self.kind not in ("t2v", "i2v", "ti2v", "s2v"):
            raise ValueError(f"task {self.name}: unknown kind {self.kind!r}")
        if self.vae_version not in ("2.1", "2.2"):
            raise ValueError(f"task {self.name}: unknown VAE version {self.vae_version!r}")
        if (self.boundary is None) != (self.low_noise_checkpoint is None):
            raise ValueError(f"task {self.name}: two experts need a boundary and two checkpoints, or neither")
        if self.default_size not in self.supported_sizes:
            raise ValueError(f"task {self.name}: default size {self.default_size} not in {self.supported_sizes}")

    @property
    def two_experts(self) -> bool:
        return self.boundary is not None


# Lightning (Wan2.2-Lightning 4-step LoRA) sampling defaults, applied when --lora_dir is given.
LIGHTNING_DEFAULTS = dict(sample_solver="euler", sample_steps=4, sample_shift=5.0, sample_guide_scale=1.0)

_A14B_SIZES = ("720*1280", "1280*720", "480*832", "832*480")

TASKS: Dict[str, TaskConfig] = {
    "t2v-A14B": TaskConfig(
        name="t2v-A14B", kind="t2v", vae_version="2.1", vae_checkpoint="Wan2.1_VAE.pth", vae_stride=(4, 8, 8),
        z_dim=16, supported_sizes=_A14B_SIZES, default_size="1280*720", sample_shift=12.0, sample_steps=40,
        sample_guide_scale=(3.0, 4.0), boundary=0.875, low_noise_checkpoint="low_noise_model",
        high_noise_checkpoint="high_noise_model"),
    "i2v-A14B": TaskConfig(
        name="i2v-A14B", kind="i2v", vae_version="2.1", vae_checkpoint="Wan2.1_VAE.pth", vae_stride=(4, 8, 8),
        z_dim=16, supported_sizes=_A14B_SIZES, default_size="1280*720", sample_shift=5.0, sample_steps=40,
        sample_guide_scale=(3.5, 3.5), boundary=0.900, low_noise_checkpoint="low_noise_model",
        high_noise_checkpoint="high_noise_model", needs_image=True, accepts_image=True),
    "ti2v-5B": TaskConfig(
        name="ti2v-5B", kind="ti2v", vae_version="2.2", vae_checkpoint="Wan2.2_VAE.pth", vae_stride=(4, 16, 16),
        z_dim=48, supported_sizes=("704*1280", "1280*704"), default_size="1280*704", sample_shift=5.0,
        sample_steps=50, sample_guide_scale=(5.0, 5.0), frame_num=121, sample_fps=24, accepts_image=True),
    "s2v-14B": TaskConfig(
        name="s2v-14B", kind="s2v", vae_version="2.1", vae_checkpoint="Wan2.1_VAE.pth", vae_stride=(4, 8, 8),
        z_dim=16, supported_sizes=_A14B_SIZES + ("1024*704", "704*1024", "704*1280", "1280*704"),
        default_size="1280*720", sample_shift=3.0, sample_steps=40, sample_guide_scale=(4.5, 4.5), frame_num=80,
        needs_image=True, accepts_image=True, audio_encoder="wav2vec2-large-xlsr-53-english", motion_frames=73,
        drop_first_motion=True, sample_neg_prompt=S2V_NEG_PROMPT),
}


def get_task(name: str) -> TaskConfig:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; supported tasks: {', '.join(TASKS)}")
    return TASKS[name]


__all__ = ["TaskConfig", "TASKS", "get_task", "LIGHTNING_DEFAULTS",
           "SAMPLE_NEG_PROMPT"]
