"""Generate a video (or image) with Wan2.2 on MindSpore: parse -> validate -> build pipeline -> run -> save.

Same flags as the official ``generate.py``. Without ``--ckpt_dir`` it runs the embedded tiny random checkpoint of
the task (examples/tiny/<task>), which proves the installation end to end (its videos are noise).

    python generate.py                                            # tiny t2v-A14B demo on this machine
    python generate.py --task ti2v-5B --size 1280*704 --ckpt_dir ./Wan2.2-TI2V-5B --prompt "..."
    msrun --worker_num=8 --local_worker_num=8 generate.py --task t2v-A14B --ckpt_dir ./Wan2.2-T2V-A14B \
        --dit_zero3 --t5_zero3 --ulysses_size 8 --prompt "..."
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from datetime import datetime

from wan.configs import LIGHTNING_DEFAULTS, TASKS, TaskConfig, get_task

ROOT = os.path.dirname(os.path.abspath(__file__))
TINY_DIR = os.path.join(ROOT, "examples", "tiny")
SOLVERS = ("unipc", "dpm++", "euler")
PROMPT_EXTEND_METHODS = ("dashscope", "local_qwen")
EXAMPLE_PROMPT = {
    "t2v-A14B": "Two anthropomorphic cats in comfy boxing gear and bright gloves fight intensely on a spotlighted stage.",
    "i2v-A14B": ("Summer beach vacation style, a white cat wearing sunglasses sits on a surfboard. The fluffy-furred "
                 "feline gazes directly at the camera with a relaxed expression."),
    "ti2v-5B": "Two anthropomorphic cats in comfy boxing gear and bright gloves fight intensely on a spotlighted stage.",
    "s2v-14B": ("Summer beach vacation style, a white cat wearing sunglasses sits on a surfboard. The fluffy-furred "
                "feline gazes directly at the camera with a relaxed expression."),
}
EXAMPLE_IMAGE = os.path.join(ROOT, "examples", "i2v_input.png")
EXAMPLE_AUDIO = os.path.join(ROOT, "examples", "talk.wav")
# Embedded random Qwen2.5 / Qwen2.5-VL for the local extension on the tiny default (no --ckpt_dir)
TINY_QWEN = {False: os.path.join(TINY_DIR, "qwen2.5"), True: os.path.join(TINY_DIR, "qwen2.5-vl")}

log = logging.getLogger("wan")


def str2bool(v: str) -> bool:
    if v.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if v.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"boolean value expected, got {v!r}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Generate a video or image from a text prompt (and image) with Wan2.2 "
                                            "on MindSpore.")
    p.add_argument("--task", default="t2v-A14B", help=f"one of {', '.join(TASKS)}")
    p.add_argument("--size", default=None, help="width*height of the video, e.g. 1280*720; for i2v / ti2v with an "
                                                "image it is an area and the aspect ratio follows the image")
    p.add_argument("--frame_num", type=int, default=None, help="number of frames, 4n+1 (default: the task's)")
    p.add_argument("--ckpt_dir", default=None, help="the official checkpoint folder (default: the embedded tiny "
                                                    "random checkpoint of the task)")
    p.add_argument("--offload_model", type=str2bool, default=None,
                   help="keep only the network in use on the device (default: true on 1 device, false on many)")
    p.add_argument("--ulysses_size", type=int, default=1, help="sequence-parallel degree (= number of devices)")
    p.add_argument("--dit_zero3", action="store_true", help="shard DiT weights across devices (ZeRO3)")
    p.add_argument("--t5_zero3", action="store_true", help="shard T5 weights across devices (ZeRO3)")
    p.add_argument("--dit_fsdp", action="store_true", help="official name of --dit_zero3")
    p.add_argument("--t5_fsdp", action="store_true", help="official name of --t5_zero3")
    p.add_argument("--t5_cpu", action="store_true", help="run the text encoder on the CPU")
    p.add_argument("--save_file", default=None, help="output file (.mp4, or .png when frame_num is 1)")
    p.add_argument("--prompt", default=None, help="the text prompt")
    p.add_argument("--prompt_file", default=None, help="a text file with one prompt per line; one output each")
    p.add_argument("--base_seed", type=int, default=-1, help="seed of the initial noise (-1: random)")
    p.add_argument("--image", default=None, help="input image (required for i2v-A14B, optional for ti2v-5B)")
    p.add_argument("--sample_solver", default=None, help=f"one of {', '.join(SOLVERS)} (default unipc; euler with "
                                                         f"--lora_dir)")
    p.add_argument("--sample_steps", type=int, default=None, help="sampling steps (default: the task's)")
    p.add_argument("--sample_shift", type=float, default=None, help="flow-matching shift (default: the task's)")
    p.add_argument("--sample_guide_scale", default=None,
                   help="classifier-free guidance scale, one value or low,high for the two A14B experts")
    p.add_argument("--convert_model_dtype", action="store_true",
                   help="round every DiT parameter to the task's param dtype (bf16), as the official model.to(bf16); "
                        "on CPU the values are rounded and computed in float32")
    p.add_argument("--lora_dir", default=None, help="LoRA folder (Wan2.2-Lightning layout); switches sampling to "
                                                    "the Lightning defaults (euler, 4 steps, shift 5, guide 1)")
    p.add_argument("--lora_scale", type=float, default=1.0, help="LoRA strength")
    s2v = p.add_argument_group("speech-to-video (s2v-14B)")
    s2v.add_argument("--audio", default=None, help="the speech / song that drives the video (wav, mp3, flac, ...)")
    s2v.add_argument("--pose_video", default=None, help="a pose (DWPose) video that drives the body motion")
    s2v.add_argument("--num_clip", type=int, default=None, help="number of clips (default: as many as the audio "
                                                                "needs)")
    s2v.add_argument("--infer_frames", type=int, default=None, help="frames per clip, a multiple of 4 (default 80; "
                                                                   "48 is the official shorter choice)")
    s2v.add_argument("--start_from_ref", action="store_true", help="start the video from the reference image")
    s2v.add_argument("--enable_tts", action="store_true", help="official text-to-speech (not supported here)")
    s2v.add_argument("--tts_prompt_audio", default=None, help=argparse.SUPPRESS)
    s2v.add_argument("--tts_prompt_text", default=None, help=argparse.SUPPRESS)
    s2v.add_argument("--tts_text", default=None, help=argparse.SUPPRESS)
    p.add_argument("--vae_tiled", action="store_true", help="decode/encode in spatial tiles to bound VAE memory")
    p.add_argument("--device_target", default=None, choices=["CPU", "Ascend"],
                   help="MindSpore device (default: Ascend if available, else CPU)")
    g = p.add_argument_group("prompt extension (rank 0 rewrites each prompt with a language model before "
                             "generating)")
    g.add_argument("--use_prompt_extend", action="store_true", help="extend the prompt(s) before generating")
    g.add_argument("--prompt_extend_method", default="local_qwen",
                   help=f"{' or '.join(PROMPT_EXTEND_METHODS)}: the DashScope API (needs DASH_API_KEY; DASH_API_URL "
                        f"sets the endpoint) or a local Qwen2.5 / Qwen2.5-VL model (default local_qwen)")
    g.add_argument("--prompt_extend_model", default=None,
                   help="dashscope: a model name (default qwen-plus, qwen-vl-max with an image); local_qwen: a "
                        "folder, a hub id in the local cache, or an alias (Qwen2.5_3B, Qwen2.5_7B, Qwen2.5_14B, "
                        "QwenVL2.5_3B, QwenVL2.5_7B)")
    g.add_argument("--prompt_extend_target_lang", default="zh",
                   help="language of the extended prompt: zh or en (default zh)")
    g.add_argument("--prompt_extend_system_prompt", default=None, metavar="FILE",
                   help="a UTF-8 text file with the system prompt to use instead of the built-in one")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------- validation

def _tiny_spec(ckpt_dir: str):
    path = os.path.join(ckpt_dir, "wan_tiny.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _parse_size(size: str, supported) -> tuple:
    if size not in supported:
        raise ValueError(f"--size {size!r} is not supported by this task; supported sizes: {', '.join(supported)}")
    w, h = (int(v) for v in size.split("*"))
    return w, h


def _parse_guide(value, task: TaskConfig):
    if value is None:
        return task.sample_guide_scale
    try:
        parts = [float(v) for v in str(value).split(",")]
    except ValueError:
        raise ValueError(f"--sample_guide_scale {value!r}: pass a number or two numbers low,high") from None
    if len(parts) == 1:
        return (parts[0], parts[0])
    if len(parts) == 2 and task.two_experts:
        return tuple(parts)
    raise ValueError(f"--sample_guide_scale {value!r}: pass one number"
                     + (" or low,high for the two experts" if task.two_experts else f" ({task.name} has one model)"))


def _read_prompts(args) -> list:
    if args.prompt_file:
        if not os.path.isfile(args.prompt_file):
            raise ValueError(f"--prompt_file {args.prompt_file!r} does not exist")
        with open(args.prompt_file, encoding="utf-8") as f:
            prompts = [line.strip() for line in f if line.strip()]
        if not prompts:
            raise ValueError(f"--prompt_file {args.prompt_file!r} has no prompts; write one prompt per line")
        if args.prompt:
            raise ValueError("pass either --prompt or --prompt_file, not both")
        return prompts
    return [args.prompt if args.prompt is not None else EXAMPLE_PROMPT[args.task]]


def _default_name(args, prompt: str, suffix: str) -> str:
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    short = prompt.replace(" ", "_").replace("/", "_")[:50]
    return f"{args.task}_{args.size}_{args.ulysses_size}_{short}_{stamp}{suffix}"


def _looks_like_path(name: str) -> bool:
    """A --prompt_extend_model value meant as a folder (not an alias or an "org/name" hub id)."""
    return (name.startswith(("/", "./", "../", "~")) or name.endswith("/") or name.count("/") > 1
            or os.sep != "/" and os.sep in name)


def _check_local_model_kind(path: str, with_image: bool) -> None:
    """A local folder's config.json must be a Qwen model, a vision-language one when there is an image."""
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise ValueError(f"--prompt_extend_model {path!r} has no config.json: not a Hugging Face model folder; pass "
                         f"a Qwen2.5(-VL)-Instruct folder as downloaded (config.json, tokenizer, *.safetensors)")
    try:
        with open(config_file, encoding="utf-8") as f:
            model_type = str(json.load(f).get("model_type", ""))
    except (OSError, ValueError) as e:
        raise ValueError(f"--prompt_extend_model {path!r}: config.json cannot be read ({e})") from e
    if not model_type.startswith("qwen2"):
        raise ValueError(f"--prompt_extend_model {path!r} is a {model_type or 'unknown'!r} model, not Qwen2.5 / "
                         f"Qwen2.5-VL; pass a Qwen2.5(-VL)-Instruct folder")
    if with_image and "vl" not in model_type:
        raise ValueError(f"--prompt_extend_model {path!r} is a text-only Qwen model ({model_type}), but this "
                         f"request has an image; pass a Qwen2.5-VL folder or alias (QwenVL2.5_3B, QwenVL2.5_7B)")


