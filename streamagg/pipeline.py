"""`run_day`: the only place that knows the order of the stages."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import resource
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import container
from .aggregate import HourlyCounts
from .budget import Budget, ListingAccount
from .cleanup import remove_leftovers, work_folder
from .columns import BadRow
from .config import DEFAULT_SOURCE, Config
from .engines import DayCounts, FileResult, RunContext, engine_for
from .errors import NoInputError, StorageError, UsageError
from .layout import DayLayout
from .memory import process_peak_memory
from .observer import FileCallback, ProgressSink
from .outputs.csv import publish, write_output
from .outputs.hourly import OutputTally, TallyingRejects, hourly_section
from .outputs.manifest import InputRecord, Manifest, file_sha256
from .outputs.plot import TOP_CAMPAIGNS, render_day, require_matplotlib
from .outputs.report import RunReport
from .sources import InputFile, Storage, redact, storage_for
from .state import DayState, Decision, Earlier, fold_earlier
from .units import count_of, human_bytes

log = logging.getLogger("streamagg")


@dataclass(frozen=True)
class Plan:
    """What `plan` found: the two storages, the day's inputs and where its files go."""

    source: Storage
    dest: Storage
    inputs: list[InputFile]
    empty: int  # zero-byte inputs, counted but never read
    layout: DayLayout


def plan(config: Config) -> Plan:
    """List the day's inputs and check where the results go, before anything is read."""
    layout = DayLayout.of(config)
    source = storage_for(config.source, endpoint_url=config.endpoint_url)
    dest = storage_for(config.resolved_dest, endpoint_url=config.endpoint_url)
    state = (storage_for(config.state, endpoint_url=config.endpoint_url)
             if config.incremental and config.state else None)
    partition = source.uri_of(layout.folder)
    out_dir = dest.uri_of(layout.folder)
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
    try:
        # Charged entry by entry: a listing past its share of the limit stops with exit 4.
        inputs, empty = source.list_partition(
            layout.folder, ListingAccount(config.memory_limit, redact(partition)))
        if not inputs and not empty and not source.holds_partitions():
            raise UsageError(no_partitions(source.root_uri), uri=redact(source.root_uri))
    except UsageError as err:
        if config.source != DEFAULT_SOURCE:
            raise
        # Nobody chose this path: say so, and how to choose one.
        raise UsageError(f"{err.message}; {DEFAULT_SOURCE} is the default source: give "
                         "--source or set STREAMAGG_SOURCE", uri=err.uri) from err
    if not inputs and not empty:
        raise NoInputError("no input files in the partition", uri=partition)
    # A missing bucket, or a file where the day's folder goes, found now, not after the day
    # was read; the kept state's too, which is written before the output. The state's own
    # folder is not checked: a damaged one means a full recompute (state.py), not a failure.
    dest.check_destination(layout.folder)
    if state is not None:
        state.check_destination(layout.folder, option="--state")
    return Plan(source, dest, inputs, empty, layout)


def no_partitions(root: str) -> str:
    """What to say of a source root that holds no ``YYYY/MM/DD`` folder at all."""
    message = "no date partitions (YYYY/MM/DD folders) below the source root"
    day = re.fullmatch(r"(.*?)/+\d{4}/\d{2}/\d{2}/*", root)
    if day and day.group(1):
        return f"{message}: it looks like a day's folder; give --source {day.group(1)}"
    return f"{message}: give the folder that holds them (--source)"


class DayBooks:
    """The books every engine reports to: files read, rows read, bad rows, progress."""

    def __init__(self, rejects: TallyingRejects, on_file_done: FileCallback | None) -> None:
        self.rejects = rejects
        self.on_file_done = on_file_done
        self.files: list[InputRecord] = []
        self.rows_read = 0
        self.empty_files = 0  # non-empty objects holding no header

    def bad_rows(self, rows: Iterable[BadRow], *, read_so_far: int = 0) -> None:
        # Streamed: a file's bad rows may be kept on disk (`BadRows`), never all in memory.
        self.rejects.write(rows, self.rows_read + read_so_far)

    def file_done(self, item: InputFile, result: FileResult) -> None:
        self.rows_read += result.rows_read
        self.empty_files += result.empty
        self.files.append(InputRecord(item, result.rows_read, result.bad_rows))
        if self.on_file_done is not None:
            self.on_file_done(item)

    def all_read(self) -> None:
        self.rejects.check(self.rows_read)


