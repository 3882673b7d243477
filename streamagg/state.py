"""A day's kept state for --incremental: which generation is valid, what it holds, publishing it."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from . import __version__
from .aggregate import BUCKET, COUNT, HourlyCounts
from .columns import GROUP
from .config import Config
from .dedup import KeySetState
from .errors import StorageError
from .outputs.manifest import MANIFEST_VERSION, InputRecord, file_sha256
from .sources import InputFile, Storage, storage_for

# 1 kept the exact key bytes; 3 keeps 128-bit fingerprints, each stored batch sorted on the high
# lane (2, unsorted, was never released). Any other format recomputes the day.
STATE_FORMAT = 3
SEGMENTS = "segments"


class StateMismatch(Exception):
    """The kept state cannot be used; the message is the reason a full recompute runs."""


@dataclass
class Earlier:
    """What an incremental run starts from: the earlier run's manifest, state index, counts."""

    manifest: dict[str, Any]
    index: dict[str, Any]
    records: list[InputRecord]
    new_inputs: list[InputFile]
    counts: pa.Table | None = None  # (group, bucket, count) from the published output
    rejects_path: str | None = None  # the published rejects, copied into the work folder

    @property
    def totals(self) -> dict[str, int]:
        return dict(self.manifest["totals"])

    @property
    def books(self) -> dict[str, Any]:
        return dict(self.index["books"])


@dataclass
class Decision:
    """Which mode this run takes, and why."""

    mode: str  # "incremental" or "full"
    reason: str
    earlier: Earlier | None = None


