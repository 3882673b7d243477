"""CPU seconds per stage of a streamagg run on one reader thread, charged by wrapping each stage."""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import functools
import importlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

# (stage, module, attribute, kind): each stage is a function, method, generator or context
# manager, wrapped where the code looks it up; its time is charged exclusive of the stages it
# calls. Names not found (the code moved) are skipped and listed under the table.
STAGES: tuple[tuple[str, str, str, str], ...] = (
    ("listing", "streamagg.sources.local", "LocalStorage.list_partition", "call"),
    ("open input", "streamagg.engines.local", "open_input", "context"),
    ("header", "streamagg.read.batches", "split_header", "call"),
    ("header", "streamagg.read.batches", "find_columns", "call"),
    ("reader start (pyarrow open_csv)", "pyarrow.csv", "open_csv", "call"),
    # read_file's own time, its nested stages out: pyarrow's parse and conversion (the floor's
    # work), the gathering of blocks, and the reads pyarrow makes on this thread.
    ("parse and gather: pyarrow", "streamagg.engines.local", "read_file", "generator"),
    # A run of small files read as one stream: the same stages, made once for many files.
    ("parse and gather: pyarrow", "streamagg.engines.local", "read_files", "generator"),
    ("clean", "streamagg.read.batches", "clean_columns", "call"),
    ("clean", "streamagg.read.stitch", "clean_columns", "call"),
    ("prepare: fingerprints, counts, partition order", "streamagg.dedup.spill",
     "SpillDeduper.prepare", "call"),
    ("prepare: fingerprints, counts, partition order", "streamagg.engines.local",
     "count_pairs", "call"),
    ("spill write", "streamagg.dedup.spill", "SpillDeduper.add", "call"),
    ("tally clean rows per hour", "streamagg.engines.local", "tally_counts", "call"),
    ("per-file books", "streamagg.pipeline", "DayBooks.file_done", "call"),
    ("per-file books", "streamagg.pipeline", "DayBooks.bad_rows", "call"),
    ("per-file books", "streamagg.columns", "BadRows.__init__", "call"),
    ("per-file books", "streamagg.columns", "BadRows.close", "call"),
    ("de-duplication after the read", "streamagg.dedup.spill",
     "SpillDeduper.later_occurrences", "generator"),
    ("de-duplication after the read", "streamagg.dedup.pieces", "PieceSplitter.first_of", "call"),
    ("write the output and manifest", "streamagg.pipeline", "write_files", "call"),
)


class Clock:
    """Exclusive thread CPU seconds per stage, each thread with its own stack of stages."""

    def __init__(self) -> None:
        self.spent: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()
        self._local = threading.local()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        stack = self._local.__dict__.setdefault("stack", [])
        stack.append([time.thread_time(), 0.0])  # [start, seconds of nested stages]
        try:
            yield
        finally:
            start, nested = stack.pop()
            took = time.thread_time() - start
            with self._lock:
                self.spent[name] += took - nested
                self.calls[name] += 1
            if stack:
                stack[-1][1] += took

    def wrap(self, name: str, kind: str, func: Callable[..., Any]) -> Callable[..., Any]:
        clock = self
        if kind == "generator":
            @functools.wraps(func)
            def generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
                inner = iter(func(*args, **kwargs))
                try:
                    while True:
                        with clock.stage(name):
                            try:
                                item = next(inner)
                            except StopIteration:
                                return
                        yield item
                finally:
                    close = getattr(inner, "close", None)
                    if close is not None:
                        with clock.stage(name):
                            close()
            return generator
        if kind == "context":
            @functools.wraps(func)
            @contextlib.contextmanager
            def managed(*args: Any, **kwargs: Any) -> Iterator[Any]:
                with clock.stage(name):
                    manager = func(*args, **kwargs)
                    value = manager.__enter__()
                try:
                    yield value
                except BaseException:
                    with clock.stage(name):
                        if not manager.__exit__(*sys.exc_info()):
                            raise
                else:
                    with clock.stage(name):
                        manager.__exit__(None, None, None)
            return managed

        @functools.wraps(func)
        def plain(*args: Any, **kwargs: Any) -> Any:
            with clock.stage(name):
                return func(*args, **kwargs)
        return plain


