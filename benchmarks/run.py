"""Benchmark streamagg against DuckDB, Polars, naive pandas and a parse-only floor on one day."""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    BENCH_DIR,
    Dataset,
    Measurement,
    cached_day,
    human_bytes,
    human_count,
    input_files,
    measure,
    parse_size,
    streamagg_command,
    streamagg_output,
    warm_cache,
)
from report import EXPERT, FIRST, FLOOR, NAIVE, STREAMAGG, build_report, chart, markdown

PEERS_DIR = BENCH_DIR / "peers"
RESULTS_DIR = BENCH_DIR / "results"
RUNS_DIR = BENCH_DIR / "runs"
# The generator's shapes (streamagg/testing/vocabulary.py): mixed exercises every rule of the
# contract; the others are common ad logs, on which the expert peers can write the same bytes.
SHAPES = ("mixed", "adlog", "narrow", "wide")
EXACT_COPY_SHAPES = ("adlog", "narrow", "wide")



@dataclass
class System:
    """One contender: how to run it on a day and where its output lands."""

    name: str
    description: str
    package: str  # must be importable, else the system is skipped
    peer_script: str | None = None
    streamagg_args: tuple[str, ...] = ()
    kind: str = STREAMAGG
    # Shapes on which it can write streamagg's bytes; elsewhere a difference is expected,
    # reported as such, and does not fail the run.
    matches_on: tuple[str, ...] = SHAPES
    # Extra peer arguments per shape (e.g. which duplicate survives).
    shape_args: dict[str, tuple[str, ...]] = field(default_factory=dict)
    runs: list[Measurement] = field(default_factory=list)
    digests: list[str | None] = field(default_factory=list)
    skipped: str | None = None
    verdict: str = "not run"

    def command(self, dataset: Dataset, workdir: Path, shape: str) -> list[str]:
        if self.peer_script is None:
            return streamagg_command(dataset, workdir / "dest", *self.streamagg_args)
        return [sys.executable, str(PEERS_DIR / self.peer_script), "--source", str(dataset.source),
                "--date", dataset.day.isoformat(), "--out", str(self.output(dataset, workdir)),
                *self.shape_args.get(shape, ())]

    def output(self, dataset: Dataset, workdir: Path) -> Path:
        if self.peer_script is None:
            return streamagg_output(dataset, workdir / "dest")
        return workdir / "out.csv"

    @property
    def ok_runs(self) -> list[Measurement]:
        return [run for run in self.runs if run.ok]


def systems() -> list[System]:
    return [
        System("streamagg-spill", "streamagg, spill-file de-duplication, default options",
               "streamagg", streamagg_args=("--dedupe", "spill")),
        System("streamagg-sqlite", "streamagg, sqlite de-duplication, default options",
               "streamagg", streamagg_args=("--dedupe", "sqlite")),
        System("streamagg-spark", "streamagg, Spark engine on local[*] (peak RSS: the largest "
               "single process, the JVM, not the sum)", "pyspark",
               streamagg_args=("--engine", "spark")),
        System("streamagg-128MB", "streamagg, spill, --memory-limit 128MB", "streamagg",
               streamagg_args=("--dedupe", "spill", "--memory-limit", "128MB")),
        System("duckdb-expert", "DuckDB as its users write it: `read_csv` with the columns "
               "typed, `SELECT DISTINCT ON (IMPRESSION_ID, IMPRESSION_DATETIME)`, `GROUP BY`, "
               "`COPY ... TO`, one query, default settings", "duckdb",
               peer_script="duckdb_expert_peer.py", kind=EXPERT, matches_on=EXACT_COPY_SHAPES),
        System("polars-expert", "Polars as its users write it: `scan_csv` with a schema, "
               "three columns, `unique(subset=[id, time])` (`keep=\"any\"` on adlog, "
               "`keep=\"first\", maintain_order=True` on mixed), `group_by`, "
               "`collect(engine=\"streaming\")`", "polars",
               peer_script="polars_expert_peer.py", kind=EXPERT, matches_on=EXACT_COPY_SHAPES,
               shape_args={"mixed": ("--keep", "first"),
                           **{s: ("--keep", "any") for s in EXACT_COPY_SHAPES}}),
        System("duckdb-first", "DuckDB SQL, every column as text into a table, the contract's "
               "datetime grammar by regex, first occurrence by `arg_min(campaign, rowid)`",
               "duckdb", peer_script="duckdb_peer.py", kind=FIRST),
        System("polars-first", "Polars lazy query over text columns, the contract's datetime "
               "grammar, first occurrence by `min_by` on a row index, streaming engine",
               "polars", peer_script="polars_peer.py", kind=FIRST),
        System("pandas", "naive pandas: read every file whole, concat, drop_duplicates, groupby",
               "pandas", peer_script="pandas_peer.py", kind=NAIVE),
        System("floor", "pyarrow `open_csv` with `include_columns` of the three required "
               "columns as text, one file per core at a time; no aggregation, no output",
               "pyarrow", peer_script="floor_peer.py", kind=FLOOR, matches_on=()),
    ]


