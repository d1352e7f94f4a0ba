"""msrun worker (2 CPU ranks): Ulysses, ZeRO3 and both together against the single-process forward.

Run by tests/test_distributed.py as ``msrun ... worker_parity.py OUT_DIR``. Every rank computes, on the tiny DiT
fixtures (t2v, i2v, ti2v, official weights and official reference outputs) and the tiny umT5:
  - the unsharded single-process forward (LOCAL plan, whole weights) in this process,
  - the same forward with a UlyssesPlan, with ZeRO3 weights, and with both,
and writes OUT_DIR/rank<r>.json with max abs differences, parameter bytes and the collective traffic. The test
asserts on those numbers; this script asserts nothing itself beyond crashing on errors.
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)


def main(out_dir):
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor, nn

    # One thread per rank: two ranks share the two cores of the test machine.
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU", runtime_num_threads=1)
    from wan.checkpoint import load_into_cell
    from wan.distributed import (Communicator, apply_ulysses, apply_zero3, init_process_group, parameter_bytes,
                                 setup_rank_logging)
    from wan.modules import kernels
    from wan.modules.model import LOCAL_PLAN, WanModel
    from wan.modules.t5 import T5Encoder

    kernels.set_backend("reference")
    rank, world = init_process_group()
    setup_rank_logging(rank, world)
    comm = Communicator(rank, world)
    fixtures = os.path.join(ROOT, "tests", "fixtures")
    result = {"rank": rank, "world": world, "comm": repr(comm), "dit": {}, "t5": {}}

    def diff(a, b):
        return float(np.abs(np.asarray(a) - np.asarray(b)).max())

    # (case, batches): batch 2 of ti2v has per-token timesteps (split along with the sequence); batch 2 of t2v
    # has two samples of different lengths (key masks across the shard boundary).
    for case, batches in (("t2v", (2,)), ("i2v", (1,)), ("ti2v", (2,))):
        folder = os.path.join(fixtures, "dit", case)
        inputs = dict(np.load(os.path.join(folder, "inputs.npz")))
        expected = dict(np.load(os.path.join(folder, "expected.npz")))

        def run(model, batch):
            n = 1 if batch == 1 else 2
            x = [Tensor(inputs[f"x{i}"]) for i in range(n)]
            ctx = [Tensor(inputs[f"context{i}"]) for i in range(n)]
            y = [Tensor(inputs[f"y{i}"]) for i in range(n)] if "y0" in inputs else None
            t = Tensor(inputs["t1"] if batch == 1 else inputs["t2"])
            return [o.asnumpy() for o in model(x, t, ctx, int(inputs["seq_len"]), y)]

        full = WanModel.from_pretrained(folder)
        sharded = WanModel.from_pretrained(folder, shard=(rank, world))
        loaded_bytes = parameter_bytes(sharded)
        summary = apply_zero3(sharded, comm)
        rec = {"full_param_bytes": parameter_bytes(full), "shard_loaded_param_bytes": loaded_bytes,
               "zero3_param_bytes": parameter_bytes(sharded), "gathered_per_call": len(summary.gathered_per_call),
               "replicated": summary.replicated, "seq_len": int(inputs["seq_len"])}
        for batch in batches:
            ref = run(full, batch)
            official = [expected["single0"]] if batch == 1 else [expected[f"batch{i}"] for i in range(2)]
            rec[f"b{batch}_local_vs_official"] = max(diff(a, b) for a, b in zip(ref, official))
            rec[f"b{batch}_scale"] = max(float(np.abs(o).max()) for o in official)

            apply_ulysses(full, comm)
            comm.stats.reset()
            out = run(full, batch)
            rec[f"b{batch}_ulysses_bytes"] = dict(comm.stats.bytes)
            full.plan = LOCAL_PLAN
            rec[f"b{batch}_ulysses_vs_local"] = max(diff(a, b) for a, b in zip(out, ref))
            rec[f"b{batch}_ulysses_vs_official"] = max(diff(a, b) for a, b in zip(out, official))

            comm.stats.reset()
            out = run(sharded, batch)
            rec[f"b{batch}_zero3_bytes"] = dict(comm.stats.bytes)
            rec[f"b{batch}_zero3_vs_local"] = max(diff(a, b) for a, b in zip(out, ref))

            apply_ulysses(sharded, comm)
            out = run(sharded, batch)
            sharded.plan = LOCAL_PLAN
            rec[f"b{batch}_both_vs_local"] = max(diff(a, b) for a, b in zip(out, ref))
            rec[f"b{batch}_both_vs_official"] = max(diff(a, b) for a, b in zip(out, official))
            rec[f"b{batch}_output_sum"] = float(sum(np.abs(o).sum() for o in out))
        result["dit"][case] = rec

    # T5: every large weight sharded; the token table (and the position tables) looked up vocab-parallel.
    tiny = dict(vocab=512, dim=32, dim_attn=32, dim_ffn=48, num_heads=4, num_layers=2, num_buckets=32,
                shared_pos=False)
    pth = os.path.join(fixtures, "t5", "umt5_tiny.pth")
    ref = np.load(os.path.join(fixtures, "t5", "encoder.npz"))
    ids, mask = Tensor(ref["ids"].astype(np.int32)), Tensor(ref["mask"].astype(np.int32))
    outs = {}
    for mode in ("full", "zero3_gather_tables", "zero3_vocab_parallel"):
        with nn.no_init_parameters():
            enc = T5Encoder(**tiny, dropout=0.0)
        load_into_cell(enc, pth, network="t5", shard=None if mode == "full" else (rank, world))
        enc.set_train(False)
        if mode != "full":
            s = apply_zero3(enc, comm, vocab_parallel_min_elements=1 if mode == "zero3_vocab_parallel" else 1 << 30)
            result["t5"][mode + "_vocab_parallel"] = s.vocab_parallel
        result["t5"][mode + "_param_bytes"] = parameter_bytes(enc)
        outs[mode] = enc(ids, mask).asnumpy()
    result["t5"]["full_vs_official"] = diff(outs["full"], ref["hidden"])
    for mode in ("zero3_gather_tables", "zero3_vocab_parallel"):
        result["t5"][mode + "_vs_full"] = diff(outs[mode], outs["full"])
    result["t5"]["scale"] = float(np.abs(ref["hidden"]).max())

    tmp = os.path.join(out_dir, f".rank{rank}.json.tmp")
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, os.path.join(out_dir, f"rank{rank}.json"))
    print("worker done", flush=True)


if __name__ == "__main__":
    from wan.distributed import run_guarded

    sys.exit(run_guarded(lambda: main(sys.argv[1])))
