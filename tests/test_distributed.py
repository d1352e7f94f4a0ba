"""Multi-device layer: flag validation in-process, and real ``msrun`` jobs with 2 CPU ranks.

The msrun jobs run the worker scripts in tests/distributed/. Parity tolerance for Ulysses: the sharded run does
the same float32 math on differently shaped pieces (per-rank matmuls over L/2 rows, attention over 2 of 4 heads),
so only accumulation order differs (~1e-7 relative per op; measured <= 3e-6 on outputs of scale ~9). We allow
1e-4 of the output scale, as the single-device DiT test does against the official outputs. ZeRO3 gathers the
exact weights and runs the identical ops, so it must match bit for bit.
"""
import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from wan.distributed import LaunchInfo, launch_info, validate_parallel_args

WORKERS = os.path.join(ROOT, "tests", "distributed")


# ------------------------------------------------------------------------------------------ in-process checks

def test_launch_info_reads_msrun_environment():
    assert launch_info({}) == LaunchInfo(False, 1, None)
    worker = launch_info({"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "4", "RANK_ID": "3"})
    assert worker == LaunchInfo(True, 4, 3, is_scheduler=False)
    sched = launch_info({"MS_ROLE": "MS_SCHED", "MS_WORKER_NUM": "2", "RANK_ID": "0"})
    assert sched.under_msrun and sched.is_scheduler and sched.world_size == 2
    with pytest.raises(ValueError, match="MS_WORKER_NUM"):
        launch_info({"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "two"})


@pytest.mark.parametrize("flags", [dict(dit_zero3=True), dict(t5_zero3=True), dict(ulysses_size=2)])
def test_parallel_flags_without_msrun_are_refused(flags):
    with pytest.raises(ValueError, match="msrun --worker_num"):
        validate_parallel_args(**flags, launch=LaunchInfo(False, 1, None))


def test_plain_single_device_run_needs_no_msrun():
    assert validate_parallel_args(launch=LaunchInfo(False, 1, None)).world_size == 1


@pytest.mark.parametrize("kwargs, message", [
    (dict(ulysses_size=4), r"--ulysses_size 4 asks for more ranks than exist: msrun started 2"),
    (dict(ulysses_size=0), r"--ulysses_size=0"),
    (dict(ulysses_size=2, num_heads=5), r"does not divide the DiT.s 5 attention heads .*; pass one of \[1\]"),
    (dict(ulysses_size=2, num_heads=4, seq_tokens=1), r"only 1 tokens, fewer than --ulysses_size 2"),
])
def test_bad_parallel_flags_name_the_value_and_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        validate_parallel_args(**kwargs, launch=LaunchInfo(True, 2, 0))


def test_ulysses_size_must_divide_the_world():
    with pytest.raises(ValueError, match="does not divide the world size 6"):
        validate_parallel_args(ulysses_size=4, launch=LaunchInfo(True, 6, 0))
    assert validate_parallel_args(ulysses_size=3, num_heads=24, seq_tokens=3,
                                  launch=LaunchInfo(True, 6, 0)).world_size == 6


# -------------------------------------------------------------------------------------------------- msrun

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _msrun(tmp_path, script, *args, workers=2, timeout=180, node_timeout=30):
    """Run ``msrun`` with ``workers`` CPU ranks; -> (return code, seconds, log dir)."""
    log_dir = str(tmp_path / "msrun_logs")
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    # How long the scheduler waits for a silent rank's heartbeat: short enough to end a failed job quickly, long
    # enough that a rank busy on this loaded 2-core machine is not declared dead.
    env["MS_NODE_TIMEOUT"] = str(node_timeout)
    env["GLOG_v"] = "3"  # MindSpore C++ logs: errors only
    cmd = [os.path.join(os.path.dirname(sys.executable), "msrun"), f"--worker_num={workers}",
           f"--local_worker_num={workers}", f"--master_port={_free_port()}", f"--log_dir={log_dir}", "--join=True",
           "--cluster_time_out=60", os.path.join(WORKERS, script), *map(str, args)]
    start = time.monotonic()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=timeout)
    return proc.returncode, time.monotonic() - start, log_dir


def _log(log_dir, rank):
    """worker_<rank>.log, or scheduler.log for rank "scheduler"."""
    name = "scheduler.log" if rank == "scheduler" else f"worker_{rank}.log"
    path = os.path.join(log_dir, name)
    if not os.path.isfile(path):
        return ""
    with open(path, errors="replace") as f:
        return f.read()


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    """One 2-rank msrun job computing every parity number (DiT t2v/i2v/ti2v, T5); -> [rank0, rank1] dicts."""
    out = tmp_path_factory.mktemp("parity")
    code, seconds, log_dir = _msrun(out, "worker_parity.py", out)
    assert code == 0, f"msrun failed ({seconds:.0f}s):\n{_log(log_dir, 0)[-3000:]}\n{_log(log_dir, 1)[-3000:]}"
    results = []
    for rank in range(2):
        with open(os.path.join(out, f"rank{rank}.json")) as f:
            results.append(json.load(f))
    return results


def _cases(parity):
    for res in parity:
        assert res["world"] == 2 and "mccl" in res["comm"]
        for case, rec in res["dit"].items():
            batches = sorted(int(k[1]) for k in rec if re.fullmatch(r"b\d_ulysses_vs_local", k))
            assert batches, case
            for b in batches:
                yield res["rank"], case, b, rec, (lambda key, b=b, rec=rec: rec[f"b{b}_{key}"])


def test_ulysses_forward_equals_single_process_and_official(parity):
    for rank, case, batch, rec, get in _cases(parity):
        tol = 1e-4 * max(1.0, get("scale"))
        where = f"rank {rank} {case} batch {batch}"
        assert get("ulysses_vs_local") <= tol, where
        assert get("ulysses_vs_official") <= tol, where
        # the plan really communicated: all-to-all in every block and the final gather
        assert get("ulysses_bytes").get("all_to_all(all_gather)", 0) > 0 and get("ulysses_bytes")["all_gather"] > 0


def test_zero3_forward_is_bit_identical_to_unsharded(parity):
    for rank, case, batch, rec, get in _cases(parity):
        assert get("zero3_vs_local") == 0.0, f"rank {rank} {case} batch {batch}: {get('zero3_vs_local')}"
        assert get("zero3_bytes")["all_gather"] > 0
        assert rec["gathered_per_call"] == 26  # every Linear of a 2-layer DiT (12 per block + text/time/head)


def test_zero3_and_ulysses_compose(parity):
    outputs = {}
    for rank, case, batch, rec, get in _cases(parity):
        tol = 1e-4 * max(1.0, get("scale"))
        assert get("both_vs_local") <= tol and get("both_vs_official") <= tol, f"rank {rank} {case} {batch}"
        outputs.setdefault((case, batch), []).append(get("output_sum"))
    for key, sums in outputs.items():  # both ranks hold the same gathered output
        assert len(sums) == 2 and sums[0] == sums[1], key


def test_each_rank_holds_about_half_the_weights(parity):
    for res in parity:
        for case, rec in res["dit"].items():
            full = rec["full_param_bytes"]
            # Loading reads only this rank's rows; never more than the final resident set.
            assert rec["shard_loaded_param_bytes"] <= rec["zero3_param_bytes"]
            # Biases, norms and the modulation vectors stay whole: a few % on this tiny model (dim 48).
            assert 0.45 * full <= rec["zero3_param_bytes"] <= 0.56 * full, (case, rec["zero3_param_bytes"], full)
        t5 = res["t5"]
        assert 0.45 * t5["full_param_bytes"] <= t5["zero3_vocab_parallel_param_bytes"] <= 0.55 * t5["full_param_bytes"]
    assert parity[0]["dit"]["t2v"]["zero3_param_bytes"] == parity[1]["dit"]["t2v"]["zero3_param_bytes"]


def test_t5_zero3_equals_unsharded(parity):
    for res in parity:
        t5 = res["t5"]
        assert t5["full_vs_official"] <= 2e-5 * t5["scale"]
        assert t5["zero3_gather_tables_vs_full"] == 0.0
        assert t5["zero3_vocab_parallel_vs_full"] == 0.0
        assert "token_embedding.weight" in t5["zero3_vocab_parallel_vocab_parallel"]


def test_a_failing_rank_ends_the_whole_job_quickly(tmp_path):
    code, seconds, log_dir = _msrun(tmp_path, "worker_fail.py", node_timeout=10)
    assert code != 0
    # rank 0 was blocked in an all-gather that rank 1 never joined; msrun must have killed it
    assert seconds < 90, f"took {seconds:.0f}s"
    assert "deliberate failure on rank 1" in _log(log_dir, 1)
    assert "rank 0 should not get here" not in _log(log_dir, 0)


def test_bad_flags_under_msrun_fail_on_every_rank_before_init(tmp_path):
    code, seconds, log_dir = _msrun(tmp_path, "worker_flags.py", 2, 5, 100)  # 5 heads cannot split in 2
    assert code != 0 and seconds < 90
    # Every process (both workers and msrun's scheduler, which runs the script too) checks the flags before
    # joining the group; msrun kills the other workers as soon as one exits, so a slower worker may be killed
    # before it prints. The first to finish must carry the message, and nobody may get past the checks.
    logs = [_log(log_dir, rank) for rank in (0, 1, "scheduler")]
    assert any("does not divide the DiT's 5 attention heads" in log for log in logs), logs[0][-2000:]
    assert not any("setup ok" in log for log in logs)


# ------------------------------------------------------------------------------------- whole generate.py runs

def _lora_for_tiny_a14b(folder):
    """A Lightning-layout LoRA (rank 2, both experts) for the embedded tiny A14B DiT (dim 32), written with the
    safetensors library."""
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(3)
    os.makedirs(folder)
    for expert in ("high_noise_model", "low_noise_model"):
        tensors = {}
        for block in range(2):
            for proj in ("self_attn.q", "self_attn.o", "ffn.0", "cross_attn.k"):
                stem = f"diffusion_model.blocks.{block}.{proj}"
                rows, cols = (64, 32) if proj == "ffn.0" else (32, 32)
                tensors[stem + ".lora_down.weight"] = rng.normal(0, 0.3, (2, cols)).astype(np.float32)
                tensors[stem + ".lora_up.weight"] = rng.normal(0, 0.3, (rows, 2)).astype(np.float32)
                tensors[stem + ".alpha"] = np.array(2.0, np.float32)
        save_file(tensors, os.path.join(folder, f"{expert}.safetensors"))
    return folder


GENERATE_CASES = {
    # two experts (4 steps at shift 1 use both), --offload_model and a LoRA merged shard-aware before ZeRO3
    "t2v-A14B": ["--size", "64*64", "--sample_steps", "4", "--sample_shift", "1", "--offload_model", "True",
                 "--lora_dir", "LORA", "--sample_solver", "unipc", "--sample_guide_scale", "3.0,4.0"],
    # image condition concatenated to the latent
    "i2v-A14B": ["--size", "64*64", "--sample_steps", "3", "--sample_shift", "1", "--image", "IMAGE"],
    # first-frame image: per-token timesteps, split along with the sequence
    "ti2v-5B": ["--size", "128*128", "--sample_steps", "2", "--image", "IMAGE"],
}


@pytest.mark.parametrize("task", sorted(GENERATE_CASES))
def test_generate_with_zero3_and_ulysses_writes_the_single_device_video(task, tmp_path):
    lora = _lora_for_tiny_a14b(str(tmp_path / "lora")) if "LORA" in GENERATE_CASES[task] else None
    image = os.path.join(ROOT, "examples", "i2v_input.png")
    flags = [lora if f == "LORA" else image if f == "IMAGE" else f for f in GENERATE_CASES[task]]
    common = ["--task", task, "--ckpt_dir", os.path.join(ROOT, "examples", "tiny", task), "--frame_num", "5",
              "--base_seed", "11", "--prompt", "a red fox in the snow", *flags]
    single = str(tmp_path / "single.mp4")
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_v="3")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "generate.py"), *common, "--save_file", single],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    assert proc.returncode == 0, proc.stdout.decode(errors="replace")[-3000:]

    dist = str(tmp_path / "dist.mp4")
    code, seconds, log_dir = _msrun(tmp_path, os.path.join(ROOT, "generate.py"), *common, "--save_file", dist,
                                    "--dit_zero3", "--t5_zero3", "--ulysses_size", "2")
    logs = [_log(log_dir, r) for r in range(2)]
    print(f"{task}: msrun {seconds:.1f}s")
    assert code == 0, (f"msrun failed ({seconds:.0f}s):\n{logs[0][-3000:]}\n{logs[1][-3000:]}\n"
                       f"{_log(log_dir, 'scheduler')[-2000:]}")
    # The parallel paths really ran (rank 0 logs at INFO; rank 1 only warnings, and it took part in every
    # collective rank 0 completed).
    assert "ulysses 2, dit_zero3 True, t5_zero3 True" in logs[0]
    assert logs[0].count("ZeRO3 over 2 ranks") == (3 if task.endswith("A14B") else 2)  # T5 + each expert
    assert "] INFO wan" not in logs[1], logs[1][-2000:]
    _assert_same_video(single, dist)
    assert "video written to" in logs[0] and "video written to" not in logs[1]  # only rank 0 writes


