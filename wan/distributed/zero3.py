"""ZeRO3 for inference: every rank keeps 1/N of the rows of each large weight and gathers it just in time.

Flow: build the Cell without initialising (``nn.no_init_parameters``), load it shard-aware
(``checkpoint.load_into_cell(..., shard=(rank, world))`` keeps only this rank's ``checkpoint.zero3_slice`` rows, so no
rank ever holds the full model), then ``apply_zero3(cell, comm)``:

- every ``kernels.Linear`` whose weight is a row shard gets a ``weight_provider`` that all-gathers the full
  weight at call time; the gathered tensor lives only for that call;
- a large sharded lookup table (the T5 token embedding, 256k x 4096) is looked up vocab-parallel: each rank
  reads the ids that fall in its rows and an all-reduce sums the (one non-zero) contributions, exactly;
- any other sharded parameter (the DiT patch embedding, T5 relative-position tables: small) is gathered once
  and kept whole.

The model code is unaware of all this; parameter names do not change.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import List, Tuple

import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from wan.checkpoint.sharding import zero3_shard_shape, zero3_slice

from ..modules import kernels
from .comm import Communicator

__all__ = ["apply_zero3", "Zero3Summary", "VocabParallelEmbedding", "parameter_bytes", "model_param_dtype"]

log = logging.getLogger(__name__)

# Sharded lookup tables with at least this many elements are looked up vocab-parallel; smaller ones are
# gathered once (a per-call all-reduce of [L, L, heads] position biases would cost more than their rows).
VOCAB_PARALLEL_MIN_ELEMENTS = 1 << 20


@dataclass
class Zero3Summary:
    """What ``apply_zero3`` did (parameter names as in ``cell.parameters_and_names()``)."""
    gathered_per_call: List[str] = field(default_factory=list)
    vocab_parallel: List[str] = field(default_factory=list)
    replicated: List[str] = field(default_factory=list)
    sliced_here: List[str] = field(default_factory=list)


class _RowGather:
    """weight_provider for a Linear: the full [out, in] weight from every rank's [out/N, in] rows.

    With a ``dtype`` the shard is cast to it BEFORE the gather, as FSDP's ``MixedPrecision(param_dtype=bf16)``
    does: the wire carries bf16 (half the bytes of float32 storage) and the layer computes with bf16 values,
    whatever the storage dtype (a float32 island then widens them again, exactly).
    """

    def __init__(self, comm: Communicator, dtype=None):
        self.comm = comm
        self.dtype = dtype

    def __call__(self, shard: Tensor) -> Tensor:
        if self.dtype is not None and shard.dtype != self.dtype:
            shard = shard.astype(self.dtype)
        return self.comm.all_gather(shard, 0)


def model_param_dtype(cell: nn.Cell):
    """The dtype the cell's matmuls run in (``WanModel.set_compute_dtype``: bf16 on Ascend), or None when it
    computes in its storage dtype. The float32 islands (fixed compute dtype) do not count."""
    for _, sub in cell.cells_and_names():
        if isinstance(sub, kernels.Linear) and not sub.fixed_compute_dtype and sub.compute_dtype is not None:
            return sub.compute_dtype
    return None


class VocabParallelEmbedding(nn.Cell):
    """A lookup table whose rows are split over the ranks; drop-in for an Embedding with ``weight`` [num, dim].

    ``weight`` is this rank's rows [start, start + rows). Each rank looks up the ids it owns (zeros elsewhere)
    and an all-reduce sums the pieces: every output row has exactly one non-zero contribution, so the result
    equals the unsharded lookup bit for bit.
    """

    def __init__(self, weight: Parameter, num: int, start: int, comm: Communicator):
        super().__init__()
        self.weight = weight
        self.num = num
        self.dim = int(weight.shape[1])
        self.start = start
        self.rows = int(weight.shape[0])
        self.comm = comm

    def construct(self, ids: Tensor) -> Tensor:
        """ids: int [...] -> [..., dim]."""
        local = ids - self.start
        mine = ops.logical_and(local >= 0, local < self.rows)
        rows = ops.gather(self.weight, ops.select(mine, local, ops.zeros_like(local)), 0)
        rows = ops.select(ops.broadcast_to(mine.expand_dims(-1), rows.shape), rows, ops.zeros_like(rows))
        return self.comm.all_reduce_sum(rows)


def parameter_bytes(cell: nn.Cell) -> int:
    """Bytes of every parameter the cell holds on this rank (shards count at their local size)."""
    return sum(int(p.size) * int(p.itemsize) for p in cell.get_parameters())


def _full_shape(sub: nn.Cell, attr: str):
    """The unsharded shape of ``sub.<attr>`` from the cell's own sizes, or None for cells we do not know."""
    from ..modules.t5 import Embedding

    if isinstance(sub, kernels.Linear) and attr == "weight":
        return (sub.out_features, sub.in_features)
    if isinstance(sub, (Embedding, VocabParallelEmbedding)) and attr == "weight":
        return (sub.num, sub.dim)
    if isinstance(sub, kernels.PatchEmbed3d) and attr == "weight":
        return (sub.dim, sub.in_dim) + tuple(sub.patch_size)
    return None


