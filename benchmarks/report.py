"""The benchmark's report: ratios to the baselines, the machine and its load, the table, a chart."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from common import Dataset, human_bytes

# What kind of contender a system is; the tables label every row with it.
STREAMAGG = "streamagg"
FIRST = "first-occurrence peer"  # the contract's rules: trim, every datetime form, first wins
EXPERT = "expert peer"  # written as its users write the job: typed read, one query
NAIVE = "naive peer"
FLOOR = "floor"  # parses the three columns, nothing more: no output to compare

SHAPE_TEXT = {
    "mixed": "7 columns with long quoted user agents, 5% of timestamps in other ISO forms and "
             "offsets, padded fields, a fifth of duplicates with another campaign",
    "adlog": "7 short columns like common ad logs, UUID ids, one timestamp form, duplicates "
             "that are exact copies of an earlier row",
    "narrow": "7 short columns, the time first, UUID ids, 2,000 campaigns, one timestamp form, "
              "duplicates that are exact copies of an earlier row",
    "wide": "8 columns with long text as ad logs land in S3 (a quoted page URL, a user agent), "
            "UUID ids, one timestamp form, duplicates that are exact copies of an earlier row",
}
# The package whose version each kind of system runs, shown beside its name in the table.
PACKAGE_NAMES = {"streamagg": "streamagg", "duckdb": "DuckDB", "polars": "Polars",
                 "pandas": "pandas", "pyarrow": "pyarrow", "pyspark": "PySpark"}


def baselines(rows: list[dict[str, object]]) -> dict[str, dict[str, object] | None]:
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


def ratio(value: object, base: dict[str, object] | None, key: str) -> float | None:
    if not value or base is None or not base.get(key):
        return None
    return round(float(value) / float(base[key]), 2)  # type: ignore[arg-type]


def build_report(name: str, dataset: Dataset, contenders: Sequence[Any], reference: str | None,
                 args: argparse.Namespace) -> dict[str, object]:
    """Every system's medians, ratios and runs, the day, the machine and its load."""
    rows: list[dict[str, object]] = []
    versions = package_versions()
    for system in contenders:
        ok = system.ok_runs
        wall = statistics.median(r.wall_seconds for r in ok) if ok else None
        cpu = statistics.median(r.cpu_seconds for r in ok) if ok else None
        others = [r.others_cpu_seconds / (r.wall_seconds * (os.cpu_count() or 1))
                  for r in system.runs if r.wall_seconds > 0]
        rows.append({
            "system": system.name,
            "kind": system.kind,
            "package": system.package,
            "version": versions.get(system.package),
            "description": system.description,
            "skipped": system.skipped,
            "verdict": system.verdict,
            "median_wall_seconds": round(wall, 3) if wall else None,
            "min_wall_seconds": round(min(r.wall_seconds for r in ok), 3) if ok else None,
            "max_wall_seconds": round(max(r.wall_seconds for r in ok), 3) if ok else None,
            "median_cpu_seconds": round(cpu, 3) if cpu else None,
            # The share of the machine's cores other processes kept busy during its runs.
            "median_others_share": round(statistics.median(others), 3) if others else None,
            # The worst repeat: a memory budget has to hold every time, not on average.
            "peak_rss_bytes": max(r.peak_rss_bytes for r in ok) if ok else None,
            "rows_per_second": round(dataset.rows / wall) if wall else None,
            "successful_runs": len(ok),
            "runs": [r.to_json() for r in system.runs],
            "output_sha256": next((d for d in system.digests if d), None),
        })
    bases = baselines(rows)
    for row in rows:
        row["wall_vs_expert"] = ratio(row["median_wall_seconds"], bases["expert"],
                                       "median_wall_seconds")
        row["cpu_vs_expert"] = ratio(row["median_cpu_seconds"], bases["expert"],
                                      "median_cpu_seconds")
        row["wall_vs_floor"] = ratio(row["median_wall_seconds"], bases["floor"],
                                      "median_wall_seconds")
    expert = bases["expert"]
    return {
        "name": name,
        "shape": args.shape,
        "gzip": args.gzip,
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
        "machine": machine_facts(),
        "load": load_summary([r for s in contenders for r in s.runs]),
        "results": rows,
    }


def load_summary(runs: Sequence[Any]) -> dict[str, object]:
    """How busy the machine was around the runs: what makes a table final or not."""
    if not runs:
        return {}
    cores = os.cpu_count() or 1
    wall = sum(r.wall_seconds for r in runs) or 1.0
    loads = [r.load_before for r in runs]
    return {
        "load_before_min": round(min(loads), 2),
        "load_before_max": round(max(loads), 2),
        # Of all the cores' time while a run went on: what other processes took, and the host.
        "others_share": round(sum(r.others_cpu_seconds for r in runs) / (wall * cores), 3),
        "steal_share": round(sum(r.steal_seconds for r in runs) / (wall * cores), 3),
    }


