"""A day's kept state for --incremental: which generation is valid, what it holds, publishing it."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from . import __version__
from .aggregate import BUCKET, COUNT, HourlyCounts
from .columns import GROUP
from .config import Config
from .dedup import KeySetState, StoredFile
from .errors import StorageError
from .layout import DayLayout
from .outputs.manifest import MANIFEST_VERSION, InputRecord, file_sha256, output_parameters
from .sources import InputFile, Storage, storage_for
from .state_index import index_problem
from .units import human_time

# 1 kept the exact key bytes; 3 keeps 128-bit fingerprints, each stored batch sorted on the
# high lane (2, unsorted, was never released); 4 records every file's sha256 and, in the index,
# everything a refresh trusts (the day's inputs, totals and its output's sha256). Any other
# format recomputes the day.
STATE_FORMAT = 4
SEGMENTS = "segments"
# The names this module and the backends give state files: a generation's stamp first (see
# `key_set`). The garbage collector removes nothing else: the state folder may be a link to a
# folder that holds other files.
OWN_NAME = re.compile(r"(index-)?\d{8}T\d{6}-[0-9a-f]{8}[-.\w]*")


class StateMismatch(Exception):
    """The kept state cannot be used; the message is the reason a full recompute runs."""


@dataclass
class Earlier:
    """What an incremental run starts from: the earlier generation's index (checked against
    the manifest), its inputs as listed now, and the earlier output's counts."""

    index: dict[str, Any]
    records: list[InputRecord]
    new_inputs: list[InputFile]
    stored: dict[str, StoredFile]  # the generation's files, fetched and checked
    counts: pa.Table | None = None  # (group, bucket, count) from the published output
    rejects_path: str | None = None  # the published rejects, copied into the work folder

    @property
    def books(self) -> dict[str, Any]:
        return dict(self.index["books"])

    @property
    def totals(self) -> dict[str, int]:
        return dict(self.books["totals"])

    @property
    def written(self) -> str:
        return str(self.index["written"])


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

    Kept state is untrusted input. The manifest is trusted for two fields only: the generation
    and its index's sha256. The index, so checked, holds everything else a refresh relies on:
    the sha256 of every state file and of the published output and rejects, the inputs and the
    totals. Every file is copied into the work folder through its digest and compared before a
    byte of it is used; any difference is a full recompute, saying why.
    """

    config: Config
    storage: Storage
    folder: str  # relative to the storage's root

    @classmethod
    def of(cls, config: Config, dest: Storage) -> DayState:
        storage = (storage_for(config.state, endpoint_url=config.endpoint_url)
                   if config.state else dest)
        return cls(config, storage, DayLayout.of(config).state)

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
        except StorageError as err:  # the state cannot be read: the day can still be made
            return Decision("full", f"the kept state is unreadable: {err}")
        new = len(earlier.new_inputs)
        reason = (f"{new} new input file{'s' if new != 1 else ''} since the run that kept its "
                  f"state at {human_time(earlier.written)}")
        return Decision("incremental", reason, earlier)

    def _check(self, dest: Storage, inputs: list[InputFile], work: str) -> Earlier:
        index = self._index(self._pointer(dest))
        records, new = self._compare_inputs(index["books"]["inputs"], inputs)
        folder = os.path.join(work, "kept")
        os.makedirs(folder, exist_ok=True)
        earlier = Earlier(index, records, new, {})
        self._load_results(dest, earlier, folder)
        # Last: the largest files, needed only when everything else allows a refresh.
        for name, entry in index["files"].items():
            local = os.path.join(folder, name)
            shared = fetch_checked(self.storage, f"{self.folder}/{SEGMENTS}/{name}", local,
                                   entry["sha256"], "a kept state file", name=name)
            earlier.stored[name] = StoredFile(local, entry["bytes"], entry["sha256"], shared)
        return earlier

    def _pointer(self, dest: Storage) -> tuple[str, str]:
        """The generation and index sha256 the earlier manifest names: all it is trusted for."""
        raw = dest.read_bytes(DayLayout.of(self.config).manifest)
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
        generation, sha256 = kept.get("generation"), kept.get("index_sha256")
        if not isinstance(generation, str) or not isinstance(sha256, str) \
                or not is_safe_name(f"index-{generation}.json"):
            raise StateMismatch("the earlier manifest is unreadable")
        return generation, sha256

    def _index(self, pointer: tuple[str, str]) -> dict[str, Any]:
        generation, sha256 = pointer
        raw = self.storage.read_bytes(f"{self.folder}/index-{generation}.json")
        if raw is None:
            raise StateMismatch("the state generation the manifest names is missing")
        if hashlib.sha256(raw).hexdigest() != sha256:
            raise StateMismatch("the kept state does not match the manifest")
        try:
            index = json.loads(raw)
        except ValueError:
            raise StateMismatch("the kept state's index is unreadable") from None
        if not isinstance(index, dict) or index.get("format") != STATE_FORMAT \
                or index.get("tool_version") != __version__:
            raise StateMismatch("the kept state is from another version of streamagg")
        recorded = index.get("fingerprint")
        recorded = recorded if isinstance(recorded, dict) else {}
        changed = sorted(k for k, v in self.fingerprint().items() if recorded.get(k) != v)
        if changed:
            raise StateMismatch(f"parameters changed since the state was kept: "
                                f"{', '.join(changed)}")
        problem = index_problem(index, is_safe_name)
        if problem is not None:
            raise StateMismatch(f"the kept state's index is unreadable: {problem}")
        return index

    def fingerprint(self) -> dict[str, Any]:
        """The parameters that change the output or the state's form: all must match."""
        c = self.config
        return {**output_parameters(c), "dedupe": c.dedupe, "day": c.day.isoformat(),
                "initials": c.initials}

    @staticmethod
    def _compare_inputs(recorded: list[dict[str, Any]], inputs: list[InputFile]
                        ) -> tuple[list[InputRecord], list[InputFile]]:
        listed = {i.uri: i for i in inputs}
        records: list[InputRecord] = []
        last_key = ""
        for entry in recorded:
            item = listed.get(entry["path"])
            if item is None:
                raise StateMismatch(f"a recorded input is gone: {entry['path']}")
            if item.size != entry["bytes"] or item.version != entry["version"]:
                raise StateMismatch(f"a recorded input changed: {item.uri}")
            records.append(InputRecord(item, entry["rows"], entry["bad_rows"]))
            last_key = max(last_key, item.key)
        seen = {r.file.uri for r in records}
        new = [i for i in inputs if i.uri not in seen]
        for item in new:
            if item.key <= last_key:
                raise StateMismatch(f"a new input sorts before a recorded one: {item.uri}")
        return records, new

    def _load_results(self, dest: Storage, earlier: Earlier, folder: str) -> None:
        """The earlier output's counts and rejects, each checked against the index."""
        config, books = self.config, earlier.books
        local = os.path.join(folder, "earlier-output.csv")
        fetch_checked(dest, DayLayout.of(config).output, local,
                      books["output_sha256"], "the published output",
                      damaged="does not match its manifest")
        earlier.counts = read_counts(local, config)
        os.unlink(local)
        if books["totals"]["bad_rows"]:
            if books["rejects_sha256"] is None:
                raise StateMismatch("the kept state lists bad rows but no rejects file")
            local = os.path.join(folder, "earlier-rejects.csv")
            fetch_checked(dest, DayLayout.of(config).rejects, local,
                          books["rejects_sha256"], "the published rejects",
                          damaged="do not match their manifest", missing="are missing")
            earlier.rejects_path = local

    # The deduper's view of the stored files

    def key_set(self, work: str, earlier: Earlier | None) -> KeySetState:
        """Where the backend writes the next generation, and the earlier one's checked files."""
        folder = os.path.join(work, "state")
        os.makedirs(folder, exist_ok=True)
        generation = (f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(4)}")
        if earlier is None:
            return KeySetState(folder=folder, generation=generation)
        return KeySetState(folder=folder, generation=generation, resume=True,
                           record=dict(earlier.index["record"]), stored=dict(earlier.stored))

    # Publishing

    def publish(self, keys: KeySetState, books: dict[str, Any]) -> dict[str, Any]:
        """Upload this run's files and the generation's index; the manifest's ``state`` entry.
        ``books`` is what the next refresh trusts besides the key set (see `index_problem`)."""
        for folder in (self.folder, f"{self.folder}/{SEGMENTS}"):
            if self.storage.local_path(folder) is not None:
                # A file where the state's folder goes (damage) would fail every refresh: a
                # state is untrusted, never in the way. Local only; a folder is kept.
                self.storage.remove(folder)
        files = {}
        for name in keys.files:
            if name in keys.written:
                path = os.path.join(keys.folder, name)
                files[name] = {"bytes": os.path.getsize(path), "sha256": file_sha256(path)}
                self.storage.publish(path, f"{self.folder}/{SEGMENTS}/{name}")
                os.unlink(path)
            elif name in keys.stored:  # kept from the earlier generation, as it was checked
                files[name] = {"bytes": keys.stored[name].size,
                               "sha256": keys.stored[name].sha256}
            else:
                raise StorageError(f"internal check failed: the {self.config.dedupe} backend "
                                   f"keeps a state file it neither wrote nor read: {name}")
        index = {"format": STATE_FORMAT, "tool_version": __version__,
                 "generation": keys.generation, "backend": self.config.dedupe,
                 "written": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                 "fingerprint": self.fingerprint(), "record": keys.record,
                 "files": files, "books": books}
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
            wanted = {f"{self.folder}/{SEGMENTS}/{n}" for n in keep.files}
            wanted.add(f"{self.folder}/index-{keep.generation}.json")
        for relative in self.storage.list_below(self.folder):
            if relative in wanted:
                continue
            name = relative.rpartition("/")[2]
            if name.startswith(".") and name.endswith(".tmp"):
                # Another run's temp file: removed only when abandoned.
                target = relative.rpartition("/")[0] + "/" + name[1:].rsplit(".", 2)[0]
                self.storage.remove_abandoned([target], older_than=600.0)
                continue
            if OWN_NAME.fullmatch(name):
                self.storage.remove(relative)
        if keep is None:
            self.storage.remove_folder(f"{self.folder}/{SEGMENTS}")
            self.storage.remove_folder(self.folder)