def main() -> int:
    args = parse_args()
    contenders = [s for s in systems() if _selected(s.name, args.only, args.skip)]
    for system in contenders:
        if importlib.util.find_spec(system.package) is None:
            system.skipped = f"{system.package} is not installed"
            system.verdict = "skipped"
            print(f"skipping {system.name}: {system.skipped}", file=sys.stderr)
    active = [s for s in contenders if s.skipped is None]
    if not active:
        print("nothing to run", file=sys.stderr)
        return 2

    dataset = cached_day(args.rows, args.files, args.seed, data_dir=args.data_dir,
                         shape=args.shape, gzip=args.gzip)
    name = args.name or (f"{human_count(args.rows)}-{args.files}files-{args.shape}"
                         + ("-gzip" if args.gzip else ""))
    run_root = RUNS_DIR / name
    shutil.rmtree(run_root, ignore_errors=True)
    warm_cache(input_files(dataset))

    # Round-robin over systems, so drift in the machine's state hits them all alike.
    for repeat in range(args.repeats):
        for system in active:
            workdir = run_root / system.name / str(repeat)
            shutil.rmtree(workdir, ignore_errors=True)
            workdir.mkdir(parents=True)
            run = measure(system.command(dataset, workdir, args.shape),
                          log_path=workdir / "log.txt",
                          rss_cap_bytes=args.rss_cap, timeout_seconds=args.timeout)
            output = system.output(dataset, workdir)
            digest = _sha256(output) if run.ok and output.exists() else None
            system.runs.append(run)
            system.digests.append(digest)
            _print_run(system, repeat, run)
            if repeat > 0 and not args.keep_outputs:
                # The first repeat's output stays for a look; later ones are only hashed.
                shutil.rmtree(workdir / "dest", ignore_errors=True)
                output.unlink(missing_ok=True)

    reference = judge(active, run_root, args.shape)
    report = build_report(name, dataset, contenders, reference, args)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    md_path, json_path = RESULTS_DIR / f"{name}.md", RESULTS_DIR / f"{name}.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(markdown(report))
    picture = chart(report, RESULTS_DIR / f"{name}.png")
    print(md_path.read_text())
    print(f"results: {md_path}, {json_path}" + (f", {picture}" if picture else ""),
          file=sys.stderr)
    mismatched = [s.name for s in active if s.verdict.startswith("MISMATCH")]
    expected = [s.name for s in active if s.verdict.startswith("differs")]
    if expected:
        print(f"expected differences on the {args.shape} shape: {', '.join(expected)}",
              file=sys.stderr)
    failed = [s.name for s in active if not s.ok_runs and "expected" not in s.verdict]
    if mismatched:
        print(f"!!! OUTPUT MISMATCH: {', '.join(mismatched)} differ from the reference",
              file=sys.stderr)
    if failed:
        print(f"!!! FAILED: {', '.join(failed)} produced no successful run", file=sys.stderr)
    return 1 if mismatched else 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shape", choices=SHAPES, default="mixed",
                        help="data shape: mixed (every rule of docs/CONTRACT.md exercised), or "
                             "common ad logs (one timestamp form, exact-copy duplicates): adlog "
                             "and narrow (seven short columns), wide (a long user agent and a "
                             "quoted page URL)")
    parser.add_argument("--gzip", action="store_true", help="every file a .csv.gz")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", help="results file name; default e.g. 10M-24files-adlog, "
                                       "10M-24files-wide-gzip")
    parser.add_argument("--only", nargs="*", default=[], help="run only these systems")
    parser.add_argument("--skip", nargs="*", default=[], help="leave these systems out")
    parser.add_argument("--rss-cap", type=parse_size, default=parse_size("16GB"),
                        help="kill a run whose RSS passes this (default 16GB)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    parser.add_argument("--data-dir", type=Path, default=BENCH_DIR / "data")
    parser.add_argument("--keep-outputs", action="store_true",
                        help="keep every repeat's output under benchmarks/runs/")
    args = parser.parse_args()
    known = {s.name for s in systems()}
    for name in [*args.only, *args.skip]:
        if name not in known and not any(k.startswith(name) for k in known):
            parser.error(f"unknown system {name!r}; known: {', '.join(sorted(known))}")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def _selected(name: str, only: list[str], skip: list[str]) -> bool:
    # A prefix selects a family: "streamagg" means both de-duplication backends.
    def matches(patterns: list[str]) -> bool:
        return any(name == p or name.startswith(p + "-") for p in patterns)

    return (not only or matches(only)) and not matches(skip)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _print_run(system: System, repeat: int, run: Measurement) -> None:
    status = "ok"
    if not run.ok:
        status = f"FAILED (exit {run.exit_code}" + (f", {run.killed})" if run.killed else ")")
    print(f"{system.name:18} run {repeat + 1}: {run.wall_seconds:8.2f} s  "
          f"CPU {run.cpu_seconds:7.2f} s  peak RSS {human_bytes(run.peak_rss_bytes):>9}  "
          f"{status}", file=sys.stderr)
    if not run.ok:
        tail = "\n".join(run.log.strip().splitlines()[-5:])
        print("    last lines of its log:\n    " + tail.replace("\n", "\n    "), file=sys.stderr)


def judge(active: list[System], run_root: Path, shape: str) -> str | None:
    """Compare every output with streamagg's (or, without it, the first system's)."""
    reference_system = next((s for s in active if any(s.digests) and s.kind != FLOOR), None)
    if reference_system is None:
        for system in active:
            system.verdict = "no output (floor)" if system.kind == FLOOR else "failed"
        return None
    reference = next(d for d in reference_system.digests if d)
    for system in active:
        digests = [d for d in system.digests if d]
        if system.kind == FLOOR:
            system.verdict = "no output (floor)" if system.ok_runs else "failed"
        elif not digests:
            system.verdict = "failed"
            if shape not in system.matches_on:
                system.verdict = f"failed (expected: matches only on {_shapes(system)})"
        elif shape not in system.matches_on and (len(set(digests)) > 1 or digests[0] != reference):
            # DISTINCT ON keeps any row of a key: with conflicting duplicates the answer can
            # change from one run to the next, which is part of what is expected here.
            unstable = ", nor between its own runs" if len(set(digests)) > 1 else ""
            system.verdict = f"differs (expected: matches only on {_shapes(system)}){unstable}"
        elif len(set(digests)) > 1:
            system.verdict = "MISMATCH between its own repeats"
        elif digests[0] == reference:
            system.verdict = "reference" if system is reference_system else "identical"
        else:
            system.verdict = "MISMATCH"
        if system.verdict.startswith("MISMATCH"):
            where = run_root / system.name / "0"
            print(f"!!! {system.name}: output differs from {reference_system.name}'s "
                  f"(see {where})", file=sys.stderr)
    return reference_system.name


def _shapes(system: System) -> str:
    return " and ".join(system.matches_on) or "no shape"


if __name__ == "__main__":
    sys.exit(main())
