"""Progress of a day's reading: files and bytes done, rate, time left; on a terminal or in logs."""

from __future__ import annotations

import collections
import io
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO, TextIO

from ..observer import FileCallback
from ..sources import InputFile, Storage
from ..units import count_of, human_bytes, human_duration
from . import logs

log = logging.getLogger("streamagg")

BAR_WIDTH = 20
BAR_INTERVAL = 0.2  # at most five redraws a second: a terminal cannot show more usefully
LOG_INTERVAL = 10.0  # a log line every ten seconds, when asked for progress without a terminal
_RATE_WINDOW = 10.0  # seconds of history behind the rate, so it follows slowdowns


def stderr_is_terminal() -> bool:
    """Whether stderr is a terminal (tests replace this to fake one)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class _CountingReader(io.BufferedIOBase):
    """Passes a storage stream through, reporting every byte read (compressed bytes for gzip)."""

    def __init__(self, raw: BinaryIO, on_bytes: Callable[[int], None]) -> None:
        super().__init__()
        self._raw = raw
        self._on_bytes = on_bytes

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self._raw.read(-1 if size is None else size)
        if data:
            self._on_bytes(len(data))
        return data

    def read1(self, size: int = -1) -> bytes:
        read1 = getattr(self._raw, "read1", None)
        data = read1(size) if read1 is not None else self._raw.read(size)
        if data:
            self._on_bytes(len(data))
        return bytes(data)

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


class _CountingStorage:
    """A storage whose input streams report the bytes read; everything else passes through."""

    def __init__(self, inner: Storage, on_bytes: Callable[[InputFile, int], None]) -> None:
        self._inner = inner
        self._on_bytes = on_bytes
        self.root_uri = inner.root_uri

    def open_input(self, item: InputFile) -> BinaryIO:
        raw = self._inner.open_input(item)
        counting = _CountingReader(raw, lambda n: self._on_bytes(item, n))
        return counting  # type: ignore[return-value]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


# Why the bar is drawn here and not by a library (issue 11; measured with click 8.5.1, tqdm
# 4.70.1, 2026-12-01):
# - click.progressbar off a terminal prints its label once and nothing more, so it cannot give
#   the periodic log lines; after the log handler clears the line for a record, its redraw of
#   an unchanged state is suppressed (it skips a line equal to the last one it wrote), so the
#   bar stays off screen; it reads time.time() itself (no clock to test with), and its ETA is
#   the average since start, not the recent rate.
# - tqdm fits the memory budget (+1.3 MiB RSS and 20-130 ms of import over a loaded CLI,
#   +4.2 MiB over this module alone), but off a terminal it either writes \r frames into the
#   log or nothing, shows 100% once the bytes are read while gzip files are still parsed,
#   clears with spaces rather than \x1b[K and leaves a last line on close: the tests' observable
#   behaviour (exact frames, the 99% cap, "finishing N files") would change, and the percent
#   and time-left rules below would still be ours, on top of a new runtime dependency.
class Progress:
    """Counts files and bytes of a day as they are read and shows them.

    ``mode="bar"`` redraws one line on ``stream`` (a terminal) at most five times a second;
    ``mode="log"`` writes an INFO log record every ten seconds instead, for a scheduler's log.
    Reader threads report bytes concurrently, hence the lock. A file read twice (the reader's
    exact second pass over files with bad rows) counts once: each file counts up to its size.
    """

    def __init__(self, label: str, *, mode: str = "bar", stream: TextIO | None = None,
                 interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        # A bar needs a terminal: called from Python with stderr elsewhere (a notebook, a
        # scheduler's log), progress goes to log records instead of control characters.
        self.mode = "log" if mode == "bar" and stream is None and not stderr_is_terminal() else mode
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval if interval is not None else (
            BAR_INTERVAL if mode == "bar" else LOG_INTERVAL)
        self.clock = clock
        self._lock = threading.RLock()
        self._per_file: dict[str, int] = {}
        self.files = 0
        self.files_done = 0
        self.total_bytes = 0
        self.bytes_done = 0
        self._began = clock()
        self._last_shown = float("-inf")
        self._history: collections.deque[tuple[float, int]] = collections.deque()
        self._line = ""
        self._closed = False
        self._stage = "starting"  # what the tail says until bytes flow

    # --- what the pipeline calls ---------------------------------------------------------------

    def attach(self, source: Storage, inputs: list[InputFile],
               on_file_done: FileCallback | None) -> tuple[Storage, FileCallback]:
        """Start counting ``inputs``; the storage to read them through and the callback to use."""
        self.start(inputs)

        def done(item: InputFile) -> None:
            self.file_done(item)
            if on_file_done is not None:
                on_file_done(item)

        return _CountingStorage(source, self.bytes_read), done

    def start(self, inputs: list[InputFile]) -> None:
        with self._lock:
            self.files = len(inputs)
            self.total_bytes = sum(i.size for i in inputs)
            self._began = self.clock()
            self._history.clear()
            self._history.append((self._began, 0))
            if self.mode == "bar":
                logs.set_live_line(self)
            self._show(force=True)

    def bytes_read(self, item: InputFile, count: int) -> None:
        with self._lock:
            before = self._per_file.get(item.uri, 0)
            after = min(item.size, before + count)
            if after != before:
                self._per_file[item.uri] = after
                self.bytes_done += after - before
                self._show()

    def file_done(self, item: InputFile) -> None:
        with self._lock:
            # Whatever the stream did not report (Spark reads on executors) counts now.
            self.bytes_read(item, item.size)
            self.files_done += 1
            self._show(force=self.files_done >= self.files)

    def close(self) -> None:
        """Take the bar off the terminal (the summary follows); a last line in log mode."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self.mode == "bar":
                logs.set_live_line(None)
                self.clear()
            elif self.files:
                self._log_line()

    # --- rendering ------------------------------------------------------------------------------

    def rate(self) -> float:
        """Bytes per second over the last few seconds."""
        now = self.clock()
        # Keep the newest sample older than the window: a long silence (Spark starting) still
        # yields a rate rather than none.
        while len(self._history) > 1 and now - self._history[1][0] >= _RATE_WINDOW:
            self._history.popleft()
        then, done_then = self._history[0]
        return (self.bytes_done - done_then) / (now - then) if now > then else 0.0

    @property
    def all_done(self) -> bool:
        """Every file finished: read, parsed and handed to the de-duplication."""
        return self.files_done >= self.files

    def fraction(self) -> float:
        """Share of the day done; 1.0 only once every file is finished.

        Bytes read run ahead of the work: the compressed bytes of a ``.csv.gz`` are all read
        while its last blocks are still being decompressed and parsed (seconds for a large
        file), so reading alone stops short of 100%.
        """
        if self.all_done:
            return 1.0
        if not self.total_bytes:
            return 0.0
        return min(self.bytes_done / self.total_bytes, 0.99)

    def text(self, width: int = 80) -> str:
        """The one line shown: label, bar, percent, files, bytes, rate and time left."""
        fraction = self.fraction()
        rate = self.rate()
        unfinished = self.files - self.files_done
        if self.files and self.all_done:
            tail = "all read, counting"
        elif self.total_bytes and self.bytes_done >= self.total_bytes:
            # No time left to estimate from bytes: what remains is decompressing and parsing.
            tail = f"finishing {count_of(unfinished, 'file')}"
        elif rate > 0:
            left = human_duration((self.total_bytes - self.bytes_done) / rate)
            tail = f"{human_bytes(rate)}/s {left} left"
        else:
            tail = self._stage
        # Rounded down, so 99.6% never shows as 100% before the day is read.
        figures = (f"{int(fraction * 100):3d}% {self.files_done:,}/{self.files:,} files "
                   f"{_pair(self.bytes_done, self.total_bytes)} {tail}")
        # The bar gives way on a narrow terminal, so the figures stay whole.
        bar_width = max(5, min(BAR_WIDTH, width - 1 - len(self.label) - 4 - len(figures)))
        filled = int(fraction * bar_width)
        line = f"{self.label} [{'#' * filled}{'-' * (bar_width - filled)}] {figures}"
        return line[:max(1, width - 1)]

    def stage(self, text: str) -> None:
        """What the run is doing before any byte is read (``starting Spark``), shown in place
        of the rate until bytes flow."""
        with self._lock:
            self._stage = text

    def clear(self) -> None:
        with self._lock:
            if self._line:
                self._write("\r\x1b[K")
                self._line = ""

    def redraw(self) -> None:
        with self._lock:
            if not self._closed and self.mode == "bar":
                self._draw()

    def _show(self, force: bool = False) -> None:
        now = self.clock()
        if self._closed or (not force and now - self._last_shown < self.interval):
            return
        self._last_shown = now
        if self.mode == "bar":
            self._draw()
        else:
            self._log_line()
        self._history.append((now, self.bytes_done))

    def _draw(self) -> None:
        line = self.text(_terminal_width(self.stream))
        self._write("\r" + line + "\x1b[K")
        self._line = line

    def _log_line(self) -> None:
        log.info("%s: %s/%s files, %s of %s read", self.label, f"{self.files_done:,}",
                 f"{self.files:,}",
                 human_bytes(self.bytes_done), human_bytes(self.total_bytes),
                 extra={"files_done": self.files_done, "files": self.files,
                        "bytes_done": self.bytes_done, "bytes": self.total_bytes,
                        "bytes_per_second": round(self.rate())})

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed terminal must not fail the run


def _pair(done: int, total: int) -> str:
    """``1.0/4.0 MiB``, or both units when they differ."""
    a, b = human_bytes(done), human_bytes(total)
    return f"{a.split()[0]}/{b}" if a.split()[1] == b.split()[1] else f"{a}/{b}"


def _terminal_width(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return 80


def progress_for(label: str, setting: bool | None) -> Progress | None:
    """``--progress/--no-progress``: by default a bar when stderr is a terminal, else nothing;
    asked for explicitly without a terminal, periodic log lines instead of a bar."""
    if setting is False:
        return None
    if stderr_is_terminal():
        return Progress(label, mode="bar")
    return Progress(label, mode="log") if setting else None