def install(clock: Clock) -> list[str]:
    """Wrap every stage where it is looked up; returns the names not found."""
    missing = []
    for name, module_name, attribute, kind in STAGES:
        try:
            owner: Any = importlib.import_module(module_name)
        except ImportError:
            missing.append(f"{module_name}.{attribute}")
            continue
        *path, last = attribute.split(".")
        for part in path:
            owner = getattr(owner, part, None)
        if owner is None or not hasattr(owner, last):
            missing.append(f"{module_name}.{attribute}")
            continue
        setattr(owner, last, clock.wrap(name, kind, getattr(owner, last)))
    return missing


def serial_prefetch(produce: Callable[[Any], Any], items: list[Any], **_: Any) -> Iterator[Any]:
    """`ordered_prefetch` without its threads: every file read on the calling thread."""
    for item in items:
        for result in produce(item):
            yield item, result
        yield item, None


def profile_day(source: str, day: dt.date, files: int | None, workers: int,
                dest: str, serial: bool = False, cprofile: str | None = None) -> dict[str, Any]:
    """Run the local engine with ``workers`` reader threads over the day's first ``files``
    (or, ``serial``, on the calling thread alone; ``cprofile``: its cProfile stats there)."""
    clock = Clock()
    missing = install(clock)
    import streamagg.engines.local as local
    import streamagg.pipeline as pipeline
    from streamagg.config import Config

    if serial:
        local.ordered_prefetch = serial_prefetch  # type: ignore[assignment]

    config = Config(day=day, source=source, dest=dest, workers=workers)
    if files:
        real_plan = pipeline.plan

        def first_files(config: Config) -> Any:
            planned = real_plan(config)
            return type(planned)(planned.source, planned.dest, planned.inputs[:files],
                                 planned.empty, planned.layout)

        pipeline.plan = first_files  # type: ignore[assignment]
    profiler = None
    if cprofile:
        import cProfile

        profiler = cProfile.Profile(time.process_time)  # CPU, not wall: the machine is shared
    before = os.times()
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    report = pipeline.run_day(config)
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(cprofile)
    wall = time.perf_counter() - started
    after = os.times()
    cpu = (after.user - before.user) + (after.system - before.system)
    return {
        "files": len(report.manifest["inputs"]), "rows": report.totals["rows_read"],
        "cpu_seconds": cpu, "wall_seconds": wall, "staged_seconds": sum(clock.spent.values()),
        "stages": dict(clock.spent), "calls": dict(clock.calls), "missing": missing,
    }


def table(result: dict[str, Any]) -> str:
    files = result["files"]
    unstaged = result["cpu_seconds"] - result["staged_seconds"]
    stages = {**result["stages"], "everything else (threads, queues, GC, between stages)":
              unstaged}
    lines = [
        f"{files} files, {result['rows']:,} rows: {result['cpu_seconds']:.2f} CPU s, "
        f"{result['wall_seconds']:.2f} s wall",
        "",
        "| stage | CPU s | share | per file, ms | calls |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, spent in sorted(stages.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {spent:.3f} | {100 * spent / result['cpu_seconds']:.1f}% "
                     f"| {1000 * spent / files:.2f} | {result['calls'].get(name, '-')} |")
    if result["missing"]:
        lines += ["", "Not found (the code moved): " + ", ".join(result["missing"])]
    return "\n".join(lines)


def as_the_command_does() -> None:
    """The process settings the ``streamagg`` command makes before anything loads: Arrow's
    allocator, one OpenBLAS thread, and pandas kept out (pyarrow would import it on its first
    timestamp conversion, half a CPU second charged to whichever stage converts first)."""
    from streamagg.ops.allocators import choose_arrow_allocator, no_blas_threads

    choose_arrow_allocator()
    no_blas_threads()
    from streamagg.pandas_guard import keep_pandas_out

    keep_pandas_out()


def main() -> None:
    as_the_command_does()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source", help="root of the date partitions")
    parser.add_argument("--date", type=dt.date.fromisoformat, default=dt.date(2021, 1, 30))
    parser.add_argument("--files", type=int, help="only the first N files (default: all)")
    parser.add_argument("--workers", type=int, default=1, help="reader threads (default 1)")
    parser.add_argument("--dest", default="/tmp/streamagg-profile-out")
    parser.add_argument("--serial", action="store_true",
                        help="read every file on the main thread, no reader threads")
    parser.add_argument("--cprofile", help="with --serial: write cProfile's stats here")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    args = parser.parse_args()
    result = profile_day(args.source, args.date, args.files, args.workers, args.dest,
                         serial=args.serial, cprofile=args.cprofile)
    print(json.dumps(result, indent=2) if args.json else table(result))


if __name__ == "__main__":
    main()
