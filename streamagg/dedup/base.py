"""The de-duplication contract in code: a base class every backend inherits, as kedro's datasets
do, so a backend writes two things (add keys in order, yield the later occurrences)."""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from ..errors import StorageError
from .rows import KEYED_SCHEMA, keyed


@dataclass
class DedupStats:
    """What de-duplication saw: every row added, every later occurrence of a key, and those
    that disagree with the key's first occurrence on the group."""

    arrived: int = 0
    duplicates: int = 0
    conflicting_duplicates: int = 0


@dataclass(frozen=True)
class Prepared:
    """A clean batch in a backend's own form, made by `Deduper.prepare` on a reader thread."""

    rows: pa.RecordBatch  # `KEYED_SCHEMA` (or the backend's `row_schema`), in its order
    # Rows per spill partition, in order, when the backend partitions (else None).
    partition_rows: np.ndarray | None = None


@dataclass(frozen=True)
class Later:
    """Later occurrences of keys seen before: the rows de-duplication takes out of the counts."""

    groups: pa.Array  # each row's group (string)
    buckets: np.ndarray  # each row's time bucket, instant // grain (int64)
    conflicts: int = 0  # how many name another group than their key's first occurrence

    @classmethod
    def none(cls) -> Later:
        return cls(pa.array([], pa.string()), np.zeros(0, np.int64))


@dataclass(frozen=True)
class StoredFile:
    """A file of the earlier generation, checked against the sha256 recorded with it: the only
    form in which a backend sees kept bytes."""

    path: str  # a local copy, or with ``shared`` a link to the store's own file
    size: int
    sha256: str
    shared: bool = False  # read it only; else the copy is the backend's to change or move


@dataclass
class KeySetState:
    """A day's key set kept between runs, in the backend's own on-disk form.

    ``record`` is the backend's own description of its files (JSON): given one from an earlier
    run (``resume``), the backend starts from those keys, reading the earlier generation's files
    (`stored`), and de-duplicates the new rows against them. By the end of
    `Deduper.later_occurrences` it has written this run's files (`new_file`) and called `keep`
    with the next generation's record and every file that generation uses. `streamagg.state`
    publishes, checks and collects those files without knowing the record's shape.
    """

    folder: str  # where this run's new files go
    generation: str
    resume: bool = False
    record: dict[str, Any] = field(default_factory=dict)
    stored: dict[str, StoredFile] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    kept: bool = False

    def new_file(self, suffix: str) -> str:
        """The path of a new file of this generation (the backend creates it)."""
        name = f"{self.generation}{suffix}"
        self.written.append(name)
        return os.path.join(self.folder, name)

    def stored_path(self, name: str) -> str:
        """The checked local copy of the earlier generation's file ``name``."""
        return self.stored[name].path

    def release(self, path: str) -> None:
        """The backend is done with a stored file's copy: its disk space is freed."""
        if os.path.exists(path):
            os.unlink(path)

    def keep(self, record: dict[str, Any], files: list[str]) -> None:
        """The next generation: the backend's description and every file it uses, each one
        written this run or stored by the earlier generation."""
        names = {os.path.basename(name) for name in files}
        unknown = sorted(names - set(self.written) - set(self.stored))
        if unknown:
            raise StorageError(f"internal check failed: the key set keeps files it neither "
                               f"wrote nor read: {', '.join(unknown)}")
        self.record, self.files, self.kept = record, sorted(names), True


