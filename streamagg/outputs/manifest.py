"""The run's manifest: parameters, inputs, totals and the output's checksum, as JSON."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, TextIO

from ..config import Config
from ..sources import InputFile, redact

MANIFEST_VERSION = 1
TOTALS = ("rows_read", "bad_rows", "duplicates", "conflicting_duplicates", "outside_day",
          "empty_files", "output_rows", "impressions")


@dataclass(slots=True)
class InputRecord:
    """One input as the manifest lists it."""

    file: InputFile
    rows: int = 0
    bad_rows: int = 0

    def as_dict(self, version_field: str = "mtime") -> dict[str, Any]:
        """As the manifest lists it; ``version_field`` is the source's (`Storage.version_field`)."""
        return {"path": self.file.uri, "bytes": self.file.size, version_field: self.file.version,
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
    mode: str = "full"  # "incremental" when only new files were read into the kept state
    mode_reason: str = ""
    state: dict[str, Any] | None = None  # the kept state's generation, when one was kept
    jvm_peak_memory_bytes: int | None = None  # the Spark engine's driver JVM; None otherwise
    # The memory limit of the container (cgroup) the run found itself in; None outside one.
    container_memory_limit_bytes: int | None = None
    version_field: str = "mtime"  # how the source names its inputs' versions (etag on S3)

    def parameters(self) -> dict[str, Any]:
        c = self.config
        return {
            "date": c.day.isoformat(), "source": redact(c.source), "dest": redact(c.resolved_dest),
            "initials": c.initials, "chunk_size": c.chunk_size, "memory_limit": c.memory_limit,
            "dedupe": c.dedupe, "engine": c.engine, **output_parameters(c),
        }

    def as_dict(self, *, inputs: bool = True) -> dict[str, Any]:
        """JSON-shaped; ``inputs`` False leaves the list of inputs empty (`write_json`)."""
        finished = self.finished or dt.datetime.now(dt.UTC)
        return {
            "version": MANIFEST_VERSION,
            "tool": "streamagg",
            "parameters": self.parameters(),
            "inputs": [i.as_dict(self.version_field) for i in self.inputs] if inputs else [],
            "totals": self.totals.as_dict(),
            "output": self.output,
            "rejects": self.rejects,
            "hourly": self.hourly,
            "plot": self.plot,
            "mode": self.mode,
            "mode_reason": self.mode_reason,
            "state": self.state,
            "started": self.started.isoformat(),
            "finished": finished.isoformat(),
            "elapsed_seconds": round((finished - self.started).total_seconds(), 3),
            "peak_memory_bytes": self.peak_memory_bytes,
            "jvm_peak_memory_bytes": self.jvm_peak_memory_bytes,
            "container_memory_limit_bytes": self.container_memory_limit_bytes,
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, ensure_ascii=False) + "\n"

    def write_json(self, out: TextIO) -> None:
        """Write `to_json`'s text, one input at a time: a day of 40,000 files built the whole
        text at once, 57 MB more peak under 256MB (issue 22.1). Same bytes: json indents by
        depth, so an input's own text indented by its depth is what the whole would hold."""
        head, tail = json.dumps(self.as_dict(inputs=False), indent=2, ensure_ascii=False).split(
            '"inputs": []', 1)
        out.write(head)
        if not self.inputs:
            out.write('"inputs": []')
        for n, record in enumerate(self.inputs):
            text = json.dumps(record.as_dict(self.version_field), indent=2, ensure_ascii=False)
            out.write(('"inputs": [\n    ' if n == 0 else ",\n    ")
                      + text.replace("\n", "\n    "))
        if self.inputs:
            out.write("\n  ]")
        out.write(tail + "\n")


def output_parameters(config: Config) -> dict[str, Any]:
    """The parameters that decide the output's bytes, or whether the day passes at all: a rerun
    given other values must recompute (`--skip-unchanged`, `--incremental`). Engine, backend,
    chunk size and memory limit give the same bytes by contract; the day, initials and
    destination name the files themselves."""
    s = config.schema
    return {"columns": {"id": s.id_column, "time": s.time_column, "group": s.group_column,
                        "bucket": s.bucket_column, "count": s.count_column},
            "grain_seconds": s.grain_seconds, "max_bad_rows": str(config.max_bad_rows)}


# The shape a later run relies on when it reads a manifest back (`ops.changes`): field -> the
# JSON types allowed. Fields only people read (hourly, plot, timings) are not checked.
_NUMBER = (int, float)
SCHEMA: dict[str, tuple[type, ...]] = {
    "version": (int,), "parameters": (dict,), "inputs": (list,), "totals": (dict,),
    "output": (dict,), "finished": (str,),
}
INPUT_SCHEMA: dict[str, tuple[type, ...]] = {"path": (str,), "bytes": (int,)}
VERSION_FIELDS = ("etag", "mtime")  # one of them: an S3 ETag, or a local mtime
OUTPUT_SCHEMA: dict[str, tuple[type, ...]] = {"sha256": (str,)}


def schema_problem(data: object) -> str | None:
    """Why parsed manifest JSON does not have the shape `Manifest.as_dict` writes, or None.

    A reader that finds a problem treats the manifest as broken: it recomputes, saying why,
    instead of failing on a field of an unexpected type.
    """
    if not isinstance(data, dict):
        return f"not a JSON object but {_json_type(data)}"
    version = data.get("version")
    if version != MANIFEST_VERSION or isinstance(version, bool):
        return f"version {version!r}, expected {MANIFEST_VERSION}"
    problem = _fields(data, SCHEMA, "")
    if problem:
        return problem
    for index, entry in enumerate(data["inputs"]):
        where = f"inputs[{index}]"
        if not isinstance(entry, dict):
            return f"{where} is {_json_type(entry)}, expected an object"
        problem = _fields(entry, INPUT_SCHEMA, f"{where}.")
        if problem:
            return problem
        versions = [entry[name] for name in VERSION_FIELDS if name in entry]
        if len(versions) != 1 or not isinstance(versions[0], (str, *_NUMBER)) \
                or isinstance(versions[0], bool):
            return f"{where} needs exactly one of etag or mtime, as a string or number"
    for name in TOTALS:
        if not _is(data["totals"].get(name), (int,)):
            return f"totals.{name} is {_json_type(data['totals'].get(name))}, expected an integer"
    return _fields(data["output"], OUTPUT_SCHEMA, "output.")


def _fields(data: dict[str, Any], schema: dict[str, tuple[type, ...]], prefix: str) -> str | None:
    for name, types in schema.items():
        if name not in data:
            return f"{prefix}{name} missing"
        if not _is(data[name], types):
            expected = " or ".join(_JSON_NAMES.get(t, t.__name__) for t in types)
            return f"{prefix}{name} is {_json_type(data[name])}, expected {expected}"
    return None


def _is(value: object, types: tuple[type, ...]) -> bool:
    # JSON true/false load as bool, a subclass of int: never a count.
    return isinstance(value, types) and not isinstance(value, bool)


_JSON_NAMES = {dict: "an object", list: "an array", str: "a string", int: "an integer",
               float: "a number", bool: "true/false", type(None): "null"}


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "true/false"
    return _JSON_NAMES.get(type(value), type(value).__name__)


def file_sha256(path: str) -> str:
    """The sha256 of a local file, read in 1 MiB pieces (the manifest records files by it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as src:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