def _validate_prompt_extension(args, task: TaskConfig) -> None:
    """Check the prompt-extension flags and resolve the model, before anything is loaded."""
    args.extend_system_prompt = None
    if not args.use_prompt_extend:
        return
    from wan.prompt.system_prompts import LANGS, read_system_prompt

    method = args.prompt_extend_method
    if method not in PROMPT_EXTEND_METHODS:
        raise ValueError(f"--prompt_extend_method {method!r} is unknown; choose one of "
                         f"{', '.join(PROMPT_EXTEND_METHODS)}")
    if args.prompt_extend_target_lang not in LANGS:
        raise ValueError(f"--prompt_extend_target_lang {args.prompt_extend_target_lang!r} is not supported; choose "
                         f"one of {', '.join(LANGS)}")
    with_image = args.image_pil is not None
    if not with_image and any(not p.strip() for p in args.prompts):
        raise ValueError(f"{task.name}: an empty prompt can only be extended from an image (i2v-A14B, or ti2v-5B "
                         f"with --image); write a prompt for the extension to start from")
    if args.prompt_extend_system_prompt is not None:
        args.extend_system_prompt = read_system_prompt(args.prompt_extend_system_prompt)
    model = args.prompt_extend_model
    if method == "dashscope":
        import importlib.util

        from wan.prompt.dashscope import SDK_HINT, check_dashscope_model, dashscope_api_key

        dashscope_api_key()
        args.prompt_extend_model = check_dashscope_model(model, with_image)
        if importlib.util.find_spec("dashscope") is None:
            raise ValueError(f"--prompt_extend_method dashscope needs the dashscope SDK: {SDK_HINT}")
        return
    if model is None and args.embedded:  # the tiny default run stays offline: the embedded random Qwen
        model = TINY_QWEN[with_image]
        print(f"prompt extension: embedded tiny random {os.path.basename(model)} (its prompts are nonsense); pass "
              f"--prompt_extend_model for a real Qwen")
    if model is not None and _looks_like_path(model):
        model = os.path.expanduser(model)
        if not os.path.isdir(model):
            raise ValueError(f"--prompt_extend_model {model!r} does not exist; pass a local Qwen2.5(-VL) folder, "
                             f"a cached hub id such as Qwen/Qwen2.5-7B-Instruct, or an alias (Qwen2.5_7B, "
                             f"QwenVL2.5_7B)")
    if model is not None and os.path.isdir(model):
        _check_local_model_kind(model, with_image)
    try:
        from wan.prompt.qwen import resolve_qwen_model
    except ImportError as e:
        raise ValueError(f"--prompt_extend_method local_qwen is not available in this installation ({e}); use "
                         f"--prompt_extend_method dashscope") from e
    args.prompt_extend_model = resolve_qwen_model(model, task.name, with_image)
    if os.path.isdir(args.prompt_extend_model):
        _check_local_model_kind(args.prompt_extend_model, with_image)


