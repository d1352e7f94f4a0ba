"""Checkpoint layer: read official Wan2.2 checkpoints without torch, map names, load into Cells, convert.

Readers are numpy-only; MindSpore is imported lazily by the functions that build Tensors/Parameters.
"""
from .errors import CheckpointError
from .keymaps import KEYMAPS, KeyMap, get_keymap
from .layout import weights_path
from .loading import LoadReport, load_into_cell
from .lora import lightning_lora_file, merge_lora
from .readers import open_checkpoint
from .sharding import zero3_shard_shape, zero3_slice

__all__ = ["CheckpointError", "open_checkpoint", "load_into_cell", "LoadReport", "KEYMAPS", "KeyMap", "get_keymap",
           "zero3_slice", "zero3_shard_shape", "merge_lora", "lightning_lora_file", "weights_path"]
