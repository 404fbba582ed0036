"""Keeping large freed buffers for reuse instead of giving them back to the OS.

glibc serves every allocation above a threshold (at most 32 MiB) with a fresh ``mmap`` and
returns it with ``munmap`` when freed. A meta-iteration on the Omniglot network allocates
and frees the same few hundred-megabyte arrays every time, so every iteration page-faults
them all in again, zero-filled by the kernel: measured on the 2-core CI machine, im2col of a
(32, 64, 80, 14, 14) float32 batch took 104 ms with fresh pages and 76 ms with reused ones,
col2im 113 ms and 75 ms. ``reuse_large_allocations()`` raises both glibc thresholds so
freed memory stays in the process and is handed out again (the process keeps its peak
memory, as framework caching allocators do). It also keeps one heap for every thread
(glibc gives each new thread an arena of its own): the worker threads of
``autograd.parallel`` then reuse each other's freed buffers instead of each keeping its
own, which took the Omniglot MAML step's process from 380-397 MB to 364-365 MB, at the
same speed. It is a process-wide setting, so the library
never calls it on import: the experiment scripts and the benchmark do. On a system without
glibc it does nothing and returns False.
"""
import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def reuse_large_allocations():
    """Ask glibc to keep and reuse large freed buffers; True if it accepted."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, 1 << 30)          # allocations up to 1 GiB from the heap
    ok &= mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1)   # never trim the heap back to the OS
    ok &= mallopt(_M_ARENA_MAX, 1)                    # one heap for all threads: see above
    return bool(ok)