def _validate_speech(args, task: TaskConfig, tiny) -> None:
    """s2v flags: the audio (read here, so a bad file fails before loading), pose video, clip settings."""
    if args.enable_tts:
        raise ValueError("--enable_tts is not supported: the official text-to-speech downloads CosyVoice at run "
                         "time; synthesise the speech yourself and pass the file with --audio")
    if args.audio is None and args.embedded:
        args.audio = EXAMPLE_AUDIO
    if args.audio is None:
        raise ValueError(f"{task.name} needs --audio (a wav, mp3 or flac file with the speech or song)")
    if args.infer_frames is None:
        args.infer_frames = tiny.get("infer_frames", task.frame_num) if tiny else task.frame_num
    if args.infer_frames <= 0 or args.infer_frames % 4:
        raise ValueError(f"--infer_frames {args.infer_frames} must be a positive multiple of 4 (e.g. 80 or 48)")
    if args.num_clip is not None and args.num_clip < 1:
        raise ValueError(f"--num_clip {args.num_clip} must be at least 1 (or leave it out to follow the audio)")
    if args.frame_num is not None:
        raise ValueError("s2v-14B takes --infer_frames (frames per clip) and --num_clip, not --frame_num")
    from wan.utils.audio import load_audio
    from wan.tasks.s2v_inputs import read_video_frames

    load_audio(args.audio)  # raises ValueError for missing / unreadable / empty / silent
    if args.pose_video is not None:
        if not os.path.isfile(args.pose_video):
            raise ValueError(f"--pose_video {args.pose_video!r} does not exist")
        read_video_frames(args.pose_video, 1, task.sample_fps, from_start=True)  # readable, has frames
    args.frame_num = args.infer_frames


