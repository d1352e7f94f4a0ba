"""Timing of the official PyTorch WanModel, called by bench_dit.py --official-python.

Runs ONLY in a separate interpreter that has torch and the official `wan22` package; the project never imports
torch. Argument: one JSON object (the WanModel config plus latent/repeat/warmup/threads). Prints one JSON line.
"""
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures"))
from make_dit_fixtures import load_official_model_module  # noqa: E402  (plain float32 attention, masks k_lens)



def peak_rss_mb() -> float:
    # The project's helper, loaded by path: putting the project on sys.path would shadow the official `wan`.
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "wan", "utils", "memory.py")
    spec = importlib.util.spec_from_file_location("_project_memory", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.peak_rss_mb()


def main():
    spec = json.loads(sys.argv[1])
    threads = spec.pop("threads")
    if threads:
        torch.set_num_threads(int(threads))
    f, h, w = (int(v) for v in spec.pop("latent").split(","))
    repeat, warmup = spec.pop("repeat"), spec.pop("warmup")
    official = load_official_model_module()
    model = official.WanModel(**spec).eval()
    in_dim = spec["out_dim"]
    rng = np.random.default_rng(0)
    x = [torch.from_numpy(rng.standard_normal((in_dim, f, h, w)).astype(np.float32))]
    y = [torch.from_numpy(rng.standard_normal((in_dim, f, h, w)).astype(np.float32))] \
        if spec["model_type"] == "i2v" else None
    ctx = [torch.from_numpy(rng.standard_normal((spec["text_len"] // 2, 4096)).astype(np.float32))]
    t = torch.tensor([500.0])
    seq_len = f * (h // 2) * (w // 2)
    times = []
    with torch.no_grad():
        for i in range(warmup + repeat):
            start = time.perf_counter()
            model(x, t, ctx, seq_len, y=y)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    print(json.dumps(dict(framework=f"torch {torch.__version__}", device="CPU", seq_len=seq_len,
                          sec_per_forward=float(np.median(times)),
                          peak_mb=peak_rss_mb())))


if __name__ == "__main__":
    main()
