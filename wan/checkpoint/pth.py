"""A safe reader for PyTorch zip-format checkpoints (`torch.save` since 1.6), without torch.

The pickle inside is run by a restricted unpickler: the only globals it resolves are the handful torch
uses to describe tensors (the rebuild functions, the typed storage classes, OrderedDict), each mapped to a
harmless local stand-in that records shape/stride/offset. Any other global (os.system, builtins.eval, ...)
stops the load with an error naming it, so no code from the file ever runs. Tensor bytes stay on disk
until read(), which reads only the rows asked for.

Layout of such a file: a zip (entries stored, not compressed) with `<prefix>/data.pkl`, `<prefix>/byteorder`
and one entry `<prefix>/data/<key>` per storage.
"""
import _compat_pickle
import collections
import io
import os
import pickle
import struct
import zipfile
import zlib

import numpy as np

from .base import CheckpointReader, read_exact
from .dtypes import NUMPY_STORAGE
from .errors import CheckpointError

_STORAGE_DTYPES = {
    "BFloat16Storage": "bfloat16", "HalfStorage": "float16", "FloatStorage": "float32",
    "DoubleStorage": "float64", "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
    "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
}


class _StorageType:
    __slots__ = ("dtype",)

    def __init__(self, dtype):
        self.dtype = dtype


class _Storage:
    __slots__ = ("key", "dtype", "numel")

    def __init__(self, key, dtype, numel):
        self.key, self.dtype, self.numel = key, dtype, numel


class _TensorRef:
    """Where a tensor lives: storage + element offset + shape + element strides."""
    __slots__ = ("storage", "offset", "shape", "stride")

    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride


