"""Local folders (paths or ``file://``): listing by walking, writes by temp file and rename."""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from stat import S_ISREG
from typing import Any, BinaryIO

from ..budget import ListingAccount
from ..errors import BadDataError, StorageError, UsageError, printable
from . import Digest, InputFile, NotAFile, NotInputs
from .local_writes import copy_to_file, publish_file, remove_abandoned_temps

log = logging.getLogger("streamagg")
_YEAR = re.compile(r"\d{4}")


class LocalStorage:
    """A folder on the local file system."""

    version_field = "mtime"

    def __init__(self, uri: str, *, endpoint_url: str | None = None) -> None:  # endpoint: S3's
        path = uri[len("file://"):] if uri.startswith("file://") else uri
        if not path:
            raise UsageError(f"empty local path in {uri!r}")
        # The real path: ``..`` and links resolved, so messages name files as they are and a
        # destination cannot reach into the source partition through a link or ``..``.
        self.root = Path(os.path.realpath(Path(path).expanduser()))
        self.root_uri = str(self.root)
        if not _is_utf8(self.root_uri):  # it would name every input and output in UTF-8 files
            raise UsageError("local path is not valid UTF-8", uri=self.root_uri)

    def uri_of(self, relative: str) -> str:
        return str(self.root / relative)

    def list_partition(self, relative: str, account: ListingAccount | None = None
                       ) -> tuple[list[InputFile], int]:
        """The partition's inputs, links followed: a link to a file or a folder is read as
        what it points to, wherever that is. Each folder is walked once; a link back to a
        folder already walked or above the partition (a loop) and anything with an input's
        name that is not a regular file (a FIFO, socket or device) are not read, and each is
        logged as such. Folders are walked from a stack, not by recursion: any depth lists.
        A folder's entries are taken as the system gives them, never all held at once (a
        folder of a million files); only its subfolders are sorted, to walk them by name."""
        if not self.root.is_dir():
            # A typo, not a day whose data is late (that is an existing root without the day).
            problem = "is not a folder" if self.root.exists() else "does not exist"
            raise UsageError(f"source folder {problem}", uri=self.root_uri)
        base = self.root / relative
        if not base.is_dir():
            return [], 0
        found: list[InputFile] = []
        empty = 0
        skipped: list[tuple[str, str]] = []
        not_utf8, first_not_utf8 = 0, ""
        others = NotInputs()
        walked = _folders_above(base)  # identity -> path: the partition and what holds it
        root_prefix, base_prefix = _prefix(self.root), _prefix(base)
        pending = [str(base)]
        while pending:
            folder = pending.pop()
            subfolders: list[tuple[str, tuple[int, int]]] = []
            for entry in _entries(folder):
                if entry.name.startswith(("_", ".")):
                    continue  # hidden: `_SUCCESS`, `_temporary/`, `.part` files
                path = entry.path
                if _is_folder(entry):
                    try:
                        identity = _identity(entry.stat())
                    except OSError as err:
                        raise StorageError(f"cannot stat folder: {err.strerror}",
                                           uri=path) from err
                    if account is not None:
                        account.hold(path)
                    subfolders.append((path, identity))
                    continue
                if not others.sort(path[len(base_prefix):]):
                    continue
                try:
                    stat = entry.stat()
                except OSError as err:
                    raise StorageError(f"cannot stat file: {err.strerror}", uri=path) from err
                if not S_ISREG(stat.st_mode):
                    if account is not None:
                        account.hold(path)
                    skipped.append((path, "not a regular file"))
                    continue
                if stat.st_size == 0:
                    empty += 1
                    continue
                rel = path[len(root_prefix):]
                if not _is_utf8(rel):
                    not_utf8 += 1
                    first_not_utf8 = min(first_not_utf8 or path, path)
                    continue
                version = _version(stat)
                if account is not None:
                    account.keep(rel, version)
                found.append(InputFile(uri=path, key=rel, size=stat.st_size, version=version))
            following = []
            for path, identity in sorted(subfolders):  # walked in name order
                if identity in walked:
                    skipped.append((path, "a link to a folder already listed (a loop): "
                                          f"{walked[identity]}"))
                    continue
                walked[identity] = path
                following.append(path)
            pending.extend(reversed(following))
        if not_utf8:
            # Refused before anything is read or written: the manifest, the rejects file and
            # every later --check name inputs exactly, which such a name cannot be in UTF-8.
            raise BadDataError(f"{not_utf8} input file name(s) not valid UTF-8; rename "
                               "them (nothing written)", uri=first_not_utf8)
        for entry_path, reason in sorted(skipped):  # names may hold anything: printed inert
            log.warning("not read: %s: %s", printable(entry_path), printable(reason),
                        extra={"skipped": printable(entry_path), "reason": printable(reason)})
        if skipped:
            log.warning("%d entries of %s not read (see above)", len(skipped),
                        printable(str(base)), extra={"skipped_entries": len(skipped)})
        others.warn(str(base))
        found.sort(key=lambda item: item.key)
        return found, empty

    def open_input(self, item: InputFile) -> BinaryIO:
        try:
            raw = _CheckedFile(item)
        except OSError as err:
            raise StorageError(f"cannot open input: {err.strerror}", uri=item.uri) from err
        # A buffer smaller than the reader's blocks (256 KiB and up): BufferedReader reads a
        # request of whole buffers straight into the bytes it returns, where a larger buffer
        # was filled first and copied out, a second copy of every input byte.
        return io.BufferedReader(raw, buffer_size=64 << 10)

    def publish(self, local_path: str, relative: str) -> None:
        publish_file(local_path, self.root / relative)

    def check_destination(self, relative: str = "", *, option: str = "--dest") -> None:
        """Fail before reading when results could not be written to the folder ``relative``
        (the day's): it, or the nearest folder above it that exists, is not a folder this
        process may write in (a file where a folder of the day should be, say)."""
        path = self.root / relative
        while not os.path.lexists(path) and path != path.parent:
            path = path.parent
        what = "the results" if option == "--dest" else f"to {option}"
        if not path.is_dir():
            raise StorageError(f"cannot write {what}: not a folder; give another {option}",
                               uri=str(path))
        if not os.access(path, os.W_OK | os.X_OK):
            raise StorageError(f"cannot write {what}: permission denied", uri=str(path))

    def holds_partitions(self) -> bool:
        """Whether any ``YYYY`` folder lies below the root: a root without one is not the
        root of date partitions (a day's folder given as the root, say)."""
        try:
            return any(entry.is_dir() and _YEAR.fullmatch(entry.name)
                       for entry in os.scandir(self.root))
        except OSError as err:
            raise StorageError(f"cannot list folder: {err.strerror}", uri=self.root_uri) from err

    def remove_abandoned(self, relatives: list[str], *, older_than: float = 0) -> list[str]:
        """Remove temp files that killed runs left beside ``relatives``; return their paths.
        A live writer holds a lock on its own, so age does not matter (``older_than`` is
        unused)."""
        return [path for relative in relatives
                for path in remove_abandoned_temps(self.root / relative)]

    def remove(self, relative: str) -> None:
        try:
            (self.root / relative).unlink(missing_ok=True)
        except OSError as err:
            raise StorageError(f"cannot remove: {err.strerror}", uri=self.uri_of(relative)) from err

    def read_bytes(self, relative: str) -> bytes | None:
        src = self._open_kept(relative)
        if src is None:
            return None
        with src:
            try:
                return src.read()
            except OSError as err:
                raise StorageError(f"cannot read: {err.strerror}",
                                   uri=self.uri_of(relative)) from err

    def fetch(self, relative: str, local_path: str, *, digest: Digest | None = None) -> bool:
        src = self._open_kept(relative)
        if src is None:
            return False
        with src:
            copy_to_file(src, self.uri_of(relative), local_path, digest)
        return True

    def _open_kept(self, relative: str) -> BinaryIO | None:
        """A file this tool wrote (a manifest, a state file), opened to read; None when it does
        not exist. Anything else in its place (a FIFO, a device, a folder, a link to one) is
        refused: reading a FIFO would wait for ever, /dev/zero never end."""
        path = self.root / relative
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO's open waits without it
        except FileNotFoundError:
            return None
        except OSError as err:
            raise StorageError(f"cannot read: {err.strerror}", uri=self.uri_of(relative)) from err
        if not S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise NotAFile("cannot read: not a regular file", uri=self.uri_of(relative))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")

    def list_below(self, relative: str) -> list[str]:
        base = self.root / relative
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())

    def local_path(self, relative: str) -> str | None:
        path = self.uri_of(relative)
        try:
            if not S_ISREG(os.stat(path).st_mode):
                return None  # a FIFO, a device, a folder: `fetch` refuses it, never waits
        except OSError:
            pass  # missing or unreadable: the caller's open says which
        return path

    def remove_folder(self, relative: str) -> None:
        """Delete the folder ``relative`` once it is empty (S3 has no folders to delete)."""
        try:
            (self.root / relative).rmdir()
        except OSError:
            pass  # not empty (a live run's temp file) or gone: harmless either way


