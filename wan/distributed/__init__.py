"""Multi-device inference: msrun process groups, ZeRO3 weight sharding, Ulysses sequence parallelism.

Entry point for generate.py (every rank runs the same code)::

    par = setup_parallel(ulysses_size=..., dit_zero3=..., t5_zero3=..., num_heads=..., seq_tokens=...)
    hooks = ParallelHooks(**par.hooks_kwargs())     # wan.pipeline: shard-aware loading + prepare_dit/t5
    ...                                             # every rank encodes text and runs the DiT
    if par.is_main: save(...)

``setup_parallel`` validates the flags against msrun's environment on every rank before anything is loaded,
joins the process group (hccl on Ascend, mccl on CPU) and builds the communicators. Nothing runs at import.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

from .comm import CommStats, Communicator, device_has_alltoall
from .env import LaunchInfo, init_process_group, launch_info, validate_parallel_args
from .log import is_main_rank, run_guarded, setup_rank_logging
from .ulysses import UlyssesPlan, apply_ulysses, check_ulysses
from .zero3 import VocabParallelEmbedding, Zero3Summary, apply_zero3, parameter_bytes

__all__ = ["ParallelSetup", "setup_parallel", "Communicator", "CommStats", "device_has_alltoall", "LaunchInfo",
           "launch_info", "validate_parallel_args", "init_process_group", "setup_rank_logging", "is_main_rank",
           "run_guarded", "UlyssesPlan", "apply_ulysses", "check_ulysses", "apply_zero3", "Zero3Summary",
           "VocabParallelEmbedding", "parameter_bytes"]

log = logging.getLogger(__name__)


@dataclass
class ParallelSetup:
    """This rank's place in the job and what to do to each network.

    world_comm: all ranks (ZeRO3 shards over it). ulysses_comm: the ranks that split one sequence (consecutive
    groups of ``ulysses_size``; the whole world when they are equal). Both None in a single-process run.
    """
    rank: int = 0
    world_size: int = 1
    ulysses_size: int = 1
    dit_zero3: bool = False
    t5_zero3: bool = False
    world_comm: Optional[Communicator] = None
    ulysses_comm: Optional[Communicator] = None
    zero3_summaries: dict = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        return is_main_rank(self.rank)

    @property
    def dit_shard(self):
        """(rank, world) for ``WanModel.from_pretrained(shard=...)`` / ``merge_lora(shard=...)``, or None."""
        return (self.rank, self.world_size) if self.dit_zero3 and self.world_size > 1 else None

    @property
    def t5_shard(self):
        """(rank, world) for ``T5EncoderModel(shard=...)``, or None."""
        return (self.rank, self.world_size) if self.t5_zero3 and self.world_size > 1 else None

    @property
    def sequence_multiple(self) -> int:
        return self.ulysses_size

    def prepare_dit(self, model):
        """After shard-aware loading (and LoRA merge): ZeRO3 gather hooks and the Ulysses plan. -> model."""
        if self.dit_shard is not None:
            self.zero3_summaries.setdefault("dit", []).append(apply_zero3(model, self.world_comm))
        if self.ulysses_size > 1:
            apply_ulysses(model, self.ulysses_comm)
        return model

    def prepare_t5(self, encoder):
        """``T5EncoderModel(shard_fn=...)``: ZeRO3 for the T5 encoder Cell. -> encoder."""
        if self.t5_shard is not None:
            self.zero3_summaries["t5"] = apply_zero3(encoder, self.world_comm)
        return encoder

    def hooks_kwargs(self) -> dict:
        """Keyword arguments for ``wan.pipeline.ParallelHooks``."""
        return dict(dit_shard=self.dit_shard, t5_shard=self.t5_shard, prepare_dit=self.prepare_dit,
                    prepare_t5=self.prepare_t5, sequence_multiple=self.sequence_multiple, is_main=self.is_main)

    def share(self, value):
        """Rank 0's ``value`` (JSON-serialisable: seeds, prompts) on every rank; itself in a single process.

        Anything drawn at random or produced by one rank (the seed, an extended prompt) must go through here,
        or the ranks' noise shards / text conditions silently disagree.
        """
        if self.world_comm is None:
            return value
        return self.world_comm.broadcast_json(value, root=0)

    def barrier(self) -> None:
        if self.world_comm is not None:
            self.world_comm.barrier()


def setup_parallel(args=None, world_size: Optional[int] = None, *, ulysses_size: int = 1, dit_zero3: bool = False,
                   t5_zero3: bool = False, num_heads: Optional[int] = None, seq_tokens: Optional[int] = None,
                   configure_logging: bool = True, launch: Optional[LaunchInfo] = None) -> ParallelSetup:
    """Validate the flags (every rank, before any loading), join msrun's process group, build communicators.

    Set the MindSpore device target before calling (``init`` picks hccl for Ascend, mccl for CPU).
    Without msrun and without parallel flags this returns a single-process setup and initialises nothing.
    Raises ValueError for bad flags (see ``validate_parallel_args``).

    Args:
        args: optional parsed generate.py flags; ``ulysses_size``, ``dit_zero3``, ``t5_zero3`` are read from it.
        world_size: optional, the world size the caller expects (checked against msrun's).
        ulysses_size, dit_zero3, t5_zero3: the flags, when ``args`` is not given.
        num_heads, seq_tokens: the DiT's head count and unpadded token count, checked when given.
    Returns:
        ParallelSetup: it has the attributes of ``wan.pipeline.ParallelHooks`` and can be passed as one.
    """
    if args is not None:
        ulysses_size = int(getattr(args, "ulysses_size", 1))
        dit_zero3 = bool(getattr(args, "dit_zero3", False))
        t5_zero3 = bool(getattr(args, "t5_zero3", False))
    launch = launch_info() if launch is None else launch
    if world_size is not None and world_size != launch.world_size:
        raise ValueError(f"expected {world_size} ranks but msrun started {launch.world_size}")
    launch = validate_parallel_args(ulysses_size=ulysses_size, dit_zero3=dit_zero3, t5_zero3=t5_zero3,
                                    num_heads=num_heads, seq_tokens=seq_tokens, launch=launch)
    if 1 < ulysses_size < launch.world_size:
        import mindspore as ms

        if ms.get_context("device_target") != "Ascend":
            raise ValueError(f"--ulysses_size {ulysses_size} smaller than the world size {launch.world_size} needs "
                             f"sub-groups, which MindSpore supports on Ascend only; on "
                             f"{ms.get_context('device_target')} pass --ulysses_size {launch.world_size}")
    rank, world = init_process_group(launch)
    if configure_logging:
        setup_rank_logging(rank, world)
    setup = ParallelSetup(rank=rank, world_size=world, ulysses_size=ulysses_size, dit_zero3=dit_zero3,
                          t5_zero3=t5_zero3)
    if world > 1:
        setup.world_comm = Communicator(rank, world)
        setup.ulysses_comm = _ulysses_comm(rank, world, ulysses_size, setup.world_comm)
    log.info("parallel: world %d, ulysses %d, dit_zero3 %s, t5_zero3 %s, %s", world, ulysses_size, dit_zero3,
             t5_zero3, setup.world_comm)
    return setup


def _ulysses_comm(rank: int, world: int, size: int, world_comm: Communicator) -> Optional[Communicator]:
    if size == 1:
        return None
    if size == world:
        return world_comm
    from mindspore.communication import create_group

    # Consecutive blocks of ranks; each rank creates (only) the group it belongs to. Each block computes the
    # same sample, so the extra blocks only add redundancy; ZeRO3 still shards over the whole world.
    first = rank // size * size
    name = f"wan_ulysses_{first}_{size}"
    create_group(name, list(range(first, first + size)))
    return Communicator(rank - first, size, group=name)
