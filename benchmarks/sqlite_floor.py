"""What one sqlite key insert costs: the sqlite backend's own `add`, beside the least sqlite does.

The sqlite backend inserts every row from Python on one thread. This measures, per row, on
generated keys in a day's time order: the backend's `add` (its key table, upsert and trigger,
rows already prepared as the reader threads prepare them), and the cheapest insert a sqlite key
table allows (three integers, INSERT OR IGNORE, no trigger, the same pragmas). Multiply by the
day's rows to compare with a spill run of that day.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time

import numpy as np
import pyarrow as pa

from streamagg.columns import CLEAN_SCHEMA, INSTANT
from streamagg.dedup import HIGH, LOW
from streamagg.dedup.sqlite import SqliteDeduper

BATCH = 65_536
LIMIT = 256 * 2**20


def day_batches(rows: int, seed: int) -> list[pa.RecordBatch]:
    """Clean batches of UUID-like keys, 5% repeated, instants over one day in order."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"{v:032x}" for v in rng.integers(0, 2**63, rows)], dtype=object)
    repeat = rng.random(rows) < 0.05
    ids[repeat] = ids[rng.integers(0, rows, int(repeat.sum()))]
    instants = np.sort(rng.integers(0, 86_400, rows)) * 10**9 + 1_611_964_800 * 10**9
    groups = np.array([str(g) for g in rng.integers(1, 300, rows)], dtype=object)
    return [pa.RecordBatch.from_arrays([pa.array(ids[s:s + BATCH], pa.string()),
                                        pa.array(instants[s:s + BATCH], pa.int64()),
                                        pa.array(groups[s:s + BATCH], pa.string())],
                                       schema=CLEAN_SCHEMA)
            for s in range(0, rows, BATCH)]


def backend_add(batches: list[pa.RecordBatch], folder: str) -> float:
    """CPU seconds of `SqliteDeduper.add` over the batches (prepare not counted)."""
    with SqliteDeduper(tmp_dir=folder, memory_limit=LIMIT) as dedup:
        prepared = [dedup.prepare(b) for b in batches]
        start = time.process_time()
        for p in prepared:
            dedup.add(p)
        return time.process_time() - start


def least_insert(batches: list[pa.RecordBatch], folder: str) -> float:
    """CPU seconds of the cheapest sqlite key table: INSERT OR IGNORE of three integers."""
    with SqliteDeduper(tmp_dir=folder, memory_limit=LIMIT) as shape:
        prepared = [shape.prepare(b).rows for b in batches]
    path = os.path.join(folder, "least.sqlite")
    db = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=OFF", "synchronous=OFF", "locking_mode=EXCLUSIVE",
                   f"cache_size=-{LIMIT // 32 // 1024}"):
        db.execute(f"PRAGMA {pragma}")
    db.execute("CREATE TABLE keys (t INTEGER NOT NULL, high INTEGER NOT NULL,"
               " low INTEGER NOT NULL, PRIMARY KEY (t, high, low)) WITHOUT ROWID")
    start = time.process_time()
    db.execute("BEGIN")
    for rows in prepared:
        db.executemany("INSERT OR IGNORE INTO keys VALUES (?, ?, ?)", zip(
            rows.column(INSTANT).to_pylist(),
            rows.column(HIGH).to_numpy().view(np.int64).tolist(),
            rows.column(LOW).to_numpy().view(np.int64).tolist(), strict=True))
    db.execute("COMMIT")
    spent = time.process_time() - start
    db.close()
    os.unlink(path)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--day-rows", type=int, default=10_000_000,
                        help="rows of the day the per-row cost is multiplied by")
    options = parser.parse_args()
    batches = day_batches(options.rows, seed=1)
    runs: dict[str, list[float]] = {"backend add": [], "least insert": []}
    with tempfile.TemporaryDirectory(prefix="sqlite-floor-") as folder:
        for _ in range(options.repeats):  # round-robin: the machine's speed drifts
            runs["backend add"].append(backend_add(batches, folder))
            runs["least insert"].append(least_insert(batches, folder))
    print(f"{options.rows:,} rows, medians of {options.repeats}, CPU seconds\n")
    print(f"| insert | CPU s | us per row | for {options.day_rows:,} rows |")
    print("| --- | ---: | ---: | ---: |")
    for name, seconds in runs.items():
        median = statistics.median(seconds)
        per_row = median / options.rows
        print(f"| {name} | {median:.2f} | {per_row * 1e6:.2f} | "
              f"{per_row * options.day_rows:.1f} s |")


if __name__ == "__main__":
    main()
