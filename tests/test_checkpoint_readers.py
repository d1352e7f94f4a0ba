"""Readers against real files written by torch.save / safetensors (tests/fixtures/make_checkpoint_fixtures.py)."""
import json
import os
import pickle
import shutil
import struct
import zipfile

import numpy as np
import pytest

from wan.checkpoint import CheckpointError, open_checkpoint
from wan.checkpoint import base as checkpoint_base
from wan.checkpoint.dtypes import bf16_bits_to_float32, cast_array, float32_to_bf16_bits

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "checkpoint")
EXPECTED_PTH = dict(np.load(os.path.join(FIX, "expected_pth.npz")))
EXPECTED_ST = dict(np.load(os.path.join(FIX, "expected_st.npz")))


def _bits(a):
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8).tobytes()


@pytest.mark.parametrize("fname,dtype", [("plain_fp32.pth", "float32"), ("plain_fp16.pth", "float16"),
                                         ("plain_bf16.pth", "bfloat16"), ("t5_like.pth", "bfloat16")])
def test_pth_reads_every_tensor_bit_exactly(fname, dtype):
    expected = {k.split("|", 1)[1]: v for k, v in EXPECTED_PTH.items() if k.startswith(fname + "|")}
    with open_checkpoint(os.path.join(FIX, fname)) as ckpt:
        assert sorted(ckpt.keys()) == sorted(expected)
        for key, want in expected.items():
            assert ckpt.dtype(key) == dtype
            assert ckpt.shape(key) == want.shape
            raw = ckpt.read(key, raw=True)
            assert raw.shape == want.shape and _bits(raw) == _bits(want), key
            value = ckpt.read(key)
            if dtype == "bfloat16":
                assert value.dtype == np.float32
                assert _bits(value) == _bits(bf16_bits_to_float32(want))
            else:
                assert value.dtype == want.dtype


def test_pth_row_reads_match_full_reads_including_strided_views():
    with open_checkpoint(os.path.join(FIX, "plain_bf16.pth")) as ckpt:
        for key in ["weight", "conv.weight", "transposed", "rows_2_to_5", "base"]:
            full = ckpt.read(key, raw=True)
            part = ckpt.read(key, rows=slice(1, 3), raw=True)
            assert _bits(part) == _bits(np.ascontiguousarray(full[1:3])), key
        assert ckpt.read("weight", rows=(0, 0)).shape == (0, 3)
        with pytest.raises(CheckpointError, match="out of range"):
            ckpt.read("weight", rows=slice(2, 9))
        with pytest.raises(CheckpointError, match="scalar"):
            ckpt.read("scalar", rows=slice(0, 1))


def test_pth_nested_dicts_and_parameters():
    with open_checkpoint(os.path.join(FIX, "nested.pth")) as ckpt:
        assert sorted(ckpt.keys()) == ["state_dict.encoder.w", "state_dict.head.b"]
        np.testing.assert_array_equal(ckpt.read("state_dict.encoder.w"), EXPECTED_PTH["nested.pth|state_dict.encoder.w"])
    with open_checkpoint(os.path.join(FIX, "params.pth")) as ckpt:
        np.testing.assert_array_equal(ckpt.read("weight"), EXPECTED_PTH["params.pth|weight"])


def test_pth_rows_read_only_the_requested_bytes(monkeypatch):
    sizes = []
    real = checkpoint_base.read_exact

    def spy(fd, offset, nbytes, path, what):
        sizes.append(nbytes)
        return real(fd, offset, nbytes, path, what)

    monkeypatch.setattr("wan.checkpoint.pth.read_exact", spy)
    with open_checkpoint(os.path.join(FIX, "plain_fp32.pth")) as ckpt:
        ckpt.read("base", rows=slice(4, 6))
    assert sizes == [2 * 5 * 4]


# ---- hostile pickles: nothing may execute, the error names the global ----------------------------------------