def validate(args, world_size: int = 1) -> argparse.Namespace:
    """Check every input and fill defaults, before anything heavy is imported or loaded."""
    from wan.pipeline import check_checkpoint_dir

    task = get_task(args.task)
    args.embedded = args.ckpt_dir is None
    if args.embedded:
        args.ckpt_dir = os.path.join(TINY_DIR, task.name)
    tiny = _tiny_spec(args.ckpt_dir) if os.path.isdir(args.ckpt_dir) else None
    supported = tuple(tiny["sizes"]) + task.supported_sizes if tiny else task.supported_sizes
    if args.size is None:
        args.size = tiny["sizes"][0] if tiny else task.default_size
    args.size_wh = _parse_size(args.size, supported)
    if task.kind == "s2v":
        _validate_speech(args, task, tiny)
    if args.frame_num is None:
        args.frame_num = tiny["frame_num"] if tiny else task.frame_num
    if task.kind != "s2v" and (args.frame_num < 1 or (args.frame_num - 1) % 4):
        raise ValueError(f"--frame_num {args.frame_num} is not 4n+1; use e.g. "
                         f"{max(1, (args.frame_num - 1) // 4 * 4 + 1)} or {((args.frame_num - 1) // 4 + 1) * 4 + 1}")
    args.tiny_note = tiny["note"] if tiny else None

    if args.lora_dir is not None:
        for key, value in LIGHTNING_DEFAULTS.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    args.sample_solver = args.sample_solver or "unipc"
    if args.sample_solver not in SOLVERS:
        raise ValueError(f"--sample_solver {args.sample_solver!r} is unknown; choose one of {', '.join(SOLVERS)}")
    args.sample_steps = task.sample_steps if args.sample_steps is None else args.sample_steps
    if args.sample_steps < 1:
        raise ValueError(f"--sample_steps {args.sample_steps} must be at least 1")
    args.sample_shift = task.sample_shift if args.sample_shift is None else args.sample_shift
    if not args.sample_shift > 0:
        raise ValueError(f"--sample_shift {args.sample_shift} must be positive")
    args.guide = _parse_guide(args.sample_guide_scale, task)

    if args.image is None and task.needs_image and args.embedded:
        args.image = EXAMPLE_IMAGE
    if task.needs_image and args.image is None:
        raise ValueError(f"{task.name} needs --image (the first frame of the video)")
    if args.image is not None and not task.accepts_image:
        raise ValueError(f"{task.name} takes no --image; use i2v-A14B or ti2v-5B for image-to-video")
    if args.image is not None:
        from wan.utils.media import load_image
        args.image_pil = load_image(args.image)
    else:
        args.image_pil = None
    from wan.tasks import get_builder
    # The task's sizing rule on the real image: an image too narrow for the area fails here, before any model.
    args.geometry = get_builder(task).geometry(args.size_wh, args.frame_num, args.image_pil)

    args.prompts = _read_prompts(args)
    _validate_prompt_extension(args, task)
    if args.save_file is not None:
        from wan.utils.media import check_output_path
        args.save_file = check_output_path(args.save_file)
        if task.kind == "s2v" and not args.save_file.lower().endswith(".mp4"):
            raise ValueError("s2v-14B writes a video with sound; give --save_file an .mp4 name")
        if args.frame_num == 1 and args.save_file.lower().endswith(".mp4"):
            raise ValueError("--frame_num 1 makes an image; give --save_file a .png name")
    if args.lora_dir is not None:
        from wan.pipeline import find_lora_files
        find_lora_files(task, args.lora_dir)

    args.dit_zero3 = args.dit_zero3 or args.dit_fsdp
    args.t5_zero3 = args.t5_zero3 or args.t5_fsdp
    if args.ulysses_size < 1:
        raise ValueError(f"--ulysses_size {args.ulysses_size} must be >= 1")
    if world_size == 1 and (args.dit_zero3 or args.t5_zero3 or args.ulysses_size > 1):
        raise ValueError("--dit_zero3, --t5_zero3 and --ulysses_size > 1 need several devices: launch with "
                         "msrun --worker_num=N --local_worker_num=N generate.py ...")
    if args.offload_model is None:
        args.offload_model = world_size == 1
    check_checkpoint_dir(task, args.ckpt_dir)
    args.task_config = task
    return args


