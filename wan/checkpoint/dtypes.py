"""dtype names shared by every reader, plus the exact bfloat16 <-> float32 bit conversions.

numpy has no bfloat16, so bfloat16 data travels as its raw 16 bits in a uint16 array. Widening to float32
is exact (the bf16 bits are the high half of the float32 bits); narrowing rounds to nearest-even.
"""
import numpy as np

# Our dtype names -> numpy storage dtype (bfloat16 is stored as raw uint16 bits).
NUMPY_STORAGE = {
    "bfloat16": np.dtype("<u2"),
    "float16": np.dtype("<f2"),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "int64": np.dtype("<i8"),
    "int32": np.dtype("<i4"),
    "int16": np.dtype("<i2"),
    "int8": np.dtype("i1"),
    "uint8": np.dtype("u1"),
    "bool": np.dtype("?"),
}

FLOAT_DTYPES = ("bfloat16", "float16", "float32", "float64")

# Accepted spellings of a target dtype on the command line / in APIs.
DTYPE_ALIASES = {
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp16": "float16", "float16": "float16", "half": "float16",
    "fp32": "float32", "float32": "float32", "float": "float32",
}


def canonical_dtype(name):
    """'bf16' / 'fp32' / 'float16' ... -> 'bfloat16' / 'float32' / 'float16'; ValueError otherwise."""
    key = str(name).lower()
    if key not in DTYPE_ALIASES:
        raise ValueError(f"unknown dtype {name!r}; use one of bf16, fp16, fp32")
    return DTYPE_ALIASES[key]


def bf16_bits_to_float32(bits):
    """uint16 bf16 bits [...] -> float32 [...], exact."""
    assert bits.dtype == np.uint16, bits.dtype
    flat = bits.reshape(-1).astype(np.uint32) << np.uint32(16)  # 1-D: 0-d arrays would decay to scalars
    return flat.view(np.float32).reshape(bits.shape)


def float32_to_bf16_bits(x):
    """float32 [...] -> uint16 bf16 bits [...], rounded to nearest-even (NaN stays a quiet NaN)."""
    x = np.asarray(x, dtype=np.float32)
    u = np.ascontiguousarray(x).reshape(-1).view(np.uint32)
    rounded = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    rounded[np.isnan(x.reshape(-1))] = np.uint16(0x7FC0)
    return rounded.reshape(x.shape)


def cast_array(array, src_dtype, dst_dtype):
    """Convert an array stored as `src_dtype` (bf16 = uint16 bits) to storage of `dst_dtype`.

    Returns the numpy array in `dst_dtype`'s storage form (bf16 -> uint16 bits). Identity when equal, so
    bf16 -> bf16 copies bits untouched.
    """
    if src_dtype == dst_dtype:
        return array
    wide = bf16_bits_to_float32(array) if src_dtype == "bfloat16" else array
    if dst_dtype == "bfloat16":
        return float32_to_bf16_bits(wide.astype(np.float32, copy=False))
    return wide.astype(NUMPY_STORAGE[dst_dtype])
