"""msrun worker (2 CPU ranks): ``--t5_cpu`` keeps one text encoder for the job and broadcasts its embeddings.

Run by tests/test_t5_cpu.py as ``msrun ... worker_t5_cpu.py OUT_DIR``. Each rank
  - builds a SharedTextEncoder over the tiny umT5 of tests/fixtures/t5 (the checkpoint the official bf16 CPU
    numbers in tests/fixtures/precision/t5_cpu_bf16.npz were made from) and encodes the wrapper texts,
  - builds the WanPipeline of the tiny t2v-A14B with t5_cpu=True and the msrun ParallelSetup and encodes a
    prompt through it,
and writes OUT_DIR/rank<r>.npz (embeddings, how many encoders this rank built, the encoder class). The test
asserts on those; this script asserts nothing beyond crashing on errors.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)


def main(out_dir):
    import mindspore as ms
    import numpy as np

    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU", runtime_num_threads=1)
    from wan.configs import get_task
    from wan.distributed import setup_parallel
    from wan.modules.t5 import T5EncoderModel
    from wan.pipeline import WanPipeline, infer_t5_config
    from wan.placement.t5_cpu import SharedTextEncoder

    par = setup_parallel()  # no parallel flags: plain msrun ranks with a world communicator
    fix = os.path.join(ROOT, "tests", "fixtures")
    ref = np.load(os.path.join(fix, "precision", "t5_cpu_bf16.npz"))
    texts = [t.decode("utf-8") for t in ref["texts"]]
    path = os.path.join(fix, "t5", "umt5_tiny.pth")
    built = []

    def make():
        built.append(1)
        return T5EncoderModel(text_len=int(ref["text_len"]), checkpoint_path=path,
                              tokenizer_path=os.path.join(fix, "t5", "tokenizer"), config=infer_t5_config(path))

    shared = SharedTextEncoder(par.world_comm, make)
    hidden = np.concatenate([u.asnumpy() for u in shared(texts)])

    pipe = WanPipeline(get_task("t2v-A14B"), os.path.join(ROOT, "examples", "tiny", "t2v-A14B"), t5_cpu=True,
                       parallel=par)
    context, context_null = pipe.encode_text("a red fox in the snow", "")
    np.savez(os.path.join(out_dir, f"rank{par.rank}.npz"), hidden=hidden, built=len(built),
             has_encoder=shared.encoder is not None, pipe_encoder=type(pipe.text_encoder).__name__,
             pipe_has_encoder=getattr(pipe.text_encoder, "encoder", None) is not None,
             context=context[0].asnumpy(), context_null=context_null[0].asnumpy())


if __name__ == "__main__":
    from wan.distributed import run_guarded

    sys.exit(run_guarded(lambda: main(sys.argv[1])))
