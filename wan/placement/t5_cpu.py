"""``--t5_cpu``: the text encoder on the host, once per job.

MindSpore 2.7 runs a PyNative process on one device target, so on an Ascend run the encoder cannot simply be
placed on the host. ``CpuTextEncoder`` is a worker process that sets the CPU target, loads the encoder once
(float32 compute from the bf16 checkpoint: CPU has no bf16 arithmetic), and answers encode requests over a
pipe; the NPU never holds T5. The embeddings come back as numpy arrays and become Tensors on the caller's device.

Under msrun, ``SharedTextEncoder`` keeps that single encoder on rank 0 only and broadcasts its embeddings to
the other ranks (umt5-xxl is ~23 GB in float32: one copy per rank would multiply the host memory by the
number of ranks). The broadcast payload is small: [L, 4096] float32 per prompt, at most 8 MB.
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


class SharedTextEncoder:
    """``--t5_cpu`` under msrun: one encoder on rank 0 of ``comm``; every rank gets its embeddings.

    Same call as ``T5EncoderModel``: ``encoder(texts) -> list of [L_i, dim]`` float32 Tensors, identical on
    every rank. Every rank of ``comm`` must call it with the same number of texts (the pipeline does: each
    rank encodes the shared prompt). ``make_encoder`` is called on rank 0 only.

    Two broadcasts per call: the lengths and width (JSON), then the embeddings concatenated as one
    float32 [sum L_i, dim] tensor.
    """

    model = None  # no Cell on the device: nothing for the offload policy to move

    def __init__(self, comm, make_encoder):
        self.comm = comm
        self.encoder = make_encoder() if comm.rank == 0 else None

    def __call__(self, texts, device=None) -> List:
        import numpy as np
        from mindspore import Tensor

        texts = [texts] if isinstance(texts, str) else list(texts)
        outs = None
        if self.encoder is not None:
            outs = [np.asarray(u.asnumpy(), np.float32) for u in self.encoder(texts)]
        meta = self.comm.broadcast_json(None if outs is None else
                                        {"lens": [int(u.shape[0]) for u in outs], "dim": int(outs[0].shape[1])})
        lens, dim = meta["lens"], meta["dim"]
        if len(lens) != len(texts):
            raise RuntimeError(f"rank {self.comm.rank} asked for {len(texts)} embeddings but rank 0 encoded "
                               f"{len(lens)}: every rank must encode the same prompts")
        flat = np.concatenate(outs) if outs is not None else np.zeros((sum(lens), dim), np.float32)
        flat = self.comm.broadcast(Tensor(flat), 0).asnumpy()
        bounds = np.cumsum([0] + lens)
        return [Tensor(flat[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]

    def close(self) -> None:
        if self.encoder is not None and hasattr(self.encoder, "close"):
            self.encoder.close()
