"""Run the streamagg CLI in this process, optionally stopping for good at a chosen point."""

# Kill tests start it as a child: ``--pause POINT --marker FILE`` makes the run create FILE and
# sleep when it reaches POINT, so the test can SIGKILL it there; ``--set module:NAME=INT``
# changes a module constant (e.g. the multipart threshold) without touching the environment.

from __future__ import annotations

import argparse
import atexit
import functools
import importlib
import os
import sys
import time
from collections.abc import Callable
from typing import Any


def pause(marker: str) -> None:
    with open(marker, "w", encoding="utf-8") as out:
        out.write(str(os.getpid()))
    time.sleep(600)


def on_call(owner: Any, name: str, marker: str, *, nth: int = 1, after: bool = False,
            when: Callable[..., bool] = lambda *a, **k: True) -> None:
    """Pause at the ``nth`` call of ``owner.name`` that ``when`` accepts (before or after it)."""
    original = getattr(owner, name)
    calls = [0]

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        counted = when(*args, **kwargs)
        if counted:
            calls[0] += 1
            if calls[0] == nth and not after:
                pause(marker)
        result = original(*args, **kwargs)
        if counted and calls[0] == nth and after:  # only that call: not the clean-up's
            pause(marker)
        return result

    setattr(owner, name, wrapper)


class PausingStream:
    """An input stream that stops for good on its second read: the run is mid-file."""

    def __init__(self, stream: Any, marker: str) -> None:
        self._stream, self._marker, self._reads = stream, marker, 0

    def read(self, size: int = -1) -> bytes:
        self._reads += 1
        if self._reads == 2:
            pause(self._marker)
        data: bytes = self._stream.read(size)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def install(point: str, marker: str) -> None:
    if point == "read":
        from streamagg.sources.local import LocalStorage
        from streamagg.sources.s3 import S3Storage

        for storage in (LocalStorage, S3Storage):
            original = storage.open_input

            def open_input(self: Any, item: Any, _original: Any = original) -> Any:
                return PausingStream(_original(self, item), marker)

            storage.open_input = open_input  # type: ignore[method-assign]
    elif point == "spill":  # the spill files hold rows: the writers' first batches are out
        from streamagg.dedup.partition import PartitionWriters

        on_call(PartitionWriters, "flush", marker, after=True,
                when=lambda writers: bool(writers._pending))
    elif point == "sqlite":
        from streamagg.dedup.sqlite import SqliteDeduper

        on_call(SqliteDeduper, "add", marker, nth=2, after=True)
    elif point == "fold":  # the first partition is read back, the others wait on disk
        from streamagg.dedup.pieces import PieceSplitter

        on_call(PieceSplitter, "done", marker)
    elif point == "publish":  # the output's temp file is written, not yet renamed into place
        on_call(os, "replace", marker,
                when=lambda src, dst, *a, **k: os.path.basename(str(dst)).startswith("daily_agg_"))
    else:
        raise SystemExit(f"unknown pause point {point!r}")


def write_peak(path: str) -> None:
    """This program's peak RSS (VmHWM). A child's ru_maxrss would include its parent's size
    at fork time: Linux keeps the high-water mark across exec."""
    with open("/proc/self/status", encoding="ascii") as status:
        peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    with open(path, "w", encoding="ascii") as out:
        out.write(str(peak))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pause")
    parser.add_argument("--marker")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--peak-file")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    options = parser.parse_args()
    for setting in options.set:
        target, value = setting.split("=", 1)
        module, name = target.split(":")
        setattr(importlib.import_module(module), name, int(value))
        if name == "PART_SIZE":  # parts below S3's 5 MiB floor: s3transfer must follow
            from tests.reliability.helpers import allow_small_parts

            allow_small_parts()
    if options.pause:
        install(options.pause, options.marker)
    if options.peak_file:
        atexit.register(write_peak, options.peak_file)
    from streamagg.ops.cli import main as cli_main

    args = options.args[1:] if options.args[:1] == ["--"] else options.args
    cli_main(args, prog_name="streamagg")


if __name__ == "__main__":
    sys.exit(main())