@dataclass
class DayState:
    """The day's state folder: ``index-<generation>.json`` files and ``segments/`` they name.

    A generation's files are written under new names before the output and the manifest; the
    manifest, published last, names the generation and its index's sha256: that is the commit.
    Older generations are removed after it. A run killed anywhere leaves the earlier manifest
    naming the earlier generation (still complete), or the new one naming the new.
    """

    config: Config
    storage: Storage
    folder: str  # relative to the storage's root
    _fetched: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, config: Config, dest: Storage) -> DayState:
        storage = (storage_for(config.state, endpoint_url=config.endpoint_url)
                   if config.state else dest)
        return cls(config, storage, f"{config.day_path}/{config.state_name}")

    @property
    def uri(self) -> str:
        return self.storage.uri_of(self.folder)

    # Deciding

    def decide(self, dest: Storage, inputs: list[InputFile], work: str) -> Decision:
        """Incremental when the kept state is valid and only new files, sorting last, arrived."""
        if self.config.engine != "local":
            return Decision("full", f"the {self.config.engine} engine recomputes the whole day")
        try:
            earlier = self._check(dest, inputs, work)
        except StateMismatch as why:
            return Decision("full", str(why))
        new = len(earlier.new_inputs)
        reason = (f"{new} new input file{'s' if new != 1 else ''} since the run that finished "
                  f"{earlier.manifest.get('finished', '?')}")
        return Decision("incremental", reason, earlier)

    def _check(self, dest: Storage, inputs: list[InputFile], work: str) -> Earlier:
        config = self.config
        raw = dest.read_bytes(f"{config.day_path}/{config.manifest_name}")
        if raw is None:
            raise StateMismatch("no earlier result of the day")
        try:
            manifest = json.loads(raw)
        except ValueError:
            raise StateMismatch("the earlier manifest is unreadable") from None
        if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION:
            raise StateMismatch("the earlier manifest is from another version")
        kept = manifest.get("state")
        if not isinstance(kept, dict) or "generation" not in kept:
            raise StateMismatch("the earlier run kept no state")
        index = self._index(str(kept["generation"]), str(kept.get("index_sha256", "")))
        if index.get("format") != STATE_FORMAT or index.get("tool_version") != __version__:
            raise StateMismatch("the kept state is from another version of streamagg")
        changed = sorted(k for k, v in self.fingerprint().items()
                         if index.get("fingerprint", {}).get(k) != v)
        if changed:
            raise StateMismatch(f"parameters changed since the state was kept: "
                                f"{', '.join(changed)}")
        self._check_files(index)
        records, new = self._compare_inputs(manifest, inputs)
        earlier = Earlier(manifest, index, records, new)
        self._load_results(dest, earlier, work)
        return earlier

    def fingerprint(self) -> dict[str, Any]:
        """The parameters that change the output or the state's form: all must match."""
        c = self.config
        return {"columns": [c.schema.id_column, c.schema.time_column, c.schema.group_column,
                            c.schema.count_column, c.schema.bucket_column],
                "grain_seconds": c.schema.grain_seconds, "max_bad_rows": str(c.max_bad_rows),
                "dedupe": c.dedupe, "day": c.day.isoformat(), "initials": c.initials}

    def _index(self, generation: str, sha256: str) -> dict[str, Any]:
        raw = self.storage.read_bytes(f"{self.folder}/index-{generation}.json")
        if raw is None:
            raise StateMismatch("the state generation the manifest names is missing")
        if hashlib.sha256(raw).hexdigest() != sha256:
            raise StateMismatch("the kept state does not match the manifest")
        try:
            index: dict[str, Any] = json.loads(raw)
        except ValueError:
            raise StateMismatch("the kept state's index is unreadable") from None
        return index

    def _check_files(self, index: dict[str, Any]) -> None:
        present = set(self.storage.list_below(f"{self.folder}/{SEGMENTS}"))
        for name in index.get("files", {}):
            if f"{self.folder}/{SEGMENTS}/{name}" not in present:
                raise StateMismatch(f"a kept state file is missing: {name}")

    def _compare_inputs(self, manifest: dict[str, Any],
                        inputs: list[InputFile]) -> tuple[list[InputRecord], list[InputFile]]:
        listed = {i.uri: i for i in inputs}
        records: list[InputRecord] = []
        last_key = ""
        for entry in manifest.get("inputs", []):
            item = listed.get(entry.get("path"))
            if item is None:
                raise StateMismatch(f"a recorded input is gone: {entry.get('path')}")
            version = entry.get("etag", entry.get("mtime"))
            if item.size != entry.get("bytes") or item.version != version:
                raise StateMismatch(f"a recorded input changed: {item.uri}")
            records.append(InputRecord(item, int(entry.get("rows", 0)),
                                       int(entry.get("bad_rows", 0))))
            last_key = max(last_key, item.key)
        recorded = {r.file.uri for r in records}
        new = [i for i in inputs if i.uri not in recorded]
        for item in new:
            if item.key <= last_key:
                raise StateMismatch(f"a new input sorts before a recorded one: {item.uri}")
        return records, new

    def _load_results(self, dest: Storage, earlier: Earlier, work: str) -> None:
        """The earlier output's counts and rejects, each checked against the manifest."""
        config = self.config
        output = earlier.manifest.get("output") or {}
        local = os.path.join(work, "earlier-output.csv")
        if not dest.fetch(f"{config.day_path}/{config.output_name}", local):
            raise StateMismatch("the published output is missing")
        if file_sha256(local) != output.get("sha256"):
            raise StateMismatch("the published output does not match its manifest")
        earlier.counts = read_counts(local, config)
        os.unlink(local)
        rejects = earlier.manifest.get("rejects")
        if earlier.totals.get("bad_rows"):
            if not rejects:
                raise StateMismatch("the earlier manifest lists bad rows but no rejects file")
            local = os.path.join(work, "earlier-rejects.csv")
            if (not dest.fetch(f"{config.day_path}/{config.rejects_name}", local)
                    or file_sha256(local) != rejects.get("sha256")):
                raise StateMismatch("the published rejects do not match their manifest")
            earlier.rejects_path = local

    # The deduper's view of the stored files

    def key_set(self, work: str, earlier: Earlier | None) -> KeySetState:
        """Where the backend writes the next generation, and reads the earlier one from."""
        folder = os.path.join(work, "state")
        os.makedirs(folder, exist_ok=True)
        generation = (f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(4)}")
        return KeySetState(
            folder=folder, generation=generation,
            stored_path=lambda name: self._stored_path(name, work),
            release=self._release, resume=earlier is not None,
            record=dict(earlier.index["record"]) if earlier is not None else {})

    def _stored_path(self, name: str, work: str) -> str:
        relative = f"{self.folder}/{SEGMENTS}/{name}"
        from .sources.local import LocalStorage

        if isinstance(self.storage, LocalStorage):
            path = self.storage.uri_of(relative)
        else:
            path = os.path.join(work, f"stored-{name}")
            if not self.storage.fetch(relative, path):
                raise StorageError("a kept state file vanished while the run used it",
                                   uri=self.storage.uri_of(relative))
            self._fetched.add(path)
        return path

    def _release(self, path: str) -> None:
        if path in self._fetched:
            self._fetched.discard(path)
            os.unlink(path)

    # Publishing

    def publish(self, keys: KeySetState, books: dict[str, Any]) -> dict[str, Any]:
        """Upload this run's files and the generation's index; the manifest's ``state`` entry."""
        files = {}
        for name in keys.written:
            path = os.path.join(keys.folder, name)
            files[name] = {"bytes": os.path.getsize(path), "sha256": file_sha256(path)}
            self.storage.publish(path, f"{self.folder}/{SEGMENTS}/{name}")
            os.unlink(path)
        referenced = _referenced(keys.record)
        index = {"format": STATE_FORMAT, "tool_version": __version__,
                 "generation": keys.generation, "backend": self.config.dedupe,
                 "fingerprint": self.fingerprint(), "record": keys.record,
                 "files": {name: files.get(name, {}) for name in referenced}, "books": books}
        data = (json.dumps(index, indent=1, sort_keys=True) + "\n").encode("utf-8")
        path = os.path.join(keys.folder, f"index-{keys.generation}.json")
        with open(path, "wb") as out:
            out.write(data)
        self.storage.publish(path, f"{self.folder}/index-{keys.generation}.json")
        return {"path": self.uri, "generation": keys.generation,
                "index_sha256": hashlib.sha256(data).hexdigest()}

    def collect_garbage(self, keep: KeySetState | None) -> None:
        """Remove every file of the state folder the committed generation does not use; all of
        them when it kept none (a run without --incremental)."""
        wanted = set()
        if keep is not None:
            wanted = {f"{self.folder}/{SEGMENTS}/{n}" for n in _referenced(keep.record)}
            wanted.add(f"{self.folder}/index-{keep.generation}.json")
        for relative in self.storage.list_below(self.folder):
            if relative in wanted:
                continue
            name = relative.rpartition("/")[2]
            if name.startswith(".") and name.endswith(".tmp"):
                sweep = getattr(self.storage, "remove_abandoned", None)
                if sweep is not None:  # another run's temp file: only when abandoned
                    target = relative.rpartition("/")[0] + "/" + name[1:].rsplit(".", 2)[0]
                    sweep([target], older_than=600.0)
                continue
            self.storage.remove(relative)
        remove_folder = getattr(self.storage, "remove_folder", None)
        if remove_folder is not None and keep is None:
            remove_folder(f"{self.folder}/{SEGMENTS}")
            remove_folder(self.folder)


