"""What changed since a day's manifest: the inputs listed now against those it records."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from ..config import Config
from ..outputs.manifest import output_parameters, schema_problem
from ..pipeline import plan
from ..sources import InputFile, NotAFile, Storage
from ..units import count_of, human_time


@dataclass
class Changes:
    """A day's inputs against its manifest; ``unchanged`` means a rerun would give the same files.

    Any difference means recomputing the whole day: a late file may hold the first occurrence
    of an impression already counted, so no result can be patched.
    """

    day: str
    manifest_uri: str
    manifest_found: bool = False
    finished: str | None = None  # when the manifest's run ended
    inputs: int = 0
    new: list[InputFile] = field(default_factory=list)
    gone: list[dict[str, Any]] = field(default_factory=list)
    modified: list[tuple[dict[str, Any], InputFile]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # other causes: output, parameters, plot
    impressions: int | None = None  # the manifest's, shown when the day is skipped
    output_uri: str | None = None

    @property
    def finished_text(self) -> str:
        """The manifest's end time for people: ``2021-01-31T02:10:07Z``."""
        return human_time(str(self.finished))

    @property
    def unchanged(self) -> bool:
        return not (self.new or self.gone or self.modified or self.reasons)

    def brief(self) -> str:
        """What changed, in one short phrase: counts, not file names."""
        if not self.manifest_found:
            return ", ".join(self.reasons) or "no manifest"
        return (f"{len(self.new):,} new, {len(self.gone):,} gone, {len(self.modified):,} modified"
                + (f"; {', '.join(self.reasons)}" if self.reasons else ""))

    def lines(self) -> list[str]:
        """For people: one headline, then one line per difference."""
        if not self.manifest_found:
            broken = next((r for r in self.reasons if r.startswith("manifest unreadable")), None)
            what = f"{broken} at" if broken else "no manifest at"
            return [f"{self.day}: {what} {self.manifest_uri}: "
                    f"{count_of(self.inputs, 'input file')} "
                    f"{'is' if self.inputs == 1 else 'are'} new"] + [
                f"  {r}" for r in self.reasons if r not in ("no manifest", broken)]
        if self.unchanged:
            return [f"{self.day}: unchanged: {count_of(self.inputs, 'input file')} as recorded by "
                    f"the run that finished {self.finished_text}; output present"]
        out = [f"{self.day}: changed since the run that finished {self.finished_text}: "
               f"{len(self.new):,} new, {len(self.gone):,} gone, {len(self.modified):,} modified"]
        out += [f"  new       {i.uri} ({i.size:,} bytes)" for i in self.new]
        out += [f"  gone      {e.get('path')}" for e in self.gone]
        out += [f"  modified  {i.uri} ({_describe_change(e, i)})" for e, i in self.modified]
        out += [f"  {reason}" for reason in self.reasons]
        return out

    def as_dict(self) -> dict[str, Any]:
        """For log collectors and scripts."""
        return {
            "day": self.day, "status": "unchanged" if self.unchanged else "changed",
            "changed": not self.unchanged, "manifest": self.manifest_uri,
            "manifest_found": self.manifest_found, "manifest_finished": self.finished,
            "inputs": self.inputs,
            "new": [i.uri for i in self.new], "gone": [e.get("path") for e in self.gone],
            "modified": [i.uri for _, i in self.modified], "reasons": self.reasons,
        }


def inspect_day(config: Config) -> Changes:
    """List the day's inputs and compare them, the output and the parameters with the manifest.

    Reads only listings, the manifest and the output (to check its sha256); writes nothing.
    A partition with no input files raises `NoInputError`, as a run would.
    """
    planned = plan(config)
    dest, inputs, layout = planned.dest, planned.inputs, planned.layout
    changes = Changes(day=config.day.isoformat(), manifest_uri=dest.uri_of(layout.manifest),
                      inputs=len(inputs))
    manifest = _read_manifest(dest, layout.manifest, changes)
    if manifest is None:
        changes.new = list(inputs)
        return changes
    changes.manifest_found = True
    changes.finished = manifest["finished"]
    changes.impressions = manifest["totals"]["impressions"]
    compare_inputs(inputs, manifest["inputs"], changes)
    changes.reasons += changed_parameters(config, manifest["parameters"])
    changes.output_uri = _check_output(dest, layout.output, manifest, changes)
    if config.plot and dest.read_bytes(layout.plot) is None:
        changes.reasons.append("plot missing")
    return changes


def compare_inputs(listed: list[InputFile], recorded: list[dict[str, Any]],
                   changes: Changes) -> None:
    """New, gone and modified files: same path, but other bytes or another ETag or mtime."""
    before = {str(entry.get("path")): entry for entry in recorded}
    for item in listed:
        entry = before.pop(item.uri, None)
        if entry is None:
            changes.new.append(item)
        elif entry.get("bytes") != item.size or _version(entry) != item.version:
            changes.modified.append((entry, item))
    changes.gone = list(before.values())


def changed_parameters(config: Config, recorded: dict[str, Any]) -> list[str]:
    """Parameters that change the output or whether the run passes (`output_parameters`)."""
    return [f"parameter {name} was {recorded.get(name)!r}, now {value!r}"
            for name, value in output_parameters(config).items() if recorded.get(name) != value]


def _check_output(dest: Storage, relative: str, manifest: dict[str, Any],
                  changes: Changes) -> str:
    # The output is the day's distinct (campaign, hour) pairs: small enough to hash in memory.
    try:
        data = dest.read_bytes(relative)
    except NotAFile:
        changes.reasons.append("output unreadable: not a regular file")
        return dest.uri_of(relative)
    if data is None:
        changes.reasons.append("output missing")
    elif hashlib.sha256(data).hexdigest() != manifest["output"]["sha256"]:
        changes.reasons.append("output differs from the manifest's sha256")
    return dest.uri_of(relative)


def _read_manifest(dest: Storage, relative: str, changes: Changes) -> dict[str, Any] | None:
    """The manifest if it exists and has the shape this version writes; else None, the reason
    noted (the day is then recomputed, as if there were no manifest)."""
    try:
        data = dest.read_bytes(relative)
    except NotAFile:  # a FIFO, a folder: damaged, as a manifest that is not JSON
        changes.reasons.append("manifest unreadable: not a regular file")
        return None
    if data is None:
        changes.reasons.append("no manifest")
        return None
    try:
        manifest = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        changes.reasons.append(f"manifest unreadable: not JSON ({err})")
        return None
    problem = schema_problem(manifest)
    if problem is not None:
        changes.reasons.append(f"manifest unreadable: {problem}")
        return None
    assert isinstance(manifest, dict)
    return manifest


def _version(entry: dict[str, Any]) -> Any:
    return entry.get("etag", entry.get("mtime"))


def _describe_change(entry: dict[str, Any], item: InputFile) -> str:
    parts = []
    if entry.get("bytes") != item.size:
        parts.append(f"{entry.get('bytes'):,} -> {item.size:,} bytes"
                     if isinstance(entry.get("bytes"), int) else f"{item.size:,} bytes")
    if _version(entry) != item.version:
        kind = "etag" if "etag" in entry else "mtime"
        parts.append(f"{kind} {_version(entry)} -> {item.version}")
    return ", ".join(parts)