def machine_facts() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    versions = package_versions()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_bytes": memory,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for package in ("streamagg", "pyarrow", "duckdb", "polars", "pandas", "numpy", "pyspark",
                    "py-spy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def markdown(report: dict[str, object]) -> str:
    data: dict = report["dataset"]  # type: ignore[assignment]
    machine: dict = report["machine"]  # type: ignore[assignment]
    shape_text = SHAPE_TEXT.get(str(report.get("shape")), "")
    kind_of_file = "gzipped CSV (`.csv.gz`)" if report.get("gzip") else "CSV"
    load: dict = report.get("load") or {}  # type: ignore[assignment]
    expert = report.get("expert_baseline")
    expert_note = "-" if not expert else f"`{expert}`" + (
        "" if report.get("expert_baseline_matches") else ", which did not write the same bytes")
    lines = [
        f"# Benchmark {report['name']}",
        "",
        f"Shape `{report.get('shape')}`: {data['rows']:,} rows ({data['duplicates']:,} "
        f"duplicates) in {data['files']:,} {kind_of_file} files, {human_bytes(data['bytes'])}, "
        "one day "
        f"({data['day']}); {shape_text}. Median of {report['repeats']} run(s) per system, each "
        "a separate process, round-robin; warm page cache. CPU is user + system seconds of "
        "the process and its children (wait4), median. Peak RSS is the worst run's, from GNU "
        "time (%M), the whole process's. The machine may be shared with other work: compare "
        "ratios within this table, not seconds across tables.",
        "",
        _load_line(load),
        "",
        f"Ratios: wall and CPU against the fastest expert peer ({expert_note}); wall against "
        f"the floor (`{report.get('floor_baseline') or '-'}`).",
        "",
        "| system | kind | median wall | min - max | CPU s | peak RSS | wall / expert "
        "| CPU / expert | wall / floor | others' load | output |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]

    def ratio(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}x"

    for row in report["results"]:  # type: ignore[attr-defined]
        version = f" ({PACKAGE_NAMES.get(row['package'], row['package'])} {row['version']})" \
            if row.get("version") else ""
        head = f"| {row['system']}{version} | {row['kind']} "
        if row["skipped"]:
            lines.append(head + f"| - | - | - | - | - | - | - | - | skipped: {row['skipped']} |")
            continue
        if row["median_wall_seconds"] is None:
            first = row["runs"][0] if row["runs"] else {}
            why = first.get("killed") or f"exit {first.get('exit_code')}"
            verdict = row["verdict"]
            note = f" ({verdict[verdict.index('expected'):-1]})" if "expected" in verdict else ""
            lines.append(head + f"| - | - | - | - | - | - | - | - | **failed**: {why}{note} |")
            continue
        verdict = row["verdict"]
        shown = f"**{verdict}**" if verdict.startswith("MISMATCH") else verdict
        lines.append(
            head + f"| {row['median_wall_seconds']:.2f} s "
            f"| {row['min_wall_seconds']:.2f} - {row['max_wall_seconds']:.2f} s "
            f"| {row['median_cpu_seconds']:.2f} "
            f"| {human_bytes(row['peak_rss_bytes'])} | {ratio(row['wall_vs_expert'])} "
            f"| {ratio(row['cpu_vs_expert'])} | {ratio(row['wall_vs_floor'])} "
            f"| {_percent(row.get('median_others_share'))} | {shown} |"
        )
    lines += [
        "",
        "Output: `reference` is the output the others are compared with (streamagg's when it",
        "ran), `identical` means byte-identical to it; `differs (expected ...)` marks an expert",
        "peer on a shape where its query cannot give the contract's answer (DISTINCT ON keeps any",
        "row of a key, typed reads neither trim fields nor take every datetime form). Others'",
        "load: the share of the machine's cores that other processes kept busy during the",
        "system's runs (median); a table taken with more than a few percent is not final.",
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


def _load_line(load: dict[str, object]) -> str:
    if not load:
        return "Machine load: not measured."
    return (f"Machine load: 1-minute load average {load['load_before_min']} to "
            f"{load['load_before_max']} as the runs started; other processes used "
            f"{_percent(load['others_share'])} of the cores' time during the runs, the host "
            f"stole {_percent(load['steal_share'])}.")


def _percent(share: object) -> str:
    return "-" if share is None else f"{100 * float(share):.0f}%"  # type: ignore[arg-type]


def chart(report: dict[str, object], path: Path) -> Path | None:
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
