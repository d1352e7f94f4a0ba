"""Time WanModel forward passes on the current device.

    python scripts/bench_dit.py --dim 512 --heads 8 --layers 4 --latent 4,16,20 --repeat 5
    python scripts/bench_dit.py ... --official-python /path/to/torch-env/bin/python   # also time the official
                                                                                     # PyTorch model, same config

Prints seconds per forward and peak memory. Weights are random (timing does not depend on values). With
--official-python the same config runs in that interpreter through scripts/bench_dit_official.py (torch and the
`wan22` package must be installed there; the project itself never imports torch) and the ratio is printed.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from wan.utils.memory import peak_rss_mb  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_type", default="t2v", choices=["t2v", "i2v", "ti2v"])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--ffn_dim", type=int, default=None, help="default: 4 * dim")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--in_dim", type=int, default=16)
    p.add_argument("--text_len", type=int, default=512)
    p.add_argument("--latent", default="4,16,20", help="latent F,H,W (tokens = F*H*W/4)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for both frameworks")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--official-python", default=None, help="interpreter with torch + wan22 to time the official model")
    p.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    return p.parse_args(argv)


def config_of(args):
    return dict(model_type=args.model_type, in_dim=args.in_dim * (2 if args.model_type == "i2v" else 1),
                out_dim=args.in_dim, dim=args.dim, ffn_dim=args.ffn_dim or 4 * args.dim, num_heads=args.heads,
                num_layers=args.layers, text_len=args.text_len, freq_dim=256, text_dim=4096)


def run_mindspore(args):
    import mindspore as ms
    from mindspore import Tensor

    from wan.modules.model import WanModel

    from wan.runtime import configure

    configure()
    if args.threads:
        ms.set_context(runtime_num_threads=args.threads)
    dtype = getattr(ms, args.dtype)
    cfg = config_of(args)
    f, h, w = (int(v) for v in args.latent.split(","))
    rng = np.random.default_rng(0)
    model = WanModel(**cfg, dtype=dtype)
    model.set_train(False)
    seq_len = f * (h // 2) * (w // 2)
    x = [Tensor(rng.standard_normal((args.in_dim, f, h, w)).astype(np.float32))]
    y = [Tensor(rng.standard_normal((args.in_dim, f, h, w)).astype(np.float32))] if args.model_type == "i2v" else None
    ctx = [Tensor(rng.standard_normal((args.text_len // 2, 4096)).astype(np.float32))]
    t = Tensor(np.array([500.0], np.float32))
    for _ in range(args.warmup):
        model(x, t, ctx, seq_len, y=y)[0].asnumpy()
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        model(x, t, ctx, seq_len, y=y)[0].asnumpy()
        times.append(time.perf_counter() - start)
    peak = peak_rss_mb()
    device = ms.get_context("device_target")
    if device == "Ascend":
        peak = ms.runtime.max_memory_allocated() / 2 ** 20
    return dict(framework=f"mindspore {ms.__version__}", device=device, seq_len=seq_len,
                sec_per_forward=float(np.median(times)), peak_mb=peak)


def main():
    args = parse_args()
    ours = run_mindspore(args)
    rows = [ours]
    if args.official_python:
        cmd = [args.official_python, os.path.join(ROOT, "scripts", "bench_dit_official.py"),
               json.dumps({**config_of(args), "latent": args.latent, "repeat": args.repeat, "warmup": args.warmup,
                           "threads": args.threads})]
        official = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
                              .splitlines()[-1])
        rows.append(official)
    if args.json:
        print(json.dumps(rows))
        return
    cfg = config_of(args)
    print(f"config: dim={cfg['dim']} ffn={cfg['ffn_dim']} heads={cfg['num_heads']} layers={cfg['num_layers']} "
          f"tokens={ours['seq_len']} text_len={cfg['text_len']} dtype={args.dtype} threads={args.threads}")
    print(f"{'framework':<24}{'device':<8}{'s/forward':>12}{'peak MB':>10}")
    for r in rows:
        print(f"{r['framework']:<24}{r['device']:<8}{r['sec_per_forward']:>12.4f}{r['peak_mb']:>10.0f}")
    if len(rows) == 2:
        print(f"ratio ours/official: {rows[0]['sec_per_forward'] / rows[1]['sec_per_forward']:.2f}")


if __name__ == "__main__":
    main()
