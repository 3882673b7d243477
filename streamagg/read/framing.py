"""A file's bytes framed for pyarrow: whole in a buffer when small, else streamed; NULs refused."""

from __future__ import annotations

import io
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from .blank import empty_blank_lines, padded_line_start
from .formats import read_into
from .quotes import EOF_PROBE

_QUOTE = np.uint8(ord('"'))


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
        self._held = b""  # a CR held back from the end of the last read (see `read`)
        self.at_eof = False  # the stream is read to its end: the last record may be parsed

    @property
    def source(self) -> io.RawIOBase:
        return self

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        """At most ``size`` bytes (one more if ``size`` is 1), never ending in a CR but at the
        end of the file.

        pyarrow drops the LF that opens a block after a block ending in a CR (one CRLF split
        between them) and takes a block it leaves empty for the end of the stream
        (CSVBufferIterator, pyarrow 26). A file's last LF read alone ended it before the probe,
        so its last row looked cut by an open quote; a LF alone mid-file (a short read) ended
        it there, the rest unread and unreported; a LF so dropped inside a quoted field was
        lost from its value. So a CR that would end a block is held back to open the next,
        and pyarrow never drops a byte.
        """
        if size < 0:
            return super().read(size) or b""  # readall(), by reads of a size
        data, self._held = self._held, b""
        while True:
            more = self._next(max(size - len(data), 1))
            data = data + more if data else more
            if not more or data[-1:] != b"\r":
                return data
            if len(data) > 1:
                self._held = b"\r"
                return data[:-1]
            # A read of a lone CR: read on, so as not to hand over nothing (the end).

    def _next(self, size: int) -> bytes:
        """The next bytes: of the prefix, then of the stream, then the probe."""
        # pyarrow calls read(), not readinto(): RawIOBase's read() fills a bytearray and copies
        # it into bytes, a second copy of every input byte (3% of a run's CPU). The stream's
        # own read() hands its bytes over as they are; pyarrow wraps them without a copy.
        if self._prefix or self.at_eof:
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
        n = 0 if self.at_eof else read_into(self._rest, buffer)
        if not n:
            self.at_eof = True
            n = min(len(buffer), len(self._suffix))
            buffer[:n] = self._suffix[:n]
            self._suffix = self._suffix[n:]
            return n
        refuse_nul(memoryview(buffer)[:n])
        return n


def splits_quoted_crlf(buffer: pa.Buffer | bytes, block_size: int) -> bool:
    """Whether pyarrow, reading ``buffer`` in blocks of ``block_size``, finds a block ending in
    a CR, the next one opening with a LF, after a quote: it drops that LF (see `Prefixed.read`),
    from the quoted field it may be in. Outside quoted fields the CR ends the line either way.
    Not one LF is dropped from a file that has no quote before its last such CR."""
    view = memoryview(buffer).cast("B")
    # A Python step a block: a few of them in a file read whole (numpy's slices took 25 us).
    split = 0
    for start in range(block_size, len(view), block_size):
        if view[start - 1] == 0x0D and view[start] == 0x0A:
            split = start
    return split > 0 and bool((np.frombuffer(buffer, np.uint8, count=split) == _QUOTE).any())


class Whole:
    """A file read whole: pyarrow parses it from a buffer of its own, the probe appended, in
    blocks of ``block_size``."""

    def __init__(self, buffer: pa.Buffer, prefix_bytes: int, block_size: int) -> None:
        self.buffer, self.prefix_bytes, self.block_size = buffer, prefix_bytes, block_size
        self.source = pa.BufferReader(buffer)
        self.at_eof = True

    def scanned(self) -> Whole | Prefixed:
        """The same file with the blank lines before its first quote emptied, as the streamed
        way empties them (past what was read with the header, up to the first quote); streamed
        if its blocks would split a CRLF in a quoted field (`splits_quoted_crlf`)."""
        data = self.buffer.to_pybytes()
        prefix, body = data[:self.prefix_bytes], data[self.prefix_bytes:-len(EOF_PROBE)]
        emptied = body if b'"' in prefix else emptied_before_quote(body)[0]
        framed = prefix + emptied + EOF_PROBE
        if splits_quoted_crlf(framed, self.block_size):
            return Prefixed(prefix, io.BytesIO(emptied), scan=False)
        return Whole(pa.py_buffer(framed), self.prefix_bytes, self.block_size)


def whole_if_small(prefix: bytes, stream: BinaryIO, limit: int, block_size: int,
                    scan: bool) -> Prefixed | Whole:
    """A file of at most ``limit`` bytes (``prefix`` and the rest), read whole, else the
    stream as it goes, its blank lines emptied ahead of the parser only with ``scan`` (a
    file read whole is scanned when it needs it, `Whole.scanned`).

    pyarrow reads a Python stream on its own read-ahead thread, a call into the interpreter
    (the GIL) per read, a thread hand-over per block: on a day of many small files that fixed
    cost is paid per file. A buffer of its own it reads natively. The file is read into one
    buffer from Arrow's pool (a new bytes object of that size cost page faults: 430 against
    45 us a 470 KB file). A file holding a NUL goes the streamed way, which refuses it where
    it did; so does one whose blocks of ``block_size`` would split a CRLF in a quoted field
    (`splits_quoted_crlf`), its CRs held back there."""
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
    framed = buffer.slice(0, end + len(EOF_PROBE))
    if splits_quoted_crlf(framed, block_size):  # rare: the rest as the streamed way reads it
        return Prefixed(prefix, io.BytesIO(bytes(view[len(prefix):end])), scan=scan)
    return Whole(framed, len(prefix), block_size)
