"""Storages behind one small interface: list a day's inputs in order, open one, publish results."""

from __future__ import annotations

import bisect
import logging
import sys
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol, cast

from ..budget import ListingAccount
from ..errors import StorageError, UsageError, printable
from ..read.formats import name_kind
from ..registry import STORAGES

log = logging.getLogger("streamagg")


class NotAFile(StorageError):
    """What is stored where this tool wrote a file (a manifest, an output, a state file) is not
    one: a FIFO, a device, a folder. Damaged, as a file whose bytes changed: compared as such."""


@dataclass(frozen=True, slots=True, init=False, repr=False)
class InputFile:
    """One input object of a partition, as listed: every one is kept to the end of the run, so
    its URI is not: it is its storage's root (one string shared by the day's files) and its key.
    That took 356 bytes a file to 270 (tracemalloc, S3 keys of 33 characters)."""

    head: str  # what the URI holds before the key: ``s3://bucket/``, the local root's path
    key: str  # path or key the day's files are ordered by
    size: int
    version: str  # ETag on S3, mtime locally: what a rerun compares

    def __init__(self, uri: str, key: str, size: int, version: str) -> None:
        if not uri.endswith(key):
            raise ValueError(f"an input's URI ends with its key: {uri!r}, {key!r}")
        # Interned: every file of a root holds the same string, whoever listed it.
        object.__setattr__(self, "head", sys.intern(uri[:len(uri) - len(key)]))
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "version", version)

    @property
    def uri(self) -> str:
        """The full location, for messages and the manifest."""
        return self.head + self.key

    def __repr__(self) -> str:
        return (f"InputFile(uri={self.uri!r}, key={self.key!r}, size={self.size!r}, "
                f"version={self.version!r})")


class Digest(Protocol):
    """What `Storage.fetch` feeds the bytes it copies: a `hashlib` object."""

    def update(self, data: bytes, /) -> None: ...


class Storage(Protocol):
    """A root folder or bucket prefix; paths below it are relative and use ``/``."""

    root_uri: str
    # The name under which a manifest records a listed input's `InputFile.version`.
    version_field: str  # "etag" on S3, "mtime" locally

    def list_partition(self, relative: str, account: ListingAccount | None = None
                       ) -> tuple[list[InputFile], int]:
        """Inputs below ``relative`` in lexicographic order, and the empty files skipped.

        A local root that does not exist is a `UsageError` (exit 2); a missing ``relative`` below
        an existing root is no inputs (the caller's exit 3). What the listing holds is charged
        to ``account`` as it grows, each input kept and what is held only while listing: past
        its share the listing stops with exit 4 (`BadDataError`)."""

    def holds_partitions(self) -> bool:
        """Whether the root holds any ``YYYY/`` folder: one that holds none is not a root of
        date partitions (the caller's exit 2, where a missing day is exit 3)."""

    def check_destination(self, relative: str = "", *, option: str = "--dest") -> None:
        """Fail now, before anything is read, when results could not be written to the folder
        ``relative`` (a bucket that does not exist, a path that is not a writable folder);
        ``option`` is what the message tells the user to change."""

    def open_input(self, item: InputFile) -> BinaryIO:
        """A binary stream of the object's bytes as stored (still compressed)."""

    def publish(self, local_path: str, relative: str) -> None:
        """Atomically replace ``relative`` with the local file's bytes."""

    def remove(self, relative: str) -> None:
        """Delete ``relative`` if it exists."""

    def read_bytes(self, relative: str) -> bytes | None:
        """The small object's bytes, or None when it does not exist."""

    def uri_of(self, relative: str) -> str:
        """The full URI of a path below the root."""

    def remove_abandoned(self, relatives: list[str], *, older_than: float) -> list[str]:
        """Remove what killed runs left beside ``relatives`` (temp files, pending uploads)
        untouched for ``older_than`` seconds; return what was removed."""

    def fetch(self, relative: str, local_path: str, *, digest: Digest | None = None) -> bool:
        """Copy ``relative`` to a local file, streamed, feeding ``digest`` the bytes as they
        pass (one read checks and copies a file); False when it does not exist."""

    def list_below(self, relative: str) -> list[str]:
        """Every object below the folder ``relative`` (hidden names too), as relative paths."""

    def local_path(self, relative: str) -> str | None:
        """The file's own path on this machine, when it has one (local folders): read in
        place instead of fetched. None on S3."""

    def remove_folder(self, relative: str) -> None:
        """Remove the folder ``relative`` once it is empty; nothing where folders are only
        prefixes (S3)."""


def is_input_name(relative: str) -> bool:
    """The input rule: a name an input format claims (``.csv``, ``.csv.gz``, in any letter
    case), no part of the path hidden by ``_`` or ``.`` (see `streamagg.read.formats`)."""
    return name_kind(relative) == "input"


@dataclass
class NotInputs:
    """Visible files of a partition that are not inputs: counted, the first few by name kept
    (whatever order the listing meets them in), one warning."""

    count: int = 0
    examples: list[str] = field(default_factory=list)
    shown: int = 3

    def sort(self, relative: str) -> bool:
        """True for an input (``relative`` to the partition); a visible file that is not one
        is noted, a hidden one is not."""
        kind = name_kind(relative)
        if kind == "other":
            self.count += 1
            if len(self.examples) < self.shown or relative < self.examples[-1]:
                bisect.insort(self.examples, relative)
                del self.examples[self.shown:]
        return kind == "input"

    def warn(self, where: str) -> None:
        """The one warning for the whole listing, if any file was passed over."""
        if not self.count:
            return
        more = f" and {self.count - len(self.examples):,} more" if self.count > len(
            self.examples) else ""
        log.warning("%s file(s) of %s not read: not .csv or .csv.gz (any letter case): %s%s",
                    f"{self.count:,}", printable(where),
                    ", ".join(printable(e) for e in self.examples), more,
                    extra={"not_inputs": self.count})


def storage_for(uri: str, *, endpoint_url: str | None = None) -> Storage:
    """The storage for a URI: ``s3://bucket[/prefix]``, ``file://path`` or a plain local path
    (see `streamagg.registry.STORAGES`)."""
    scheme, sep, _ = uri.partition("://")
    if not sep:
        scheme = "file"
    if scheme not in STORAGES:
        raise UsageError(f"unsupported storage scheme {scheme!r} in {redact(uri)}: expected "
                         f"{' or '.join(f'{name}://' for name in STORAGES)}")
    return cast(Storage, STORAGES.load(scheme)(uri, endpoint_url=endpoint_url))


def redact(uri: str) -> str:
    """The URI with any ``user:secret@`` part hidden, for messages."""
    scheme, sep, rest = uri.partition("://")
    if sep and has_userinfo(rest):
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri


def has_userinfo(rest: str) -> bool:
    """Whether ``rest`` (a URI after ``scheme://``) starts with ``user:secret@``. A secret may
    hold ``/`` (AWS secret keys do), so the ``@`` may lie past the first ``/``: a ``:`` before
    it, not followed by a port number, marks one too."""
    host = rest.split("/", 1)[0]
    if "@" in host:
        return True
    user, colon, after = host.partition(":")
    return bool(colon) and "@" in rest and not after.isdigit()