def _is_int_tuple(value):
    return isinstance(value, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    if not isinstance(storage, _Storage) or not isinstance(storage_offset, int) or not _is_int_tuple(size) \
            or not _is_int_tuple(stride) or len(size) != len(stride) or storage_offset < 0 \
            or any(d < 0 for d in size) or any(s < 0 for s in stride):
        raise pickle.UnpicklingError("malformed tensor record (storage/offset/size/stride)")
    return _TensorRef(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, *unused):
    if not isinstance(data, _TensorRef):
        raise pickle.UnpicklingError("malformed parameter record")
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}
_ALLOWED_GLOBALS.update({("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()})


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data):
        super().__init__(io.BytesIO(data))
        self.storages = {}

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            # Name it as Python 3 spells it (protocol <= 2 writes e.g. '__builtin__.eval').
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
            raise _RefusedGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and isinstance(pid[4], int)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        known = self.storages.get(key)
        if known is None:
            known = self.storages[key] = _Storage(key, storage_type.dtype, numel)
        elif known.dtype != storage_type.dtype:
            raise pickle.UnpicklingError(f"storage {key} is used with two dtypes")
        return known


class _RefusedGlobal(pickle.UnpicklingError):
    pass


def _flatten(obj, prefix, out, path):
    if isinstance(obj, _TensorRef):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise CheckpointError(f"{path}: state dict has a non-string key {k!r}")
            _flatten(v, f"{prefix}.{k}" if prefix else k, out, path)
    # Non-tensor leaves (epoch counters, strings) carry no weights: ignored.


class PthReader(CheckpointReader):
    """A `torch.save` zip checkpoint holding a (possibly nested) dict of tensors; nested names are joined by '.'."""

    fresh_arrays = True

    def __init__(self, path):
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"checkpoint file not found: {self.path}")
        if not zipfile.is_zipfile(self.path):
            raise CheckpointError(f"{self.path}: not a zip-format PyTorch checkpoint (truncated, corrupted, or saved "
                                  "in the legacy pre-1.6 format); re-download it or re-save it with torch.save")
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as err:
            raise CheckpointError(f"{self.path}: unreadable zip archive ({err}); the file is corrupted") from None
        pkl_names = [n for n in self._zip.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkl_names) != 1:
            raise CheckpointError(f"{self.path}: expected one '<name>/data.pkl' entry, found {pkl_names}; "
                                  "not a torch.save checkpoint")
        self._prefix = pkl_names[0][: -len("data.pkl")]
        byteorder = self._read_entry_small("byteorder", default=b"little")
        if byteorder.strip() != b"little":
            raise CheckpointError(f"{self.path}: saved with byte order {byteorder!r}; only little-endian is supported")
        unpickler = _RestrictedUnpickler(self._read_entry_small("data.pkl"))
        try:
            obj = unpickler.load()
        except _RefusedGlobal as err:
            raise CheckpointError(f"{self.path}: refused to load global '{err}' from its pickle: only PyTorch tensor "
                                  "globals are allowed. The file is not a plain state dict (or is malicious); "
                                  "nothing from it was executed") from None
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError,
                struct.error) as err:
            raise CheckpointError(f"{self.path}: its pickle is malformed ({err}); the file is corrupted") from None
        tensors = {}
        _flatten(obj, "", tensors, self.path)
        if not tensors:
            raise CheckpointError(f"{self.path}: holds no tensors (top-level object is {type(obj).__name__})")
        self._tensors = tensors
        self._storage_info = {}
        for key, storage in unpickler.storages.items():
            self._storage_info[key] = self._locate_storage(storage)
        for name, ref in tensors.items():
            extent = ref.offset + sum((d - 1) * s for d, s in zip(ref.shape, ref.stride)) + 1
            if 0 not in ref.shape and extent > ref.storage.numel:
                raise CheckpointError(f"{self.path}: tensor {name!r} (shape {ref.shape}) reaches element {extent} of a "
                                      f"storage of {ref.storage.numel}; the file is corrupted")
        self._fd = None

    def _read_entry_small(self, name, default=None):
        full = self._prefix + name
        try:
            return self._zip.read(full)
        except KeyError:
            if default is not None:
                return default
            raise CheckpointError(f"{self.path}: zip entry {full!r} is missing; the file is corrupted") from None
        except (zipfile.BadZipFile, zlib.error) as err:
            raise CheckpointError(f"{self.path}: zip entry {full!r} is damaged ({err})") from None

    def _locate_storage(self, storage):
        """-> (absolute data offset or None if compressed, zip info) after checking the entry's size."""
        name = f"{self._prefix}data/{storage.key}"
        try:
            info = self._zip.getinfo(name)
        except KeyError:
            raise CheckpointError(f"{self.path}: storage entry {name!r} is missing; the file is corrupted") from None
        want = storage.numel * NUMPY_STORAGE[storage.dtype].itemsize
        if info.file_size != want:
            raise CheckpointError(f"{self.path}: storage {name!r} holds {info.file_size} bytes but {storage.numel} "
                                  f"{storage.dtype} elements need {want}; the file is corrupted")
        if info.compress_type != zipfile.ZIP_STORED:
            return None, info
        with open(self.path, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise CheckpointError(f"{self.path}: bad zip local header for {name!r}; the file is corrupted")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        if start + want > os.path.getsize(self.path):
            raise CheckpointError(f"{self.path}: storage {name!r} runs past the end of the file; the file is truncated")
        return start, info

    def keys(self):
        return list(self._tensors)

    def shape(self, key):
        self._check_key(key)
        return self._tensors[key].shape

    def dtype(self, key):
        self._check_key(key)
        return self._tensors[key].storage.dtype

    def _read_storage(self, key, row_range):
        ref = self._tensors[key]
        np_dtype = NUMPY_STORAGE[ref.storage.dtype]
        item = np_dtype.itemsize
        start, info = self._storage_info[ref.storage.key]
        shape = ref.shape
        contiguous_stride = tuple(int(np.prod(shape[i + 1:], dtype=np.int64)) for i in range(len(shape)))
        is_contiguous = all(st == cs for st, cs, d in zip(ref.stride, contiguous_stride, shape) if d != 1)
        numel = int(np.prod(shape, dtype=np.int64))
        if start is not None and is_contiguous:
            first, count = ref.offset, numel
            if row_range is not None:
                row = contiguous_stride[0] if shape else 1
                first, count = ref.offset + row_range[0] * row, (row_range[1] - row_range[0]) * row
                shape = (row_range[1] - row_range[0],) + tuple(shape[1:])
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY)
            data = read_exact(self._fd, start + first * item, count * item, self.path, f"tensor {key!r}")
            if count * item == info.file_size and zlib.crc32(data) != info.CRC:
                raise CheckpointError(f"{self.path}: tensor {key!r} fails its zip CRC check; the file is corrupted")
            return data.view(np_dtype).reshape(shape)
        # Compressed entry or a strided view: materialise the storage, then take the view (rare, small files).
        try:
            raw = self._zip.read(info.filename)
        except (zipfile.BadZipFile, zlib.error) as err:
            raise CheckpointError(f"{self.path}: storage of {key!r} is damaged ({err})") from None
        flat = np.frombuffer(raw, dtype=np_dtype)
        view = np.lib.stride_tricks.as_strided(flat[ref.offset:], shape=shape,
                                               strides=tuple(s * item for s in ref.stride))
        if row_range is not None:
            view = view[row_range[0]:row_range[1]]
        return np.array(view, order="C")  # a copy: `raw` is read-only and may back several tensors

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._zip.close()
