"""Rank-aware logging and the failure guard for msrun workers.

Under msrun each worker's stdout/stderr already goes to its own ``worker_N.log``; every record carries a
``[rank r/N]`` tag so merged console output (msrun's tail) stays readable. Only the main rank writes output files.
"""
from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Callable, Optional

__all__ = ["setup_rank_logging", "is_main_rank", "run_guarded"]

_FORMAT = "[%(asctime)s] [rank {rank}/{world}] %(levelname)s %(name)s: %(message)s"


def setup_rank_logging(rank: int, world: int, level: int = logging.INFO, stream=None,
                       other_level: int = logging.WARNING) -> None:
    """Configure the root logger for this rank: records tagged ``[rank r/N]`` to ``stream`` (default stdout).

    Rank 0 logs at ``level``; the other ranks at ``other_level`` (warnings and errors), so N ranks do not print
    N copies of every progress line, while a problem on any rank is still explained where it happened.
    Call once, early in the entry point (never at import).
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(logging.Formatter(_FORMAT.format(rank=rank, world=world), "%H:%M:%S"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if is_main_rank(rank) else max(level, other_level))


def is_main_rank(rank: int) -> bool:
    """The rank that prints results and writes files."""
    return rank == 0


def run_guarded(main: Callable[[], Optional[int]], rank: Optional[int] = None) -> int:
    """Run ``main()``; if it raises, log the traceback with the rank and leave the process at once with code 1.

    ``os._exit`` skips MindSpore's communication finalisation, which can wait on peers that are themselves
    blocked in a collective; msrun sees the non-zero exit and kills the other workers, so a failing rank ends
    the whole job in bounded time instead of hanging. Returns main's exit code (0 for None) on success.
    """
    try:
        code = main()
        return 0 if code is None else int(code)
    except SystemExit as exc:
        if exc.code in (None, 0):
            return 0
        _fail(rank, f"exit {exc.code}")
    except BaseException:  # noqa: BLE001 - any failure must end this rank, and with it the job
        _fail(rank, traceback.format_exc())
    return 1  # not reached


def _fail(rank, message: str) -> None:
    tag = f"rank {rank}" if rank is not None else f"rank {os.environ.get('RANK_ID', '?')}"
    try:
        sys.stdout.flush()
        sys.stderr.write(f"[{tag}] FAILED:\n{message}\n")
        sys.stderr.flush()
    finally:
        os._exit(1)
