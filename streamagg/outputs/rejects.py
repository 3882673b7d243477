"""Bad rows: the rejects file (file, line, reason, raw text) and the --max-bad-rows policy."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable

from ..columns import BadRow
from ..config import BadRowLimit
from ..errors import BadDataError


class RejectsFile:
    """Collects a day's bad rows in a local CSV and fails the run when there are too many."""

    def __init__(self, path: str, limit: BadRowLimit) -> None:
        self.path = path
        self.limit = limit
        self.count = 0
        self.first: BadRow | None = None
        # 0600 whatever the umask: bad rows are raw customer data.
        self._out = open(path, "w", encoding="utf-8", newline="",
                         opener=lambda name, flags: os.open(name, flags, 0o600))
        self._writer = csv.writer(self._out, lineterminator="\n")
        self._writer.writerow(["file", "line", "reason", "raw"])

    def write(self, rows: Iterable[BadRow], rows_read: int) -> None:
        """Append a file's bad rows, one at a time (a file may have millions, read back from
        disk); a count limit fails as soon as it is exceeded."""
        for row in rows:
            if self.first is None:
                self.first = row
            self.tally(row)
            self._writer.writerow([row.uri, row.line if row.line is not None else "",
                                   row.reason, row.raw if row.raw is not None else ""])
            self.count += 1
        if self.limit.count is not None and self.count > self.limit.count:
            raise self.too_many(rows_read)

    def resume(self, earlier: str, count: int, first: BadRow | None) -> None:
        """Start from the day's earlier rejects file (``count`` rows), so this one holds the
        whole day's bad rows in file order and a count limit counts the whole day."""
        with open(earlier, encoding="utf-8", newline="") as src:
            src.readline()  # the header, written already
            while chunk := src.read(1 << 20):
                self._out.write(chunk)
        self.count = count
        self.first = first

    def tally(self, row: BadRow) -> None:
        """Called for each row written: a subclass's hook for its own figures."""

    def check(self, rows_read: int) -> None:
        """The final check, once every row of the day is read."""
        if self.count > self.limit.allowed(rows_read):
            raise self.too_many(rows_read)

    def too_many(self, rows_read: int) -> BadDataError:
        first = self.first
        detail = f"; first: {first.reason}" if first is not None else ""
        message = (f"too many bad rows: {self.count} of {rows_read} rows read exceed "
                   f"--max-bad-rows {self.limit}{detail}; nothing written")
        if first is None:
            return BadDataError(message)
        return BadDataError(message, uri=first.uri, line=first.line)

    def close(self) -> None:
        if not self._out.closed:
            self._out.close()

    def __enter__(self) -> RejectsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
            return
        try:
            self.close()
        except OSError:
            pass  # the run failed already (a full disk fails here too): report that error