def _identity(stat: os.stat_result) -> tuple[int, int]:
    return stat.st_dev, stat.st_ino


def _prefix(folder: Path) -> str:
    return str(folder).rstrip("/") + "/"


def _folders_above(base: Path) -> dict[tuple[int, int], str]:
    """The partition's folder and every folder above it, by identity: a link to one of them
    would list the partition again, or every day."""
    real = Path(os.path.realpath(base))
    found: dict[tuple[int, int], str] = {}
    for folder in (real, *real.parents):
        try:
            found.setdefault(_identity(folder.stat()), str(folder))
        except OSError as err:
            raise StorageError(f"cannot stat folder: {err.strerror}", uri=str(folder)) from err
    found[_identity(base.stat())] = str(base)
    return found


def _entries(folder: str) -> Iterator[os.DirEntry[str]]:
    """A folder's entries, one at a time, in the system's order."""
    try:
        with os.scandir(folder) as entries:
            yield from entries
    except OSError as err:
        raise StorageError(f"cannot list folder: {err.strerror}", uri=folder) from err


def _is_folder(entry: os.DirEntry[str]) -> bool:
    """A folder, or a link to one (a broken link is not)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _is_utf8(name: str) -> bool:
    """False for a name holding bytes that were not UTF-8 (``os.fsdecode`` surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _version(stat: os.stat_result) -> str:
    """What a rerun compares a local input by: its modification time, in ISO 8601."""
    try:
        return dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC).isoformat()
    except (ValueError, OverflowError, OSError):
        # Before the year 1 or after 9999 (datetime's range; tmpfs and others store such
        # times): ISO 8601's expanded years, worked out from the integer nanoseconds.
        return expanded_iso(stat.st_mtime_ns)


