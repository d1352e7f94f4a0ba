"""msrun worker (2 CPU ranks): the S2V DiT under Ulysses, ZeRO3 and both, against the official outputs.

Run by tests/test_s2v_model.py as ``msrun ... worker_s2v_parity.py OUT_DIR``. On the tiny S2V fixture (official
weights and outputs) every rank runs the forward with a UlyssesPlan (for the later clip the sequence split falls
inside a latent frame, so the shard-local audio injection pads partial frames) and, for one case, with ZeRO3
weights as well, and writes OUT_DIR/rank<r>.json with max abs differences. The test asserts on those numbers.
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

CASES = ("later_clip", "first_clip")


def main(out_dir):
    import mindspore as ms
    import numpy as np

    # One thread per rank: two ranks share the two cores of the test machine.
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU", runtime_num_threads=1)
    from wan.distributed import Communicator, apply_ulysses, apply_zero3, init_process_group
    from wan.modules import kernels
    from wan.modules.s2v.model_s2v import WanModel_S2V
    import test_s2v_model as t

    kernels.set_backend("reference")
    rank, world = init_process_group()
    comm = Communicator(rank, world)
    inputs = dict(np.load(os.path.join(t.FOLDER, "inputs.npz")))
    expected = dict(np.load(os.path.join(t.FOLDER, "expected.npz")))
    folder = os.path.join(t.FOLDER, "fp32")
    ulysses = apply_ulysses(WanModel_S2V.from_pretrained(folder), comm)
    both = apply_ulysses(WanModel_S2V.from_pretrained(folder, shard=(rank, world)), comm)
    summary = apply_zero3(both, comm)
    result = {"rank": rank, "world": world, "gathered_per_call": len(summary.gathered_per_call)}
    for case in CASES:
        official = expected[f"fp32/{case}"]
        rec = {"scale": float(np.abs(official).max()),
               "ulysses_vs_official": float(np.abs(t._call(ulysses, inputs, t.CASES[case]) - official).max())}
        if case == "later_clip":
            rec["both_vs_official"] = float(np.abs(t._call(both, inputs, t.CASES[case]) - official).max())
        result[case] = rec
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
