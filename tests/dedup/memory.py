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

from streamagg.dedup import Deduper, Later, Prepared


class MemoryDeduper(Deduper):
    """Each key's first group in a dict; each later occurrence noted with its group and bucket."""

    files = "the in-memory key set"

    def _open(self) -> None:
        self.first: dict[tuple[int, int], str] = {}
        self.later: list[tuple[str, int, bool]] = []
        if self.state is not None and self.state.resume:
            with open(self.state.stored_path(self.state.record["file"]), encoding="utf-8") as src:
                self.first = {(high, low): group for high, low, group in json.load(src)}

    def _add(self, prepared: Prepared) -> None:
        grain = self.grain_seconds * 10**9
        rows = prepared.rows.to_pydict()
        for high, low, instant, group in zip(*rows.values(), strict=True):
            first = self.first.get((high, low))
            if first is None:
                self.first[(high, low)] = group
            else:
                self.later.append((group, instant // grain, group != first))

    def _later(self) -> Iterator[Later]:
        if self.later:
            groups, buckets, conflicts = zip(*self.later, strict=True)
            yield Later(pa.array(groups, pa.string()), np.array(buckets, np.int64),
                        sum(conflicts))
        if self.state is not None:
            path = self.state.new_file("-keys.json")
            with open(path, "w", encoding="utf-8") as out:
                # dumps, not dump: json's C encoder, not its Python one (ten times as fast).
                out.write(json.dumps([[*key, group] for key, group in self.first.items()]))
            self.state.keep({"file": os.path.basename(path)}, [os.path.basename(path)])
