"""Peak memory of this process, for benchmarks."""
from __future__ import annotations

import resource


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB.

    Reads VmHWM from /proc/self/status: ``ru_maxrss`` survives ``exec``, so a child started from a big parent
    (``subprocess`` forks first) would report the parent's size as its own peak. Falls back to ru_maxrss where
    /proc is missing.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
