"""The Spark engine on a standalone cluster whose worker's Python has nothing installed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from streamagg.testing.generate import generate_day
from tests.cluster.conftest import Cluster, children_of
from tests.conftest import DAY, DAY_ARG, Outcome, collect, day_path, run_api, to_bytes
from tests.engines.test_spark import comparable

pytest.importorskip("pyspark.sql", reason="the spark extra is not installed")
# One worker runs all three, so only it starts the cluster (make test: --dist loadgroup).
pytestmark = [pytest.mark.cluster, pytest.mark.spark, pytest.mark.slow,
              pytest.mark.xdist_group("spark-cluster")]

REPO = Path(__file__).resolve().parents[2]
H = "IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\n"
RUN_TIMEOUT = 420


def write_day(root: Path, files: dict[str, str | bytes]) -> Path:
    folder = root / day_path(DAY)
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(to_bytes(name, content))
    return root


def assert_same(local: Outcome, on_cluster: Outcome) -> None:
    assert on_cluster.exit_code == local.exit_code, on_cluster.message
    assert on_cluster.message == local.message
    assert on_cluster.files == local.files
    assert on_cluster.output == local.output
    assert on_cluster.rejects == local.rejects
    if local.manifest is not None:
        assert on_cluster.manifest is not None
        assert comparable(on_cluster.manifest) == comparable(local.manifest)
        assert on_cluster.manifest["parameters"]["engine"] == "spark"


def command(cluster: Cluster, source: Path, dest: Path, *extra: str) -> subprocess.Popen[str]:
    """``python -m streamagg`` on the cluster, as a user moving from a laptop runs it."""
    return subprocess.Popen(
        [sys.executable, "-m", "streamagg", DAY_ARG, "--source", str(source), "--dest", str(dest),
         "--engine", "spark", "--spark-master", cluster.master_url, "--max-bad-rows", "100%",
         "--no-progress", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cluster.driver_env,
        cwd=REPO)


MIXED = {
    "a.csv": H + "a,2021-01-30 10:00:00,1\n" + "a,2021-01-30 10:00:00,1\n"
    + "a,2021-01-30T11:00:00+01:00,2\n" + "b,2021-01-30 10:15:00.5,10\n"
    + "late,2021-01-31 00:30:00,7\n" + "old,1969-12-31 23:30:00,007\n"
    + ",2021-01-30 10:00:00,1\n" + "c,2021-02-30 10:00:00,1\n" + "d,2021-01-30 10:00:00\n",
    "b.csv.gz": "CAMPAIGN_ID,NOTE,IMPRESSION_ID,IMPRESSION_DATETIME\r\n"
    + '2,"a, note",a,2021-01-30T10:00:00Z\r\n' + '10,"two\r\nlines",f,2021-01-30 23:59:59\r\n'
    + "1,x,g,2021-01-30T05:30:00-04:30\r\n",
    "sub/c.csv": b"\xef\xbb\xbf impression_datetime ,Campaign_Id,impression_id\n\n"
    + b"2021-01-30 10:00:00, 2 , a \n" + b"2021-01-30 12:00:00,\xff\xfe,h\n",
    "empty.csv": "",
}


def test_command_ships_streamagg_and_its_environment(spark_cluster: Cluster,
                                                     tmp_path: Path) -> None:
    """The worker's python3 has no streamagg and no pyarrow: the default --spark-env auto
    ships both, and the output, rejects and manifest totals are the local engine's."""
    source = write_day(tmp_path / "in", MIXED)
    local = run_api(source, dest=tmp_path / "local", max_bad_rows="100%")
    run = command(spark_cluster, source, tmp_path / "cluster")
    _, stderr = run.communicate(timeout=RUN_TIMEOUT)
    assert run.returncode == 0, stderr
    on_cluster = collect(0, "", tmp_path / "cluster" / day_path(DAY))
    assert_same(local, on_cluster)
    assert on_cluster.manifest is not None
    assert on_cluster.manifest["jvm_peak_memory_bytes"] > 64 * 2**20  # a JVM, not Python's
    assert local.manifest is not None and local.manifest["jvm_peak_memory_bytes"] is None


