"""The lazy reader interface every checkpoint format implements."""
import mmap
import os

import numpy as np

from .dtypes import NUMPY_STORAGE, bf16_bits_to_float32
from .errors import CheckpointError


def normalize_rows(rows, shape, key, path):
    """rows (None | slice | (start, stop)) -> (start, stop) on dim 0, or None for the whole tensor."""
    if rows is None:
        return None
    if not shape:
        raise CheckpointError(f"{path}: cannot read rows of scalar tensor {key!r}")
    if isinstance(rows, tuple):
        rows = slice(*rows)
    if not isinstance(rows, slice) or rows.step not in (None, 1):
        raise CheckpointError(f"{path}: rows must be a slice of dim 0 with step 1, got {rows!r} for {key!r}")
    start, stop, _ = rows.indices(shape[0])
    if rows.start is not None and not 0 <= rows.start <= shape[0] or \
            rows.stop is not None and not 0 <= rows.stop <= shape[0] or stop < start:
        raise CheckpointError(f"{path}: rows {rows.start}:{rows.stop} out of range for {key!r} with shape "
                              f"{tuple(shape)}")
    return start, stop


# Buffers at least this large come from a private anonymous mmap instead of numpy's allocator: numpy marks big
# allocations MADV_HUGEPAGE, and with the kernel's default THP defrag policy the first touch then waits on memory
# compaction; on the project's test VM that made checkpoint reads 3-4x slower (0.5 GiB: 2.5-3.7 s vs 0.6-0.9 s).
_MMAP_MIN_BYTES = 4 << 20


def alloc_bytes(nbytes):
    """A fresh writable uint8 array of nbytes (anonymous memory; see _MMAP_MIN_BYTES)."""
    if nbytes >= _MMAP_MIN_BYTES:
        return np.frombuffer(mmap.mmap(-1, nbytes), dtype=np.uint8)
    return np.empty(nbytes, dtype=np.uint8)


def read_exact(fd, offset, nbytes, path, what):
    """Read exactly nbytes at offset into a fresh uint8 array (no page-cache mapping kept alive)."""
    out = alloc_bytes(nbytes)
    view = memoryview(out)
    done = 0
    while done < nbytes:
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise CheckpointError(f"{path}: file ends before {what} is complete (wanted {nbytes} bytes at offset "
                                  f"{offset}, got {done}); the file is truncated, download it again")
        done += got
    return out


class CheckpointReader:
    """A checkpoint opened lazily: only headers are parsed on open, tensor bytes are read on demand.

    Subclasses implement keys(), shape(), dtype() and _read_storage(key, row_range) which returns the
    tensor in its storage dtype (bfloat16 as uint16 bits), shape = the requested rows.
    """

    path = ""
    # True when read() always returns a newly allocated array that no one else references.
    fresh_arrays = False

    def keys(self):
        """Tensor names in file order."""
        raise NotImplementedError

    def shape(self, key):
        """Shape of tensor `key` as a tuple of ints."""
        raise NotImplementedError

    def dtype(self, key):
        """Dtype name of tensor `key` as stored: 'bfloat16', 'float16', 'float32', ..."""
        raise NotImplementedError

    def files(self):
        """Paths of the files this checkpoint consists of."""
        return [self.path]

    def _read_storage(self, key, row_range):
        raise NotImplementedError

    def read(self, key, rows=None, raw=False):
        """Tensor `key` as numpy, optionally only rows[start:stop] of dim 0 (read without the other rows).

        bfloat16 comes back as exact float32, or as its raw uint16 bits when raw=True. Other dtypes come
        back as stored.
        """
        self._check_key(key)
        row_range = normalize_rows(rows, self.shape(key), key, self.path)
        array = self._read_storage(key, row_range)
        if self.dtype(key) == "bfloat16" and not raw:
            return bf16_bits_to_float32(array)
        return array

    def nbytes(self, key):
        n = NUMPY_STORAGE[self.dtype(key)].itemsize
        for d in self.shape(key):
            n *= d
        return n

    def _check_key(self, key):
        if key not in self:
            raise KeyError(f"{self.path}: no tensor named {key!r}")

    def __contains__(self, key):
        return key in self._key_set()

    def _key_set(self):
        cached = getattr(self, "_keys_cache", None)
        if cached is None:
            cached = frozenset(self.keys())
            self._keys_cache = cached
        return cached

    def __len__(self):
        return len(self.keys())

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
