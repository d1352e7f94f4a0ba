"""``--t5_cpu``: the text encoder in a separate CPU process.

MindSpore 2.7 runs a PyNative process on one device target, so on an Ascend run the encoder cannot simply be
placed on the host. This worker process sets the CPU target, loads the encoder once (float32: CPU has no bf16
arithmetic), and answers encode requests over a pipe; the NPU never holds T5. The embeddings come back as
numpy arrays and become Tensors on the caller's device.
"""
from __future__ import annotations

import multiprocessing as mp
from typing import List


def _serve(conn, t5_kwargs: dict) -> None:
    try:
        from wan.modules.t5 import T5EncoderModel
        from wan.runtime import configure

        configure("CPU")
        encoder = T5EncoderModel(**t5_kwargs)
        conn.send(("ready", None))
    except BaseException as e:  # noqa: BLE001 - report any start-up failure to the parent, then stop
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    while True:
        texts = conn.recv()
        if texts is None:
            return
        try:
            conn.send(("ok", [u.asnumpy() for u in encoder(texts)]))
        except BaseException as e:  # noqa: BLE001
            conn.send(("error", f"{type(e).__name__}: {e}"))


class CpuTextEncoder:
    """Same call as ``T5EncoderModel``: ``encoder(texts) -> list of [L_i, dim]`` Tensors.

    ``t5_kwargs`` are ``T5EncoderModel`` arguments (text_len, checkpoint_path, tokenizer_path, config, ...).
    """

    model = None  # no Cell in this process: nothing for the offload policy to move

    def __init__(self, **t5_kwargs):
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, {**t5_kwargs, "dtype": None}), daemon=True,
                                 name="t5-cpu")
        self._proc.start()
        status, message = self._conn.recv()
        if status != "ready":
            self._proc.join(5)
            raise RuntimeError(f"the CPU text-encoder process failed to start: {message}")

    def __call__(self, texts, device=None) -> List:
        from mindspore import Tensor

        self._conn.send(list(texts) if not isinstance(texts, str) else [texts])
        status, payload = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"the CPU text-encoder process failed: {payload}")
        return [Tensor(u) for u in payload]

    def close(self) -> None:
        if self._proc.is_alive():
            self._conn.send(None)
            self._proc.join(10)

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
