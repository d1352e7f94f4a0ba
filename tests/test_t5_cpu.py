"""--t5_cpu's worker process (used on Ascend) gives the in-process encoder's embeddings exactly."""
import os

import numpy as np

from conftest import ROOT
from wan.placement.t5_cpu import CpuTextEncoder
from wan.modules.t5 import T5EncoderModel
from wan.pipeline import infer_t5_config

TINY = os.path.join(ROOT, "examples", "tiny", "t2v-A14B")


def test_worker_process_matches_in_process_encoder():
    path = os.path.join(TINY, "models_t5_umt5-xxl-enc-bf16.pth")
    kwargs = dict(text_len=512, checkpoint_path=path, tokenizer_path=os.path.join(TINY, "google", "umt5-xxl"),
                  config=infer_t5_config(path))
    texts = ["a cat on a surfboard", "", "two dogs playing in the snow at night"]
    local = T5EncoderModel(**kwargs)(texts)
    worker = CpuTextEncoder(**kwargs)
    try:
        remote = worker(texts)
        assert worker._proc.pid != os.getpid()
    finally:
        worker.close()
    assert [u.shape for u in remote] == [u.shape for u in local]
    for a, b in zip(remote, local):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())


def test_worker_start_failure_is_reported():
    import pytest

    with pytest.raises(RuntimeError, match="failed to start"):
        CpuTextEncoder(text_len=512, checkpoint_path="/nonexistent.pth", tokenizer_path="/nonexistent")
