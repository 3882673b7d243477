"""`run_day`: the only place that knows the order of the stages."""

from __future__ import annotations

import contextlib
import datetime as dt
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
from .sources import InputFile, Storage, redact, storage_for
from .units import human_bytes

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
    if config.tmp_dir is not None:
        if not os.path.isdir(config.tmp_dir):
            raise UsageError("--tmp-dir is not an existing folder", uri=config.tmp_dir)
        work, inside = os.path.realpath(config.tmp_dir), os.path.realpath(partition)
        if "://" not in partition and (work == inside or work.startswith(inside + "/")):
            # A killed run's work files there would be listed as inputs of the next run.
            raise UsageError("--tmp-dir lies inside the source partition; its work files "
                             "would be read as input", uri=work)
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
    log.info("reading %d files (%s) from %s with the %s engine", len(inputs),
             human_bytes(sum(i.size for i in inputs)), source.uri_of(config.day_path),
             config.engine)
    if progress is not None:
        source, on_file_done = progress.attach(source, inputs, on_file_done)
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(work_folder(config.tmp_dir))
        rejects = stack.enter_context(TallyingRejects(
            os.path.join(work, "rejects.csv"), config.max_bad_rows, config.schema.grain_seconds))
        day = engine_for(config.engine)(config, source, inputs, work, rejects, on_file_done)

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
                       rows=rows, hourly=manifest.hourly, totals=totals.as_dict(),
                       group_name=config.schema.group_column)
        report.output_uri = publish(dest, out_path, relative)
        manifest.output = {"path": report.output_uri, "bytes": os.path.getsize(out_path),
                           "sha256": sha256}
        rejects_relative = f"{config.day_path}/{config.rejects_name}"
        rejects.close()
        if totals.bad_rows:
            report.rejects_uri = publish(dest, rejects.path, rejects_relative)
            manifest.rejects = {"path": report.rejects_uri, "rows": totals.bad_rows}
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
    return report


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