CASES: dict[str, tuple[dict[str, str | bytes], dict[str, Any]]] = {
    "mixed, two-row chunks": (MIXED, {"max_bad_rows": "100%", "chunk_size": 2}),
    "missing column": ({"a.csv": H + "a,2021-01-30 10:00:00,1\n",
                        "b.csv": "IMPRESSION_ID,CAMPAIGN_ID\nb,1\n"}, {}),
    "too many bad rows": ({"a.csv": H + "a,2021-01-30 10:00:00,1\n,x,1\nb,bad,1\n"},
                          {"max_bad_rows": "1"}),
}


def test_contract_cases_match_the_local_engine(spark_cluster: Cluster, tmp_path: Path) -> None:
    """A few contract cases (and a generated day) in one application on the cluster."""
    cases = []
    expected = {}
    for n, (name, (files, options)) in enumerate(CASES.items()):
        source = write_day(tmp_path / f"in{n}", files)
        expected[name] = run_api(source, dest=tmp_path / f"local{n}", **options)
        cases.append({"name": name, "source": str(source), "dest": str(tmp_path / f"spark{n}"),
                      "options": options})
    generated = tmp_path / "generated"
    generate_day(generated, DAY, rows=20_000, files=3, gzip_files=1, seed=3)
    expected["generated"] = run_api(generated, dest=tmp_path / "local-g")
    cases.append({"name": "generated", "source": str(generated),
                  "dest": str(tmp_path / "spark-g"), "options": {}})
    spec = tmp_path / "cases.json"
    spec.write_text(json.dumps(cases))
    done = subprocess.run(
        [sys.executable, "-m", "tests.cluster.run_cases", spark_cluster.master_url, str(spec)],
        capture_output=True, text=True, env=spark_cluster.driver_env, cwd=REPO,
        timeout=RUN_TIMEOUT)
    assert done.returncode == 0, done.stderr
    found = json.loads(spec.with_suffix(".out").read_text())
    # The executors ran the shipped environment's Python, not the worker's bare one.
    assert found["executor_python"].endswith("/environment/bin/python"), found
    for case, result in zip(cases, found["results"], strict=True):
        dest = Path(case["dest"]) / day_path(DAY)
        assert_same(expected[case["name"]], collect(result["exit_code"], result["message"], dest))


def executor_with_a_running_task(cluster: Cluster, run: subprocess.Popen[str]) -> int:
    """The executor JVM once one of its Python workers runs (a read task has started)."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline and run.poll() is None:
        for pid in cluster.executor_pids():
            if children_of(pid, b"python"):
                return pid
        time.sleep(0.2)
    raise AssertionError(f"no task started (exit {run.poll()})")


def test_executor_killed_mid_job(spark_cluster: Cluster, tmp_path: Path) -> None:
    """Killing the executor while a task runs: Spark starts another and retries, and the bytes
    are the local engine's; or, if Spark gives up, one clear line and nothing published."""
    source = tmp_path / "in"
    generate_day(source, DAY, rows=80_000, files=4, seed=5)
    local = run_api(source, dest=tmp_path / "local", max_bad_rows="100%")
    run = command(spark_cluster, source, tmp_path / "cluster")
    try:
        os.kill(executor_with_a_running_task(spark_cluster, run), signal.SIGKILL)
        _, stderr = run.communicate(timeout=RUN_TIMEOUT)
    finally:
        if run.poll() is None:
            run.kill()
    assert "Lost executor" in stderr  # killed mid-job, as Spark saw it
    if run.returncode == 0:
        assert_same(local, collect(0, "", tmp_path / "cluster" / day_path(DAY)))
    else:
        on_cluster = collect(run.returncode, stderr, tmp_path / "cluster" / day_path(DAY))
        assert run.returncode == 1, stderr
        assert stderr.strip().splitlines()[-1].startswith("streamagg: error: Spark job failed: ")
        assert on_cluster.files == []