def _zip_with_pickle(path, pickle_bytes):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle_bytes)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("func,name", [(os.system, f"{os.system.__module__}.system"), (eval, "builtins.eval"),
                                       (exec, "builtins.exec"), (getattr, "builtins.getattr")])
@pytest.mark.parametrize("protocol", [2, 4])
def test_hostile_pickles_are_refused_without_running(tmp_path, func, name, protocol):
    marker = tmp_path / "pwned"
    payload = {"weight": _Evil(func, f"open({str(marker)!r}, 'w').close()" if func is not os.system
                               else f"touch {marker}")}
    path = tmp_path / "evil.pth"
    _zip_with_pickle(path, pickle.dumps(payload, protocol=protocol))
    with pytest.raises(CheckpointError) as err:
        open_checkpoint(path)
    assert name in str(err.value) and str(path) in str(err.value)
    assert not marker.exists()


def test_hostile_global_disguised_as_torch_name_is_refused(tmp_path):
    # A pickle naming a torch module global that is not a tensor-rebuild function.
    data = b"\x80\x02ctorch.serialization\nload\nq\x00X\x01\x00\x00\x00xq\x01\x85q\x02Rq\x03."
    path = tmp_path / "evil2.pth"
    _zip_with_pickle(path, data)
    with pytest.raises(CheckpointError, match="torch.serialization.load"):
        open_checkpoint(path)


def test_raw_pickle_that_is_not_a_zip_is_refused(tmp_path):
    path = tmp_path / "legacy.pth"
    path.write_bytes(pickle.dumps(_Evil(os.system, "true")))
    with pytest.raises(CheckpointError, match="not a zip-format"):
        open_checkpoint(path)


# ---- corrupted .pth -------------------------------------------------------------------------------------------

def test_truncated_pth(tmp_path):
    data = open(os.path.join(FIX, "t5_like.pth"), "rb").read()
    path = tmp_path / "t5.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="t5.pth"):
        open_checkpoint(path)


def test_flipped_byte_in_pth_tensor_fails_crc(tmp_path):
    src = os.path.join(FIX, "plain_fp32.pth")
    with zipfile.ZipFile(src) as z:
        info = z.getinfo(next(n for n in z.namelist() if n.endswith("/data/0")))
    raw = bytearray(open(src, "rb").read())
    with open(src, "rb") as f:
        f.seek(info.header_offset + 26)
        n, e = struct.unpack("<HH", f.read(4))
    raw[info.header_offset + 30 + n + e + 1] ^= 0xFF
    path = tmp_path / "flipped.pth"
    path.write_bytes(bytes(raw))
    with open_checkpoint(path) as ckpt:
        key = next(k for k in ckpt.keys() if ckpt._tensors[k].storage.key == "0")
        with pytest.raises(CheckpointError, match="CRC"):
            ckpt.read(key)


def test_pth_storage_shorter_than_its_tensors(tmp_path):
    src = os.path.join(FIX, "plain_fp16.pth")
    path = tmp_path / "short.pth"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zout:
        for name in zin.namelist():
            data = zin.read(name)
            zout.writestr(name, data[:-2] if name.endswith("/data/0") else data)
    with pytest.raises(CheckpointError, match="corrupted"):
        open_checkpoint(path)


# ---- safetensors ------------------------------------------------------------------------------------------------

def test_safetensors_single_file_exact():
    with open_checkpoint(os.path.join(FIX, "mixed.safetensors")) as ckpt:
        assert ckpt.dtype("a.bf16") == "bfloat16" and ckpt.dtype("b.fp16") == "float16"
        assert ckpt.dtype("c.fp32") == "float32" and ckpt.dtype("d.i64") == "int64"
        for key in ckpt.keys():
            want = EXPECTED_ST[f"mixed.safetensors|{key}"]
            assert _bits(ckpt.read(key, raw=True)) == _bits(want)
            assert _bits(ckpt.read(key, rows=slice(1, 2), raw=True)) == _bits(np.ascontiguousarray(want[1:2]))
        assert _bits(ckpt.read("a.bf16")) == _bits(bf16_bits_to_float32(EXPECTED_ST["mixed.safetensors|a.bf16"]))


