"""CSV, the format of every input: RFC 4180 read by `batches`, its bad rows located by `locate`."""

from .batches import read_batches
from .formats import InputFormat
from .locate import locate_bad_rows
from .stitch import read_stitched

CSV = InputFormat("csv", ".csv", read_batches, locate_bad_rows, read_stitched)
