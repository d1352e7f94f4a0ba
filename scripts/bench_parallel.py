"""Multi-device costs: measured on CPU for N = 1 and 2 ranks, and an analytic table for the real models.

    source /work/envs/ms/bin/activate          # msrun starts `python` from PATH
    python scripts/bench_parallel.py            # measured (N=1 in-process child, N=2 under msrun) + table
    python scripts/bench_parallel.py --table    # the analytic table only (from the configs; no weights)

Measured, per rank, with a random-weight DiT (default dim 512, 8 heads, 4 layers, 1280 tokens) loaded
shard-aware from a temporary safetensors checkpoint, ZeRO3 + Ulysses for N=2: peak resident memory (VmHWM,
includes the ~0.5 GB MindSpore runtime), parameter bytes held, seconds per DiT forward, and the bytes each
collective moved during one forward (on CPU the all-to-all is an all-gather, N x the traffic of a real one).
A denoising step is 2 forwards (cond + uncond).

Analytic (bf16 weights and activations, flash attention so no L x L scores): per-device weight memory, the
activation peak of one forward and the communication volume per step for t2v-A14B at 1280x720 / 81 frames and
ti2v-5B at 1280x704 / 121 frames, N in {1, 2, 4, 8}, with --dit_zero3 --t5_zero3 --ulysses_size N.
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from wan.utils.memory import peak_rss_mb  # noqa: E402

BF16 = 2
# Official DiT sizes (config.json of the release); patch (1, 2, 2), text_dim 4096, freq_dim 256.
REAL_MODELS = {
    "t2v-A14B": dict(dit=dict(model_type="t2v", dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, in_dim=16,
                              out_dim=16), experts=2, frames=81, size=(1280, 720), stride=(4, 8, 8)),
    "ti2v-5B": dict(dit=dict(model_type="ti2v", dim=3072, ffn_dim=14336, num_heads=24, num_layers=30, in_dim=48,
                             out_dim=48), experts=1, frames=121, size=(1280, 704), stride=(4, 16, 16)),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", action="store_true", help="print the analytic table only")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--latent", default="5,32,32", help="latent F,H,W (tokens = F*H*W/4)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--bench_child", default=None, help=argparse.SUPPRESS)  # internal: CKPT_DIR,OUT_DIR (a name msrun does not parse)
    return p.parse_args(argv)


# -------------------------------------------------------------------------------------------------- analytic

def _shapes(cell_factory):
    from mindspore import nn

    with nn.no_init_parameters():
        cell = cell_factory()
    return {n: tuple(p.shape) for n, p in cell.parameters_and_names()}


def _sharded_elements(shapes, world):
    from wan.checkpoint.sharding import zero3_shard_shape

    return sum(int(np.prod(zero3_shard_shape(s, 0, world))) for s in shapes.values())


def analytic_rows():
    import mindspore as ms

    from wan.modules.model import WanModel
    from wan.modules.t5 import T5Encoder, umt5_xxl_config

    t5_shapes = _shapes(lambda: T5Encoder(**umt5_xxl_config(), dtype=ms.bfloat16))
    rows = []
    for name, spec in REAL_MODELS.items():
        cfg = spec["dit"]
        d, ffn, layers = cfg["dim"], cfg["ffn_dim"], cfg["num_layers"]
        dit_shapes = _shapes(lambda: WanModel(**cfg, text_dim=4096, freq_dim=256, dtype=ms.bfloat16))
        w, h = spec["size"]
        st = spec["stride"]
        lat = ((spec["frames"] - 1) // st[0] + 1, h // st[1], w // st[2])
        tokens = lat[0] * (lat[1] // 2) * (lat[2] // 2)
        head_ch = 4 * cfg["out_dim"]
        biggest_weight = max(int(np.prod(s)) for s in dit_shapes.values()) * BF16
        for n in (1, 2, 4, 8):
            padded = -(-tokens // n) * n
            local = padded // n
            dit_w = spec["experts"] * _sharded_elements(dit_shapes, n) * BF16
            t5_w = _sharded_elements(t5_shapes, n) * BF16
            # Live tensors at the peak of a block, per local token: residual + modulated input (float32), q, k, v
            # before and after the all-to-all, attention output, FFN hidden before and after GELU; ti2v also keeps
            # a per-token modulation input e0 [L, 6, dim] float32. Plus the one weight being gathered (ZeRO3).
            per_token = 4 * d * 2 + BF16 * (3 * d * 2 + d + 2 * ffn)
            if cfg["model_type"] == "ti2v":
                per_token += 4 * 6 * d
            act = local * per_token + (biggest_weight if n > 1 else 0)
            # Ulysses, per forward and device (what it receives): per block q,k,v and out all-to-alls move
            # (n-1)/n of 4 x [L/n, dim]; the head output [L/n, 4*out] float32 is all-gathered once.
            uly = layers * 4 * local * d * BF16 * (n - 1) / n + (n - 1) * local * head_ch * 4
            # ZeRO3: every sharded DiT weight is gathered once per forward: (n-1)/n of the expert in use.
            zero = (_sharded_elements(dit_shapes, 1) * BF16) * (n - 1) / n if n > 1 else 0
            rows.append(dict(model=name, n=n, tokens=tokens, local_tokens=local,
                             dit_weights_gb=dit_w / 1e9, t5_weights_gb=t5_w / 1e9, activations_gb=act / 1e9,
                             ulysses_gb_per_step=2 * uly / 1e9, zero3_gb_per_step=2 * zero / 1e9,
                             t5_gather_gb_per_prompt=(_sharded_elements(t5_shapes, 1) * BF16 * (n - 1) / n) / 1e9))
    return rows


def print_analytic(rows):
    print("\nAnalytic, per device, bf16, --dit_zero3 --t5_zero3 --ulysses_size N (a step = 2 DiT forwards, CFG):")
    print(f"{'model':<10} {'N':>2} {'tokens/dev':>10} {'DiT w GB':>9} {'T5 w GB':>8} {'act GB':>7} "
          f"{'Ulysses GB/step':>15} {'ZeRO3 GB/step':>13} {'T5 GB/prompt':>12}")
    for r in rows:
        print(f"{r['model']:<10} {r['n']:>2} {r['local_tokens']:>10} {r['dit_weights_gb']:>9.2f} "
              f"{r['t5_weights_gb']:>8.2f} {r['activations_gb']:>7.2f} {r['ulysses_gb_per_step']:>15.2f} "
              f"{r['zero3_gb_per_step']:>13.2f} {r['t5_gather_gb_per_prompt']:>12.2f}")
    print("DiT weights: both A14B experts resident (sharded); VAE not included (replicated, decodes on rank 0). "
          "Activations: rough peak of live tensors in one block (+ one gathered weight), not measured. "
          "Communication: bytes each device receives; ZeRO3 = (N-1)/N of an expert per forward.")


# -------------------------------------------------------------------------------------------------- measured

def _config(args):
    return dict(model_type="t2v", dim=args.dim, ffn_dim=4 * args.dim, num_heads=args.heads, num_layers=args.layers,
                in_dim=16, out_dim=16, text_dim=256, text_len=64, freq_dim=256)


def write_checkpoint(folder, cfg):
    """Random weights in the official layout (config.json + safetensors), written with the safetensors library."""
    from safetensors.numpy import save_file

    from wan.modules.model import WanModel

    shapes = _shapes(lambda: WanModel(**cfg))
    rng = np.random.default_rng(0)
    tensors = {n: (rng.standard_normal(s) * 0.02).astype(np.float32) for n, s in shapes.items()}
    save_file(tensors, os.path.join(folder, "diffusion_pytorch_model.safetensors"))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(dict(cfg, _class_name="WanModel"), f)


def worker(args):
    import mindspore as ms
    from mindspore import Tensor

    ckpt, out = args.bench_child.split(",")
    ms.set_context(device_target="CPU")
    from wan.distributed import Communicator, apply_ulysses, apply_zero3, init_process_group, parameter_bytes
    from wan.modules import kernels
    from wan.modules.model import WanModel

    kernels.set_backend("reference")
    rank, world = init_process_group()
    model = WanModel.from_pretrained(ckpt, shard=(rank, world) if world > 1 else None)
    comm = Communicator(rank, world) if world > 1 else None
    if comm is not None:
        apply_zero3(model, comm)
        apply_ulysses(model, comm)
    f, h, w = (int(v) for v in args.latent.split(","))
    rng = np.random.default_rng(1)
    x = [Tensor(rng.standard_normal((16, f, h, w)).astype(np.float32))]
    ctx = [Tensor(rng.standard_normal((20, 256)).astype(np.float32))]
    t = Tensor(np.array([500.0], np.float32))
    seq_len = f * h * w // 4
    model(x, t, ctx, seq_len)[0].asnumpy()  # warm-up
    if comm is not None:
        comm.stats.reset()
    times = []
    for _ in range(args.repeat):
        if comm is not None:
            comm.barrier()
        t0 = time.perf_counter()
        model(x, t, ctx, seq_len)[0].asnumpy()
        times.append(time.perf_counter() - t0)
    stats = {k: v // args.repeat for k, v in comm.stats.bytes.items()} if comm is not None else {}
    calls = {k: v // args.repeat for k, v in comm.stats.calls.items()} if comm is not None else {}
    result = dict(rank=rank, world=world, tokens=seq_len, param_bytes=parameter_bytes(model),
                  peak_rss_mb=peak_rss_mb(),
                  sec_per_forward=float(np.median(times)), comm_bytes_per_forward=stats, comm_calls_per_forward=calls)
    with open(os.path.join(out, f"n{world}_rank{rank}.json"), "w") as fh:
        json.dump(result, fh)


def measure(args):
    tmp = tempfile.mkdtemp(prefix="bench_parallel_")
    try:
        ckpt = os.path.join(tmp, "ckpt")
        os.makedirs(ckpt)
        write_checkpoint(ckpt, _config(args))
        env = dict(os.environ, PYTHONPATH=ROOT, GLOG_v="3", MS_NODE_TIMEOUT="30")
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        me = [os.path.abspath(__file__), "--bench_child", f"{ckpt},{tmp}", "--latent", args.latent,
              "--repeat", str(args.repeat)]
        subprocess.run([sys.executable, *me], env=env, check=True, stdout=subprocess.DEVNULL)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        msrun = os.path.join(os.path.dirname(sys.executable), "msrun")
        subprocess.run([msrun, "--worker_num=2", "--local_worker_num=2", f"--master_port={port}",
                        f"--log_dir={os.path.join(tmp, 'logs')}", "--join=True", *me], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        results = []
        for name in sorted(os.listdir(tmp)):
            if name.endswith(".json"):
                with open(os.path.join(tmp, name)) as fh:
                    results.append(json.load(fh))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cfg = _config(args)
    print(f"Measured on CPU: DiT dim {cfg['dim']}, {cfg['num_heads']} heads, {cfg['num_layers']} layers, "
          f"{results[0]['tokens']} tokens, float32; N=2 uses --dit_zero3 + --ulysses_size 2")
    print(f"{'N':>2} {'rank':>4} {'param MB':>9} {'peak RSS MB':>11} {'s/forward':>9}  collective bytes per forward")
    for r in results:
        comm = ", ".join(f"{k} {v / 2 ** 20:.2f} MB ({r['comm_calls_per_forward'][k]} calls)"
                         for k, v in sorted(r["comm_bytes_per_forward"].items())) or "-"
        print(f"{r['world']:>2} {r['rank']:>4} {r['param_bytes'] / 2 ** 20:>9.2f} {r['peak_rss_mb']:>11.0f} "
              f"{r['sec_per_forward']:>9.3f}  {comm}")
    return results


def main(argv=None):
    args = parse_args(argv)
    if args.bench_child:
        return worker(args)
    if not args.table:
        measure(args)
    print_analytic(analytic_rows())


if __name__ == "__main__":
    main()