def is_safe_name(name: object) -> bool:
    """A state file's name as this module writes them: one path component, not hidden."""
    return (isinstance(name, str) and 0 < len(name) <= 200 and not name.startswith(".")
            and all(c.isascii() and (c.isalnum() or c in "-_.") for c in name))


def fetch_checked(storage: Storage, relative: str, local: str, sha256: str, what: str, *,
                  name: str = "", damaged: str = "is damaged",
                  missing: str = "is missing") -> bool:
    """Put ``relative`` at ``local`` and compare its sha256 with the one recorded before a byte
    of it is used: `StateMismatch` naming ``what`` (and ``name``) unless it matches.

    A file the storage holds on this file system is hard-linked, not copied (the refresh of a
    4M-row day spent a fifth more CPU copying its 87 MB state): the link pins the checked file,
    which a concurrent run may remove from the store, and is only read. Returns whether it is
    such a shared file. Anything else is copied through the digest, read once."""
    suffix = f": {name}" if name else ""
    in_place = storage.local_path(relative)
    if in_place is not None:
        try:
            os.link(in_place, local)
        except FileNotFoundError:
            raise StateMismatch(f"{what} {missing}{suffix}") from None
        except OSError:
            in_place = None  # another file system, or no links there: copied below
        else:
            try:
                matches = file_sha256(local) == sha256
            except OSError as err:
                raise StateMismatch(f"{what} is unreadable{suffix}: {err.strerror}") from None
            if not matches:
                os.unlink(local)
                raise StateMismatch(f"{what} {damaged}{suffix}")
            return True
    digest = hashlib.sha256()
    os.close(os.open(local, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))  # kept keys: private
    if not storage.fetch(relative, local, digest=digest):
        raise StateMismatch(f"{what} {missing}{suffix}")
    if digest.hexdigest() != sha256:
        os.unlink(local)
        raise StateMismatch(f"{what} {damaged}{suffix}")
    return False


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
