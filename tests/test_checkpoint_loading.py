"""Key maps, strict loading into MindSpore Cells, and the ZeRO3 row rule (real files from the fixture script)."""
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, nn

from wan.checkpoint import CheckpointError, get_keymap, load_into_cell, open_checkpoint, zero3_shard_shape, zero3_slice
from wan.checkpoint.readers import DictReader

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "checkpoint")
TI2V = os.path.join(FIX, "ti2v_tiny")


def _bits(a):
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8).tobytes()


def _param_bits(p):
    """Raw bytes of a parameter (bf16 as its 16-bit pattern)."""
    return _bits(p.asnumpy())


class _Node(nn.Cell):
    pass


def cell_with(shapes, dtype=ms.float32):
    """A Cell whose parameters have exactly the given dotted names and shapes."""
    root = _Node()
    for name, shape in shapes.items():
        *path, leaf = name.split(".")
        node = root
        for part in path:
            if not hasattr(node, part):
                setattr(node, part, _Node())
            node = getattr(node, part)
        setattr(node, leaf, Parameter(ms.Tensor(np.zeros(shape, np.float32), dtype), name=name))
    return root


# ---- the ZeRO3 rule ---------------------------------------------------------------------------------------

def test_zero3_slice_partitions_dim0_and_replicates_the_rest():
    shape = (12, 5)
    pieces = [zero3_slice(shape, r, 4) for r in range(4)]
    assert [(s.start, s.stop) for s in pieces] == [(0, 3), (3, 6), (6, 9), (9, 12)]
    assert zero3_shard_shape(shape, 2, 4) == (3, 5)
    assert zero3_slice((12,), 0, 4) is None            # vectors replicate
    assert zero3_slice((10, 3), 0, 4) is None          # uneven dim 0 replicates
    assert zero3_slice((1, 6, 24), 0, 2) is None       # modulation replicates
    assert zero3_slice((12, 5), 0, 1) is None
    with pytest.raises(ValueError, match="rank"):
        zero3_slice(shape, 4, 4)
    with pytest.raises(ValueError, match="world_size"):
        zero3_slice(shape, 0, 0)


# ---- real DiT --------------------------------------------------------------------------------------------

def _tiny_wan_model():
    from wan.modules.model import WanModel

    config = WanModel.config_from_file(os.path.join(TI2V, "config.json"))
    with nn.no_init_parameters():
        return WanModel(**config)


def test_official_dit_loads_bit_exactly_into_wan_model():
    model = _tiny_wan_model()
    report = load_into_cell(model, TI2V, network="dit")
    assert report.missing == [] and report.unexpected == [] and len(report.loaded) == 69
    with open_checkpoint(TI2V) as ckpt:
        for name, p in model.parameters_and_names():
            assert p.dtype == ms.float32
            assert _param_bits(p) == _bits(ckpt.read(name)), name  # bf16 -> fp32 exact widening


def test_dit_loads_as_bf16_with_modulation_kept_fp32():
    model = _tiny_wan_model()
    load_into_cell(model, TI2V, network="dit", dtype="bf16")
    with open_checkpoint(TI2V) as ckpt:
        for name, p in model.parameters_and_names():
            if name.endswith("modulation"):
                assert p.dtype == ms.float32
                assert _param_bits(p) == _bits(ckpt.read(name))
            else:
                assert p.dtype == ms.bfloat16, name
                assert _param_bits(p) == _bits(ckpt.read(name, raw=True)), name


def test_wan_model_from_pretrained_uses_the_loader():
    from wan.modules.model import WanModel

    model = WanModel.from_pretrained(TI2V)
    with open_checkpoint(TI2V) as ckpt:
        assert _param_bits(model.head.head.weight) == _bits(ckpt.read("head.head.weight"))


def test_sharded_load_keeps_only_this_ranks_rows(monkeypatch):
    import wan.checkpoint.safetensors_io as st

    read_bytes = []
    real = st.read_exact
    monkeypatch.setattr(st, "read_exact", lambda fd, off, n, path, what: read_bytes.append(n) or
                        real(fd, off, n, path, what))
    world = 4
    with open_checkpoint(TI2V) as ckpt:
        full = {k: ckpt.read(k) for k in ckpt.keys()}
        total = sum(ckpt.nbytes(k) for k in ckpt.keys())
    pieces = {}
    per_rank_bytes = []
    for rank in range(world):
        read_bytes.clear()
        model = _tiny_wan_model()
        report = load_into_cell(model, TI2V, network="dit", shard=(rank, world))
        per_rank_bytes.append(sum(read_bytes))
        for name, p in model.parameters_and_names():
            rows = zero3_slice(full[name].shape, rank, world)
            if rows is None:
                assert name not in report.sharded and tuple(p.shape) == full[name].shape
                assert _param_bits(p) == _bits(full[name])
            else:
                assert report.sharded[name] == (rows.start, rows.stop)
                assert tuple(p.shape) == zero3_shard_shape(full[name].shape, rank, world)
                pieces.setdefault(name, []).append(p.asnumpy())
    for name, parts in pieces.items():
        assert _bits(np.concatenate(parts)) == _bits(full[name])
    # Each rank reads its quarter of the big weights plus the small replicated ones: well under half.
    assert max(per_rank_bytes) < 0.45 * total, (per_rank_bytes, total)