def run_day(config: Config, *, on_file_done: FileCallback | None = None,
            progress: ProgressSink | None = None) -> RunReport:
    """Process one day end to end: list, read, de-duplicate, aggregate, write once."""
    started = dt.datetime.now(dt.UTC)
    if config.plot:
        require_matplotlib()
    planned = plan(config)
    source, dest, inputs, layout = planned.source, planned.dest, planned.inputs, planned.layout
    report = RunReport(config=config, inputs=inputs, output_uri=dest.uri_of(layout.output))
    if config.dry_run:
        return report
    remove_leftovers(dest, list(layout.published), config.tmp_dir)
    manifest = Manifest(config=config, started=started, version_field=source.version_field)
    found = container.container_memory_limit()
    manifest.container_memory_limit_bytes = found.bytes if found else None
    warning = container.limit_warning(config.memory_limit, found)
    if warning and config.engine == "local":  # Spark's memory is its JVMs'
        log.warning(warning)
    if config.state and not config.incremental:
        # Taken, not refused: a nightly full run may share the hourly refreshes' options.
        log.warning("--state is used only with --incremental: no state is kept by this run, "
                    "and a state kept there for this day is removed as out of date")
    kept = DayState.of(config, dest)
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(work_folder(config.tmp_dir))
        decision = (kept.decide(dest, inputs, work) if config.incremental
                    else Decision("full", "--incremental not given"))
        earlier = decision.earlier
        manifest.mode, manifest.mode_reason = decision.mode, decision.reason
        if config.incremental:
            log.info("%s run: %s", decision.mode, decision.reason,
                     extra={"mode": decision.mode, "reason": decision.reason})
        reading = earlier.new_inputs if earlier is not None else inputs
        log.info("reading %s (%s) from %s with the %s engine", count_of(len(reading), "file"),
                 human_bytes(sum(i.size for i in reading)), source.uri_of(layout.folder),
                 config.engine)
        if progress is not None:
            source, on_file_done = progress.attach(source, reading, on_file_done)
        rejects = stack.enter_context(TallyingRejects(
            os.path.join(work, "rejects.csv"), config.max_bad_rows, config.schema.grain_seconds,
            day=config.day))
        books = DayBooks(rejects, on_file_done)
        # Only the local engine keeps the key set; Spark recomputes the day (docs/SPARK.md).
        keys = (kept.key_set(work, earlier) if config.incremental and config.engine == "local"
                else None)
        if earlier is not None:
            resume_books(books, earlier)
        day = engine_for(config.engine)(RunContext(config, source, reading, work, keys), books)
        if earlier is not None:
            resume_counts(day, earlier)
        output = render_output(work, config, layout, day.counts)
        keep_totals(manifest, config, books, day, output, planned.empty)
        written = write_files(work, config, layout, manifest, output, rejects)
        if keys is not None:  # the state first, under new names: nothing refers to it yet
            manifest.state = kept.publish(keys, state_books(day, books, manifest, written))
        # The manifest goes last: it records the others, and its presence marks a finished run.
        manifest.output = publish_file(dest, written.output, layout.output) or {}
        manifest.rejects = publish_file(dest, written.rejects, layout.rejects)
        manifest.plot = publish_file(dest, written.plot, layout.plot)
        manifest.finished = dt.datetime.now(dt.UTC)
        manifest.peak_memory_bytes = peak_memory_bytes()
        manifest.jvm_peak_memory_bytes = day.jvm_peak_memory_bytes
        manifest_path = os.path.join(work, layout.manifest_name)
        with open(manifest_path, "w", encoding="utf-8") as out_manifest:
            manifest.write_json(out_manifest)
        report.manifest_uri = publish(dest, manifest_path, layout.manifest)
        report.written = manifest
        # After the commit: the generations the manifest no longer names (all of them without
        # --incremental: a state the output has moved past would only mislead).
        try:
            kept.collect_garbage(keys)
        except StorageError as err:
            log.warning("could not remove an earlier state generation: %s", err)
        except KeyboardInterrupt as stop:
            # Published is done (SPEC: exit status): a stop here ends the run, not the day; the
            # next run removes what is left of the earlier generations.
            log.warning("stopped while removing earlier state generations; the day is "
                        "published and done")
            report.stopped = stop
    return report


def resume_books(books: DayBooks, earlier: Earlier) -> None:
    """Start the books where the earlier runs left them, as a full run would have them by now:
    their inputs, rows and bad rows (the rejects file too)."""
    totals, noted = earlier.totals, earlier.books
    books.files = list(earlier.records)
    books.rows_read = int(totals["rows_read"])
    books.empty_files = int(noted["headerless_files"])
    rejects = books.rejects
    note = noted.get("first_bad")
    first = (BadRow(uri=note["uri"], record=0, reason=note["reason"], line=note["line"])
             if note else None)
    if earlier.rejects_path is not None:
        rejects.resume(earlier.rejects_path, int(totals["bad_rows"]), first)
    rejects.per_bucket = {int(b): n for b, n in noted["bad_per_bucket"].items()}
    rejects.without_time = int(noted["bad_without_time"])


def resume_counts(day: DayCounts, earlier: Earlier) -> None:
    """Add the earlier runs' counts and de-duplication figures to the new files'."""
    fold_earlier(day.counts, earlier)
    day.duplicates += int(earlier.totals["duplicates"])
    day.conflicting_duplicates += int(earlier.totals["conflicting_duplicates"])
    for bucket, count in earlier.books["clean_per_bucket"].items():
        day.clean_per_bucket[int(bucket)] = day.clean_per_bucket.get(int(bucket), 0) + count


