"""The official residency rule on one device, checked with a mover that makes host residency observable.

On a CPU target host and device memory are the same, so a real move cannot be seen. The stand-in mover keeps
the true values aside and fills a network's parameters with NaN while it is "in host memory", restoring them
when it comes back: a network used without being made resident poisons the video, and the residency of every
network can be read at any moment (here: each time a DiT expert runs).
"""
import os

import numpy as np
import pytest
from mindspore import Tensor

from conftest import ROOT
from wan.configs import get_task
from wan.placement.offload import Offloader

TINY = os.path.join(ROOT, "examples", "tiny", "t2v-A14B")
KW = dict(size=(64, 64), frame_num=5, shift=12.0, sampling_steps=4, guide_scale=(3.0, 4.0), seed=11,
          progress=False)


class PoisoningMover:
    def __init__(self):
        self.host = {}  # id(cell) -> saved parameter values while "in host memory"
        self.moves = []

    def __call__(self, offloader, cell, to_device):
        self.moves.append((id(cell), to_device))
        params = list(cell.get_parameters())
        if not to_device:
            assert id(cell) not in self.host, "moved to the host twice"
            self.host[id(cell)] = [p.asnumpy().copy() for p in params]
            for p in params:
                p.set_data(Tensor(np.full(p.shape, np.nan, p.asnumpy().dtype)))
        else:
            assert id(cell) in self.host, "moved to the device while resident"
            for p, value in zip(params, self.host.pop(id(cell))):
                p.set_data(Tensor(value))

    def resident(self, cell):
        return id(cell) not in self.host


def _run(monkeypatch, offload_model):
    from wan.pipeline import WanPipeline

    mover = PoisoningMover()
    monkeypatch.setattr(Offloader, "_move", lambda self, cell, to_device: mover(self, cell, to_device))
    pipe = WanPipeline(get_task("t2v-A14B"), TINY, offload_model=offload_model)
    experts = {role: e.model for role, e in pipe.experts.items()}
    assert not any(mover.resident(m) for m in experts.values())  # init_on_cpu: loaded into host memory
    seen = []
    for role, model in experts.items():
        def traced(*args, _model=model, _role=role, _construct=model.construct, **kwargs):
            seen.append((_role, {r: mover.resident(m) for r, m in experts.items()},
                         mover.resident(pipe.text_encoder.model), mover.resident(pipe.vae.model)))
            return _construct(*args, **kwargs)
        monkeypatch.setattr(model, "construct", traced)
    video = pipe.generate("a red ball", **KW)
    return video, seen, mover, pipe


@pytest.mark.parametrize("offload_model", [True, False])
def test_only_the_expert_in_use_is_resident(monkeypatch, offload_model):
    video, seen, mover, pipe = _run(monkeypatch, offload_model)
    assert {role for role, *_ in seen} == {"high_noise", "low_noise"}  # 4 steps at shift 12 use both
    for role, dits, t5, vae in seen:
        assert dits == {r: r == role for r in dits}, (role, dits)  # the expert in use, and only it
        assert t5 is (not offload_model)  # --offload_model: T5 waits on the host after encoding
        assert vae  # the VAE stays resident, as official
    # each expert crossed to the device once and back at most once: no move per step
    per_cell = {}
    for cell, target in mover.moves:
        per_cell.setdefault(cell, []).append(target)
    for role, expert in pipe.experts.items():
        assert len(per_cell[id(expert.model)]) <= 3, (role, per_cell[id(expert.model)])
    assert np.isfinite(video).all()


def test_residency_moves_do_not_change_the_video(monkeypatch):
    """Every network is back (values intact) before it runs: the poisoned runs equal a run without moves."""
    from wan.pipeline import WanPipeline

    plain = WanPipeline(get_task("t2v-A14B"), TINY, offload_model=False)
    plain.offload.swap_experts = False  # no moves at all
    want = plain.generate("a red ball", **KW)
    for offload_model in (True, False):
        video, *_ = _run(monkeypatch, offload_model)
        np.testing.assert_array_equal(video, want)


def test_offloader_policy_without_a_pipeline():
    class Net:
        def __init__(self):
            self.params = []

        def get_parameters(self):
            return self.params

    a, b, t5, vae = Net(), Net(), Net(), Net()
    moves = []
    off = Offloader(False, swap_experts=True)
    names = {id(a): "a", id(b): "b", id(t5): "t5", id(vae): "vae"}
    off._move = lambda cell, to_device: moves.append((names[id(cell)], to_device))
    off.add_expert(a)
    off.add_expert(b)
    assert moves == [("a", False), ("b", False)]
    off.use(t5, a, b)  # encoding: nothing moves without --offload_model
    off.use(a, t5, a, b)
    off.use(b, t5, a, b)
    off.use(vae, a, b)  # decode: the last expert stays without --offload_model (official)
    assert moves[2:] == [("a", True), ("a", False), ("b", True)]
    assert off.is_resident(b) and not off.is_resident(a)
