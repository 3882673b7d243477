"""The shapes of day of issue 22, small enough for the suite, and the CLI run on them measured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from streamagg.testing.generate import generate_day
from tests.conftest import DAY, DAY_ARG, OUTPUT_NAME, day_path
from tests.read.test_memory_shapes import SHAPES as READER_SHAPES
from tests.reliability.helpers import LAUNCHER, REPO, child_env

MiB = 2**20
H = b"IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID"
# Shapes are run a day each: stacked in one day, the reader's peaks and the counts' add up (179
# MiB under 192MB once), which no single shape of the issue does.
ONE_ROW_FILES = 1_000
PAIRS = (12_500, 24)  # 300,000 (campaign, hour) pairs: the counts spill under 192MB


def reader_day(root: Path) -> Path:
    """The reader's shapes of file (tests/read/test_memory_shapes.py) in one day: rows of 10 MiB
    with an emoji, 30 MiB of blank lines before the header, runs of bad rows, wide rows."""
    folder = root / day_path(DAY)
    folder.mkdir(parents=True)
    for name, (_, shape) in READER_SHAPES.items():
        (folder / name).write_bytes(shape())
    return root


def files_and_pairs_day(root: Path) -> Path:
    """The per-file and the counts shapes of issue 22 in one day below ``root``; ``root``."""
    folder = root / day_path(DAY)
    folder.mkdir(parents=True)
    # One-row files of about 5 KiB: what is kept per file listed.
    pad = b"x" * 4900
    for i in range(ONE_ROW_FILES):
        (folder / f"one-{i:05d}.csv").write_bytes(
            H + b",PAD\n" + b"o%d,2021-01-30 %02d:00:00,%d,%s\n" % (i, i % 24, i % 100, pad))
    # Every (campaign, hour) pair once: the output has a row per pair.
    campaigns, hours = PAIRS
    (folder / "pairs.csv").write_bytes(H + b"\n" + b"".join(
        b"p%d-%d,2021-01-30 %02d:30:00,%d\n" % (c, h, h, 100_000 + c)
        for c in range(campaigns) for h in range(hours)))
    return root


def wide_header_day(root: Path) -> Path:
    """A header and a row of 4 Mi empty fields each (8 MiB): refused with exit 4."""
    folder = root / day_path(DAY)
    folder.mkdir(parents=True)
    row = b"a,2021-01-30 10:00:00,1"
    (folder / "a.csv").write_bytes(H + b"," * (4 * MiB) + b"\n" + row + b"," * (4 * MiB) + b"\n")
    return root


def plain_day(root: Path, rows: int = 2_000_000) -> Path:
    """A plain multi-million-row day: the generator's adlog shape (one timestamp form, exact
    duplicates, about 82 bytes a row), as common ad logs are."""
    # adlog, not mixed: the mixed shape's long quoted user agents and datetime notations are
    # the contract's, proven on small days; at 2M rows they cost 7x the CPU a run (16 s against
    # 2.2 s, three runs a day) and 2.4x the bytes (388 MiB against 162) for the same question,
    # whether the counts and the de-duplication of millions of rows stay in the cgroup (VmHWM
    # under 192MB: 150 MiB for adlog, 146 for mixed).
    generate_day(root, DAY, rows=rows, files=4, seed=22, shape="adlog")
    return root


def cli_command(source: Path, dest: Path, peak_file: Path, *options: str) -> list[str]:
    """The CLI in a child (the suite's launcher), writing its VmHWM to ``peak_file``."""
    return [sys.executable, str(LAUNCHER), "--peak-file", str(peak_file), "--", DAY_ARG,
            "--source", str(source), "--dest", str(dest), "--max-bad-rows", "100%", *options]


def run_cli(command: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=REPO, env=child_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=timeout, check=False)


def output_of(dest: Path) -> bytes:
    return (dest / day_path(DAY) / OUTPUT_NAME).read_bytes()
