"""Benchmark streamagg against DuckDB, Polars, naive pandas and a parse-only floor on one day."""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
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

PEERS_DIR = BENCH_DIR / "peers"
RESULTS_DIR = BENCH_DIR / "results"
RUNS_DIR = BENCH_DIR / "runs"
SHAPES = ("mixed", "adlog")

# What kind of contender a system is; the tables label every row with it.
STREAMAGG = "streamagg"
FIRST = "first-occurrence peer"  # the contract's rules: trim, every datetime form, first wins
EXPERT = "expert peer"  # written as its users write the job: typed read, one query
NAIVE = "naive peer"
FLOOR = "floor"  # parses the three columns, nothing more: no output to compare


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
               peer_script="duckdb_expert_peer.py", kind=EXPERT, matches_on=("adlog",)),
        System("polars-expert", "Polars as its users write it: `scan_csv` with a schema, "
               "three columns, `unique(subset=[id, time])` (`keep=\"any\"` on adlog, "
               "`keep=\"first\", maintain_order=True` on mixed), `group_by`, "
               "`collect(engine=\"streaming\")`", "polars",
               peer_script="polars_expert_peer.py", kind=EXPERT, matches_on=("adlog",),
               shape_args={"adlog": ("--keep", "any"), "mixed": ("--keep", "first")}),
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
                         shape=args.shape)
    name = args.name or f"{human_count(args.rows)}-{args.files}files-{args.shape}"
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

    reference = _judge(active, run_root, args.shape)
    report = _report(name, dataset, contenders, reference, args)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    md_path, json_path = RESULTS_DIR / f"{name}.md", RESULTS_DIR / f"{name}.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(_markdown(report))
    chart = _chart(report, RESULTS_DIR / f"{name}.png")
    print(md_path.read_text())
    print(f"results: {md_path}, {json_path}" + (f", {chart}" if chart else ""), file=sys.stderr)
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
                        help="data shape: mixed (every rule of docs/CONTRACT.md exercised) or "
                             "adlog (common ad logs: one timestamp form, exact-copy duplicates)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", help="results file name; default e.g. 10M-24files")
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


def _judge(active: list[System], run_root: Path, shape: str) -> str | None:
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


def _baselines(rows: list[dict[str, object]]) -> dict[str, dict[str, object] | None]:
    """The rows ratios are taken against: the fastest expert peer, and the floor.

    The fastest expert peer that wrote streamagg's bytes; where none did (the mixed shape),
    the fastest that finished, and the table says that it did not match.
    """
    done = [r for r in rows if r["median_wall_seconds"]]
    experts = [r for r in done if r["kind"] == EXPERT]
    matching = [r for r in experts if r["verdict"] in ("identical", "reference")]
    expert = min(matching or experts, key=lambda r: r["median_wall_seconds"], default=None)  # type: ignore[arg-type, return-value]
    floor = next((r for r in done if r["kind"] == FLOOR), None)
    return {"expert": expert, "floor": floor}


def _ratio(value: object, base: dict[str, object] | None, key: str) -> float | None:
    if not value or base is None or not base.get(key):
        return None
    return round(float(value) / float(base[key]), 2)  # type: ignore[arg-type]


def _report(name: str, dataset: Dataset, contenders: list[System], reference: str | None,
            args: argparse.Namespace) -> dict[str, object]:
    rows: list[dict[str, object]] = []
    for system in contenders:
        ok = system.ok_runs
        wall = statistics.median(r.wall_seconds for r in ok) if ok else None
        cpu = statistics.median(r.cpu_seconds for r in ok) if ok else None
        rows.append({
            "system": system.name,
            "kind": system.kind,
            "description": system.description,
            "skipped": system.skipped,
            "verdict": system.verdict,
            "median_wall_seconds": round(wall, 3) if wall else None,
            "min_wall_seconds": round(min(r.wall_seconds for r in ok), 3) if ok else None,
            "max_wall_seconds": round(max(r.wall_seconds for r in ok), 3) if ok else None,
            "median_cpu_seconds": round(cpu, 3) if cpu else None,
            # The worst repeat: a memory budget has to hold every time, not on average.
            "peak_rss_bytes": max(r.peak_rss_bytes for r in ok) if ok else None,
            "rows_per_second": round(dataset.rows / wall) if wall else None,
            "successful_runs": len(ok),
            "runs": [r.to_json() for r in system.runs],
            "output_sha256": next((d for d in system.digests if d), None),
        })
    bases = _baselines(rows)
    for row in rows:
        row["wall_vs_expert"] = _ratio(row["median_wall_seconds"], bases["expert"],
                                       "median_wall_seconds")
        row["cpu_vs_expert"] = _ratio(row["median_cpu_seconds"], bases["expert"],
                                      "median_cpu_seconds")
        row["wall_vs_floor"] = _ratio(row["median_wall_seconds"], bases["floor"],
                                      "median_wall_seconds")
    expert = bases["expert"]
    return {
        "name": name,
        "shape": args.shape,
        "expert_baseline": expert["system"] if expert else None,
        "expert_baseline_matches": bool(expert and expert["verdict"] in ("identical",
                                                                          "reference")),
        "floor_baseline": bases["floor"]["system"] if bases["floor"] else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "dataset": {
            "source": str(dataset.source),
            "day": dataset.day.isoformat(),
            "rows": dataset.rows,
            "files": dataset.files,
            "bytes": dataset.bytes,
            "duplicates": dataset.duplicates,
            "impressions": dataset.impressions,
            "params": dataset.params,
        },
        "repeats": args.repeats,
        "reference": reference,
        "machine": _machine(),
        "results": rows,
    }


