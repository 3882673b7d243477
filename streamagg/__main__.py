"""The ``streamagg`` command and ``python -m streamagg``: native settings first, then the CLI."""

from __future__ import annotations

import contextlib
import os
import sys


def main() -> None:
    """Choose Arrow's allocator and OpenBLAS's threads while neither library is loaded, then
    run the CLI."""
    from .ops.allocators import choose_arrow_allocator, no_blas_threads

    choose_arrow_allocator()
    no_blas_threads()
    from .ops.cli import main as cli_main
    from .ops.command import drop_broken_streams

    try:
        cli_main()
    except SystemExit as done:
        drop_broken_streams()
        if "pyspark" in sys.modules:  # its JVM gateway shuts down in interpreter exit hooks
            raise
        # Everything of ours is closed and removed by now. Skipping interpreter teardown
        # avoids an abort in Arrow: its thread pools, torn down at exit while a read-ahead task
        # still calls back into Python, can end the process with SIGABRT after a clean run
        # (apache/arrow#34314; seen here once after SIGTERM).
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if not isinstance(done.code, int | None):
            with contextlib.suppress(OSError, ValueError):  # a closed stderr: nobody to tell
                print(done.code, file=sys.stderr, flush=True)
        os._exit(code)


if __name__ == "__main__":
    main()
