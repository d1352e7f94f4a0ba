"""Step-level accelerations and memory policies (offload).\n\nImported by the pipeline; nothing here runs at import time.\n"""