# -------------------------------------------------------------------------------------------------- main

def setup_logging(is_main: bool) -> None:
    logging.basicConfig(level=logging.INFO if is_main else logging.ERROR,
                        format="[%(asctime)s] %(levelname)s: %(message)s", stream=sys.stdout)


def output_paths(args) -> list:
    suffix = ".png" if args.frame_num == 1 else ".mp4"
    if args.save_file is None:
        return [os.path.abspath(_default_name(args, p, suffix)) for p in args.prompts]
    if len(args.prompts) == 1:
        return [args.save_file]
    stem, ext = os.path.splitext(args.save_file)
    return [f"{stem}_{i:03d}{ext}" for i in range(len(args.prompts))]


def dit_geometry(args) -> tuple:
    """(num_heads, unpadded token count) of the request, read from the DiT config.json (no weights loaded)."""
    from wan.modules.model import WanModel
    from wan.pipeline import checkpoint_files

    task = args.task_config
    files = checkpoint_files(task, args.ckpt_dir)
    if task.kind == "s2v":
        from wan.modules.s2v.model_s2v import WanModel_S2V as WanModel  # noqa: N814 - same config reader
    config = WanModel.config_from_file(os.path.join(files["high_noise" if task.two_experts else "dit"],
                                                    "config.json"))
    return config.get("num_heads", 16), args.geometry.tokens(task.patch_size)


