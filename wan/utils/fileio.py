"""Atomic file output: a file appears under its name only once completely written."""
from __future__ import annotations

import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_output(path: str, durable: bool = False):
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on any error remove it.

    The temporary name is ``<name>.tmp.<random><ext>``: same folder (so the rename is atomic), same extension
    (writers such as imageio choose the format by it), and ``.tmp.`` marks leftovers of a killed process.
    ``durable`` fsyncs the data before the rename. The file gets the usual permissions (mkstemp makes 0600).
    """
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=name + ".tmp.", suffix=os.path.splitext(name)[1], dir=folder)
    os.close(fd)
    try:
        yield tmp
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
