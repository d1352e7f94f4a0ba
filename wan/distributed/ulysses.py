"""Ulysses sequence parallelism through the DiT's ``SequencePlan`` seam.

The model pads the token sequence to a multiple of ``pad_multiple()``, keeps this rank's slice after patch
embedding (``split``), and calls ``self_attention`` in every block. Here attention trades the sequence split for a
head split with one all-to-all (q, k, v stacked), attends over the whole sequence for N/size heads, and trades
back; ``gather`` reassembles the sequence before unpatchify. Everything else in a block is per token, so it runs
on the local slice unchanged.
"""
from __future__ import annotations

from typing import Tuple

from mindspore import Tensor, ops

from ..modules import kernels
from ..modules.model import SequencePlan
from .comm import Communicator

__all__ = ["UlyssesPlan", "apply_ulysses", "check_ulysses"]


def check_ulysses(num_heads: int, size: int) -> None:
    if size < 1 or num_heads % size != 0:
        raise ValueError(f"Ulysses size {size} does not divide the model's {num_heads} attention heads; pass a "
                         f"--ulysses_size that divides {num_heads}")


class UlyssesPlan(SequencePlan):
    """Split the sequence over ``comm.size`` ranks; attention all-to-all's to heads and back.

    Tensor layouts: the model's hidden states are [B, L_local, C] with L_local = L_padded / size; attention
    inputs q, k, v are [B, L_local, N, D].
    """

    def __init__(self, comm: Communicator, num_heads: int):
        check_ulysses(num_heads, comm.size)
        self.comm = comm
        self.num_heads = num_heads

    def __repr__(self) -> str:
        return f"UlyssesPlan(size={self.comm.size}, rank={self.comm.rank}, heads={self.num_heads})"

    def pad_multiple(self) -> int:
        return self.comm.size

    def shard_range(self, length: int) -> Tuple[int, int]:
        assert length % self.comm.size == 0, f"padded length {length} is not a multiple of {self.comm.size}"
        per = length // self.comm.size
        return self.comm.rank * per, (self.comm.rank + 1) * per

    def split(self, x: Tensor, dim: int = 1) -> Tensor:
        start, stop = self.shard_range(x.shape[dim])
        return ops.narrow(x, dim, start, stop - start)

    def gather(self, x: Tensor, dim: int = 1) -> Tensor:
        return self.comm.all_gather(x, dim)

    def self_attention(self, q: Tensor, k: Tensor, v: Tensor, k_lens) -> Tensor:
        """q, k, v: [B, L/size, N, D] -> [B, L/size, N, D]; k_lens count keys of the whole padded sequence."""
        b = q.shape[0]
        qkv = ops.cat([q, k, v.astype(q.dtype)], 0)                         # [3B, L/size, N, D]
        qkv = self.comm.all_to_all(qkv, split_dim=2, concat_dim=1)          # [3B, L, N/size, D]
        q, k, v = qkv[:b], qkv[b:2 * b], qkv[2 * b:]
        out = kernels.attention(q, k, v, k_lens=k_lens)                     # [B, L, N/size, D]
        return self.comm.all_to_all(out, split_dim=1, concat_dim=2)         # [B, L/size, N, D]


def apply_ulysses(model, comm: Communicator):
    """Attach a UlyssesPlan to a ``WanModel`` (in place) and return the model. Size 1 leaves it local."""
    if comm.size == 1:
        return model
    model.plan = UlyssesPlan(comm, model.num_heads)
    return model
