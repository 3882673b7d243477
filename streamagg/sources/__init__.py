"""Storages behind one small interface: list a day's inputs in order, open one, publish results."""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Protocol, cast

from ..errors import UsageError
from ..registry import STORAGES


@dataclass(frozen=True)
class InputFile:
    """One input object of a partition, as listed."""

    uri: str  # full location, for messages and the manifest
    key: str  # path or key the day's files are ordered by
    size: int
    version: str  # ETag on S3, mtime locally: what a rerun compares

    @property
    def gzip(self) -> bool:
        return self.key.endswith(".gz")


class Storage(Protocol):
    """A root folder or bucket prefix; paths below it are relative and use ``/``."""

    root_uri: str

    def list_partition(self, relative: str) -> tuple[list[InputFile], int]:
        """Inputs below ``relative`` in lexicographic order, and the empty files skipped.

        A local root that does not exist is a `UsageError` (exit 2); a missing ``relative`` below
        an existing root is no inputs (the caller's exit 3)."""

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
    def fetch(self, relative: str, local_path: str) -> bool:
        """Copy ``relative`` to a local file, streamed; False when it does not exist."""

    def list_below(self, relative: str) -> list[str]:
        """Every object below the folder ``relative`` (hidden names too), as relative paths."""


def is_input_name(relative: str) -> bool:
    """The input rule: ``.csv``/``.csv.gz``, no part of the path hidden by ``_`` or ``.``."""
    parts = relative.split("/")
    if any(part.startswith(("_", ".")) for part in parts if part):
        return False
    return parts[-1].endswith((".csv", ".csv.gz"))


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
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri
