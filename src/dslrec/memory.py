"""The process's memory: what it has used at most, and handing freed memory back to the system."""

from __future__ import annotations

import functools
import resource
import sys


def release_freed_memory() -> None:
    """Hand memory freed by the allocator back to the system (glibc's ``malloc_trim``; elsewhere
    nothing). Without it the heap keeps the transients of loading or of a big update, and the process
    stays that large: what the next big allocation could reuse is then counted twice."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def peak_rss_mb() -> float:
    """This program's peak resident memory so far, in MB.

    On Linux from ``VmHWM`` in /proc/self/status: ``ru_maxrss`` also counts the parent's peak when
    a big process started this one (the high-water mark survives fork and exec), so a benchmark
    that writes its data and then runs ``dslrec train`` would read its own size. Elsewhere
    ``ru_maxrss`` (bytes on macOS, KiB on other systems)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