def expanded_iso(ns: int) -> str:
    """``ns`` after the epoch as ``+YYYYY-MM-DDTHH:MM:SS.ffffff+00:00``, any year."""
    seconds, fraction = divmod(ns, 10**9)
    days, second = divmod(seconds, 86400)
    # Howard Hinnant's civil_from_days: the proleptic Gregorian date of a day number.
    era, day_of_era = divmod(days + 719468, 146097)
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36524
                   - day_of_era // 146096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * shifted + 2) // 5 + 1
    month = shifted + 3 if shifted < 10 else shifted - 9
    year = year_of_era + era * 400 + (month <= 2)
    return (f"{year:+05d}-{month:02d}-{day:02d}T{second // 3600:02d}:{second // 60 % 60:02d}:"
            f"{second % 60:02d}.{fraction // 1000:06d}+00:00")


class _CheckedFile(io.FileIO):
    """An input file that must still be the one listed: same size and mtime when opened, and
    exactly the listed size, unchanged, when read to the end.

    A file replaced by a rename after opening is no problem (this descriptor keeps reading the
    listed version); one rewritten or appended in place fails the run instead of being counted
    half old, half new.
    """

    def __init__(self, item: InputFile) -> None:
        super().__init__(item.uri, "rb")
        self._item = item
        self._seen = 0
        try:
            self._check("changed since it was listed")
        except BaseException:
            super().close()
            raise

    def _check(self, problem: str) -> None:
        stat = os.fstat(self.fileno())
        if stat.st_size != self._item.size or _version(stat) != self._item.version:
            raise StorageError(f"input file {problem} (size or modification time differs); "
                               "rerun once it is complete", uri=self._item.uri)

    def readinto(self, buffer: Any) -> int | None:
        n = super().readinto(buffer)
        if n == 0 and len(memoryview(buffer)):
            if self._seen != self._item.size:
                raise StorageError(f"input file changed while it was read: {self._seen:,} bytes "
                                   f"read of {self._item.size:,} listed", uri=self._item.uri)
            self._check("changed while it was read")
        self._seen += n or 0
        return n

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        buffer = bytearray(size)
        n = self.readinto(buffer) or 0
        return bytes(buffer[:n])

    def readall(self) -> bytes:
        chunks = []
        while chunk := self.read(1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