def state_books(day: DayCounts, books: DayBooks, manifest: Manifest,
                written: Written) -> dict[str, Any]:
    """What the next incremental run trusts besides the key set: the day's inputs and totals,
    the sha256 of the output and rejects it starts from, and the books' running figures. Kept
    in the state's index (checked against the manifest), never read back from the manifest."""
    first = books.rejects.first
    return {
        "inputs": [{"path": r.file.uri, "bytes": r.file.size, "version": r.file.version,
                    "rows": r.rows, "bad_rows": r.bad_rows} for r in books.files],
        "totals": manifest.totals.as_dict(),
        "output_sha256": written.output.facts["sha256"],
        "rejects_sha256": written.rejects.facts.get("sha256"),
        "clean_per_bucket": {str(b): n for b, n in sorted(day.clean_per_bucket.items())},
        "bad_per_bucket": {str(b): n for b, n in sorted(books.rejects.per_bucket.items())},
        "bad_without_time": books.rejects.without_time,
        "headerless_files": books.empty_files,
        "first_bad": (None if first is None
                      else {"uri": first.uri, "line": first.line, "reason": first.reason}),
    }


@dataclass(frozen=True)
class RenderedOutput:
    """The output CSV in the work folder, and what was tallied while it was written."""

    path: str
    sha256: str
    tally: OutputTally


def render_output(work: str, config: Config, layout: DayLayout, counts: HourlyCounts
                  ) -> RenderedOutput:
    """Write the output CSV from the counts in their order, one slice of rows at a time."""
    grain = config.schema.grain_seconds
    group_totals = None
    if config.plot:  # each campaign's total for the top campaigns, spilled as the counts are
        group_totals = HourlyCounts(grain, memory_bytes=Budget.of(config.memory_limit)
                                    .counts_bytes, spill_dir=work)
    tally = OutputTally(config.day, grain, group_totals=group_totals)
    path = os.path.join(work, layout.output_name)
    with open(path, "wb") as out:
        sha256 = write_output(tally.observe(counts.sorted_parts()), out, config.schema, grain)
    counts.close()
    return RenderedOutput(path, sha256, tally)


def keep_totals(manifest: Manifest, config: Config, books: DayBooks, day: DayCounts,
                output: RenderedOutput, empty_listed: int) -> None:
    """The manifest's inputs, totals and hourly section, checked to add up."""
    totals = manifest.totals
    manifest.inputs = books.files
    totals.rows_read = books.rows_read
    totals.empty_files = empty_listed + books.empty_files
    totals.bad_rows = books.rejects.count
    totals.duplicates = day.duplicates
    totals.conflicting_duplicates = day.conflicting_duplicates
    totals.output_rows = output.tally.rows
    totals.impressions = output.tally.impressions
    totals.outside_day = output.tally.outside_day
    if totals.impressions != totals.rows_read - totals.bad_rows - totals.duplicates:
        raise StorageError("internal check failed: impressions do not add up; nothing written")
    manifest.hourly = hourly_section(config.day, config.schema.grain_seconds,
                                     output.tally.per_bucket,
                                     day.clean_per_bucket, totals.duplicates,
                                     books.rejects.per_bucket, books.rejects.without_time)


@dataclass(frozen=True)
class Made:
    """A file the run made in its work folder, with what the manifest says of it beside its
    path; ``local`` None: the run makes no such file (its stale copy is removed)."""

    local: str | None
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Written:
    """The day's files in the work folder, ready to publish."""

    output: Made
    rejects: Made
    plot: Made


def publish_file(dest: Storage, made: Made, relative: str) -> dict[str, Any] | None:
    """Publish one of the day's files; the manifest's entry for it (None when there is none)."""
    if made.local is None:
        dest.remove(relative)  # a stale one from an earlier run would mislead
        return None
    return {"path": publish(dest, made.local, relative), **made.facts}


def write_files(work: str, config: Config, layout: DayLayout, manifest: Manifest,
                output: RenderedOutput, rejects: TallyingRejects) -> Written:
    """The day's files in the work folder, each with what the manifest says of it."""
    made = Made(output.path, {"bytes": os.path.getsize(output.path), "sha256": output.sha256})
    plot = Made(None)
    if config.plot:  # drawn before anything is published: a failure publishes nothing
        plot_path = os.path.join(work, layout.plot_name)
        render_day(plot_path, day=config.day, title=f"{config.day} ({config.initials})",
                   top=output.tally.top_groups(TOP_CAMPAIGNS), hourly=manifest.hourly or {},
                   totals=manifest.totals.as_dict(), group_name=config.schema.group_column)
        plot = Made(plot_path, {"bytes": os.path.getsize(plot_path)})
    rejects.close()
    # Its checksum lets an incremental run trust it as the start of the day's rejects.
    kept = (Made(rejects.path, {"rows": rejects.count, "sha256": file_sha256(rejects.path)})
            if rejects.count else Made(None))
    return Written(output=made, rejects=kept, plot=plot)


def peak_memory_bytes() -> int:
    """Peak resident set size of this program so far.

    VmHWM, where Linux has it: ru_maxrss survives exec, so a process started by fork from a
    large parent would report the parent's size as its own peak.
    """
    peak = process_peak_memory("self")
    if peak is not None:
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

