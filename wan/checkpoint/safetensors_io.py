"""Safetensors without the safetensors library: header parsing, lazy/row reads, sharded folders, writing.

Format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}, optional
"__metadata__": {str: str}}, then the data region; data_offsets are [begin, end) relative to the data region.
Every offset is validated against the file size on open, so a truncated file or a header that lies about a
tensor's size is reported before anything is read.
"""
import hashlib
import json
import os
import struct

import numpy as np

from wan.utils.fileio import atomic_output

from .base import CheckpointReader, read_exact
from .dtypes import NUMPY_STORAGE
from .errors import CheckpointError

SAFETENSORS_DTYPES = {
    "BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
}
DTYPE_TO_SAFETENSORS = {v: k for k, v in SAFETENSORS_DTYPES.items()}

# A real header is a few hundred KB at most; anything larger is corruption, not a checkpoint.
MAX_HEADER_BYTES = 100 * 1024 * 1024


def _numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def parse_header(path):
    """Validate and parse a safetensors header.

    Returns (entries, metadata, data_start) where entries maps name -> (dtype_name, shape, begin, end) with
    absolute file offsets, in file order.
    """
    try:
        file_size = os.path.getsize(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"safetensors file not found: {path}") from None
    if file_size < 8:
        raise CheckpointError(f"{path}: {file_size} bytes is too short for a safetensors file (truncated?)")
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > MAX_HEADER_BYTES or 8 + header_len > file_size:
            raise CheckpointError(f"{path}: header length {header_len} does not fit in a file of {file_size} bytes; "
                                  "the file is truncated or not a safetensors file")
        raw = f.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: header is not valid JSON ({err}); the file is corrupted or not safetensors") \
            from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: header is not a JSON object; the file is corrupted or not safetensors")
    data_start = 8 + header_len
    data_size = file_size - data_start
    metadata = header.pop("__metadata__", None) or {}
    entries = {}
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise CheckpointError(f"{path}: header entry for {name!r} is malformed: {info!r}")
        st_dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if st_dtype not in SAFETENSORS_DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {st_dtype!r} "
                                  f"(supported: {', '.join(SAFETENSORS_DTYPES)})")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise CheckpointError(f"{path}: tensor {name!r} has an invalid shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            raise CheckpointError(f"{path}: tensor {name!r} has invalid data_offsets {offsets!r}")
        dtype = SAFETENSORS_DTYPES[st_dtype]
        expected = _numel(shape) * NUMPY_STORAGE[dtype].itemsize
        if offsets[1] - offsets[0] != expected:
            raise CheckpointError(
                f"{path}: header lies about tensor {name!r}: data_offsets {offsets} span {offsets[1] - offsets[0]} "
                f"bytes but shape {tuple(shape)} in {st_dtype} needs {expected}; the file is corrupted")
        if offsets[1] > data_size:
            raise CheckpointError(
                f"{path}: tensor {name!r} ends at data byte {offsets[1]} but the file holds only {data_size} data "
                f"bytes; the file is truncated, download it again")
        entries[name] = (dtype, tuple(shape), data_start + offsets[0], data_start + offsets[1])
    spans = sorted((e[2], e[3], n) for n, e in entries.items() if e[3] > e[2])
    for (b0, e0, n0), (b1, _, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise CheckpointError(f"{path}: tensors {n0!r} and {n1!r} overlap in the data region; "
                                  "the header is corrupted")
    return entries, metadata, data_start


class SafetensorsReader(CheckpointReader):
    """One .safetensors file. Reads go straight to the bytes of the requested rows."""

    fresh_arrays = True

    def __init__(self, path):
        self.path = str(path)
        self._entries, self.metadata, _ = parse_header(self.path)
        self._fd = None

    def keys(self):
        return list(self._entries)

    def shape(self, key):
        self._check_key(key)
        return self._entries[key][1]

    def dtype(self, key):
        self._check_key(key)
        return self._entries[key][0]

    def _read_storage(self, key, row_range):
        dtype, shape, begin, end = self._entries[key]
        np_dtype = NUMPY_STORAGE[dtype]
        if row_range is not None:
            row_bytes = _numel(shape[1:]) * np_dtype.itemsize
            begin, end = begin + row_range[0] * row_bytes, begin + row_range[1] * row_bytes
            shape = (row_range[1] - row_range[0],) + tuple(shape[1:])
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        data = read_exact(self._fd, begin, end - begin, self.path, f"tensor {key!r}")
        return data.view(np_dtype).reshape(shape)

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ShardedSafetensorsReader(CheckpointReader):
    """A folder of safetensors shards described by `*.safetensors.index.json` ({"weight_map": {key: file}}).

    Every shard named by the index must exist and its header must hold exactly the keys the index assigns
    to it; only one shard's file descriptor is needed per read, so shards are never loaded together.
    """

    fresh_arrays = True

    def __init__(self, index_path):
        self.path = str(index_path)
        folder = os.path.dirname(self.path)
        try:
            with open(self.path, encoding="utf-8") as f:
                index = json.load(f)
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{self.path}: not valid JSON ({err})") from None
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{self.path}: has no 'weight_map' object mapping tensor names to shard files")
        shard_names = sorted(set(weight_map.values()))
        missing = [s for s in shard_names if not os.path.isfile(os.path.join(folder, s))]
        if missing:
            raise CheckpointError(f"{self.path}: shard file(s) missing from {folder}: {', '.join(missing)}; "
                                  "download the complete checkpoint")
        self._shards = {s: SafetensorsReader(os.path.join(folder, s)) for s in shard_names}
        for shard_name, shard in self._shards.items():
            listed = {k for k, v in weight_map.items() if v == shard_name}
            present = set(shard.keys())
            if listed - present:
                raise CheckpointError(f"{shard.path}: lacks tensor(s) the index assigns to it: "
                                      f"{', '.join(sorted(listed - present)[:10])}; the shard is incomplete")
            if present - listed:
                raise CheckpointError(f"{shard.path}: holds tensor(s) the index does not list: "
                                      f"{', '.join(sorted(present - listed)[:10])}; index and shards disagree")
        self._where = {k: self._shards[v] for k, v in weight_map.items()}
        self.metadata = index.get("metadata") or {}

    def files(self):
        return [self.path] + [s.path for s in self._shards.values()]

    def keys(self):
        return list(self._where)

    def shape(self, key):
        self._check_key(key)
        return self._where[key].shape(key)

    def dtype(self, key):
        self._check_key(key)
        return self._where[key].dtype(key)

    def _read_storage(self, key, row_range):
        shard = self._where[key]
        return shard._read_storage(key, row_range)

    def close(self):
        for shard in self._shards.values():
            shard.close()


def write_safetensors(path, entries, metadata=None, chunk_bytes=64 << 20):
    """Write a safetensors file atomically, one tensor in memory at a time.

    entries: list of (name, dtype_name, shape, fetch) where fetch() returns the tensor in its storage form
    (bfloat16 as uint16 bits) with that shape. Tensors are written in sorted name order with the header
    serialized deterministically, so identical inputs give identical bytes. The file appears at `path` only
    once complete (temp file in the same folder + os.replace).
    Returns the sha256 hex digest of the bytes written (for verifying the file on disk afterwards).
    """
    entries = sorted(entries, key=lambda e: e[0])
    header, offset = {}, 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in sorted(metadata.items())}
    for name, dtype, shape, _ in entries:
        nbytes = _numel(shape) * NUMPY_STORAGE[dtype].itemsize
        header[name] = {"dtype": DTYPE_TO_SAFETENSORS[dtype], "shape": [int(d) for d in shape],
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    digest = hashlib.sha256()
    with atomic_output(path, durable=True) as tmp:
        with open(tmp, "wb") as f:
            for part in (struct.pack("<Q", len(raw)), raw):
                f.write(part)
                digest.update(part)
            for name, dtype, shape, fetch in entries:
                array = np.ascontiguousarray(fetch())
                want = NUMPY_STORAGE[dtype]
                assert array.dtype == want and tuple(array.shape) == tuple(shape), \
                    (name, array.dtype, want, array.shape, shape)
                buf = memoryview(array.reshape(-1).view(np.uint8))
                for start in range(0, len(buf), chunk_bytes):
                    f.write(buf[start:start + chunk_bytes])
                    digest.update(buf[start:start + chunk_bytes])
                del array, buf
    return digest.hexdigest()