def _machine() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    versions: dict[str, str | None] = {}
    for package in ("streamagg", "pyarrow", "duckdb", "polars", "pandas", "numpy", "py-spy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_bytes": memory,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def _markdown(report: dict[str, object]) -> str:
    data: dict = report["dataset"]  # type: ignore[assignment]
    machine: dict = report["machine"]  # type: ignore[assignment]
    shape_text = {
        "mixed": "7 columns with long quoted user agents, 5% of timestamps in other ISO forms "
                 "and offsets, padded fields, a fifth of duplicates with another campaign",
        "adlog": "7 short columns like common ad logs, UUID ids, one timestamp form, "
                 "duplicates that are exact copies of an earlier row",
    }.get(str(report.get("shape")), "")
    expert = report.get("expert_baseline")
    expert_note = "-" if not expert else f"`{expert}`" + (
        "" if report.get("expert_baseline_matches") else ", which did not write the same bytes")
    lines = [
        f"# Benchmark {report['name']}",
        "",
        f"Shape `{report.get('shape')}`: {data['rows']:,} rows ({data['duplicates']:,} "
        f"duplicates) in {data['files']} CSV files, {human_bytes(data['bytes'])}, one day "
        f"({data['day']}); {shape_text}. Median of {report['repeats']} run(s) per system, each "
        "a separate process, round-robin; warm page cache. CPU is user + system seconds of "
        "the process and its children (wait4), median. Peak RSS is the worst run's, from GNU "
        "time (%M). The machine is shared with other work: compare ratios within this table, "
        "not seconds across tables.",
        "",
        f"Ratios: wall and CPU against the fastest expert peer ({expert_note}); wall against "
        f"the floor (`{report.get('floor_baseline') or '-'}`).",
        "",
        "| system | kind | median wall | min - max | CPU s | peak RSS | wall / expert "
        "| CPU / expert | wall / floor | output |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]

    def ratio(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}x"

    for row in report["results"]:  # type: ignore[attr-defined]
        head = f"| {row['system']} | {row['kind']} "
        if row["skipped"]:
            lines.append(head + f"| - | - | - | - | - | - | - | skipped: {row['skipped']} |")
            continue
        if row["median_wall_seconds"] is None:
            first = row["runs"][0] if row["runs"] else {}
            why = first.get("killed") or f"exit {first.get('exit_code')}"
            verdict = row["verdict"]
            note = f" ({verdict[verdict.index('expected'):-1]})" if "expected" in verdict else ""
            lines.append(head + f"| - | - | - | - | - | - | - | **failed**: {why}{note} |")
            continue
        verdict = row["verdict"]
        shown = f"**{verdict}**" if verdict.startswith("MISMATCH") else verdict
        lines.append(
            head + f"| {row['median_wall_seconds']:.2f} s "
            f"| {row['min_wall_seconds']:.2f} - {row['max_wall_seconds']:.2f} s "
            f"| {row['median_cpu_seconds']:.2f} "
            f"| {human_bytes(row['peak_rss_bytes'])} | {ratio(row['wall_vs_expert'])} "
            f"| {ratio(row['cpu_vs_expert'])} | {ratio(row['wall_vs_floor'])} | {shown} |"
        )
    lines += [
        "",
        "Output: `reference` is the output the others are compared with (streamagg's when it",
        "ran), `identical` means byte-identical to it; `differs (expected ...)` marks an expert",
        "peer on a shape where its query cannot give the contract's answer (DISTINCT ON keeps any",
        "row of a key, typed reads neither trim fields nor take every datetime form).",
        "",
        "Systems:",
    ]
    lines += [f"- `{r['system']}`: {r['description']}" for r in report["results"]]  # type: ignore[attr-defined]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    lines += [
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, "
        f"{human_bytes(machine['memory_bytes'])} RAM; Python {machine['python']}; {versions}.",
        "",
        f"Generated {report['created']} by `benchmarks/run.py`; raw numbers in "
        f"`{report['name']}.json`.",
        "",
    ]
    return "\n".join(lines)


def _chart(report: dict[str, object], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        print("warning: matplotlib is not installed, no chart (pip install -e '.[bench]')",
              file=sys.stderr)
        return None
    done = [r for r in report["results"] if r["median_wall_seconds"]]  # type: ignore[attr-defined]
    if not done:
        return None
    names = [r["system"] for r in done]
    palette = {STREAMAGG: "#1f77b4", EXPERT: "#d62728", FLOOR: "#2ca02c"}
    colors = [palette.get(r["kind"], "#999999") for r in done]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.barh(names, [r["median_wall_seconds"] for r in done], color=colors)
    left.set_xlabel("median wall time (s)")
    right.barh(names, [r["peak_rss_bytes"] / 2**20 for r in done], color=colors)
    right.set_xlabel("peak RSS (MB)")
    for axis in (left, right):
        axis.invert_yaxis()
        axis.grid(axis="x", alpha=0.3)
    right.set_yticklabels([])
    data: dict = report["dataset"]  # type: ignore[assignment]
    fig.suptitle(f"{data['rows']:,} rows in {data['files']} files "
                 f"({human_bytes(data['bytes'])}), lower is better")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    sys.exit(main())
