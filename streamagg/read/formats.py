"""The input-format registry: which names are inputs, how stored bytes become content, how big."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal, Protocol

from ..errors import StorageError
from ..registry import Registry

# A format is one module defining an `InputFormat`, a compression one defining a `Compression`;
# each is one line here. Extension matching, compression by content and the size estimate go by
# these tables alone.
FORMATS = Registry("input format", {
    "csv": "streamagg.read.csv_format:CSV",
})
COMPRESSIONS = Registry("compression", {
    "gzip": "streamagg.read.gunzip:GZIP",
})

NameKind = Literal["input", "hidden", "other"]


@dataclass(frozen=True)
class InputFormat:
    """A format of input files: the extension that names it and the functions that read it
    (with the signatures of `streamagg.read.read_batches` and `streamagg.read.locate_bad_rows`)."""

    name: str
    extension: str  # lower case, with its dot; matched in any letter case
    read_batches: Callable[..., Iterator[Any]]
    locate_bad_rows: Callable[..., None]
    # Consecutive files read as one stream (`streamagg.read.stitch.read_stitched`'s signature):
    # what `read_batches` gives file by file, at less cost a file. None: file by file.
    read_stitched: Callable[..., Iterator[Any]] | None = None


class Compression:
    """A compression, recognised from the content's first bytes, never from the name.

    A subclass sets the class attributes and writes `decompress`; `open` wraps what it returns so
    that damaged data ends in one line naming the input."""

    name = ""
    magic = b""  # the first bytes of every stream of this compression
    suffix = ""  # the extension names usually add: only estimates made before reading use it
    expansion = 1.0  # content bytes per stored byte, a typical figure, for those estimates
    errors: tuple[type[BaseException], ...] = ()  # what the decompressor raises on bad data

    def decompress(self, stream: BinaryIO) -> BinaryIO:
        raise NotImplementedError

    def open(self, stream: BinaryIO, uri: str) -> BinaryIO:
        return _Checked(self.decompress(stream), self, uri)  # type: ignore[return-value]


class Listed(Protocol):
    """What `reader_for` needs of a listed input (`streamagg.sources.InputFile`)."""

    @property
    def uri(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def size(self) -> int: ...


@dataclass(frozen=True)
class InputReader:
    """How one listed input is read: its format from its name, its compression from its bytes."""

    uri: str
    size: int
    format: InputFormat
    named_compression: Compression | None  # what the name suggests; only for `expected_bytes`

    @property
    def expected_bytes(self) -> int:
        """The content's size, estimated before any byte is read."""
        expansion = self.named_compression.expansion if self.named_compression else 1.0
        return int(self.size * expansion)

    def open(self, stream: BinaryIO) -> BinaryIO:
        """The content of ``stream`` (the stored bytes), decompressed if its bytes say so."""
        return open_decompressed(stream, self.uri)


def reader_for(item: Listed) -> InputReader:
    """The reader of a listed input; ``ValueError`` for a name no format claims (listing keeps
    only names that one does)."""
    found = match_name(item.key)
    if found is None:
        raise ValueError(f"no input format for {item.key!r}")
    return InputReader(item.uri, item.size, *found)


def match_name(relative: str) -> tuple[InputFormat, Compression | None] | None:
    """The format (and the compression the name suggests) of a file name, in any letter case."""
    name = relative.rsplit("/", 1)[-1]
    for format_name in FORMATS:
        kind: InputFormat = FORMATS.load(format_name)
        if _ends_with(name, kind.extension):
            return kind, None
        for compression_name in COMPRESSIONS:
            compression: Compression = COMPRESSIONS.load(compression_name)
            if _ends_with(name, kind.extension + compression.suffix):
                return kind, compression
    return None


def name_kind(relative: str) -> NameKind:
    """``hidden`` when a part of the path starts with ``_`` or ``.`` (``_SUCCESS``,
    ``_temporary/``), else ``input`` when a format claims the name, else ``other``."""
    if any(part.startswith(("_", ".")) for part in relative.split("/") if part):
        return "hidden"
    return "input" if match_name(relative) is not None else "other"


def _ends_with(name: str, extension: str) -> bool:
    """ASCII case-insensitive: ``A.CSV`` matches, but not a ``.cſv`` that casefolds to it."""
    tail = name[-len(extension):] if len(name) > len(extension) else ""
    return tail.isascii() and tail.lower() == extension


MAGIC_BYTES = 4  # read before choosing: more than any registered magic needs


def open_decompressed(stream: BinaryIO, uri: str = "") -> BinaryIO:
    """The content of ``stream``: decompressed when its first bytes are a registered
    compression's magic bytes, else the bytes as they are. ``uri`` names it in errors."""
    head = b""
    while len(head) < MAGIC_BYTES:  # a stream may return short reads before its end
        more = stream.read(MAGIC_BYTES - len(head))
        if not more:
            break
        head += more
    rewound: BinaryIO = _Rewound(head, stream)  # type: ignore[assignment]
    for name in COMPRESSIONS:
        compression: Compression = COMPRESSIONS.load(name)
        if head.startswith(compression.magic):
            return compression.open(rewound, uri)
    return rewound


class _Rewound(io.BufferedIOBase):
    """The bytes read to recognise the content, then the rest of the stream; reads are as long
    as asked (short only at the end), as a buffered stream's are."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        super().__init__()
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if not self._head:
            return self._rest.read(-1 if size is None else size)
        head, self._head = self._head, b""
        if size is not None and 0 <= size < len(head):
            self._head = head[size:]
            return head[:size]
        more = self._rest.read(-1 if size is None or size < 0 else size - len(head))
        return head + more if more else head

    read1 = read

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            data = self.read(len(view))
            view[:len(data)] = data
            return len(data)
        return read_into(self._rest, view)


def read_into(stream: BinaryIO, view: memoryview) -> int:
    """Fill ``view`` from ``stream`` with one read: by its ``readinto`` when it has one (no
    copy), else by ``read``; the bytes read, 0 at its end."""
    readinto = getattr(stream, "readinto", None)
    if readinto is not None:
        return int(readinto(view) or 0)
    data = stream.read(len(view))
    view[:len(data)] = data
    return len(data)


class _Checked(io.BufferedIOBase):
    """A decompressor's output, its errors on damaged data turned into one line naming the input."""

    def __init__(self, inner: BinaryIO, compression: Compression, uri: str) -> None:
        super().__init__()
        self._inner = inner
        self._compression = compression
        self._uri = uri

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        try:
            return self._inner.read(-1 if size is None else size)
        except self._compression.errors as err:
            raise self._damaged(err) from err

    read1 = read

    def readinto(self, buffer: Any) -> int:
        try:
            return int(self._inner.readinto(buffer) or 0)  # type: ignore[attr-defined]
        except self._compression.errors as err:
            raise self._damaged(err) from err

    def _damaged(self, err: BaseException) -> StorageError:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if isinstance(err, EOFError):  # also what a member followed by other bytes gives
            detail = "the data ends inside a member, or is followed by bytes that are not " \
                     f"{self._compression.name} ({detail})"
        return StorageError(f"read failed: damaged {self._compression.name} data: {detail}",
                            uri=self._uri)

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            super().close()
