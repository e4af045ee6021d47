"""Freed buffers kept for reuse while long tasks run (glibc), instead of mapped anew each time.

Arrays above glibc's mmap threshold (at most 32 MiB) get pages of their own
from the kernel, each page faulted in on first touch and all unmapped when
the array is freed. Segmentation allocates such buffers for every tile
batch and every block: a 2048² image faulted about 430,000 pages, 0.9-1.0 s
of kernel time in a 2.1 s run on 2 cores. While a task runs, the thresholds
are raised so freed buffers stay in the heap and are reused (the same image:
0.2-0.3 s of kernel time, 1.5-1.7 s in all). When the last running task
ends the thresholds go back and the heap is trimmed, so an idle napari (or
the rest of a script) gets the memory back; tasks made of many large steps
(the blocks of an image bigger than memory) trim it between steps too, so
their memory stays bounded by one step's.

Elsewhere than glibc (macOS, Windows, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# While tasks run: every buffer up to 2 GiB (mallopt takes an int) from the heap.
KEEP_BYTES = (1 << 31) - 1
# After: the trim threshold's default, and the mmap threshold glibc's own dynamic
# threshold reaches once buffers this large have been freed (its ceiling).
DEFAULT_TRIM_BYTES = 128 * 1024
DEFAULT_MMAP_BYTES = 32 * 1024 * 1024

_lock = threading.Lock()
_running = 0


@functools.cache
def _glibc():
    """The process's C library when it is glibc (it has mallopt and malloc_trim), else None."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):
        return None


def tasks_running() -> int:
    """How many tasks are inside :func:`reuse_freed_memory` now."""
    return _running


@contextmanager
def reuse_freed_memory() -> Iterator[None]:
    """Keep freed buffers in the heap while the block runs (nested and threaded uses count)."""
    global _running
    libc = _glibc()
    with _lock:
        _running += 1
        if _running == 1 and libc is not None:
            libc.mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)
            libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES)
    try:
        yield
    finally:
        with _lock:
            _running -= 1
            if _running == 0 and libc is not None:
                libc.mallopt(M_MMAP_THRESHOLD, DEFAULT_MMAP_BYTES)
                libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_BYTES)
                libc.malloc_trim(0)


def release_freed_memory() -> None:
    """Give the heap's free memory back to the system now (between the blocks of a large image).

    Keeps the resident memory of a long task at what one step of it needs:
    buffers are still reused within the step, and faulted in again once per step.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def reusing_freed_memory(task: Callable[..., Generator]) -> Callable[..., Generator]:
    """Decorate a task generator so it runs inside :func:`reuse_freed_memory`."""

    @functools.wraps(task)
    def run(*args, **kwargs):
        with reuse_freed_memory():
            return (yield from task(*args, **kwargs))

    return run
