"""The benchmark harness measures CPU time and judges outputs and ratios as its tables say."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture()
def harness(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.syspath_prepend(str(BENCH))
    import common
    import report
    import run

    yield run, common, report
    # The scripts' plain module names must not shadow anything for later tests.
    for name in ("run", "common", "report"):
        sys.modules.pop(name, None)


def test_measure_reports_the_childs_cpu_seconds(harness, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, common, _ = harness
    busy = ("import time\nt = time.process_time()\n"
            "while time.process_time() - t < 0.4:\n    pass\n")
    measured = common.measure([sys.executable, "-c", busy], log_path=tmp_path / "log.txt")

    assert measured.ok
    # The child's own 0.4 s of CPU, passed through GNU time's wrapper, plus its start-up.
    assert 0.4 <= measured.cpu_seconds < 2.0


def _system(run, name: str, kind: str, digests: list[str | None], **kw):  # type: ignore[no-untyped-def]
    system = run.System(name, name, "pyarrow", kind=kind, **kw)
    system.digests = digests
    system.runs = [run.Measurement([name], 0, 1.0, 1) for _ in digests]
    return system


def test_expert_peers_may_differ_only_on_shapes_they_cannot_match(harness, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run, _, report = harness
    for shape, expected in (("mixed", "differs (expected"), ("adlog", "MISMATCH")):
        ref = _system(run, "streamagg-spill", run.STREAMAGG, ["a", "a"])
        expert = _system(run, "duckdb-expert", run.EXPERT, ["b", "c"], matches_on=("adlog",))
        floor = _system(run, "floor", run.FLOOR, [None, None], matches_on=())

        assert run.judge([ref, expert, floor], tmp_path, shape) == "streamagg-spill"
        assert ref.verdict == "reference"
        assert expert.verdict.startswith(expected)
        assert floor.verdict == "no output (floor)"


def test_ratios_are_to_the_fastest_matching_expert_and_the_floor(harness) -> None:  # type: ignore[no-untyped-def]
    run, _, report = harness

    def row(system: str, kind: str, wall: float, verdict: str) -> dict[str, object]:
        return {"system": system, "kind": kind, "median_wall_seconds": wall,
                "median_cpu_seconds": wall / 2, "verdict": verdict}

    rows = [row("streamagg-spill", run.STREAMAGG, 10.0, "reference"),
            row("duckdb-expert", run.EXPERT, 4.0, "differs (expected: ...)"),
            row("polars-expert", run.EXPERT, 5.0, "identical"),
            row("floor", run.FLOOR, 2.0, "no output (floor)")]
    bases = report.baselines(rows)

    assert bases["expert"]["system"] == "polars-expert"  # the faster one did not match
    assert report.ratio(10.0, bases["expert"], "median_wall_seconds") == 2.0
    assert report.ratio(10.0, bases["floor"], "median_wall_seconds") == 5.0
    rows[2]["verdict"] = "failed"
    assert report.baselines(rows)["expert"]["system"] == "duckdb-expert"  # none matched


def test_the_data_cache_key_covers_every_generator_module(harness, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # The generator is split across modules: an edit to any of them writes other bytes, so the
    # cached day must be regenerated, not only when generate.py itself changes.
    _, common, _ = harness
    from streamagg.testing import generate

    package = tmp_path / "testing"
    package.mkdir()
    for module in Path(generate.__file__).parent.glob("*.py"):
        (package / module.name).write_bytes(module.read_bytes())
    before = common.generator_sha256(package)
    rows = package / "rows.py"
    rows.write_text(rows.read_text() + "\n# an edit outside generate.py\n")
    assert common.generator_sha256(package) != before


def test_the_sqlite_floor_script_times_the_backend_and_the_least_insert() -> None:
    import subprocess

    done = subprocess.run([sys.executable, str(BENCH / "sqlite_floor.py"), "--rows", "20000",
                           "--repeats", "1"], capture_output=True, text=True, timeout=120,
                          check=True)
    rows = {line.split("|")[1].strip(): float(line.split("|")[3])
            for line in done.stdout.splitlines() if line.startswith("| backend add")
            or line.startswith("| least insert")}
    assert set(rows) == {"backend add", "least insert"} and all(v > 0 for v in rows.values())


def test_measure_reports_what_other_processes_took_meanwhile(harness, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # A child that sleeps while another process burns a core: the CPU seconds are the other
    # process's, and the table must show the machine was busy.
    import subprocess

    _, common, _ = harness
    busy = ("import time\nt = time.process_time()\n"
            "while time.process_time() - t < 1.5:\n    pass\n")
    other = subprocess.Popen([sys.executable, "-c", busy])
    try:
        measured = common.measure([sys.executable, "-c", "import time; time.sleep(1.0)"],
                                  log_path=tmp_path / "log.txt")
    finally:
        other.wait()

    assert measured.ok and measured.cpu_seconds < 0.5
    assert measured.others_cpu_seconds >= 0.5
    assert measured.load_before >= 0 and measured.steal_seconds >= 0


def test_every_table_names_the_versions_and_the_machines_load(harness, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import argparse

    run, common, report = harness
    ref = _system(run, "streamagg-spill", run.STREAMAGG, ["a", "a"])
    expert = _system(run, "duckdb-expert", run.EXPERT, ["a", "a"], matches_on=("narrow",))
    expert.package = "duckdb"
    for system in (ref, expert):
        for measured in system.runs:
            measured.others_cpu_seconds, measured.load_before = 0.5, 1.25
            measured.cpu_seconds = 0.4
    run.judge([ref, expert], tmp_path, "narrow")
    day = common.Dataset(tmp_path, common.DEFAULT_DATE, 10, 2000, 0, 100, 1, 9, {})
    args = argparse.Namespace(shape="narrow", gzip=False, repeats=2)
    table = report.markdown(report.build_report("t", day, [ref, expert], "streamagg-spill",
                                                args))

    assert "1-minute load average 1.25 to 1.25" in table
    cores = __import__("os").cpu_count() or 1
    assert f"other processes used {100 * 0.5 / cores:.0f}%" in table
    versions = report.package_versions()
    if versions["pyarrow"]:  # the streamagg row's package in this test is pyarrow
        assert f"| streamagg-spill (pyarrow {versions['pyarrow']}) |" in table
    assert "| identical |" in table and "2,000 CSV files" in table


def test_streamagg_is_byte_compiled_before_it_is_timed(harness) -> None:  # type: ignore[no-untyped-def]
    # Under PYTHONDONTWRITEBYTECODE an editable checkout compiled every module at each start.
    import importlib.util

    import streamagg

    _, common, _ = harness
    package = Path(streamagg.__file__).parent
    removed = Path(importlib.util.cache_from_source(str(package / "units.py")))
    removed.unlink(missing_ok=True)
    common.byte_compiled.cache_clear()
    common.byte_compiled()
    sources = sorted(package.rglob("*.py"))
    assert sources
    stale = [s for s in sources if not Path(importlib.util.cache_from_source(str(s))).exists()
             or Path(importlib.util.cache_from_source(str(s))).stat().st_mtime
             < s.stat().st_mtime]
    assert not stale, stale[:3]
