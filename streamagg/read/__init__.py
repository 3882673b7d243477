"""Reading one file: header, pyarrow batches, cleaning, the csv fallback, bad-row location."""

from ..columns import CLEAN_SCHEMA, GROUP, INSTANT, KEY, MAX_RAW_CHARS, BadRow, FileStats
from .batches import read_batches
from .clean import DATETIME_PATTERN, clean_columns, parse_instant, parse_instants
from .formats import open_decompressed, reader_for
from .header import find_columns, normalize_name
from .limits import ReadLimits
from .locate import locate_bad_rows
from .stitch import Member, read_stitched

__all__ = [
    "CLEAN_SCHEMA", "DATETIME_PATTERN", "GROUP", "INSTANT", "KEY", "MAX_RAW_CHARS",
    "BadRow", "FileStats", "Member", "ReadLimits", "clean_columns", "find_columns",
    "locate_bad_rows", "normalize_name", "open_decompressed", "parse_instant", "parse_instants",
    "read_batches", "read_stitched", "reader_for",
]