class Deduper(abc.ABC):
    """Exact first-occurrence de-duplication of a day's clean batches, keys on disk.

    Feed clean batches (key, instant, group) in the day's order with `add` (each made ready by
    `prepare`, on any thread); then `later_occurrences` yields every row whose key came before,
    which the engine takes out of the counts it folded as rows arrived. The base class owns
    the bookkeeping: the work folder (created private, removed by `close`, also on failure),
    the tally of rows arrived and of duplicates, the wrapping of `OSError` and `sqlite3.Error`
    into `StorageError` naming the backend's files and folder, the context manager, and the
    kept state's list of files (`KeySetState.keep`).

    A backend writes `_add` (take the next prepared rows, in the day's order) and `_later`
    (yield the later occurrences, once every row is added; with a kept state, `keep` the next
    generation after). It may write `_open` (set up, resuming from ``state`` when asked),
    `_arrange` (its row order, made on reader threads) and `_close`. Register it with one line,
    `streamagg.registry.DEDUPE_BACKENDS.register(name, "module:Class")`.
    """

    # What the backend's work files are, for messages: "cannot write <files>: ...".
    files: ClassVar[str] = "key set"
    # The rows `prepare` gives `_arrange`: `KEYED_SCHEMA`, or the backend's own (set in _open).
    row_schema: pa.Schema = KEYED_SCHEMA

    def __init__(self, *, tmp_dir: str | None, memory_limit: int,
                 expected_rows: Callable[[], int] | None = None, grain_seconds: int = 3600,
                 state: KeySetState | None = None) -> None:
        self.stats = DedupStats()
        self.memory_limit = memory_limit
        self.grain_seconds = grain_seconds
        # The day's rows as estimated when the first batch is prepared: a backend may size
        # itself then.
        self.expected_rows = expected_rows or (lambda: 0)
        self.state = state
        self.folder = tmp_dir or tempfile.gettempdir()  # until its own exists, for messages
        with self._failures("cannot create"):
            # mkdtemp creates the folder 0700: keys are customer data.
            self.folder = tempfile.mkdtemp(prefix=f"streamagg-{self.prefix}-", dir=tmp_dir)
        try:
            with self._failures("cannot open"):
                self._open()
        except BaseException:
            self.close()
            raise

    @property
    def prefix(self) -> str:
        """The work folder's name starts ``streamagg-<prefix>-``: the class name, lower case,
        less ``Deduper``."""
        return type(self).__name__.removesuffix("Deduper").lower() or "dedup"

    @property
    def resuming(self) -> bool:
        """Whether to start from the keys an earlier run kept (`state.stored`)."""
        return self.state is not None and self.state.resume

    # What the engine calls

    def prepare(self, batch: pa.RecordBatch) -> Prepared:
        """A clean batch in this backend's form: the keys' fingerprints, in its order. Safe to
        call from several threads at once: the engine calls it on its reader threads, so
        hashing and sorting use every core."""
        return self._arrange(keyed(batch, self.grain_seconds, self.row_schema))

    def add(self, prepared: Prepared) -> None:
        """Take the next rows of the day, in file order then row order."""
        with self._failures("cannot write"):
            self._add(prepared)
        self.stats.arrived += prepared.rows.num_rows

    def later_occurrences(self) -> Iterator[Later]:
        """Once every row is added: every row whose key came before it, in batches; `stats`
        counts them. With a kept state, the next generation is kept by the end."""
        with self._failures("cannot use"):
            for later in self._later():
                self.stats.duplicates += len(later.groups)
                self.stats.conflicting_duplicates += later.conflicts
                yield later
        if self.stats.duplicates > self.stats.arrived:
            raise StorageError(f"internal check failed: {self.files} gave more later "
                               f"occurrences than rows arrived", uri=self.folder)
        if self.state is not None and not self.state.kept:
            raise StorageError(f"internal check failed: {self.files} kept no state",
                               uri=self.folder)

    def close(self) -> None:
        """Remove every work file, also after a failure (the files are discarded anyway)."""
        try:
            self._close()
        except (OSError, sqlite3.Error):
            pass  # the run failed, or its results are taken: only clean-up is left
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Deduper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # What a backend writes

    def _open(self) -> None:  # noqa: B027 - optional: a backend may need no set-up
        """Set up inside `folder`; when `resuming`, start from ``state.stored``'s keys."""

    def _arrange(self, rows: pa.RecordBatch) -> Prepared:
        """The rows in this backend's order (on a reader thread)."""
        return Prepared(rows)

    @abc.abstractmethod
    def _add(self, prepared: Prepared) -> None:
        """Take the next prepared rows, in the day's order: the first occurrence of a key is
        the one to keep."""

    @abc.abstractmethod
    def _later(self) -> Iterator[Later]:
        """Every later occurrence of a key, with its group and bucket; then, with a ``state``,
        `KeySetState.keep` the next generation."""

    def _close(self) -> None:  # noqa: B027 - optional: the folder goes with `close`
        """Release what `_open` took (the folder itself is removed by `close`)."""

    @contextlib.contextmanager
    def _failures(self, doing: str) -> Iterator[None]:
        """`OSError` and `sqlite3.Error` as one line naming the backend's files and folder."""
        try:
            yield
        except OSError as err:
            raise StorageError(f"{doing} {self.files}: {err.strerror or err}",
                               uri=self.folder) from err
        except sqlite3.Error as err:
            raise StorageError(f"{doing} {self.files}: {err}", uri=self.folder) from err
