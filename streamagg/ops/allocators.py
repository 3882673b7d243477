"""Process-wide native-library settings: allocators that keep resident memory close to use."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

from ..budget import Budget

log = logging.getLogger("streamagg")

DEFAULT_TRIM_THRESHOLD = 8 << 20  # without a limit: `Budget`'s for 256 MB and up

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_ARROW_POOL_ENV = "ARROW_DEFAULT_MEMORY_POOL"


def choose_arrow_allocator() -> None:
    """Make jemalloc Arrow's allocator for every caller, before libarrow loads.

    ``pa.set_memory_pool`` only reaches calls made through pyarrow's Python layer; Acero (the
    hourly group-by) and other C++ internals keep the compiled-in default (mimalloc), whose
    retained segments cost about 15 MB of a 128 MB budget. The variable is read once, when
    libarrow loads, so this must run first; an operator's own setting wins.
    """
    if "pyarrow" not in sys.modules:
        os.environ.setdefault(_ARROW_POOL_ENV, "jemalloc")


def no_blas_threads() -> None:
    """One OpenBLAS thread, set before numpy loads: streamagg does no linear algebra, and the
    threads OpenBLAS starts with numpy spin on the cores while they wait for work (0.1 CPU s
    at import alone, taken from the readers). An operator's own setting wins."""
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def tune_allocators(*, memory_limit: int | None = None, arena_max: int = 2,
                    mmap_threshold: int = 32 << 20, arrow_decay_ms: int = 250) -> None:
    """Bound what the allocators keep after the work has freed it, without paying for it twice.

    Both sides of the trade-off were measured on a 10M-row day: glibc gives every thread its own
    arena and mimalloc keeps per-thread segments, so the defaults hold freed memory resident;
    but returning everything at once (jemalloc decay 0, a 1 MB mmap threshold) made the kernel
    fault in 17 GB of fresh pages, more system time than user time. Two arenas, large blocks
    from the heap up to 32 MB, the heap trimmed past 8 MB free (2 MB under a ``memory_limit``
    below 256 MB, where those megabytes decided the 128 MB limit) and jemalloc purging pages
    unused for a quarter of a second keep both the peak and the system time low.
    Safe to call more than once; a no-op where glibc or jemalloc is missing.
    """
    import pyarrow as pa

    if os.environ.get(_ARROW_POOL_ENV, "jemalloc") == "jemalloc":
        try:
            pa.set_memory_pool(pa.jemalloc_memory_pool())
            pa.jemalloc_set_decay_ms(arrow_decay_ms)
        except (NotImplementedError, pa.ArrowNotImplementedError):
            pass
    trim_threshold = (Budget.of(memory_limit).heap_trim_threshold if memory_limit is not None
                      else DEFAULT_TRIM_THRESHOLD)
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    for param, value in ((_M_ARENA_MAX, arena_max), (_M_MMAP_THRESHOLD, mmap_threshold),
                         (_M_TRIM_THRESHOLD, trim_threshold)):
        if not mallopt(param, value):
            log.debug("mallopt(%d, %d) refused", param, value)