@pytest.mark.parametrize("which", ["folder", "index"])
def test_sharded_safetensors(which):
    path = os.path.join(FIX, "sharded")
    if which == "index":
        path = os.path.join(path, "model.safetensors.index.json")
    with open_checkpoint(path) as ckpt:
        assert sorted(ckpt.keys()) == ["blocks.0.b", "blocks.0.w", "blocks.1.w", "head.w"]
        assert len(ckpt.files()) == 3
        for key in ckpt.keys():
            want = EXPECTED_ST[f"sharded|{key}"]
            assert _bits(ckpt.read(key, raw=True)) == _bits(want)
            assert _bits(ckpt.read(key, rows=(1, 2), raw=True)) == _bits(np.ascontiguousarray(want[1:2]))


def test_missing_shard_is_named(tmp_path):
    folder = tmp_path / "sharded"
    shutil.copytree(os.path.join(FIX, "sharded"), folder)
    os.remove(folder / "model-00002-of-00002.safetensors")
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors"):
        open_checkpoint(folder)


def test_index_listing_a_key_the_shard_lacks(tmp_path):
    folder = tmp_path / "sharded"
    shutil.copytree(os.path.join(FIX, "sharded"), folder)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"]["blocks.9.w"] = "model-00001-of-00002.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="blocks.9.w"):
        open_checkpoint(folder)


def _write_st(path, header, data):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def test_truncated_safetensors(tmp_path):
    data = open(os.path.join(FIX, "mixed.safetensors"), "rb").read()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match="truncated") as err:
        open_checkpoint(path)
    assert "cut.safetensors" in str(err.value)
    path.write_bytes(data[:5])
    with pytest.raises(CheckpointError, match="too short"):
        open_checkpoint(path)


def test_bf16_header_lying_about_size(tmp_path):
    path = tmp_path / "liar.safetensors"
    _write_st(path, {"w": {"dtype": "BF16", "shape": [4, 4], "data_offsets": [0, 16]}}, bytes(32))
    with pytest.raises(CheckpointError, match=r"header lies about tensor 'w'.*needs 32"):
        open_checkpoint(path)


def test_corrupted_safetensors_headers(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", 10 ** 12) + bytes(64))
    with pytest.raises(CheckpointError, match="header length"):
        open_checkpoint(path)
    path.write_bytes(struct.pack("<Q", 6) + b"{nope}" + bytes(8))
    with pytest.raises(CheckpointError, match="not valid JSON"):
        open_checkpoint(path)
    _write_st(path, {"w": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}}, bytes(2))
    with pytest.raises(CheckpointError, match="unsupported dtype"):
        open_checkpoint(path)
    _write_st(path, {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                     "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12))
    with pytest.raises(CheckpointError, match="overlap"):
        open_checkpoint(path)


def test_open_checkpoint_rejects_unknown_inputs(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_checkpoint(tmp_path / "nothing.pth")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(CheckpointError, match="unknown checkpoint type"):
        open_checkpoint(tmp_path / "x.txt")
    with pytest.raises(CheckpointError, match="expected one"):
        open_checkpoint(tmp_path)


def test_bf16_rounding_helpers():
    x = np.array([1.0, 1.00390625, 1.01171875, -2.5, np.inf, 3.0e38, np.nan], np.float32)
    bits = float32_to_bf16_bits(x)
    assert bits[:6].tolist() == [0x3F80, 0x3F80, 0x3F82, 0xC020, 0x7F80, 0x7F62]  # ties go to even
    assert np.isnan(bf16_bits_to_float32(bits)[6])
    assert cast_array(bits, "bfloat16", "bfloat16") is bits
    np.testing.assert_array_equal(cast_array(bits[:4], "bfloat16", "float32"), [1.0, 1.0, 1.015625, -2.5])