def make_prompt_expander(args):
    """The expander for the validated flags (called on rank 0 only; the local model is loaded here)."""
    kind, with_image = args.task_config.kind, args.image_pil is not None
    if args.prompt_extend_method == "dashscope":
        from wan.prompt.dashscope import DashScopePromptExpander

        return DashScopePromptExpander(kind, is_vl=with_image, model_name=args.prompt_extend_model)
    from wan.prompt.qwen import QwenPromptExpander

    return QwenPromptExpander(args.prompt_extend_model, kind, with_image)


def extend_prompts(args, parallel, world_size: int = 1) -> list:
    """Every prompt of the request, extended on rank 0 and shared, so all ranks condition on the same text.

    A failed extension gives back the original prompt (the expander logs why). The expander, and with it a local
    model, is dropped before returning, so its memory is free before the pipeline loads.
    """
    import gc

    extended = None
    if parallel.is_main:
        log.info("extending %d prompt(s) with %s (%s), target language %s", len(args.prompts),
                 args.prompt_extend_method, args.prompt_extend_model, args.prompt_extend_target_lang)
        t0 = time.perf_counter()
        expander = make_prompt_expander(args)
        extended = []
        for prompt in args.prompts:
            out = expander(prompt, tar_lang=args.prompt_extend_target_lang, image=args.image_pil,
                           seed=args.base_seed, system_prompt=args.extend_system_prompt)
            extended.append(out.prompt)
        del expander
        gc.collect()
        log.info("prompt extension took %.1fs", time.perf_counter() - t0)
    if world_size > 1:  # like the seed: rank 0's strings on every rank, or the ranks' text conditions disagree
        extended = parallel.share(extended)
    if parallel.is_main:
        for prompt in extended:
            log.info("extended prompt: %s", prompt)
            print(f"extended prompt: {prompt}", flush=True)
    return extended


def save_speech_video(video, path: str, fps: int, audio: str) -> None:
    """The frames with the input audio muxed in; the file appears only once both are in it."""
    import tempfile

    from wan.utils.media import save_video
    from wan.utils.mux import mux_audio

    with tempfile.TemporaryDirectory(dir=os.path.dirname(path)) as tmp:
        silent = save_video(video, os.path.join(tmp, "video.mp4"), fps=fps)
        mux_audio(silent, audio, out_path=path)


