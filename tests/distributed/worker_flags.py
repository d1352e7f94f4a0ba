"""msrun worker: ``setup_parallel`` with the flags given on the command line (bad ones must fail everywhere).

usage: worker_flags.py ULYSSES_SIZE NUM_HEADS SEQ_TOKENS
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)


def main():
    import mindspore as ms

    ms.set_context(device_target="CPU")
    from wan.distributed import setup_parallel

    ulysses, heads, tokens = (int(a) for a in sys.argv[1:4])
    par = setup_parallel(ulysses_size=ulysses, dit_zero3=True, t5_zero3=True, num_heads=heads, seq_tokens=tokens)
    print(f"setup ok: rank {par.rank} of {par.world_size}", flush=True)


if __name__ == "__main__":
    from wan.distributed import run_guarded

    sys.exit(run_guarded(main))