def _direct_params(sub: nn.Cell) -> List[Tuple[str, Parameter]]:
    return [(p.name.rsplit(".", 1)[-1], p) for p in sub.get_parameters(expand=False)]


def apply_zero3(cell: nn.Cell, comm: Communicator,
                vocab_parallel_min_elements: int = VOCAB_PARALLEL_MIN_ELEMENTS, param_dtype="auto") -> Zero3Summary:
    """Make a shard-loaded Cell compute like the unsharded one, gathering weights just in time.

    Args:
        cell: a Cell loaded with ``shard=(comm.rank, comm.size)`` (each weight chosen by ``checkpoint.zero3_slice``
            holds only its rows). A Cell loaded whole is accepted too: its weights are cut to this rank's rows
            here (the full copy is freed, but it existed once, so prefer shard-aware loading).
        comm: the ranks that share the weights (all of them).
        param_dtype: the dtype weights are gathered and computed in, whatever their storage dtype (official
            FSDP ``MixedPrecision(param_dtype=bf16)``); "auto" = ``model_param_dtype(cell)`` (bf16 on Ascend,
            None on CPU: there the storage dtype, float32, is kept). Parameters gathered once are rounded to it.
    Returns:
        Zero3Summary. The cell is changed in place; parameter names stay the same.

    Every rank must call this with the same cell structure: the one-off gathers are collectives.
    """
    summary = Zero3Summary()
    if comm.size == 1:
        return summary
    if getattr(cell, "_zero3_comm", None) is not None:
        raise ValueError("apply_zero3 was already applied to this cell; apply it once")
    rank, world = comm.rank, comm.size
    if isinstance(param_dtype, str) and param_dtype == "auto":
        param_dtype = model_param_dtype(cell)
    swaps = []
    for prefix, sub in cell.cells_and_names():
        for attr, param in _direct_params(sub):
            name = f"{prefix}.{attr}" if prefix else attr
            full = _full_shape(sub, attr)
            have = tuple(param.shape)
            if full is None:
                # Unknown owner: a >= 2-D parameter whose rows split evenly cannot be whole after shard-aware
                # loading (the loader would have split it), so it is a shard of N times the rows.
                if len(have) < 2 or have[0] % world != 0 or zero3_slice(have, rank, world) is None:
                    continue
                full = (have[0] * world,) + have[1:]
            rows = zero3_slice(full, rank, world)
            if rows is None:
                if have != tuple(full):
                    raise ValueError(f"{name}: shape {have} but the unsharded shape is {tuple(full)} and the ZeRO3 "
                                     f"rule keeps it whole; was it loaded with a different world size?")
                continue
            if have == tuple(full):  # loaded whole: keep only this rank's rows
                param.set_data(Tensor(param.asnumpy()[rows]), slice_shape=True)
                summary.sliced_here.append(name)
            elif have != zero3_shard_shape(full, rank, world):
                raise ValueError(f"{name}: shape {have} is neither the full {tuple(full)} nor rank {rank}'s ZeRO3 "
                                 f"shard {zero3_shard_shape(full, rank, world)} for world size {world}; load the "
                                 f"checkpoint with shard=({rank}, {world})")
            if isinstance(sub, kernels.Linear):
                sub.weight_provider = _RowGather(comm, param_dtype)
                summary.gathered_per_call.append(name)
            elif _is_lookup(sub) and int(np.prod(full)) >= vocab_parallel_min_elements:
                swaps.append((prefix, sub, rows.start))
                summary.vocab_parallel.append(name)
            else:
                part = param if param_dtype is None or param.dtype == param_dtype else param.astype(param_dtype)
                param.set_data(comm.all_gather(part, 0).astype(param.dtype), slice_shape=True)
                summary.replicated.append(name)
    for prefix, sub, start in swaps:
        _replace_child(cell, prefix, VocabParallelEmbedding(sub.weight, sub.num, start, comm))
    cell._zero3_comm = comm
    log.info("ZeRO3 over %d ranks: %d weights gathered per call, %d vocab-parallel, %d replicated; %.1f MB of "
             "parameters on this rank", world, len(summary.gathered_per_call), len(summary.vocab_parallel),
             len(summary.replicated), parameter_bytes(cell) / 2 ** 20)
    return summary


def _is_lookup(sub: nn.Cell) -> bool:
    from ..modules.t5 import Embedding

    return isinstance(sub, Embedding)


def _replace_child(root: nn.Cell, path: str, new: nn.Cell) -> None:
    parent = root
    parts = path.split(".")
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, (nn.CellList, nn.SequentialCell)) else getattr(parent, part)
    last = parts[-1]
    if isinstance(parent, (nn.CellList, nn.SequentialCell)):
        parent[int(last)] = new
    else:
        setattr(parent, last, new)
