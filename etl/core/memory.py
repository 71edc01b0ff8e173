"""Keep a run's memory to what it uses: glibc's allocator arenas, capped.

glibc gives each thread that allocates its own arena (up to eight a core) and returns little of
an arena's freed memory: a scan's eight fetch threads left eight half-empty heaps behind. Two
arenas are plenty where the GIL runs one thread at a time (README, Benchmarks: the whole run's
peak). Called before the run starts threads; a no-op off glibc.
"""

from __future__ import annotations

import ctypes

_M_ARENA_MAX = -8  # mallopt's parameter number (malloc.h)


def cap_malloc_arenas(arenas: int = 2) -> bool:
    """Whether the cap was set (False where the C library has no mallopt, i.e. is not glibc)."""
    try:
        # the symbols already loaded into this process (not ctypes.util.find_library, which runs
        # ldconfig in a child process)
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas))
