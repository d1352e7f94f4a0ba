"""Load a checkpoint into a MindSpore Cell by name, strictly, optionally only this rank's ZeRO3 rows."""
from dataclasses import dataclass, field

import numpy as np

from .dtypes import cast_array, canonical_dtype
from .errors import CheckpointError
from .keymaps import get_keymap
from .readers import open_checkpoint
from .sharding import zero3_slice

_MS_DTYPES = {"bfloat16": "bfloat16", "float16": "float16", "float32": "float32", "float64": "float64"}
_MAX_LISTED = 20


@dataclass
class LoadReport:
    """What load_into_cell did. `sharded` maps a parameter name to the (start, stop) rows it now holds."""
    loaded: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)
    sharded: dict = field(default_factory=dict)


def ms_dtype_name(ms_dtype):
    """mindspore dtype -> our dtype name ('bfloat16', 'float32', ...)."""
    name = str(ms_dtype).lower()
    return {"bfloat16": "bfloat16", "float16": "float16", "float32": "float32", "float64": "float64"}.get(name, name)


def to_ms_tensor(array, dtype, share=False):
    """numpy array in `dtype`'s storage form (bfloat16 = uint16 bits) -> mindspore Tensor of that dtype, exactly.

    share=True hands the array's memory to the Tensor instead of copying it (only for arrays nobody else holds):
    on hosts where first-touching memory is slow, the copy doubles the cost of a load.
    """
    import mindspore as ms

    array = np.ascontiguousarray(array)
    if dtype == "bfloat16":
        from mindspore.common.np_dtype import bfloat16 as np_bfloat16  # MindSpore's numpy bf16 type

        array = array.view(np_bfloat16)
    if share and array.flags.writeable:
        return ms.Tensor.from_numpy(array)
    return ms.Tensor(array)


def _mismatch_message(source, network, missing, unexpected, misshaped):
    parts = [f"{source} does not match the {network} network:"]
    if missing:
        parts.append(f"  {len(missing)} parameter(s) missing from the checkpoint: " +
                     ", ".join(missing[:_MAX_LISTED]) + (" ..." if len(missing) > _MAX_LISTED else ""))
    if unexpected:
        parts.append(f"  {len(unexpected)} unexpected checkpoint key(s): " +
                     ", ".join(unexpected[:_MAX_LISTED]) + (" ..." if len(unexpected) > _MAX_LISTED else ""))
    for name, key, ckpt_shape, param_shape in misshaped[:_MAX_LISTED]:
        parts.append(f"  {name}: checkpoint key {key!r} has shape {ckpt_shape}, parameter has shape {param_shape}")
    if len(misshaped) > _MAX_LISTED:
        parts.append(f"  ... and {len(misshaped) - _MAX_LISTED} more mis-shaped")
    parts.append("Check that the checkpoint and the model config belong together (task, size), or pass "
                 "strict=False to load the matching subset.")
    return "\n".join(parts)


def plan_load(reader, param_shapes, network, source=None):
    """Match checkpoint keys to parameters: ({name: key} to load, missing, unexpected, misshaped).

    param_shapes: {our_name: full shape}. misshaped: [(name, key, checkpoint shape, parameter shape)].
    """
    keymap = get_keymap(network)
    mapped = keymap.map_keys(reader.keys(), source or reader.path)
    missing = sorted(n for n in param_shapes if n not in mapped)
    unexpected = sorted(mapped[n] for n in mapped if n not in param_shapes)
    matched, misshaped = {}, []
    for name, key in mapped.items():
        if name not in param_shapes:
            continue
        if tuple(reader.shape(key)) != tuple(param_shapes[name]):
            misshaped.append((name, key, tuple(reader.shape(key)), tuple(param_shapes[name])))
        else:
            matched[name] = key
    return matched, missing, unexpected, misshaped


