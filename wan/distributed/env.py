"""What msrun tells a worker, the checks on the parallel flags, and process-group set-up.

Everything here except ``init_process_group`` only reads the environment, so the flags are validated on every
rank before any communication or loading happens.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Mapping, Optional

__all__ = ["LaunchInfo", "launch_info", "validate_parallel_args", "init_process_group"]


@dataclass(frozen=True)
class LaunchInfo:
    """How this process was started.

    under_msrun: started by msrun (as a worker or as its scheduler). world_size: workers in the job (1 without
    msrun). rank: this worker's rank if msrun exported it before ``init()`` (single-node jobs do), else None.
    is_scheduler: msrun also runs the script as the cluster's scheduler process; there ``init()`` serves the
    cluster and the process must do nothing else.
    """
    under_msrun: bool
    world_size: int
    rank: Optional[int]
    is_scheduler: bool = False


def launch_info(environ: Optional[Mapping[str, str]] = None) -> LaunchInfo:
    """Read msrun's environment (MS_ROLE, MS_WORKER_NUM, RANK_ID). Pure: no device or network access."""
    env = os.environ if environ is None else environ
    role = env.get("MS_ROLE")
    if role not in ("MS_WORKER", "MS_SCHED") or "MS_WORKER_NUM" not in env:
        return LaunchInfo(under_msrun=False, world_size=1, rank=None)
    try:
        world = int(env["MS_WORKER_NUM"])
        rank = int(env["RANK_ID"]) if env.get("RANK_ID", "").lstrip("-").isdigit() else None
    except ValueError as exc:
        raise ValueError(f"msrun environment MS_WORKER_NUM={env.get('MS_WORKER_NUM')!r} is not an int; launch "
                         f"with msrun --worker_num=N --local_worker_num=N") from exc
    return LaunchInfo(under_msrun=True, world_size=world, rank=rank if rank is not None and rank >= 0 else None,
                      is_scheduler=role == "MS_SCHED")


def validate_parallel_args(*, ulysses_size: int = 1, dit_zero3: bool = False, t5_zero3: bool = False,
                           num_heads: Optional[int] = None, seq_tokens: Optional[int] = None,
                           launch: Optional[LaunchInfo] = None) -> LaunchInfo:
    """Check the parallel flags against the launch, before any loading. Raises ValueError naming the fix.

    Args:
        ulysses_size: ranks that split each attention sequence (``--ulysses_size``).
        dit_zero3, t5_zero3: shard the DiT / T5 weights over all ranks.
        num_heads: the DiT's attention heads (from its config.json), checked when given.
        seq_tokens: the DiT's unpadded token count for the requested size and frames, checked when given.
        launch: defaults to ``launch_info()`` (this process's environment).
    Returns:
        the LaunchInfo used.
    """
    launch = launch_info() if launch is None else launch
    if not isinstance(ulysses_size, int) or isinstance(ulysses_size, bool) or ulysses_size < 1:
        raise ValueError(f"--ulysses_size={ulysses_size!r}: pass a positive int (1 = no sequence parallelism)")
    wants = [name for name, on in (("--dit_zero3", dit_zero3), ("--t5_zero3", t5_zero3),
                                   (f"--ulysses_size {ulysses_size}", ulysses_size > 1)) if on]
    if wants and not launch.under_msrun:
        raise ValueError(f"{' '.join(wants)} need(s) several processes, but this process was not started by msrun. "
                         f"Launch with: msrun --worker_num=N --local_worker_num=N generate.py ... "
                         f"(e.g. scripts/run_2dev.sh), or drop the flag(s) for a single-device run")
    world = launch.world_size
    if ulysses_size > world:
        raise ValueError(f"--ulysses_size {ulysses_size} asks for more ranks than exist: msrun started {world} "
                         f"worker(s). Pass --ulysses_size <= {world} or launch msrun --worker_num={ulysses_size}")
    if world % ulysses_size != 0:
        raise ValueError(f"--ulysses_size {ulysses_size} does not divide the world size {world}: pass a divisor "
                         f"of {world} (e.g. --ulysses_size {world})")
    if num_heads is not None and num_heads % ulysses_size != 0:
        divisors = [d for d in range(1, world + 1) if num_heads % d == 0 and world % d == 0]
        raise ValueError(f"--ulysses_size {ulysses_size} does not divide the DiT's {num_heads} attention heads "
                         f"(each rank must own whole heads); pass one of {divisors}")
    if seq_tokens is not None and ulysses_size > 1 and seq_tokens < ulysses_size:
        raise ValueError(f"the video has only {seq_tokens} tokens, fewer than --ulysses_size {ulysses_size} "
                         f"sequence shards: pass --ulysses_size <= {seq_tokens} (or a larger --size/--frame_num)")
    return launch


def init_process_group(launch: Optional[LaunchInfo] = None):
    """Join msrun's process group: hccl on Ascend, mccl on CPU (chosen by MindSpore from the device target,
    which the caller sets first). Without msrun nothing is initialised. In msrun's scheduler process ``init()``
    serves the cluster until the job ends and the process then exits here (never returns).

    Returns:
        (rank, world_size).
    """
    launch = launch_info() if launch is None else launch
    if not launch.under_msrun:
        return 0, 1
    from mindspore.communication import get_group_size, get_rank, init

    init()
    if launch.is_scheduler:  # MindSpore normally ends the scheduler inside init(); never run the job here
        sys.exit(0)
    rank, world = get_rank(), get_group_size()
    if world != launch.world_size:
        raise RuntimeError(f"communication group has {world} ranks but msrun announced {launch.world_size}")
    return rank, world
