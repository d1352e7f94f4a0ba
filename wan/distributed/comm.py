"""Collectives over one group of ranks, with exact CPU equivalents and per-op byte accounting.

MindSpore 2.7 on CPU (mccl) has AllGather, AllReduce and Broadcast but no AlltoAll; there the all-to-all is an
AllGather followed by a local slice, which gives bit-identical results (it moves N times more data, which only
matters for the CPU tests). The choice is made once per ``Communicator``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np
import mindspore as ms
from mindspore import Tensor, ops

__all__ = ["Communicator", "CommStats", "device_has_alltoall"]


def device_has_alltoall() -> bool:
    """True where ``ops.AlltoAll`` has a kernel (Ascend, GPU); False on CPU (mccl)."""
    return ms.get_context("device_target") in ("Ascend", "GPU")


@dataclass
class CommStats:
    """Per collective kind: number of calls and bytes each rank received over the wire.

    Bytes are counted from the algorithm's data movement, not measured on the link: all-gather receives the
    (N-1) other shards; a real all-to-all receives (N-1)/N of its input; all-reduce counts the ring algorithm's
    2 (N-1)/N of the buffer.
    """
    calls: Dict[str, int] = field(default_factory=dict)
    bytes: Dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, nbytes: int) -> None:
        self.calls[kind] = self.calls.get(kind, 0) + 1
        self.bytes[kind] = self.bytes.get(kind, 0) + int(nbytes)

    def reset(self) -> None:
        self.calls.clear()
        self.bytes.clear()

    def total_bytes(self) -> int:
        return sum(self.bytes.values())


def _nbytes(x: Tensor) -> int:
    return int(x.size) * int(x.itemsize)


class Communicator:
    """Collectives among ``size`` ranks of ``group``; this process is ``rank`` in the group.

    Args:
        rank, size: this process's index in the group and the group size.
        group: MindSpore communication group name; default the world group (read after ``init()``).
        use_alltoall: force (True) or forbid (False) the native AlltoAll; default: where the device has it.
    """

    def __init__(self, rank: int, size: int, group: Optional[str] = None, use_alltoall: Optional[bool] = None):
        assert 0 <= rank < size, (rank, size)
        self.rank = rank
        self.size = size
        if group is None:
            from mindspore.communication import GlobalComm
            group = GlobalComm.WORLD_COMM_GROUP
        self.group = group
        self.use_alltoall = device_has_alltoall() if use_alltoall is None else bool(use_alltoall)
        self.stats = CommStats()
        self._ops: dict = {}

    def __repr__(self) -> str:
        return (f"Communicator(rank={self.rank}, size={self.size}, group={self.group!r}, "
                f"alltoall={'native' if self.use_alltoall else 'allgather'})")

    def _op(self, key, make):
        if key not in self._ops:
            self._ops[key] = make()
        return self._ops[key]

    # ------------------------------------------------------------------------------------------------ ops
    def all_gather(self, x: Tensor, dim: int = 0) -> Tensor:
        """Concatenate every rank's ``x`` along ``dim`` in rank order: [.., n, ..] -> [.., size * n, ..]."""
        if self.size == 1:
            return x
        dim = dim % x.ndim
        self.stats.add("all_gather", (self.size - 1) * _nbytes(x))
        return self._gather_raw(x, dim)

    def _gather_raw(self, x: Tensor, dim: int) -> Tensor:
        gathered = self._op("all_gather", lambda: ops.AllGather(group=self.group))(x)  # [size * d0, ...]
        if dim == 0:
            return gathered
        parts = ops.split(gathered, x.shape[0], 0)  # equal pieces, one per rank
        return ops.cat(parts, dim)

    def all_reduce_sum(self, x: Tensor) -> Tensor:
        if self.size == 1:
            return x
        self.stats.add("all_reduce", 2 * (self.size - 1) * _nbytes(x) // self.size)
        return self._op("all_reduce", lambda: ops.AllReduce(ops.ReduceOp.SUM, group=self.group))(x)

    def all_to_all(self, x: Tensor, split_dim: int, concat_dim: int) -> Tensor:
        """Split ``x`` into ``size`` equal chunks along ``split_dim``, send chunk j to rank j, and concatenate
        the chunks received along ``concat_dim`` in source-rank order (the semantics of ``ops.AlltoAll``).

        E.g. Ulysses: [B, L/N, H, D] with split_dim=2, concat_dim=1 -> [B, L, H/N, D].
        """
        if self.size == 1:
            return x
        split_dim, concat_dim = split_dim % x.ndim, concat_dim % x.ndim
        if x.shape[split_dim] % self.size != 0:
            raise ValueError(f"all_to_all: axis {split_dim} of shape {tuple(x.shape)} is not divisible by the "
                             f"group size {self.size}")
        if self.use_alltoall:
            self.stats.add("all_to_all", (self.size - 1) * _nbytes(x) // self.size)
            op = self._op(("all_to_all", split_dim, concat_dim),
                          lambda: ops.AlltoAll(self.size, split_dim, concat_dim, group=self.group))
            return op(x)
        # Exact equivalent from AllGather: every rank receives every input, then keeps its own chunk of each.
        self.stats.add("all_to_all(all_gather)", (self.size - 1) * _nbytes(x))
        everyone = ops.split(self._gather_raw(x, 0), x.shape[0], 0)  # size tensors shaped like x
        mine = [ops.split(t, t.shape[split_dim] // self.size, split_dim)[self.rank] for t in everyone]
        return ops.cat(mine, concat_dim)

    def broadcast(self, x: Tensor, root: int = 0) -> Tensor:
        """``root``'s ``x`` on every rank (same shape and dtype on every rank)."""
        if self.size == 1:
            return x
        self.stats.add("broadcast", _nbytes(x) if self.rank != root else 0)
        return self._op(("broadcast", root), lambda: ops.Broadcast(root, group=self.group))((x,))[0]

    def broadcast_json(self, value, root: int = 0):
        """``root``'s JSON-serialisable ``value`` (seed, prompt strings...) on every rank.

        Two broadcasts: the byte length, then the UTF-8 bytes. JSON, not pickle: nothing received is executed.
        Every rank must call it; non-root ranks may pass None.
        """
        if self.size == 1:
            return value
        payload = json.dumps(value).encode("utf-8") if self.rank == root else b""
        length = int(self.broadcast(Tensor(np.array([len(payload)], np.int32)), root).asnumpy()[0])
        # int32 per byte: CPU's Broadcast kernel takes float32/int32 only (the payload is a few hundred bytes)
        buf = np.zeros(max(length, 1), np.int32)
        if self.rank == root:
            buf[:length] = np.frombuffer(payload, np.uint8)
        data = self.broadcast(Tensor(buf), root).asnumpy()[:length].astype(np.uint8)
        return json.loads(data.tobytes().decode("utf-8"))

    def barrier(self) -> None:
        """Block until every rank arrives (a one-element all-reduce, not counted in ``stats``)."""
        if self.size > 1:
            op = self._op("all_reduce", lambda: ops.AllReduce(ops.ReduceOp.SUM, group=self.group))
            op(Tensor([1.0], ms.float32)).asnumpy()
