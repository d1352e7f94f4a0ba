"""open_checkpoint(): one entry point for every checkpoint container the project reads."""
import glob
import os

import numpy as np

from .base import CheckpointReader
from .errors import CheckpointError
from .layout import DIT_CONVERTED
from .pth import PthReader
from .safetensors_io import SafetensorsReader, ShardedSafetensorsReader

_MS_DTYPE_NAMES = {"BFloat16": "bfloat16", "Float16": "float16", "Float32": "float32", "Float64": "float64",
                   "Int64": "int64", "Int32": "int32", "Int16": "int16", "Int8": "int8", "UInt8": "uint8",
                   "Bool": "bool"}


class MindSporeCkptReader(CheckpointReader):
    """A MindSpore `.ckpt` (protobuf). The format has no random access, so the whole file is loaded on open."""

    def __init__(self, path):
        import mindspore as ms  # lazy: readers of every other format work without MindSpore

        self.path = str(path)
        try:
            self._params = ms.load_checkpoint(self.path)
        except (RuntimeError, ValueError) as err:
            raise CheckpointError(f"{self.path}: MindSpore cannot read this checkpoint ({err})") from None

    def keys(self):
        return list(self._params)

    def shape(self, key):
        self._check_key(key)
        return tuple(self._params[key].shape)

    def dtype(self, key):
        self._check_key(key)
        name = str(self._params[key].dtype)
        return _MS_DTYPE_NAMES.get(name, name.lower())

    def _read_storage(self, key, row_range):
        array = self._params[key].asnumpy()
        if self.dtype(key) == "bfloat16":
            array = array.view(np.uint16)
        if row_range is not None:
            array = array[row_range[0]:row_range[1]]
        return np.ascontiguousarray(array)


class DictReader(CheckpointReader):
    """In-memory {name: array} (bfloat16 given as uint16 bits via `bf16_keys`), for tests and LoRA merging."""

    def __init__(self, arrays, bf16_keys=(), path="<memory>"):
        self.path = path
        self._arrays = dict(arrays)
        self._bf16 = set(bf16_keys)

    def keys(self):
        return list(self._arrays)

    def shape(self, key):
        self._check_key(key)
        return tuple(self._arrays[key].shape)

    def dtype(self, key):
        self._check_key(key)
        if key in self._bf16:
            return "bfloat16"
        return str(self._arrays[key].dtype)

    def _read_storage(self, key, row_range):
        array = self._arrays[key]
        if row_range is not None:
            array = array[row_range[0]:row_range[1]]
        return np.ascontiguousarray(array)


def open_checkpoint(path):
    """Open a checkpoint lazily.

    path: a .pth/.pt file (torch.save zip), a .safetensors file, a `*.safetensors.index.json`, a MindSpore
    .ckpt, or a DiT folder: one index (official shards), else mindspore_model.safetensors (converted), else
    diffusion_pytorch_model.safetensors, else its only .safetensors file.
    Returns a CheckpointReader (keys / shape / dtype / read(key, rows=None, raw=False)).
    """
    if isinstance(path, CheckpointReader):
        return path
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        # A DiT folder: the official shards (index), else a converted or unsharded DiT file. In TI2V-5B the
        # DiT shares its folder with the T5/VAE files, whose converted forms are .safetensors too.
        indexes = sorted(glob.glob(os.path.join(path, "*.safetensors.index.json")))
        if len(indexes) == 1:
            return ShardedSafetensorsReader(indexes[0])
        for name in (DIT_CONVERTED, "diffusion_pytorch_model.safetensors"):
            if not indexes and os.path.isfile(os.path.join(path, name)):
                return SafetensorsReader(os.path.join(path, name))
        singles = sorted(glob.glob(os.path.join(path, "*.safetensors")))
        if not indexes and len(singles) == 1:
            return SafetensorsReader(singles[0])
        raise CheckpointError(f"{path}: expected one '*.safetensors.index.json', a {DIT_CONVERTED}, a "
                              f"diffusion_pytorch_model.safetensors or a single '*.safetensors' file; found "
                              f"{len(indexes)} index file(s) and {len(singles)} other safetensors file(s). Point at "
                              "the file itself")
    lower = path.lower()
    if lower.endswith(".safetensors.index.json"):
        return ShardedSafetensorsReader(path)
    if lower.endswith(".safetensors"):
        return SafetensorsReader(path)
    if lower.endswith((".pth", ".pt", ".bin")):
        return PthReader(path)
    if lower.endswith(".ckpt"):
        return MindSporeCkptReader(path)
    raise CheckpointError(f"{path}: unknown checkpoint type; expected .pth, .pt, .safetensors, "
                          "*.safetensors.index.json or .ckpt")


__all__ = ["open_checkpoint", "CheckpointReader", "DictReader", "MindSporeCkptReader"]
