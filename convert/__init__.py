"""Checkpoint layer: read official Wan2.2 checkpoints without torch, map names, load into Cells, convert.

Readers are numpy-only; MindSpore is imported lazily by the functions that build Tensors/Parameters.
"""
from .errors import CheckpointError
from .readers import open_checkpoint

__all__ = ["CheckpointError", "open_checkpoint"]
