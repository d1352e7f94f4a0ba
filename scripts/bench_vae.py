"""Time and peak memory of VAE encode/decode, untiled vs spatially tiled.

Each measurement runs in a fresh child process so that its peak resident memory (VmHWM) belongs to that
measurement alone; the parent prints a table and the tiled-vs-untiled difference.

    python scripts/bench_vae.py                      # Wan2.1 VAE at full width, random weights, 5x96x96
    python scripts/bench_vae.py --height 128 --width 192 --latent-frames 3 --tile-size 64 --tile-overlap 16
    python scripts/bench_vae.py --vae-pth /path/Wan2.1_VAE.pth

Peak memory on CPU is dominated by MindSpore's Conv3D workspace (an im2col buffer proportional to the frame
area), which is exactly what tiling bounds; on Ascend the same tiling bounds the activations of the last
decoder stages.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from wan.utils.memory import peak_rss_mb  # noqa: E402

SPATIAL_STRIDE = {"2.1": 8}


def build_vae(version, vae_pth):
    if version == "2.1":
        from wan.modules.vae2_1 import Wan2_1_VAE

        return Wan2_1_VAE(vae_pth=vae_pth)
    raise ValueError(f"unknown VAE version {version!r}; choose from {sorted(SPATIAL_STRIDE)}")


def peak_mb():
    return peak_rss_mb()


def child(args):
    """One measurement: build, run the op once, save the output, print a JSON line."""
    import numpy as np
    from mindspore import Tensor

    vae = build_vae(args.vae, args.vae_pth)
    base = peak_mb()
    rng = np.random.default_rng(0)
    stride = SPATIAL_STRIDE[args.vae]
    if args.op == "decode":
        x = rng.standard_normal((vae.z_dim, args.latent_frames, args.height // stride, args.width // stride))
        fn = vae.decode
    else:
        frames = 1 + 4 * (args.latent_frames - 1)
        x = rng.uniform(-1, 1, (3, frames, args.height, args.width))
        fn = vae.encode
    x = Tensor(x.astype(np.float32))
    kwargs = dict(tiled=True, tile_size=args.tile_size, tile_overlap=args.tile_overlap) if args.tiled else {}
    start = time.perf_counter()
    out = fn([x], **kwargs)[0].asnumpy()
    seconds = time.perf_counter() - start
    np.save(args.out, out)
    print(json.dumps(dict(seconds=seconds, peak_mb=peak_mb(), base_mb=base, shape=list(out.shape))))


def run_child(args, op, tiled, out_path):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--vae", args.vae, "--op", op,
           "--height", str(args.height), "--width", str(args.width), "--latent-frames", str(args.latent_frames),
           "--tile-size", str(args.tile_size), "--tile-overlap", str(args.tile_overlap), "--out", out_path]
    if tiled:
        cmd.append("--tiled")
    if args.vae_pth:
        cmd += ["--vae-pth", args.vae_pth]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"measurement {op} tiled={tiled} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vae", default="2.1", choices=sorted(SPATIAL_STRIDE))
    parser.add_argument("--vae-pth", default=None, help="checkpoint; default: random weights (timing only)")
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--latent-frames", type=int, default=2, help="latent frames (video: 1 + 4(n-1))")
    parser.add_argument("--tile-size", type=int, default=64)
    parser.add_argument("--tile-overlap", type=int, default=32)
    parser.add_argument("--ops", default="decode,encode")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--op", default="decode", help=argparse.SUPPRESS)
    parser.add_argument("--tiled", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    stride = SPATIAL_STRIDE[args.vae]
    if args.height % stride or args.width % stride:
        raise SystemExit(f"--height/--width must be multiples of {stride}, got {args.height}x{args.width}")
    if args.child:
        return child(args)

    import numpy as np

    frames = 1 + 4 * (args.latent_frames - 1)
    print(f"Wan{args.vae} VAE, {'random weights' if not args.vae_pth else args.vae_pth}, video {frames}x"
          f"{args.height}x{args.width}, tiles {args.tile_size}px overlap {args.tile_overlap}px")
    print(f"{'op':8s} {'mode':8s} {'seconds':>8s} {'peak MB':>9s} {'after build MB':>15s} {'op MB':>8s}")
    with tempfile.TemporaryDirectory() as tmp:
        for op in args.ops.split(","):
            outs = {}
            for tiled in (False, True):
                mode = "tiled" if tiled else "untiled"
                path = os.path.join(tmp, f"{op}_{mode}.npy")
                r = run_child(args, op, tiled, path)
                outs[mode] = np.load(path)
                print(f"{op:8s} {mode:8s} {r['seconds']:8.1f} {r['peak_mb']:9.0f} {r['base_mb']:15.0f} "
                      f"{r['peak_mb'] - r['base_mb']:8.0f}", flush=True)
            err = np.abs(outs["tiled"] - outs["untiled"])
            print(f"{op:8s} tiled vs untiled: max |diff| {err.max():.4f}, mean |diff| {err.mean():.5f}, "
                  f"mean |untiled| {np.abs(outs['untiled']).mean():.4f}")


if __name__ == "__main__":
    main()
