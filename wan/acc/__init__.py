"""Step-level accelerations: the step cache, batched / parallel classifier-free guidance.

Imported by the pipeline; nothing here runs at import time.
"""
