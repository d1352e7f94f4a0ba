"""``python -m convert``: the checkpoint conversion tool (CLI only).

The checkpoint library it drives (readers, key maps, loading, LoRA, ZeRO3 rows) lives in :mod:`wan.checkpoint`;
wan never imports this package.
"""
