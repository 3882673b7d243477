"""gzip, known by its magic bytes: gunzipped by ISA-L's igzip, or by zlib where isal is missing."""

from __future__ import annotations

import gzip
import zlib
from typing import BinaryIO

from .formats import Compression

try:
    # ISA-L's inflate (the isal package, a declared dependency). Gunzipping one generated
    # 81 MiB file took 0.17 CPU s, against 0.26 for zlib-ng, 0.45 for pyarrow's stream and
    # 0.55 for the standard library; a whole 4M-row gzip day (4 files, 325 MiB of CSV) went
    # from 7.12 to 5.46 CPU s (medians of 3 pairs), its peak from 174 to 178 MiB at 256MB
    # (ISA-L reads 512 KiB of compressed bytes at a time). IGzipFile is the standard GzipFile
    # with a reader in C: concatenated members, CRC and length checks work the same, and
    # damaged data raises the same kinds of error (tests/read/test_formats.py runs both).
    from isal import igzip, isal_zlib
except ImportError:  # a platform without an isal wheel: the standard library, three times the CPU
    _GzipFile: type[gzip.GzipFile] = gzip.GzipFile
    _ERRORS: tuple[type[BaseException], ...] = (gzip.BadGzipFile, EOFError, zlib.error)
else:
    _GzipFile = igzip.IGzipFile
    _ERRORS = (gzip.BadGzipFile, EOFError, zlib.error, isal_zlib.error)  # type: ignore[assignment]


class Gzip(Compression):
    """RFC 1952 gzip, one member or several concatenated."""

    name = "gzip"
    magic = b"\x1f\x8b"
    suffix = ".gz"
    # Measured on generated days: 2.4 (the adlog shape: random ids) to 5.6 (the mixed shape);
    # real logs repeat more. Only the first estimate of the spill's size uses it.
    expansion = 5.0
    errors = _ERRORS

    def decompress(self, stream: BinaryIO) -> BinaryIO:
        return _GzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]


GZIP = Gzip()
