"""Handing freed heap memory back to the operating system after a log compaction.

A member's log entries are freed when a snapshot compacts them, but glibc's allocator
returns only the free memory at the top of its heap to the system by itself; the rest
stays in the process's resident set, interleaved with the state machine's values that
outlived the entries. ``malloc_trim`` gives those pages back (a member holding 300 k
values of 1 KiB: 760 -> 443 MB resident, in about 4 ms; see benchmarks/RESULTS.md).
Elsewhere than glibc this is a no-op.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from functools import cache


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        process = ctypes.CDLL(None)  # the libc this interpreter runs on
    except OSError:
        return None
    trim = getattr(process, "malloc_trim", None)
    if trim is None:  # not glibc (musl, macOS)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


def release_free_heap() -> bool:
    """Return the heap's unused pages to the system; whether any were returned.

    Safe to call from any thread (it takes the allocator's locks); ``False`` also where
    the C library has no ``malloc_trim``.
    """
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