def _assert_same_video(single, dist):
    import imageio.v3 as iio
    import numpy as np

    a, b = iio.imread(single), iio.imread(dist)
    assert a.shape == b.shape and a.shape[0] == 5
    with open(single, "rb") as f1, open(dist, "rb") as f2:
        same_bytes = f1.read() == f2.read()
    if not same_bytes:
        # The float videos agree to ~4e-6 (float32 sums in another order), which can flip the uint8 rounding of a
        # few pixels; lossy H.264 on these noise-like tiny-model videos then spreads that into small block
        # differences (measured: ti2v-5B 52 dB PSNR). A different seed gives ~20 dB, a wrong split far less.
        mse = float(((a.astype(np.float64) - b) ** 2).mean())
        psnr = 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))
        assert psnr >= 40.0, f"videos differ: PSNR {psnr:.1f} dB"


def test_without_base_seed_every_rank_uses_rank0s_seed(tmp_path):
    """No --base_seed: rank 0 draws the seed and shares it; the Ulysses video equals the single-device video
    at that seed (per-rank seeds gave 22.7 dB)."""
    common = ["--task", "t2v-A14B", "--ckpt_dir", os.path.join(ROOT, "examples", "tiny", "t2v-A14B"),
              "--frame_num", "5", "--size", "64*64", "--sample_steps", "2", "--prompt", "a red fox in the snow"]
    dist = str(tmp_path / "dist.mp4")
    code, seconds, log_dir = _msrun(tmp_path, os.path.join(ROOT, "generate.py"), *common, "--save_file", dist,
                                    "--ulysses_size", "2")
    log0 = _log(log_dir, 0)
    assert code == 0, f"msrun failed ({seconds:.0f}s):\n{log0[-3000:]}\n{_log(log_dir, 1)[-3000:]}"
    seed = int(re.search(r"seed (\d+)", log0).group(1))
    single = str(tmp_path / "single.mp4")
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_v="3")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "generate.py"), *common, "--base_seed", str(seed),
                           "--save_file", single], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=120)
    assert proc.returncode == 0, proc.stdout.decode(errors="replace")[-3000:]
    _assert_same_video(single, dist)
