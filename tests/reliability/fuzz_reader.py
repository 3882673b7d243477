#!/usr/bin/env python3
"""Coverage-guided fuzzing of the reader with atheris (libFuzzer): any bytes, one clear outcome.

Run by ``tests/reliability/test_fuzz_reader.py`` for a few seconds, and by ``make fuzz-reader``
for a long campaign. Arguments are libFuzzer's: corpus folders (new inputs go to the first),
``-max_total_time=SECONDS``, ``-artifact_prefix=DIR/``. The first byte of an input picks the
options (chunk size, the default or the tiny limits, the block size), the rest is the file.
Anything but batches or a one-line StreamaggError is a finding; so is a crash of the process
(libFuzzer catches the signal and writes the input out).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports(include=["streamagg.read", "streamagg.columns"]):
    from streamagg.read import ReadLimits

from tests.reliability import reader_check  # noqa: E402 - after the instrumented imports

DEFAULT = ReadLimits.default()
LIMITS = [dataclasses.replace(DEFAULT, block_size=64), dataclasses.replace(DEFAULT, block_size=999),
          reader_check.TINY, dataclasses.replace(reader_check.TINY, block_size=4096)]


def test_one_input(data: bytes) -> None:
    if not data:
        return
    options, body = data[0], data[1:]
    reader_check.check(body, chunk_size=1 + (options & 3), limits=LIMITS[(options >> 2) & 3])


def main() -> None:
    # pyarrow reports a row it cannot decode for the invalid-row handler as "exception ignored"
    # before raising (the reader then reads on with csv): noise here, as in the CLI.
    sys.unraisablehook = lambda unraisable: None
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