def main(argv=None) -> int:
    args = parse_args(argv)
    from wan.distributed import launch_info

    world_size = launch_info().world_size
    try:
        validate(args, world_size)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    import mindspore as ms

    from wan.pipeline import ParallelHooks, WanPipeline
    from wan.utils.media import save_image, save_video

    from wan.runtime import configure

    configure(args.device_target)
    parallel = ParallelHooks()
    if world_size > 1:
        from wan.distributed import setup_parallel

        num_heads, tokens = dit_geometry(args)
        try:  # every rank checks the flags against the launch before anything is loaded
            parallel = setup_parallel(args, world_size, num_heads=num_heads, seq_tokens=tokens)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    setup_logging(parallel.is_main)
    if args.tiny_note:
        log.info(args.tiny_note)
    if args.base_seed < 0:
        args.base_seed = random.randint(0, 2 ** 31 - 1)
    if world_size > 1:  # every rank must use rank 0's seed, or the Ulysses shards of the noise disagree
        args.base_seed = parallel.share(args.base_seed)
    task = args.task_config
    paths = output_paths(args)  # named after the user's prompts
    prompts = args.prompts
    if args.use_prompt_extend:
        try:
            prompts = extend_prompts(args, parallel, world_size)
        except ValueError as e:  # a local model folder that cannot be used: the message names the fix
            print(f"error: {e}", file=sys.stderr)
            return 2
    dit_dtype = getattr(ms, task.param_dtype) if args.convert_model_dtype else ms.float32
    log.info("task %s, size %s, %d frames, %s x %d steps, shift %s, guide %s, seed %d", task.name, args.size,
             args.frame_num, args.sample_solver, args.sample_steps, args.sample_shift, args.guide, args.base_seed)
    t0 = time.perf_counter()
    pipe = WanPipeline(task, args.ckpt_dir, dit_dtype=dit_dtype, offload_model=args.offload_model,
                       t5_cpu=args.t5_cpu, lora_dir=args.lora_dir, lora_scale=args.lora_scale, parallel=parallel,
                       vae_tiled=args.vae_tiled)
    log.info("pipeline ready in %.1fs", time.perf_counter() - t0)
    for prompt, path in zip(prompts, paths):
        log.info("prompt: %s", prompt)
        t0 = time.perf_counter()
        if task.kind == "s2v":
            video = pipe.generate_speech(prompt, image=args.image_pil, audio=args.audio, size=args.size_wh,
                                         infer_frames=args.infer_frames, shift=args.sample_shift,
                                         pose_video=args.pose_video, num_clips=args.num_clip,
                                         start_from_ref=args.start_from_ref, sample_solver=args.sample_solver,
                                         sampling_steps=args.sample_steps, guide_scale=args.guide,
                                         seed=args.base_seed, progress=parallel.is_main)
        else:
            video = pipe.generate(prompt, size=args.size_wh, frame_num=args.frame_num, shift=args.sample_shift,
                                  sample_solver=args.sample_solver, sampling_steps=args.sample_steps,
                                  guide_scale=args.guide, seed=args.base_seed, image=args.image_pil,
                                  progress=parallel.is_main)
        if parallel.is_main:
            if args.frame_num == 1:
                save_image(video, path)
            elif task.kind == "s2v":
                save_speech_video(video, path, task.sample_fps, args.audio)
            else:
                save_video(video, path, fps=task.sample_fps)
            log.info("saved %s (%d frames, %dx%d) in %.1fs", path, video.shape[1], video.shape[3], video.shape[2],
                     time.perf_counter() - t0)
            print(f"video written to {path}" if args.frame_num > 1 else f"image written to {path}")
    return 0


if __name__ == "__main__":
    from wan.distributed import run_guarded

    # A failing rank logs its traceback and exits at once, so msrun stops the whole job instead of hanging.
    sys.exit(run_guarded(main))
