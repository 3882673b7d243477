"""`run_day`: the only place that knows the order of the stages."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import resource
from dataclasses import dataclass, field
from typing import Any

from .cleanup import remove_leftovers, work_folder
from .config import Config
from .engines import ProgressCallback, engine_for
from .errors import NoInputError, StorageError, UsageError
from .observer import ProgressSink
from .outputs.csv import publish, write_output
from .outputs.hourly import TallyingRejects, hourly_section
from .outputs.manifest import Manifest
from .outputs.plot import render_day, require_matplotlib
from .reader import BadRow
from .sources import InputFile, Storage, redact, storage_for
from .state import DayState, Decision, fold_earlier

log = logging.getLogger("streamagg")



@dataclass
class RunReport:
    """What a run did: where the output went, the totals and the manifest as written."""

    config: Config
    inputs: list[InputFile]
    output_uri: str
    manifest_uri: str | None = None
    rejects_uri: str | None = None
    plot_uri: str | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False
    mode: str = "full"  # or "incremental": only new files were read
    mode_reason: str = ""

    @property
    def totals(self) -> dict[str, int]:
        return dict(self.manifest.get("totals", {}))


def plan(config: Config) -> tuple[Storage, Storage, list[InputFile], int]:
    """List the day's inputs and check where the results go, before anything is read."""
    source = storage_for(config.source, endpoint_url=config.endpoint_url)
    dest = storage_for(config.resolved_dest, endpoint_url=config.endpoint_url)
    partition = source.uri_of(config.day_path)
    out_dir = dest.uri_of(config.day_path)
    if out_dir == partition or out_dir.startswith(partition.rstrip("/") + "/"):
        raise UsageError("destination lies inside the source partition; its output would be "
                         "read as input", uri=redact(out_dir))
    if config.tmp_dir is not None and not os.path.isdir(config.tmp_dir):
        raise UsageError("--tmp-dir is not an existing folder", uri=config.tmp_dir)
    inputs, empty = source.list_partition(config.day_path)
    if not inputs and not empty:
        raise NoInputError("no input files in the partition", uri=partition)
    return source, dest, inputs, empty


