"""A file's bytes framed for pyarrow: whole in a buffer when small, else streamed; NULs refused."""

from __future__ import annotations

import io
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from .blank import empty_blank_lines, padded_line_start
from .quotes import EOF_PROBE


class NulByte(pa.ArrowInvalid):
    """pyarrow's chunker can split a record holding a NUL in a quoted field and a quoted line
    break at a block boundary (pyarrow 26), so a file with a NUL is read on with csv."""


def refuse_nul(data: bytes | memoryview) -> None:
    """Raise `NulByte` if ``data`` holds a NUL."""
    if isinstance(data, bytes):
        found = b"\x00" in data  # memchr: five times numpy's all() (120 against 25 GB/s)
    else:
        found = not np.frombuffer(data, dtype=np.uint8).all()
    if found:
        raise NulByte("NUL byte")


def emptied_before_quote(data: bytes) -> tuple[bytes, bool]:
    """``data`` with its blank lines before its first quote emptied (surely outside quoted
    fields), and whether it holds a quote.

    pyarrow skips an empty line itself, but hands a line of spaces to the invalid-row handler,
    a Python call each (4 us): 100 MiB of them took two minutes. Emptied here in a few numpy
    passes over a block (only one holding a line start followed by a blank byte), they cost a
    second.
    """
    quote = data.find(b'"')
    head = data if quote < 0 else data[:quote]
    if not padded_line_start(head):
        return data, quote >= 0
    emptied = empty_blank_lines(head)
    if emptied is head:
        return data, quote >= 0
    return (emptied, False) if quote < 0 else (emptied + data[quote:], True)


class Prefixed(io.RawIOBase):
    """Bytes already read (the sentinel record, what was read past the header), followed by the
    rest of the stream, then the probe that tells whether the file ended inside a quoted field
    (see `quotes.EOF_PROBE`)."""

    def __init__(self, prefix: bytes, rest: BinaryIO, *, scan: bool = True) -> None:
        self._prefix = memoryview(prefix)
        self._rest = rest
        self._nul_in_prefix = b"\x00" in prefix
        # Up to the file's first quote every byte is outside quoted fields, so a line of
        # spaces, tabs and BOMs there is a blank line for sure. Without ``scan`` they are left
        # to the parser (see `ReadLimits.blank_lines_before_rescan`).
        self._before_quotes = scan and b'"' not in prefix
        self._suffix = memoryview(EOF_PROBE)
        self.at_eof = False  # the stream is read to its end: the last record may be parsed

    @property
    def source(self) -> io.RawIOBase:
        return self

    def readable(self) -> bool:
        return True

    def _read_into(self, buffer: memoryview) -> int:
        readinto = getattr(self._rest, "readinto", None)
        if readinto is not None:
            return int(readinto(buffer) or 0)
        data = self._rest.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        # pyarrow calls read(), not readinto(): RawIOBase's read() fills a bytearray and copies
        # it into bytes, a second copy of every input byte (3% of a run's CPU). The stream's
        # own read() hands its bytes over as they are; pyarrow wraps them without a copy.
        if self._prefix or self.at_eof or size < 0:
            return super().read(size) or b""
        data = self._rest.read(size)
        if not data:
            self.at_eof = True
            return super().read(size) or b""  # the probe
        data = data if isinstance(data, bytes) else bytes(data)
        if self._before_quotes:  # only until the first quote
            data, quoted = emptied_before_quote(data)
            self._before_quotes = not quoted
        refuse_nul(data)
        return data

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._prefix:
            if self._nul_in_prefix:
                raise NulByte("NUL byte")
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        n = 0 if self.at_eof else self._read_into(buffer)
        if not n:
            self.at_eof = True
            n = min(len(buffer), len(self._suffix))
            buffer[:n] = self._suffix[:n]
            self._suffix = self._suffix[n:]
            return n
        refuse_nul(memoryview(buffer)[:n])
        return n


class Whole:
    """A file read whole: pyarrow parses it from a buffer of its own, the probe appended."""

    def __init__(self, buffer: pa.Buffer, prefix_bytes: int) -> None:
        self.buffer, self.prefix_bytes = buffer, prefix_bytes
        self.source = pa.BufferReader(buffer)
        self.at_eof = True

    def scanned(self) -> Whole:
        """The same file with the blank lines before its first quote emptied, as the streamed
        way empties them (past what was read with the header, up to the first quote)."""
        data = self.buffer.to_pybytes()
        prefix, body = data[:self.prefix_bytes], data[self.prefix_bytes:-len(EOF_PROBE)]
        emptied = body if b'"' in prefix else emptied_before_quote(body)[0]
        return Whole(pa.py_buffer(prefix + emptied + EOF_PROBE), self.prefix_bytes)


def whole_if_small(prefix: bytes, stream: BinaryIO, limit: int,
                    scan: bool) -> Prefixed | Whole:
    """A file of at most ``limit`` bytes (``prefix`` and the rest), read whole, else the
    stream as it goes, its blank lines emptied ahead of the parser only with ``scan`` (a
    file read whole is scanned when it needs it, `Whole.scanned`).

    pyarrow reads a Python stream on its own read-ahead thread, a call into the interpreter
    (the GIL) per read, a thread hand-over per block: on a day of many small files that fixed
    cost is paid per file. A buffer of its own it reads natively. The file is read into one
    buffer from Arrow's pool (a new bytes object of that size cost page faults: 430 against
    45 us a 470 KB file). A file holding a NUL goes the streamed way, which refuses it where
    it did."""
    readinto = getattr(stream, "readinto", None)
    if readinto is None or limit <= len(prefix):
        return Prefixed(prefix, stream, scan=scan)
    buffer = pa.allocate_buffer(limit + len(EOF_PROBE))
    view = memoryview(buffer).cast("B")
    view[:len(prefix)] = prefix
    end = len(prefix)
    while end < limit:
        read = readinto(view[end:limit])
        if not read:
            break
        end += read
    else:  # longer: what was read goes first, then the rest of the stream
        data = bytes(view[:end])
        del view, buffer
        return Prefixed(data, stream, scan=scan)
    body = np.frombuffer(buffer, np.uint8, count=end - len(prefix), offset=len(prefix))
    # min(): 0.01 ms a 470 KB file, against 0.12 for all(), which casts to bools.
    if b"\x00" in prefix or (len(body) > 0 and body.min() == 0):
        data = bytes(view[:end])  # rare: the streamed way's treatment, in full
        del view, buffer, body
        return Prefixed(data, stream, scan=scan)
    view[end:end + len(EOF_PROBE)] = EOF_PROBE
    return Whole(buffer.slice(0, end + len(EOF_PROBE)), len(prefix))