# ---- strictness ------------------------------------------------------------------------------------------

SHAPES = {"blocks.0.w": (8, 3), "blocks.0.b": (8,), "blocks.1.w": (8, 3), "head.w": (2, 8)}


def test_strict_errors_name_keys_and_both_shapes():
    sharded = os.path.join(FIX, "sharded")
    load_into_cell(cell_with(SHAPES), sharded, network="t5")  # exact match loads
    shapes = dict(SHAPES, **{"head.w": (3, 8), "extra.p": (4,)})
    del shapes["blocks.1.w"]
    with pytest.raises(CheckpointError) as err:
        load_into_cell(cell_with(shapes), sharded, network="t5")
    msg = str(err.value)
    assert "extra.p" in msg and "missing" in msg
    assert "blocks.1.w" in msg and "unexpected" in msg
    assert "head.w" in msg and "(2, 8)" in msg and "(3, 8)" in msg
    assert "model.safetensors.index.json" in msg


def test_non_strict_loads_the_matching_subset():
    shapes = {"blocks.0.w": (8, 3), "extra.p": (4,)}
    cell = cell_with(shapes)
    report = load_into_cell(cell, os.path.join(FIX, "sharded"), network="t5", strict=False)
    assert report.loaded == ["blocks.0.w"] and report.missing == ["extra.p"]
    assert sorted(report.unexpected) == ["blocks.0.b", "blocks.1.w", "head.w"]
    with open_checkpoint(os.path.join(FIX, "sharded")) as ckpt:
        assert _param_bits(dict(cell.parameters_and_names())["blocks.0.w"]) == _bits(ckpt.read("blocks.0.w"))


def test_mis_shaped_is_an_error_even_when_not_strict():
    with pytest.raises(CheckpointError, match=r"head.w.*\(2, 8\).*\(4, 8\)"):
        load_into_cell(cell_with({"head.w": (4, 8)}), os.path.join(FIX, "sharded"), network="t5", strict=False)


def test_keymap_renames_and_skips_are_applied():
    from wan.checkpoint.keymaps import KeyMap

    km = KeyMap("x", "float32", renames=((r"(.*)\.gamma", r"\1.weight"),), skip=(r".*\.running_mean",),
                keep_fp32=(r".*norm\.weight",))
    assert km.to_ours("a.norm.gamma") == "a.norm.weight"
    assert km.to_ours("a.running_mean") is None
    assert km.to_ours("a.q.weight") == "a.q.weight"
    assert km.param_dtype("a.norm.weight", "bfloat16") == "float32"
    with pytest.raises(ValueError, match="both map"):
        km.map_keys(["a.gamma", "a.weight"])
    assert get_keymap("dit").param_dtype("blocks.3.modulation", "bfloat16") == "float32"
    with pytest.raises(ValueError, match="unknown network"):
        get_keymap("unet")


def test_in_memory_reader_and_dtype_conversion_into_cell():
    arr = np.arange(6, dtype=np.float32).reshape(2, 3) + 0.5
    cell = cell_with({"w": (2, 3)}, dtype=ms.float16)
    load_into_cell(cell, DictReader({"w": arr}), network="t5")
    assert cell.w.dtype == ms.float16
    np.testing.assert_array_equal(cell.w.asnumpy(), arr.astype(np.float16))


def test_mindspore_ckpt_reader_round_trip(tmp_path):
    from wan.checkpoint.dtypes import float32_to_bf16_bits

    rng = np.random.default_rng(0)
    w32 = rng.standard_normal((4, 3)).astype(np.float32)
    cell = cell_with({"a.w": (4, 3), "a.b": (4,)})
    cell.a.w.set_data(ms.Tensor(w32))
    cell.a.b.set_dtype(ms.bfloat16)
    cell.a.b.set_data(ms.Tensor(np.array([1.0, -2.5, 3.140625, 0.1], np.float32), ms.bfloat16))
    path = str(tmp_path / "net.ckpt")
    ms.save_checkpoint(cell, path)
    with open_checkpoint(path) as ckpt:
        assert sorted(ckpt.keys()) == ["a.b", "a.w"]
        assert ckpt.dtype("a.b") == "bfloat16" and ckpt.dtype("a.w") == "float32"
        assert _bits(ckpt.read("a.w")) == _bits(w32)
        want = float32_to_bf16_bits(np.array([1.0, -2.5, 3.140625, 0.1], np.float32))
        assert _bits(ckpt.read("a.b", raw=True)) == _bits(want)
        assert _bits(ckpt.read("a.w", rows=(1, 3))) == _bits(w32[1:3])