def run_day(config: Config, *, on_file_done: ProgressCallback | None = None,
            progress: ProgressSink | None = None) -> RunReport:
    """Process one day end to end: list, read, de-duplicate, aggregate, write once."""
    started = dt.datetime.now(dt.UTC)
    if config.plot:
        require_matplotlib()
    source, dest, inputs, empty = plan(config)
    relative = f"{config.day_path}/{config.output_name}"
    report = RunReport(config=config, inputs=inputs, output_uri=dest.uri_of(relative))
    if config.dry_run:
        report.dry_run = True
        return report
    remove_leftovers(dest, [relative, f"{config.day_path}/{config.manifest_name}",
                            f"{config.day_path}/{config.rejects_name}",
                            f"{config.day_path}/{config.plot_name}"], config.tmp_dir)

    manifest = Manifest(config=config, started=started)
    totals = manifest.totals
    totals.empty_files = empty
    kept = DayState.of(config, dest)
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(work_folder(config.tmp_dir))
        decision = (kept.decide(dest, inputs, work) if config.incremental
                    else Decision("full", "--incremental not given"))
        earlier = decision.earlier
        report.mode, report.mode_reason = decision.mode, decision.reason
        manifest.mode, manifest.mode_reason = decision.mode, decision.reason
        if config.incremental:
            log.info("%s run: %s", decision.mode, decision.reason,
                     extra={"mode": decision.mode, "reason": decision.reason})
        reading = earlier.new_inputs if earlier is not None else inputs
        log.info("reading %d files (%d bytes) from %s with the %s engine", len(reading),
                 sum(i.size for i in reading), source.uri_of(config.day_path), config.engine)
        if progress is not None:
            source, on_file_done = progress.attach(source, reading, on_file_done)
        rejects = stack.enter_context(TallyingRejects(
            os.path.join(work, "rejects.csv"), config.max_bad_rows, config.schema.grain_seconds))
        keys = None
        if config.incremental and config.engine == "local":
            from .engines.local import count_day

            keys = kept.key_set(work, earlier)
            if earlier is not None:
                resume_rejects(rejects, earlier)
            day = count_day(config, source, reading, work, rejects, on_file_done, keys=keys)
        else:
            day = engine_for(config.engine)(config, source, inputs, work, rejects, on_file_done)
        if earlier is not None:
            books = earlier.books
            fold_earlier(day.counts, earlier)
            old = earlier.totals
            day.files = earlier.records + day.files
            day.rows_read += old["rows_read"]
            day.duplicates += old["duplicates"]
            day.conflicting_duplicates += old["conflicting_duplicates"]
            day.empty_files += int(books["headerless_files"])
            for bucket, count in books["clean_per_bucket"].items():
                day.clean_per_bucket[int(bucket)] = day.clean_per_bucket.get(int(bucket), 0) + count

        manifest.inputs = day.files
        totals.rows_read = day.rows_read
        totals.empty_files += day.empty_files
        totals.bad_rows = rejects.count
        totals.duplicates = day.duplicates
        totals.conflicting_duplicates = day.conflicting_duplicates
        rows = day.counts.rows()
        totals.output_rows = len(rows)
        totals.impressions = sum(r.count for r in rows)
        totals.outside_day = day.counts.outside(config.day)
        if totals.impressions != totals.rows_read - totals.bad_rows - totals.duplicates:
            raise StorageError("internal check failed: impressions do not add up; nothing written")
        manifest.hourly = hourly_section(config.day, config.schema.grain_seconds, rows,
                                         day.clean_per_bucket, totals.duplicates,
                                         rejects.per_bucket, rejects.without_time)

        out_path = os.path.join(work, config.output_name)
        with open(out_path, "wb") as out:
            sha256 = write_output(rows, out, config.schema)
        plot_path = os.path.join(work, config.plot_name)
        if config.plot:  # drawn before anything is published: a failure publishes nothing
            render_day(plot_path, day=config.day, title=f"{config.day} ({config.initials})",
                       rows=rows, hourly=manifest.hourly, totals=totals.as_dict())
        if keys is not None:  # the state first, under new names: nothing refers to it yet
            manifest.state = kept.publish(keys, {
                "clean_per_bucket": {str(b): n for b, n in sorted(day.clean_per_bucket.items())},
                "bad_per_bucket": {str(b): n for b, n in sorted(rejects.per_bucket.items())},
                "bad_without_time": rejects.without_time, "headerless_files": day.empty_files,
                "first_bad": _bad_row_note(rejects.first)})
        report.output_uri = publish(dest, out_path, relative)
        manifest.output = {"path": report.output_uri, "bytes": os.path.getsize(out_path),
                           "sha256": sha256}
        rejects_relative = f"{config.day_path}/{config.rejects_name}"
        rejects.close()
        if totals.bad_rows:
            report.rejects_uri = publish(dest, rejects.path, rejects_relative)
            manifest.rejects = {"path": report.rejects_uri, "rows": totals.bad_rows,
                                "sha256": file_sha256(rejects.path)}
        else:
            dest.remove(rejects_relative)  # a stale one from an earlier run would mislead
        plot_relative = f"{config.day_path}/{config.plot_name}"
        if config.plot:
            report.plot_uri = publish(dest, plot_path, plot_relative)
            manifest.plot = {"path": report.plot_uri, "bytes": os.path.getsize(plot_path)}
        else:
            dest.remove(plot_relative)  # a picture of an earlier result would mislead
        manifest.finished = dt.datetime.now(dt.UTC)
        manifest.peak_memory_bytes = peak_memory_bytes()
        manifest_path = os.path.join(work, config.manifest_name)
        with open(manifest_path, "w", encoding="utf-8") as out_manifest:
            out_manifest.write(manifest.to_json())
        report.manifest_uri = publish(dest, manifest_path,
                                      f"{config.day_path}/{config.manifest_name}")
        report.manifest = manifest.as_dict()
        # After the commit: the generations the manifest no longer names (all, without
        # --incremental: a state the output has moved past would only mislead).
        try:
            kept.collect_garbage(keys)
        except StorageError as err:
            log.warning("could not remove an earlier state generation: %s", err)
    return report


def resume_rejects(rejects: TallyingRejects, earlier: Any) -> None:
    """Start the rejects from the earlier runs' bad rows, as a full run would have them."""
    books = earlier.books
    note = books.get("first_bad")
    first = (BadRow(uri=note["uri"], record=0, reason=note["reason"], line=note["line"])
             if note else None)
    if earlier.rejects_path is not None:
        rejects.resume(earlier.rejects_path, int(earlier.totals["bad_rows"]), first,
                       int(earlier.totals["rows_read"]))
    else:
        rejects.rows_before = int(earlier.totals["rows_read"])
    rejects.per_bucket = {int(b): n for b, n in books["bad_per_bucket"].items()}
    rejects.without_time = int(books["bad_without_time"])


def _bad_row_note(row: BadRow | None) -> dict[str, Any] | None:
    return None if row is None else {"uri": row.uri, "line": row.line, "reason": row.reason}


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as src:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def peak_memory_bytes() -> int:
    """Peak resident set size of this program so far.

    VmHWM, where Linux has it: ru_maxrss survives exec, so a process started by fork from a
    large parent would report the parent's size as its own peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
