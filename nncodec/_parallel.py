"""Coding several tensors at once in worker threads.

The coder's loops (nncodec_ext) run without the GIL, so tensors coded in threads run in
parallel. Results come back in input order, and nothing a worker computes depends on which
thread ran it or when: the bytes written are the same for any number of threads.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Optional

import numpy as np


def default_threads() -> int:
    """Worker threads for coding several tensors at once: ``NNCODEC_THREADS`` if set, else the
    CPUs this process may run on (at most 8). The coder's loops run without the GIL, so the
    threads run in parallel; the bytes written do not depend on the number of threads."""
    env = os.environ.get("NNCODEC_THREADS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"NNCODEC_THREADS must be a whole number, got {env!r}") from None
        return max(1, n)
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def threads_arg(threads: Optional[int]) -> int:
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    return threads


# Below this many values in all, one thread codes them faster than starting a pool would.
PARALLEL_MIN_VALUES = 1 << 16


def threads_for(threads: int, values: int) -> int:
    """``threads``, or 1 when ``values`` in all are too few to be worth a pool."""
    return 1 if threads > 1 and values < PARALLEL_MIN_VALUES else threads


def numel(value: Any) -> int:
    return int(value.numel()) if callable(getattr(value, "numel", None)) else int(np.size(value))


def ordered_map(fn: Callable, items: Iterable, threads: int) -> Iterable:
    """``map(fn, items)`` in order, running up to ``threads`` calls at a time in worker threads.
    At most 2 * threads items are taken ahead of the one being returned, so memory stays
    bounded; the first exception is raised in the caller once its item's turn comes."""
    if threads <= 1:
        yield from map(fn, items)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    it = iter(items)
    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="nncodec") as pool:
        try:
            for item in it:
                pending.append(pool.submit(fn, item))
                if len(pending) >= 2 * threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()
