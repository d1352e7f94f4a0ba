"""Peak host memory and speed of checkpoint loading: full model vs one ZeRO3 shard of four.

Builds a synthetic ~1 GB bf16 checkpoint in the official sharded-safetensors layout in a temp folder (deleted
at the end), then runs each measurement in a fresh child process, which reports its own peak RSS
(VmHWM, see wan.utils.memory) before and after loading. Page cache is dropped for the files
(posix_fadvise DONTNEED) before every run, so each run reads from disk as far as the kernel allows.

    /work/envs/ms/bin/python scripts/bench_load.py [--gib 1.0] [--world 4] [--repeat 3]

Modes:
  read        plain sequential read of every file, 16 MiB chunks, nothing kept (the disk/page-cache ceiling)
  touch       allocate and fill as much fresh memory as the full load keeps, no I/O (the page-fault ceiling)
  numpy_full  convert reader: every tensor as raw bf16 numpy, all kept
  numpy_shard the same, only rank 1's zero3 rows (plus replicated tensors)
  cell_full   load_into_cell into a MindSpore Cell with bf16 parameters
  cell_shard  load_into_cell(..., shard=(1, world)): parameters replaced by rank 1's pieces
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from wan.utils.memory import peak_rss_mb  # noqa: E402

from wan.checkpoint.safetensors_io import write_safetensors  # noqa: E402

# DiT-like tensors: big [rows, dim] matrices (split under ZeRO3) and small vectors (replicated).
ROWS, DIM = 3072, 3072


def build_checkpoint(folder, gib, shards=4):
    """Write ~gib GiB of bf16 tensors as `shards` safetensors files + index; returns total bytes."""
    n_mats = max(1, int(round(gib * 2**30 / (ROWS * DIM * 2))))
    names = []
    for i in range(n_mats):
        names += [(f"blocks.{i}.w", (ROWS, DIM)), (f"blocks.{i}.b", (ROWS,))]
    per_shard = -(-len(names) // shards)
    rng = np.random.default_rng(0)
    weight_map, total = {}, 0
    for s in range(shards):
        part = names[s * per_shard:(s + 1) * per_shard]
        fname = f"diffusion_pytorch_model-{s + 1:05d}-of-{shards:05d}.safetensors"
        entries = []
        for name, shape in part:
            entries.append((name, "bfloat16", shape,
                            lambda shape=shape: rng.integers(0x3C00, 0x4000, size=shape, dtype=np.uint16)))
            weight_map[name] = fname
            total += int(np.prod(shape)) * 2
        write_safetensors(os.path.join(folder, fname), entries)
    with open(os.path.join(folder, "diffusion_pytorch_model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
    return total, names


def drop_cache(folder):
    for path in glob.glob(os.path.join(folder, "*")):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def peak_mib():
    return peak_rss_mb()


def child(mode, folder, world):
    from wan.checkpoint import load_into_cell, open_checkpoint, zero3_slice

    holder = None
    if mode.startswith("cell"):
        import mindspore as ms
        from mindspore import Parameter, nn
        from mindspore.common.initializer import initializer

        class Holder(nn.Cell):
            pass

        with open_checkpoint(folder) as ckpt:
            shapes = {k: ckpt.shape(k) for k in ckpt.keys()}
        with nn.no_init_parameters():
            holder = Holder()
            blocks = {}
            for name, shape in shapes.items():
                _, idx, leaf = name.split(".")
                if idx not in blocks:
                    blocks[idx] = Holder()
                    setattr(holder, f"b{idx}", blocks[idx])
                setattr(blocks[idx], leaf, Parameter(initializer("zeros", shape, ms.bfloat16), name=leaf))
    base = peak_mib()
    start = time.perf_counter()
    nbytes, kept = 0, []
    if mode == "read":
        for path in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
            with open(path, "rb", buffering=0) as f:
                buf = bytearray(16 << 20)
                view = memoryview(buf)
                while True:
                    got = f.readinto(view)
                    if not got:
                        break
                    nbytes += got
    elif mode == "touch":
        with open_checkpoint(folder) as ckpt:
            for key in ckpt.keys():
                array = np.ones(ckpt.shape(key), np.uint16)
                nbytes += array.nbytes
                kept.append(array)
    elif mode.startswith("numpy"):
        with open_checkpoint(folder) as ckpt:
            for key in ckpt.keys():
                rows = zero3_slice(ckpt.shape(key), 1, world) if mode == "numpy_shard" else None
                array = ckpt.read(key, rows=rows, raw=True)
                nbytes += array.nbytes
                kept.append(array)
    else:
        from wan.checkpoint.readers import CheckpointReader

        class Renamed(CheckpointReader):
            """The synthetic keys 'blocks.<i>.<leaf>' as the holder's parameter names 'b<i>.<leaf>'."""

            fresh_arrays = True

            def __init__(self, inner):
                self.inner, self.path = inner, inner.path
                self._names = {"b" + k[len("blocks."):]: k for k in inner.keys()}

            def keys(self):
                return list(self._names)

            def shape(self, key):
                return self.inner.shape(self._names[key])

            def dtype(self, key):
                return self.inner.dtype(self._names[key])

            def _read_storage(self, key, row_range):
                return self.inner._read_storage(self._names[key], row_range)

        with open_checkpoint(folder) as ckpt:
            shard = (1, world) if mode == "cell_shard" else None
            report = load_into_cell(holder, Renamed(ckpt), network="dit", shard=shard)
        nbytes = sum(int(np.prod(p.shape)) * 2 for _, p in holder.parameters_and_names())
        assert len(report.loaded) == len(list(holder.parameters_and_names()))
    seconds = time.perf_counter() - start
    print(json.dumps({"mode": mode, "seconds": seconds, "bytes": nbytes, "base_mib": base, "peak_mib": peak_mib()}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=1.0, help="checkpoint size in GiB (default 1)")
    parser.add_argument("--world", type=int, default=4, help="ZeRO3 world size for the shard runs (default 4)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per mode; the table shows the fastest and the "
                        "highest peak RSS (default 3: the machine is shared)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.dir, args.world)
        return
    folder = tempfile.mkdtemp(prefix="bench_load_")
    try:
        t0 = time.perf_counter()
        total, _ = build_checkpoint(folder, args.gib)
        print(f"synthetic checkpoint: {total / 2**30:.2f} GiB bf16 in 4 shards ({time.perf_counter() - t0:.1f} s to "
              f"write), {folder}")
        rows = []
        for mode in ["read", "touch", "numpy_full", "numpy_shard", "cell_full", "cell_shard"]:
            runs = []
            for _ in range(args.repeat):
                drop_cache(folder)
                out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", mode, "--dir", folder,
                                      "--world", str(args.world)], capture_output=True, text=True, check=True)
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            best = min(runs, key=lambda r: r["seconds"])
            best["peak_mib"] = max(r["peak_mib"] for r in runs)
            best["times"] = [r["seconds"] for r in runs]
            rows.append(best)
        print(f"\n{'mode':<12} {'time s':>7} {'MiB moved':>10} {'MiB/s':>8} {'base RSS':>9} {'peak RSS':>9} "
              f"{'peak-base':>9}  all times s")
        for r in rows:
            mib = r["bytes"] / 2**20
            print(f"{r['mode']:<12} {r['seconds']:>7.2f} {mib:>10.0f} {mib / r['seconds']:>8.0f} {r['base_mib']:>9.0f} "
                  f"{r['peak_mib']:>9.0f} {r['peak_mib'] - r['base_mib']:>9.0f}  "
                  + " ".join(f"{t:.2f}" for t in r["times"]))
        print("\nMiB moved: bytes the mode read (read) or holds at the end (loads). base RSS: child's peak before "
              "loading (interpreter, imports, empty Cell); peak-base: what loading added.")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