def read_param(reader, key, our_dtype, rows=None):
    """Tensor `key` converted to `our_dtype` storage (bfloat16 as uint16 bits), optionally rows of dim 0.

    The result is a fresh array (safe to hand over without copying) when the reader's `fresh_arrays` is
    True or a dtype conversion took place.
    """
    src = reader.dtype(key)
    raw = reader.read(key, rows=rows, raw=True)
    if src not in _MS_DTYPES or our_dtype not in _MS_DTYPES:
        if src != our_dtype:
            raise CheckpointError(f"{reader.path}: tensor {key!r} is {src}, cannot load it into a {our_dtype} "
                                  "parameter")
        return raw
    return cast_array(raw, src, our_dtype)


def load_into_cell(cell, source, network="dit", strict=True, dtype=None, shard=None, value_dtype=None, deltas=None):
    """Load checkpoint `source` into `cell`'s parameters, mapping names with the network's KeyMap.

    Args:
        cell: a mindspore.nn.Cell whose parameter names are ours (== official keys after the KeyMap).
        source: path accepted by open_checkpoint (file, sharded folder, index, converted file) or a reader.
        network: KeyMap name: "dit", "t5", "vae2_1", "vae2_2", "s2v".
        strict: missing, unexpected or mis-shaped keys raise CheckpointError listing each (with both
            shapes). With strict=False the matching subset is loaded and the rest reported.
        dtype: parameter (storage) dtype to load into ("bf16"/"fp16"/"fp32"); default: each parameter's
            current dtype. Parameters in the KeyMap's keep_fp32 are stored in float32 either way.
        shard: optional (rank, world_size). Each parameter chosen by sharding.zero3_slice is read from disk
            as only this rank's rows, and the cell's Parameter is REPLACED by one of the shard's shape
            ([rows/world_size, ...]); replicated parameters load in full. The ZeRO3 wrapper gathers later.
        value_dtype: round EVERY parameter's values to this dtype, keep_fp32 ones included, whatever the
            storage dtype: the official ``model.to(bf16)`` of ``--convert_model_dtype`` rounds the
            modulation tensors too. With a float32 storage this is bf16 values computed in float32 (CPU).
        deltas: optional object with ``bind({name: full shape}) -> callable(name, rows)`` returning a float32
            array or None (a LoRA: ``lora.LoraDeltas``): added to the checkpoint's values in float32 before
            the one rounding to ``value_dtype`` / the storage dtype; ``rows`` is the ZeRO3 row slice or None.
    Returns:
        LoadReport.
    """
    reader = open_checkpoint(source)
    target = canonical_dtype(dtype) if dtype is not None else None
    rounding = canonical_dtype(value_dtype) if value_dtype is not None else None
    keymap = get_keymap(network)
    params = {name: p for name, p in cell.parameters_and_names()}
    shapes = {name: tuple(p.shape) for name, p in params.items()}
    matched, missing, unexpected, misshaped = plan_load(reader, shapes, network)
    if misshaped or (strict and (missing or unexpected)):
        raise CheckpointError(_mismatch_message(reader.path, network, missing, unexpected, misshaped))
    if deltas is not None:
        deltas = deltas.bind(shapes)  # a LoRA that does not fit fails here, before any weight is read
    import mindspore as ms

    report = LoadReport(missing=missing, unexpected=unexpected)
    for name, key in matched.items():
        param = params[name]
        want = keymap.param_dtype(name, target or ms_dtype_name(param.dtype))
        rows = zero3_slice(shapes[name], *shard) if shard is not None else None
        delta = deltas(name, rows) if deltas is not None else None
        if delta is None and rounding in (None, want):  # one conversion, straight to the storage dtype
            array = read_param(reader, key, want, rows=rows)
            fresh = reader.fresh_arrays or reader.dtype(key) != want
        else:  # float32 first, then exactly one rounding (to value_dtype, else the storage dtype)
            array = read_param(reader, key, "float32", rows=rows)
            if delta is not None:
                array = array + delta  # a fresh array; never in place into the reader's memory
            array = cast_array(cast_array(array, "float32", rounding or want), rounding or want, want)
            fresh = True
        if ms_dtype_name(param.dtype) != want:
            param.set_dtype(getattr(ms, want))
        param.set_data(to_ms_tensor(array, want, share=fresh), slice_shape=rows is not None)
        report.loaded.append(name)
        if rows is not None:
            report.sharded[name] = (rows.start, rows.stop)
        del array
    if source is not reader:
        reader.close()
    return report
