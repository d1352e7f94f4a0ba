"""msrun worker: rank 1 raises after the group is up while rank 0 blocks in a collective that can never complete.

Without the failure path (run_guarded + msrun killing the other workers) rank 0 would wait forever.
"""
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)


def main():
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor

    ms.set_context(device_target="CPU")
    from wan.distributed import Communicator, init_process_group, setup_rank_logging

    rank, world = init_process_group()
    setup_rank_logging(rank, world)
    comm = Communicator(rank, world)
    comm.all_gather(Tensor(np.ones((2,), np.float32))).asnumpy()  # both ranks are up and talking
    if rank == 1:
        raise RuntimeError("deliberate failure on rank 1")
    time.sleep(1.0)
    print("rank 0 enters a collective that rank 1 will never join", flush=True)
    comm.all_gather(Tensor(np.ones((2,), np.float32))).asnumpy()
    print("rank 0 should not get here", flush=True)


if __name__ == "__main__":
    from wan.distributed import run_guarded

    sys.exit(run_guarded(main))
