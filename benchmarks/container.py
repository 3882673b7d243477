"""streamagg, DuckDB and Polars in memory cgroups (192, 256, 512 MiB) on a generated day: outcome,
wall time, CPU seconds and peaks, beside each run without a limit (what the container costs)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from common import BENCH_DIR, REPO, Dataset, cached_day, human_bytes, measure, streamagg_command

# The suite's cgroup helper (tests/memory/cgroup.py): one way to make a container, not two.
sys.path.insert(0, str(REPO))
from tests.memory.cgroup import memory_cgroup, why_no_cgroup  # noqa: E402

MiB = 2**20
PEERS_DIR = BENCH_DIR / "peers"
RESULTS_DIR = BENCH_DIR / "results"


@dataclass(frozen=True)
class Case:
    tool: str  # streamagg, duckdb, polars
    cgroup_mib: int | None  # None: no container
    options: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        where = f"{self.cgroup_mib} MiB" if self.cgroup_mib else "no limit"
        return f"{self.tool} {' '.join(self.options)}".strip() + f" @ {where}"


ALL_CASES = (
    Case("streamagg", 192, ("--memory-limit", "192MB")),
    Case("streamagg", 256),
    Case("streamagg", None),
    Case("duckdb", 256),
    Case("duckdb", 512),
    Case("duckdb", None),
    Case("polars", 512),
    Case("polars", None),
)
# The days of `make bench` besides the first: where streamagg runs in its 256 MiB container and
# DuckDB in the smallest it finishes in (512 MiB), each beside its run without a limit.
SHORT_CASES = (
    Case("streamagg", 256),
    Case("streamagg", None),
    Case("duckdb", 512),
    Case("duckdb", None),
)
PEER_SCRIPTS = {"duckdb": "duckdb_expert_peer.py", "polars": "polars_expert_peer.py"}


def command(case: Case, dataset: Dataset, work: Path) -> tuple[list[str], Path]:
    if case.tool == "streamagg":
        dest = work / "dest"
        day = dataset.day
        out = dest / f"{day:%Y/%m/%d}" / f"daily_agg_{day:%Y%m%d}_SA.csv"
        return streamagg_command(dataset, dest, *case.options), out
    out = work / "out.csv"
    return [sys.executable, str(PEERS_DIR / PEER_SCRIPTS[case.tool]), "--source",
            str(dataset.source), "--date", dataset.day.isoformat(), "--out", str(out)], out


def run_case(case: Case, dataset: Dataset, work: Path) -> dict[str, object]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    argv, out = command(case, dataset, work)
    row: dict[str, object] = {"case": case.label, "tool": case.tool,
                              "cgroup_mib": case.cgroup_mib, "options": list(case.options)}
    if case.cgroup_mib is None:
        run = measure(argv, log_path=work / "log.txt")
        row.update(oom_kills=0, cgroup_peak_bytes=None)
    else:
        with memory_cgroup("streamagg-bench", case.cgroup_mib * MiB) as group:
            run = measure(group.command(argv), log_path=work / "log.txt")
            row.update(oom_kills=group.oom_kills(), cgroup_peak_bytes=group.peak_bytes())
    # The line that says why (DuckDB ends its error with a link to its tuning guide).
    lines = run.log.strip().splitlines() if not run.ok else []
    failed = [line for line in lines if "Error" in line][-1:] or lines[-1:]
    row.update(exit_code=run.exit_code, wall_seconds=round(run.wall_seconds, 2),
               cpu_seconds=round(run.cpu_seconds, 2), peak_rss_bytes=run.peak_rss_bytes,
               load_before=round(run.load_before, 2), failure=failed[0][:200] if failed else None,
               output=out.read_bytes() if run.ok and out.exists() else None)
    row["outcome"] = ("OOM-killed" if row["oom_kills"] else "done" if run.ok else "failed")
    return row


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("streamagg", "duckdb", "polars", "pyarrow"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def summary(case: Case, runs: list[dict[str, object]],
            reference: object) -> dict[str, object]:
    """One row per case: medians of wall and CPU over the runs that finished (a failed or
    killed run stops early, so its time says nothing of the job's), the highest peaks, every
    run's outcome, and every run as measured."""
    finished = [r for r in runs if r["outcome"] == "done"] or runs

    def median(key: str) -> float:
        return round(statistics.median(float(str(r[key])) for r in finished), 2)

    def highest(key: str) -> int | None:
        found = [value for r in runs if isinstance(value := r[key], int)]
        return max(found) if found else None

    outcomes = [str(r["outcome"]) for r in runs]
    outputs = {r["output"] for r in runs if r["output"] is not None}
    failures = [str(r["failure"]) for r in runs if r["outcome"] == "failed" and r["failure"]]
    return {"case": case.label, "tool": case.tool, "cgroup_mib": case.cgroup_mib,
            "runs": len(runs), "outcomes": outcomes, "failure": failures[0] if failures else None,
            "wall_seconds": median("wall_seconds"), "cpu_seconds": median("cpu_seconds"),
            "peak_rss_bytes": highest("peak_rss_bytes"),
            "cgroup_peak_bytes": highest("cgroup_peak_bytes"),
            "load_before": [r["load_before"] for r in runs],
            "same_bytes": "-" if not outputs else "yes" if outputs == {reference} else "no",
            "each_run": [{k: v for k, v in r.items() if k != "output"} for r in runs]}


def markdown(rows: list[dict[str, object]], dataset: Dataset, info: dict[str, str]) -> str:
    shape = info["shape"] + (", gzipped" if info["gzip"] else "")
    lines = [f"# Container table: {dataset.rows:,} rows, {dataset.files} files "
             f"({human_bytes(dataset.bytes)}), {shape} shape, {info['date']}",
             "",
             f"Versions: {info['versions']}. "
             f"Machine: {os.cpu_count()} cores; the load average before each run is in the table. "
             f"Cases run round-robin, {info['repeats']} round(s); wall and CPU are medians of the "
             "runs that finished, peaks the highest. A cgroup's limit counts the page cache "
             "(the input's and the spill files') as Kubernetes and Docker do. 'same bytes' "
             "compares with streamagg's run without a limit (DuckDB's expert query keeps any "
             "duplicate, so it differs on the mixed day, whose duplicates conflict).",
             "",
             "| case | outcome | wall s | CPU s | peak RSS | cgroup peak (cache incl.) "
             "| same bytes | load |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        cg, peak = row["cgroup_peak_bytes"], row["peak_rss_bytes"]
        outcomes = list(row["outcomes"])  # type: ignore[call-overload]
        outcome = (outcomes[0] if len(set(outcomes)) == 1 else ", ".join(outcomes)) + (
            f": {row['failure']}" if row["failure"] else "")
        loads = " ".join(str(x) for x in row["load_before"])  # type: ignore[attr-defined]
        lines.append(
            f"| {row['case']} | {outcome} | {row['wall_seconds']} | {row['cpu_seconds']} "
            f"| {human_bytes(peak) if isinstance(peak, int) else '-'} "
            f"| {human_bytes(cg) if isinstance(cg, int) else '-'} "
            f"| {row['same_bytes']} | {loads} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--shape", default="adlog",
                        help="adlog: the expert peers write streamagg's bytes on it")
    parser.add_argument("--gzip", action="store_true", help="gzip every file")
    parser.add_argument("--cases", choices=("all", "short"), default="all",
                        help="all: 192/256/512 MiB and Polars; short: streamagg at 256 MiB and "
                             "DuckDB at 512 MiB, each beside its run without a limit")
    parser.add_argument("--repeats", type=int, default=1, help="rounds, cases round-robin")
    parser.add_argument("--data-dir", type=Path, default=BENCH_DIR / "data")
    parser.add_argument("--name",
                        help="results file stem [container-<rows>-<files>-<shape>-<date>]")
    args = parser.parse_args()
    reason = why_no_cgroup()
    if reason is not None:
        print(f"no container table: {reason}", file=sys.stderr)
        return 2
    dataset = cached_day(args.rows, args.files, data_dir=args.data_dir, shape=args.shape,
                         gzip=args.gzip)
    today = dt.date.today().isoformat()
    info = {"shape": args.shape, "gzip": "yes" if args.gzip else "", "date": today,
            "repeats": str(args.repeats),
            "versions": ", ".join(f"{k} {v}" for k, v in versions().items())}
    cases = ALL_CASES if args.cases == "all" else SHORT_CASES
    runs: dict[Case, list[dict[str, object]]] = {case: [] for case in cases}
    with tempfile.TemporaryDirectory(prefix="streamagg-container-") as tmp:
        # DuckDB spills to .tmp in the working folder, left behind when the kernel kills it.
        os.chdir(tmp)
        for round_ in range(args.repeats):
            for case in cases:
                print(f"{case.label} (round {round_ + 1}) ...", file=sys.stderr, flush=True)
                runs[case].append(run_case(case, dataset, Path(tmp) / "run"))
    reference = next((r["output"] for case, rs in runs.items() for r in rs
                      if case.tool == "streamagg" and case.cgroup_mib is None and r["output"]),
                     None)
    rows = [summary(case, rs, reference) for case, rs in runs.items()]
    gz = "-gzip" if args.gzip else ""
    stem = args.name or (f"container-{args.rows // 1_000_000}M-{args.files}files-"
                         f"{args.shape}{gz}-{today}")
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / f"{stem}.json").write_text(json.dumps(
        {"dataset": {"rows": dataset.rows, "files": dataset.files, "bytes": dataset.bytes,
                     "shape": args.shape, "gzip": args.gzip}, **info, "runs": rows},
        indent=2) + "\n")
    table = markdown(rows, dataset, info)
    (RESULTS_DIR / f"{stem}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
