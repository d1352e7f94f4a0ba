"""ZeRO3 gathers and computes in the param dtype whatever the storage dtype (official FSDP
MixedPrecision(param_dtype=bf16)): float32 shards travel as bf16 and the layer computes with bf16 values.

In-process, with a recording stand-in for the 2-rank Communicator (the real 2-rank msrun runs are in
test_distributed.py): every rank holds the same rows here, so the gathered weight is known exactly.
"""
import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from wan.checkpoint.dtypes import bf16_bits_to_float32, float32_to_bf16_bits
from wan.distributed.zero3 import apply_zero3, model_param_dtype
from wan.modules import kernels


class RecordingComm:
    """all_gather = the caller's rows repeated for each rank; records the dtype and bytes that travel."""

    def __init__(self, size=2, rank=0):
        self.rank, self.size = rank, size
        self.gathered = []

    def all_gather(self, x, dim=0):
        self.gathered.append((x.dtype, int(x.size) * int(x.itemsize)))
        return ops.cat([x] * self.size, dim)


class Net(nn.Cell):
    def __init__(self):
        super().__init__()
        self.body = kernels.Linear(4, 6, dtype=ms.float32)  # a matmul layer: compute dtype set from outside
        self.island = kernels.Linear(4, 6, dtype=ms.float32, compute_dtype=ms.float32)  # a float32 island


def _round_bf16(x):
    return bf16_bits_to_float32(float32_to_bf16_bits(x))


def test_float32_shards_are_gathered_as_bf16_and_computed_with_bf16_values():
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((3, 4)).astype(np.float32)  # off the bf16 grid
    net = Net()
    for lin in (net.body, net.island):
        lin.weight.set_data(Tensor(rows), slice_shape=True)  # rank 0's shard of a [6, 4] weight, float32
        lin.bias.set_data(Tensor(np.zeros(6, np.float32)))
    net.body.compute_dtype = ms.bfloat16  # what WanModel.set_compute_dtype does on Ascend
    assert model_param_dtype(net) == ms.bfloat16
    comm = RecordingComm()
    summary = apply_zero3(net, comm)
    assert sorted(summary.gathered_per_call) == ["body.weight", "island.weight"]

    x = rng.standard_normal((2, 4)).astype(np.float32)
    y = net.island(Tensor(x)).asnumpy()  # float32 compute (CPU can run it) on the gathered weight
    assert comm.gathered == [(ms.bfloat16, 3 * 4 * 2)]  # bf16 on the wire, not the float32 storage
    full = np.concatenate([rows, rows])
    np.testing.assert_allclose(y, x @ _round_bf16(full).T, rtol=1e-6, atol=1e-6)
    assert np.abs(y - x @ full.T).max() > 1e-3  # a float32 gather would give this instead
    # the matmul layer's gathered weight is bf16 too (its bf16 matmul itself needs an NPU)
    assert net.body.weight_provider(net.body.weight).dtype == ms.bfloat16
    assert net.body.weight.dtype == ms.float32  # storage untouched


def test_without_a_param_dtype_the_storage_dtype_is_gathered():
    net = Net()
    for lin in (net.body, net.island):
        lin.weight.set_data(Tensor(np.ones((3, 4), np.float32)), slice_shape=True)
    comm = RecordingComm()
    apply_zero3(net, comm)  # CPU: no compute dtype set, float32 everywhere
    net.body(Tensor(np.ones((1, 4), np.float32)))
    assert comm.gathered == [(ms.float32, 3 * 4 * 4)]
