"""The task layer: a builder for every configured task, the loop-facing hooks, and the one-way dependency."""
import ast
import os

import numpy as np
from PIL import Image

from conftest import ROOT
from wan.configs import TASKS, get_task
from wan.tasks import BUILDERS, FrozenFirstFrame, get_builder


def test_every_task_has_a_builder_of_its_kind():
    for task in TASKS.values():
        assert get_builder(task).kind == task.kind
    assert set(BUILDERS) >= {t.kind for t in TASKS.values()}


def test_tasks_never_import_the_pipeline_or_generate():
    folder = os.path.join(ROOT, "wan", "tasks")
    for name in os.listdir(folder):
        if not name.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(folder, name), encoding="utf-8").read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                mod = ("." * node.level) + (node.module or "")
                assert "pipeline" not in mod and "generate" not in mod and "distributed" not in mod, (name, mod)
            elif isinstance(node, ast.Import):
                assert all("pipeline" not in a.name for a in node.names), name


def test_frozen_first_frame_hooks_follow_the_official_mask():
    # ti2v: tokens of latent frame 0 get t = 0, every other token (and the padding) the step's t;
    # constrain() puts the clean frame back.
    shape = (2, 3, 4, 4)
    keep = np.ones(shape, np.float32)
    keep[:, 0] = 0
    frozen = np.zeros(shape, np.float32)
    frozen[:, 0] = 7.0
    cond = FrozenFirstFrame(shape, 14, (64, 64), keep=keep, frozen=frozen)
    t = cond.timestep(500.0)
    assert t.shape == (1, 14) and t.dtype == np.float32
    assert t[0, :4].tolist() == [0.0] * 4 and t[0, 4:].tolist() == [500.0] * 10
    out = cond.constrain(np.full(shape, -1.0, np.float32))
    assert (out[:, 0] == 7.0).all() and (out[:, 1:] == -1.0).all()


def test_geometry_is_the_official_sizing_rule():
    img = Image.new("RGB", (160, 120))
    assert get_builder(get_task("t2v-A14B")).geometry((1280, 720), 81).latent_shape == (16, 21, 90, 160)
    assert get_builder(get_task("i2v-A14B")).geometry((64, 64), 5, img).output_size == (64, 48)
    geo = get_builder(get_task("ti2v-5B")).geometry((1280, 704), 121, Image.new("RGB", (4000, 3000)))
    assert geo.output_size == (1088, 800) and geo.latent_shape == (48, 31, 50, 68)
