"""The one exception type of the checkpoint layer."""


class CheckpointError(ValueError):
    """A checkpoint file, folder or LoRA is unusable.

    The message always names the file (or key) and says what is wrong, so a user can fix the input
    without reading a traceback. Subclasses ValueError: every such problem is a user-input problem.
    """
