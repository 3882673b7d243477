"""The run's manifest: parameters, inputs, totals and the output's checksum, as JSON."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from ..config import Config
from ..sources import InputFile, redact

MANIFEST_VERSION = 1
TOTALS = ("rows_read", "bad_rows", "duplicates", "conflicting_duplicates", "outside_day",
          "empty_files", "output_rows", "impressions")


@dataclass
class InputRecord:
    """One input as the manifest lists it."""

    file: InputFile
    rows: int = 0
    bad_rows: int = 0

    def as_dict(self) -> dict[str, Any]:
        version_key = "etag" if self.file.uri.startswith("s3://") else "mtime"
        return {"path": self.file.uri, "bytes": self.file.size, version_key: self.file.version,
                "rows": self.rows, "bad_rows": self.bad_rows}


@dataclass
class Totals:
    """The day's counts; ``impressions = rows_read - bad_rows - duplicates`` always holds."""

    rows_read: int = 0
    bad_rows: int = 0
    duplicates: int = 0
    conflicting_duplicates: int = 0
    outside_day: int = 0
    empty_files: int = 0
    output_rows: int = 0
    impressions: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in TOTALS}


@dataclass
class Manifest:
    """Everything a reader of the output, or a later rerun, needs to know about this run."""

    config: Config
    started: dt.datetime
    inputs: list[InputRecord] = field(default_factory=list)
    totals: Totals = field(default_factory=Totals)
    output: dict[str, Any] = field(default_factory=dict)
    rejects: dict[str, Any] | None = None
    hourly: dict[str, Any] | None = None  # per-bucket impressions, duplicates, bad rows
    plot: dict[str, Any] | None = None
    finished: dt.datetime | None = None
    peak_memory_bytes: int = 0
    jvm_peak_memory_bytes: int | None = None  # the Spark engine's driver JVM; None otherwise

    def parameters(self) -> dict[str, Any]:
        c = self.config
        return {
            "date": c.day.isoformat(), "source": redact(c.source), "dest": redact(c.resolved_dest),
            "initials": c.initials, "chunk_size": c.chunk_size, "memory_limit": c.memory_limit,
            "dedupe": c.dedupe, "engine": c.engine, "max_bad_rows": str(c.max_bad_rows),
            "columns": {"id": c.schema.id_column, "time": c.schema.time_column,
                        "group": c.schema.group_column},
            "grain_seconds": c.schema.grain_seconds,
        }

    def as_dict(self) -> dict[str, Any]:
        finished = self.finished or dt.datetime.now(dt.UTC)
        return {
            "version": MANIFEST_VERSION,
            "tool": "streamagg",
            "parameters": self.parameters(),
            "inputs": [i.as_dict() for i in self.inputs],
            "totals": self.totals.as_dict(),
            "output": self.output,
            "rejects": self.rejects,
            "hourly": self.hourly,
            "plot": self.plot,
            "started": self.started.isoformat(),
            "finished": finished.isoformat(),
            "elapsed_seconds": round((finished - self.started).total_seconds(), 3),
            "peak_memory_bytes": self.peak_memory_bytes,
            "jvm_peak_memory_bytes": self.jvm_peak_memory_bytes,
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, ensure_ascii=False) + "\n"
