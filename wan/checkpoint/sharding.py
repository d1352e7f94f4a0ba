"""The one ZeRO3 partition rule, shared by shard-aware loading and the ZeRO3 wrapper."""


def _check_rank(rank, world_size):
    if not (isinstance(world_size, int) and world_size >= 1):
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    if not (isinstance(rank, int) and 0 <= rank < world_size):
        raise ValueError(f"rank must be an int in [0, {world_size}), got {rank!r}")


def zero3_slice(shape, rank, world_size):
    """Rows of dim 0 that `rank` keeps of a parameter of `shape`, or None if every rank keeps all of it.

    Rule: a parameter with at least 2 dims whose dim 0 divides evenly by world_size is split into world_size
    equal consecutive blocks of rows, rank r keeping block r. Vectors (biases, norm weights), scalars and
    parameters with an uneven dim 0 are replicated: they are small, and uneven splits would need padding.

    Returns slice(start, stop) on dim 0, or None.
    """
    _check_rank(rank, world_size)
    if world_size == 1 or len(shape) < 2 or shape[0] % world_size != 0:
        return None
    rows = shape[0] // world_size
    return slice(rank * rows, (rank + 1) * rows)


def zero3_shard_shape(shape, rank, world_size):
    """Shape of `rank`'s piece of a parameter of `shape` under zero3_slice."""
    rows = zero3_slice(shape, rank, world_size)
    if rows is None:
        return tuple(shape)
    return (rows.stop - rows.start,) + tuple(shape[1:])
