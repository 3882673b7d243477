"""Reading one file: header, pyarrow batches, cleaning, the csv fallback, bad-row location."""

from ..columns import CLEAN_SCHEMA, GROUP, INSTANT, KEY, MAX_RAW_CHARS, BadRow, FileStats
from .batches import read_batches
from .clean import DATETIME_PATTERN, clean_columns, parse_instant, parse_instants
from .fallback import MAX_ROW_CHARS
from .formats import open_decompressed, reader_for
from .header import find_columns, normalize_name
from .locate import locate_bad_rows

__all__ = [
    "CLEAN_SCHEMA", "DATETIME_PATTERN", "GROUP", "INSTANT", "KEY", "MAX_RAW_CHARS",
    "MAX_ROW_CHARS", "BadRow", "FileStats", "clean_columns", "find_columns", "locate_bad_rows",
    "normalize_name", "open_decompressed", "parse_instant", "parse_instants", "read_batches",
    "reader_for",
]
