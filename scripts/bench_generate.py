"""Time a whole generation by stage: text encoding, each denoising step, VAE decode; and peak memory.

    python scripts/bench_generate.py                         # tiny t2v-A14B: default 40 steps vs Lightning 4
    python scripts/bench_generate.py --task ti2v-5B --ckpt_dir ./Wan2.2-TI2V-5B --size 1280*704 --runs default

Runs each configuration in a fresh subprocess (so peak RSS is per configuration) and prints one row per run.
"default" is the task's own sampling (unipc, its steps and guide scales); "lightning" is Wan2.2-Lightning's
4-step Euler sampling with guidance off (a LoRA would be merged at load time and costs nothing per step; the
timing does not depend on weight values, so none is needed here).
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from wan.utils.memory import peak_rss_mb  # noqa: E402

RUNS = {"default": {}, "lightning": dict(sample_solver="euler", sample_steps=4, sample_shift=5.0, guide_scale=1.0)}


def one_run(spec: dict) -> dict:
    import mindspore as ms
    import numpy as np

    from wan.configs import get_task
    from wan.pipeline import WanPipeline
    from wan.runtime import configure

    device = configure()
    task = get_task(spec["task"])
    t0 = time.perf_counter()
    pipe = WanPipeline(task, spec["ckpt_dir"], offload_model=False)
    load = time.perf_counter() - t0
    w, h = (int(v) for v in spec["size"].split("*"))
    overrides = RUNS[spec["run"]]
    guide = overrides.get("guide_scale", task.sample_guide_scale)
    timings = {}
    t0 = time.perf_counter()
    video = pipe.generate("a cat playing the piano", size=(w, h), frame_num=spec["frame_num"],
                          shift=overrides.get("sample_shift", task.sample_shift),
                          sample_solver=overrides.get("sample_solver", "unipc"),
                          sampling_steps=overrides.get("sample_steps", task.sample_steps), guide_scale=guide,
                          seed=0, progress=False, timings=timings)
    total = time.perf_counter() - t0
    peak = peak_rss_mb()
    if device == "Ascend":
        peak = ms.runtime.max_memory_allocated() / 2 ** 20
    steps = timings["steps"]
    return dict(run=spec["run"], device=device, load_s=load, total_s=total, text_s=timings["text"],
                steps=len(steps), dit_forwards=timings["dit_forwards"], step_mean_s=float(np.mean(steps)),
                step_first_s=steps[0], denoise_s=float(np.sum(steps)), decode_s=timings["decode"], peak_mb=peak,
                video_shape=list(video.shape))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="t2v-A14B")
    p.add_argument("--ckpt_dir", default=None, help="default: the embedded tiny checkpoint of the task")
    p.add_argument("--size", default=None, help="default: 64*64 (tiny A14B) / 128*128 (tiny ti2v)")
    p.add_argument("--frame_num", type=int, default=9)
    p.add_argument("--runs", default="default,lightning")
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._child:
        print(json.dumps(one_run(json.loads(args._child))))
        return
    ckpt = args.ckpt_dir or os.path.join(ROOT, "examples", "tiny", args.task)
    size = args.size or ("128*128" if args.task == "ti2v-5B" else "64*64")
    rows = []
    for run in args.runs.split(","):
        if run not in RUNS:
            raise SystemExit(f"unknown run {run!r}; choose from {', '.join(RUNS)}")
        spec = dict(task=args.task, ckpt_dir=ckpt, size=size, frame_num=args.frame_num, run=run)
        out = subprocess.run([sys.executable, __file__, "--_child", json.dumps(spec)], capture_output=True,
                             text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"task {args.task}, {ckpt}, size {size}, {args.frame_num} frames, device {rows[0]['device']}")
    head = ("run", "steps", "DiT fwd", "load s", "text s", "step s", "denoise s", "decode s", "total s", "peak MB")
    print("".join(f"{h:>11}" for h in head))
    for r in rows:
        vals = (r["run"], r["steps"], r["dit_forwards"], f"{r['load_s']:.2f}", f"{r['text_s']:.3f}",
                f"{r['step_mean_s']:.3f}", f"{r['denoise_s']:.2f}", f"{r['decode_s']:.2f}", f"{r['total_s']:.2f}",
                f"{r['peak_mb']:.0f}")
        print("".join(f"{v:>11}" for v in vals))
    if len(rows) == 2:
        a, b = rows
        print(f"{a['run']}/{b['run']}: {a['dit_forwards'] / b['dit_forwards']:.1f}x DiT forwards, "
              f"{a['denoise_s'] / b['denoise_s']:.1f}x denoise time, {a['total_s'] / b['total_s']:.1f}x total time")


if __name__ == "__main__":
    main()