def _referenced(record: dict[str, Any]) -> list[str]:
    if "file" in record:
        return [str(record["file"])]
    return sorted({str(run[0]) for runs in record.get("segments", {}).values() for run in runs})


def read_counts(path: str, config: Config) -> pa.Table:
    """The published output read back as (group, bucket, count): what it was written from."""
    schema = config.schema
    names = [schema.group_column, schema.bucket_column, schema.count_column]
    try:
        table = pa_csv.read_csv(path, read_options=pa_csv.ReadOptions(
            column_names=names, skip_rows=1, use_threads=False),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(column_types={
                names[0]: pa.string(), names[1]: pa.string(), names[2]: pa.int64()},
                strings_can_be_null=False, quoted_strings_can_be_null=False))
        seconds = pc.cast(pc.strptime(table.column(1), format="%Y-%m-%d %H:%M:%S", unit="s"),
                          pa.int64())
    except (pa.ArrowInvalid, OSError) as err:
        raise StateMismatch(f"the published output is unreadable: {err}") from None
    buckets = np.floor_divide(seconds.to_numpy(), schema.grain_seconds)
    return pa.table({GROUP: table.column(0), BUCKET: pa.array(buckets, pa.int64()),
                     COUNT: table.column(2)})


def fold_earlier(counts: HourlyCounts, earlier: Earlier) -> None:
    """Add the earlier output's counts to this run's."""
    if earlier.counts is not None:
        counts.fold_counts(earlier.counts)
