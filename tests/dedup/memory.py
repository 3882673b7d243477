"""A test-only de-duplication backend: an exact dict in memory, its keys kept as one JSON file.

It registers itself with one line (`tests/conftest.py`) and passes the contract and incremental
suites with no line of them or of `streamagg/` changed: the proof that `streamagg.dedup.Deduper`
carries the contract, so a backend writes only its happy path (docs/API.md, issue 24).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from streamagg.columns import GROUP, INSTANT
from streamagg.dedup import HIGH, LOW, Deduper, Later, Prepared


class MemoryDeduper(Deduper):
    """Each key's first group in a dict; each later occurrence noted with its group and bucket."""

    files = "the in-memory key set"

    def _open(self) -> None:
        self.first: dict[tuple[int, int], str] = {}
        self.later: list[Later] = []
        if self.state is not None and self.state.resume:
            with open(self.state.stored_path(self.state.record["file"]), encoding="utf-8") as src:
                kept = json.load(src)
            self.first = dict(zip(zip(kept["high"], kept["low"], strict=True),
                                   kept["group"], strict=True))

    def _add(self, prepared: Prepared) -> None:
        rows = prepared.rows
        groups = rows.column(GROUP).to_pylist()
        first, get = self.first, self.first.get
        later: list[int] = []
        conflicts = 0
        keys = zip(rows.column(HIGH).to_pylist(), rows.column(LOW).to_pylist(), strict=True)
        for row, key in enumerate(keys):
            had = get(key)
            if had is None:
                first[key] = groups[row]
            else:
                later.append(row)
                conflicts += had != groups[row]
        if later:
            taken = pa.array(later)
            buckets = np.floor_divide(rows.column(INSTANT).take(taken).to_numpy(),
                                      self.grain_seconds * 10**9)
            self.later.append(Later(rows.column(GROUP).take(taken), buckets, conflicts))

    def _later(self) -> Iterator[Later]:
        yield from self.later
        if self.state is not None:
            path = self.state.new_file("-keys.json")
            high, low = ([list(lane) for lane in zip(*self.first, strict=True)] if self.first
                         else ([], []))
            with open(path, "w", encoding="utf-8") as out:
                # dumps, not dump: json's C encoder, not its Python one (ten times as fast).
                out.write(json.dumps({"high": high, "low": low,
                                      "group": list(self.first.values())}))
            self.state.keep({"file": os.path.basename(path)}, [os.path.basename(path)])
