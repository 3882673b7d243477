"""The Spark engine against the local one: the same bytes, rejects and totals, the same failures."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamagg.config import Schema
from streamagg.engines import spark as spark_engine
from streamagg.engines.spark import driver as spark_driver
from streamagg.errors import BadDataError, StreamaggError, UsageError
from tests.conftest import DAY, DAY_ARG, OUTPUT_NAME, S3, Outcome, day_path, run_api, to_bytes

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

pyspark_sql = pytest.importorskip("pyspark.sql", reason="the spark extra is not installed")
pytestmark = pytest.mark.spark

REPO = Path(__file__).resolve().parents[2]
H = "IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\n"
LENIENT = {"max_bad_rows": "100%"}


def both_engines(source: Path | str, out: Path, **options: Any) -> tuple[Outcome, Outcome]:
    """The same day through the local engine and the Spark engine, into separate folders."""
    local = run_api(source, dest=out / "local", engine="local", **options)
    on_spark = run_api(source, dest=out / "spark", engine="spark", **options)
    return local, on_spark


def assert_same(local: Outcome, on_spark: Outcome) -> None:
    """Byte-identical output and rejects, identical totals and inputs, or the same failure."""
    assert on_spark.exit_code == local.exit_code, on_spark.message
    assert on_spark.message == local.message
    assert on_spark.files == local.files
    assert on_spark.output == local.output
    assert on_spark.rejects == local.rejects
    if local.manifest is not None:
        assert on_spark.manifest is not None
        assert on_spark.totals == local.totals
        assert comparable(on_spark.manifest) == comparable(local.manifest)
        assert on_spark.manifest["parameters"]["engine"] == "spark"


def comparable(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest without what names the run rather than the day: times, paths, engine."""
    kept = {k: v for k, v in manifest.items()
            if k not in ("started", "finished", "elapsed_seconds", "peak_memory_bytes",
                         "jvm_peak_memory_bytes")}
    kept["parameters"] = {k: v for k, v in manifest["parameters"].items()
                          if k not in ("engine", "dest")}
    for part in ("output", "rejects"):
        if kept.get(part):
            kept[part] = {k: v for k, v in kept[part].items() if k != "path"}
    return kept


def gz(text: str) -> bytes:
    return to_bytes("x.gz", text)


# --- hand-made days ------------------------------------------------------------------------------

MIXED_DAY: dict[str, str | bytes] = {
    # Duplicates within the file, an offset spelling of an earlier key, late and early rows,
    # an instant before 1970 (a negative bucket), and bad rows of every kind.
    "a.csv": H
    + "a,2021-01-30 10:00:00,1\n"
    + "a,2021-01-30 10:00:00,1\n"
    + "a,2021-01-30T11:00:00+01:00,2\n"
    + "b,2021-01-30 10:15:00.5,10\n"
    + "late,2021-01-31 00:30:00,7\n"
    + "early,2021-01-29T23:59:59.999999999Z,7\n"
    + "old,1969-12-31 23:30:00,007\n"
    + ",2021-01-30 10:00:00,1\n"
    + "c,2021-02-30 10:00:00,1\n"
    + "d,2021-01-30 10:00:00\n"
    + "e,2021-01-30 10:00:00,1,extra\n",
    # gzip, CRLF, another column order with an ignored column, quoted fields, a conflicting
    # duplicate of a.csv's first key.
    "b.csv.gz": gz(
        "CAMPAIGN_ID,NOTE,IMPRESSION_ID,IMPRESSION_DATETIME\r\n"
        + '2,"a, note",a,2021-01-30T10:00:00Z\r\n'
        + '10,"two\r\nlines",f,2021-01-30 23:59:59\r\n'
        + '"10",,b,2021-01-30 10:15:00.500\r\n'
        + "\r\n"
        + "1,x,g,2021-01-30T05:30:00-04:30\r\n"
    ),
    # A byte-order mark, padded lower-case names, blank lines, invalid UTF-8 in a campaign.
    "sub/c.csv": b"\xef\xbb\xbf impression_datetime ,Campaign_Id,impression_id\n\n"
    + b"2021-01-30 10:00:00, 2 , a \n"
    + b"2021-01-30 12:00:00,\xff\xfe,h\n"
    + b"2021-01-30 12:00:00,-3,h\n"
    + b"1969-12-31T23:59:59Z,+4,old2\n",
    "header_only.csv": H,
    "empty.csv": "",
    "_SUCCESS": "",
    ".hidden.csv": H + "z,2021-01-30 10:00:00,1\n",
    "_temporary/part.csv": H + "z,2021-01-30 10:00:00,1\n",
}


@pytest.mark.parametrize("chunk_size", [100_000, 2])
def test_mixed_day_is_byte_identical(spark: SparkSession, partition: Callable[..., Path],
                                     tmp_path: Path, chunk_size: int) -> None:
    source = partition(MIXED_DAY)
    local, on_spark = both_engines(source, tmp_path, chunk_size=chunk_size, **LENIENT)
    assert_same(local, on_spark)
    totals = on_spark.totals
    assert totals["bad_rows"] == 5 and totals["duplicates"] >= 4
    assert totals["conflicting_duplicates"] >= 2 and totals["outside_day"] >= 4
    assert totals["empty_files"] == 1
    assert b"1969-12-31 23:00:00" in (on_spark.output or b"")


def test_text_campaigns_and_trimmed_keys(spark: SparkSession, partition: Callable[..., Path],
                                         tmp_path: Path) -> None:
    source = partition({
        "1.csv": H + 'x ,2021-01-30 01:00:00,"a,b"\n\tx,2021-01-30 01:00:00,beta\n'
        + "y,2021-01-30 01:59:59,caf\u00e9\n" + 'z,2021-01-30 02:00:00,"q""t"\n',
        "2.csv": H + "y,2021-01-30T01:59:59Z,Beta\n" + "w,2021-01-30 02:00:00,10\n",
    })
    assert_same(*both_engines(source, tmp_path))


def test_custom_columns_and_grain(spark: SparkSession, partition: Callable[..., Path],
                                  tmp_path: Path) -> None:
    schema = Schema(id_column="EVENT_ID", time_column="TS", group_column="ADVERTISER",
                    grain_seconds=900)
    source = partition({
        "e.csv": "TS,ADVERTISER,EVENT_ID\n" + "2021-01-30 10:14:59,7,e1\n"
        + "2021-01-30 10:15:00,7,e2\n" + "2021-01-30 10:15:00,8,e2\n"
        + "1969-12-31 23:59:59,7,e3\n",
    })
    local, on_spark = both_engines(source, tmp_path, schema=schema)
    assert_same(local, on_spark)
    assert (on_spark.output or b"").startswith(b"ADVERTISER,HOUR,IMPRESSIONS\n")


def test_day_of_only_empty_files(spark: SparkSession, partition: Callable[..., Path],
                                 tmp_path: Path) -> None:
    source = partition({"empty.csv": "", "empty2.csv.gz": ""})
    local, on_spark = both_engines(source, tmp_path)
    assert_same(local, on_spark)
    assert on_spark.output == b"CAMPAIGN_ID,HOUR,IMPRESSIONS\n"


# --- the same failures ---------------------------------------------------------------------------


def test_missing_column_fails_the_same_way(spark: SparkSession, partition: Callable[..., Path],
                                           tmp_path: Path) -> None:
    source = partition({"1.csv": H + "a,2021-01-30 10:00:00,1\n",
                        "2.csv": "IMPRESSION_ID,CAMPAIGN_ID\na,1\n"})
    local, on_spark = both_engines(source, tmp_path)
    assert_same(local, on_spark)
    assert on_spark.exit_code == BadDataError.exit_code and on_spark.files == []
    assert "2.csv" in on_spark.message and "IMPRESSION_DATETIME" in on_spark.message


@pytest.mark.parametrize("limit", ["1", "10%"])
def test_too_many_bad_rows_fails_the_same_way(spark: SparkSession, partition: Callable[..., Path],
                                              tmp_path: Path, limit: str) -> None:
    source = partition({"1.csv": H + "a,2021-01-30 10:00:00,1\n,2021-01-30 10:00:00,1\n",
                        "2.csv": H + "b,nope,1\nc,2021-01-30 10:00:00,1\n"})
    local, on_spark = both_engines(source, tmp_path, max_bad_rows=limit)
    assert_same(local, on_spark)
    assert on_spark.exit_code == 4 and "too many bad rows" in on_spark.message


def test_unreadable_file_fails_the_same_way(spark: SparkSession, partition: Callable[..., Path],
                                            tmp_path: Path) -> None:
    cut_short = gz(H + "b,2021-01-30 10:00:00,1\n" * 1000)[:-40]  # an upload cut short
    source = partition({"1.csv": H + "a,2021-01-30 10:00:00,1\n", "2.csv.gz": cut_short})
    local, on_spark = both_engines(source, tmp_path)
    assert_same(local, on_spark)
    assert on_spark.exit_code == 1 and "2.csv.gz" in on_spark.message


# --- random days ---------------------------------------------------------------------------------

IDS = ["a", "b", "c", " a", "\u00fc"]
NUMERIC = ["1", "2", "10", "007", "-3"]
TEXT = ["alpha", "Beta", "a,b", "x\ny", "10"]
# Seconds from the day's start (before, inside and after it) and spellings of the same instant.
SECONDS = [-3601, -1, 0, 59, 3600, 86399, 86400]
SPELLINGS = [
    lambda t: t.strftime("%Y-%m-%d %H:%M:%S"),
    lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ"),
    lambda t: (t + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S+01:00"),
    lambda t: t.strftime("%Y-%m-%d %H:%M:%S.000"),
]
BAD_VALUES = ["", "2021-02-30 10:00:00", "10:00"]


def quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\n') else value


@st.composite
def day_files(draw: st.DrawFn) -> dict[str, bytes]:
    """1 to 3 files sharing ids and instants, so duplicates and conflicts happen within and
    across files; column order, gzip and bad rows vary."""
    campaigns = draw(st.sampled_from([NUMERIC, TEXT]))
    names = draw(st.lists(st.sampled_from(["p0.csv", "p1.csv.gz", "sub/p2.csv", "p10.csv"]),
                          min_size=1, max_size=3, unique=True))
    start = dt.datetime(2021, 1, 30)
    files: dict[str, bytes] = {}
    for name in names:
        order = draw(st.permutations([0, 1, 2]))
        header = ",".join(["IMPRESSION_ID", "IMPRESSION_DATETIME", "CAMPAIGN_ID"][i] for i in order)
        lines = [header]
        for _ in range(draw(st.integers(0, 15))):
            moment = start + dt.timedelta(seconds=draw(st.sampled_from(SECONDS)))
            values = [draw(st.sampled_from(IDS)), draw(st.sampled_from(SPELLINGS))(moment),
                      draw(st.sampled_from(campaigns))]
            if draw(st.integers(0, 9)) == 0:
                values[draw(st.integers(0, 2))] = draw(st.sampled_from(BAD_VALUES))
            lines.append(",".join(quote(values[i]) for i in order))
        files[name] = to_bytes(name, "\n".join(lines) + "\n")
    return files


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(files=day_files(), chunk_size=st.sampled_from([1, 3, 1000]))
def test_random_days_match_the_local_engine(spark: SparkSession, files: dict[str, bytes],
                                            chunk_size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "source"
        for name, data in files.items():
            path = root / day_path(DAY) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        assert_same(*both_engines(root, Path(tmp), chunk_size=chunk_size, **LENIENT))


# --- Spark specifics -----------------------------------------------------------------------------


def test_buckets_floor_like_python(spark: SparkSession) -> None:
    """Spark's integer division truncates toward zero; the engine's must floor, as numpy does."""
    grain = 3600 * 10**9
    values = [0, 1, grain - 1, grain, -1, -grain, -grain - 1, -(2**63), 2**63 - 1]
    frame = spark.createDataFrame([(v,) for v in values], "instant long")
    got = [r[0] for r in frame.select(spark_engine.floor_div("instant", grain)).collect()]
    assert got == [v // grain for v in values]


def test_s3_source_read_by_the_executors(spark: SparkSession, s3: S3, tmp_path: Path) -> None:
    s3.put(f"{day_path(DAY)}/a.csv", H + "a,2021-01-30 10:00:00,1\nb,bad,1\n")
    s3.put(f"{day_path(DAY)}/b.csv.gz", H + "a,2021-01-30 10:00:00,2\nc,2021-01-30 11:00:00,2\n")
    local, on_spark = both_engines(s3.uri, tmp_path, endpoint_url=s3.endpoint, **LENIENT)
    assert_same(local, on_spark)
    assert on_spark.totals["conflicting_duplicates"] == 1


def test_cli_engine_spark(spark: SparkSession, cli: Callable[..., Any],
                          partition: Callable[..., Path], tmp_path: Path) -> None:
    source = partition({"a.csv": MIXED_DAY["a.csv"], "b.csv.gz": MIXED_DAY["b.csv.gz"]})
    local = cli(DAY_ARG, "--source", source, "--dest", tmp_path / "local", "--no-progress",
                "--max-bad-rows", "100%")
    on_spark = cli(DAY_ARG, "--source", source, "--dest", tmp_path / "spark", "--no-progress",
                   "--max-bad-rows", "100%", "--engine", "spark", "--spark-master", "local[1]")
    assert local.exit_code == 0 and on_spark.exit_code == 0, on_spark.output
    out = Path(day_path(DAY)) / OUTPUT_NAME
    assert (tmp_path / "spark" / out).read_bytes() == (tmp_path / "local" / out).read_bytes()
    # The running session (as under spark-submit) is used as it is: a --spark-master given
    # is said not to apply, and only then.
    assert "--spark-master local[1] does not apply" in on_spark.stderr, on_spark.stderr
    # The summary gives the JVM's peak beside the Python process's.
    assert re.search(r"peak memory [\d.]+ \wiB \(Python\), [\d.]+ \wiB \(Spark's JVM\)",
                     on_spark.stdout), on_spark.stdout
    as_submitted = cli(DAY_ARG, "--source", source, "--dest", tmp_path / "submitted",
                       "--max-bad-rows", "100%", "--engine", "spark", "--log-format", "json")
    assert as_submitted.exit_code == 0, as_submitted.output
    assert "spark-master" not in as_submitted.stderr, as_submitted.stderr
    summary = json.loads(as_submitted.stdout.splitlines()[-1])
    assert summary["jvm_peak_memory_bytes"] > 64 * 2**20 and summary["peak_memory_bytes"] > 0


def test_missing_pyspark_is_one_clear_line(cli: Callable[..., Any],
                                           partition: Callable[..., Path],
                                           monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pyspark", None)  # import pyspark raises ImportError
    source = partition({"a.csv": H + "a,2021-01-30 10:00:00,1\n"})
    outcome = run_api(source, engine="spark")
    assert outcome.exit_code == UsageError.exit_code and outcome.files == []
    assert outcome.message == ("--engine spark needs pyspark, which is not installed: "
                               "install the spark extra (in streamagg's clone: "
                               "pip install -e '.[spark]')")
    result = cli(DAY_ARG, "--source", source, "--engine", "spark")
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == f"streamagg: error: {outcome.message}"


def test_missing_java_is_one_clear_line(spark: SparkSession, partition: Callable[..., Path],
                                        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pyspark import SparkContext

    monkeypatch.setattr(SparkContext, "_active_spark_context", None)  # as if nothing ran yet
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    source = partition({"a.csv": H + "a,2021-01-30 10:00:00,1\n"})
    outcome = run_api(source, engine="spark")
    assert outcome.exit_code == 2 and outcome.files == []
    assert outcome.message.startswith("--engine spark needs Java 17")
    monkeypatch.delenv("JAVA_HOME")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert not spark_engine.java_found()


def test_executor_errors_keep_their_class_and_message() -> None:
    err = BadDataError("missing required column", uri="s3://b/k.csv", line=1, column="X")
    again = spark_engine.decode_error(spark_engine.encode_error(err))
    assert type(again) is BadDataError and str(again) == str(err)


def test_failed_job_summary_is_the_workers_last_line() -> None:
    text = ("An exception was thrown from the Python worker:\nTraceback (most recent call "
            "last):\n  File \"x.py\", line 1\nModuleNotFoundError: No module named 'streamagg'\n"
            "\nJVM stacktrace:\norg.apache.spark.SparkException: boom\n")
    assert (spark_engine.failure_summary(RuntimeError(text))
            == "ModuleNotFoundError: No module named 'streamagg'")
    assert spark_engine.failure_summary(RuntimeError("Java gateway exited\nmore")) == (
        "Java gateway exited")


def test_spark_submit_maps_cluster_s3_uris() -> None:
    from streamagg.spark_submit import command_args

    assert command_args([DAY_ARG, "--source", "s3a://logs/imp", "--dest=s3n://agg/x",
                         "--initials", "s3a"]) == [
        "--engine", "spark", DAY_ARG, "--source", "s3://logs/imp", "--dest=s3://agg/x",
        "--initials", "s3a"]
    assert command_args(["--engine", "local", DAY_ARG])[-3:] == ["--engine", "local", DAY_ARG]


# --- fresh processes: the command starts its own session; spark-submit brings one ----------------


def fresh_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYSPARK_PYTHON"}
    env.update(extra)
    return env


def run_on_a_terminal(command: list[str], **popen: Any) -> tuple[int, str, str]:
    """Run ``command`` with stderr on a pseudo-terminal (so it draws its progress bar);
    (exit code, stdout, everything the terminal received)."""
    import pty
    import threading

    terminal, child_side = pty.openpty()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=child_side, text=True,
                               **popen)
    os.close(child_side)
    received: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(terminal, 65536)
            except OSError:  # EIO: the child's side is closed
                return
            if not chunk:
                return
            received.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    stdout, _ = process.communicate(timeout=300)
    reader.join(timeout=30)
    os.close(terminal)
    return process.returncode, stdout, b"".join(received).decode("utf-8", "replace")


@pytest.mark.slow
def test_command_starts_a_quiet_session_of_its_own(partition: Callable[..., Path],
                                                   tmp_path: Path, spark_conf_dir: Path) -> None:
    source = partition(MIXED_DAY)
    local = run_api(source, dest=tmp_path / "local", **LENIENT)
    code, stdout, terminal = run_on_a_terminal(
        [sys.executable, "-m", "streamagg", DAY_ARG, "--source", str(source), "--dest",
         str(tmp_path / "spark"), "--engine", "spark", "--spark-master", "local[1]",
         "--max-bad-rows", "100%"],
        env=fresh_env(SPARK_CONF_DIR=str(spark_conf_dir)), cwd=tmp_path)
    assert code == 0, terminal
    out = Path(day_path(DAY)) / OUTPUT_NAME
    assert (tmp_path / "spark" / out).read_bytes() == local.output
    assert "(Spark's JVM)" in stdout, stdout
    # The bar, redrawn in place, says what happens while the JVM starts...
    frames = re.findall(r"\r([^\r\n]*?)\x1b\[K", terminal)
    assert any(frame.endswith("starting Spark") for frame in frames), frames
    # ...and every other line is a log record: the JVM's own stderr reaches the terminal only
    # through the log, never written raw over the bar.
    rest = re.sub(r"\r[^\r\n]*?\x1b\[K", "", terminal.replace("\r\n", "\n"))
    for line in rest.splitlines():
        assert not line or re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (INFO|WARNING) ",
                                    line), (line, terminal)
    # Spark's start-up chatter and pyspark's warnings stay out of the operator's way (a loaded
    # machine may still see a real warning, e.g. a late heartbeat: that one is allowed).
    for noise in ("log4j", "Setting default log level", "NativeCodeLoader", "incubator",
                  "resolves to a loopback", "INFO SparkContext", "FutureWarning", "Traceback"):
        assert noise not in terminal, terminal


def activated_env(**extra: str) -> dict[str, str]:
    """The environment after `. .venv/bin/activate`, as docs/SPARK.md says: the venv's bin first
    on PATH, and nothing else pointing Spark at a Python or a SPARK_HOME."""
    venv = Path(sys.executable).parent.parent
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "SPARK_HOME")}
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    env.update(extra)
    return env


@pytest.mark.slow
@pytest.mark.s3
def test_spark_submit_with_an_s3a_source(s3: S3, tmp_path: Path, spark_conf_dir: Path) -> None:
    if not (Path(sys.executable).parent / "spark-submit").exists():
        pytest.skip("spark-submit is not installed in this environment")
    s3.put(f"{day_path(DAY)}/a.csv", MIXED_DAY["a.csv"])
    s3.put(f"{day_path(DAY)}/b.csv.gz", MIXED_DAY["b.csv.gz"])
    local = run_api(s3.uri, dest=tmp_path / "local", endpoint_url=s3.endpoint, **LENIENT)
    # `spark-submit` found on PATH, from the repository's root, as the docs show it.
    done = subprocess.run(
        ["spark-submit", "--master", "local[1]", "streamagg/spark_submit.py",
         DAY_ARG, "--source", f"s3a://{s3.bucket}", "--dest", str(tmp_path / "spark"),
         "--endpoint-url", s3.endpoint, "--max-bad-rows", "100%", "--log-format", "json"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
        env=activated_env(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                          AWS_DEFAULT_REGION="us-east-1", SPARK_CONF_DIR=str(spark_conf_dir)))
    assert done.returncode == 0, done.stderr[-3000:]
    # stdout holds the summary and nothing else; streamagg's log lines are on stderr.
    (summary_line,) = [line for line in done.stdout.splitlines() if line.strip()]
    summary = json.loads(summary_line)
    assert summary["status"] == "done" and summary["totals"] == local.totals
    logged = [json.loads(line) for line in done.stderr.splitlines() if line.startswith('{"ts"')]
    assert any(r["message"].startswith("reading 2 files") for r in logged), done.stderr[-3000:]
    assert all(r["run_id"] == summary["run_id"] for r in logged)
    out = Path(day_path(DAY)) / OUTPUT_NAME
    assert (tmp_path / "spark" / out).read_bytes() == local.output


def test_stderr_is_left_alone_outside_spark_submit() -> None:
    from streamagg.spark_submit import spark_submit_stderr

    # pytest's own process: stdout and stderr are not one merged pipe under a SparkSubmit JVM.
    assert spark_submit_stderr() is None


# --- memory: the driver's heap in local mode, and a JVM that runs out of it ----------------------

GIB = 2**30


@pytest.mark.parametrize(("master", "already_set", "memory", "expected"), [
    ("local[*]", False, 24 * GIB, "6g"),
    ("local", False, 16 * GIB, "4g"),
    (" local[2] ", False, 9 * GIB, "2g"),
    ("local[4,2]", False, 64 * GIB, "16g"),
    ("local[*]", True, 24 * GIB, None),  # chosen elsewhere: spark-defaults.conf, the environment
    ("local[*]", False, 6 * GIB, None),  # a quarter is not above Spark's own 1g
    ("local[*]", False, None, None),
    ("local-cluster[2,1,1024]", False, 24 * GIB, None),  # executors are separate JVMs
    ("yarn", False, 24 * GIB, None),
    ("k8s://https://kube:6443", False, 24 * GIB, None),
    ("spark://host:7077", False, 24 * GIB, None),
])
def test_driver_memory_default_only_for_local_masters(master: str, already_set: bool,
                                                      memory: int | None,
                                                      expected: str | None) -> None:
    assert spark_engine.default_driver_memory(master, already_set, memory) == expected


@pytest.mark.parametrize(("environ", "defaults", "expected"), [
    ({}, "", False),
    ({"SPARK_DRIVER_MEMORY": "2g"}, "", True),
    ({"PYSPARK_SUBMIT_ARGS": "--driver-memory 2g pyspark-shell"}, "", True),
    ({"PYSPARK_SUBMIT_ARGS": "--conf spark.driver.memory=2g pyspark-shell"}, "", True),
    ({"PYSPARK_SUBMIT_ARGS": "--conf spark.driver.memoryOverhead=1g pyspark-shell"}, "", False),
    ({}, "spark.master local[2]\nspark.driver.memory   4g\n", True),
    ({}, "spark.driver.memory=4g\n", True),
    ({}, "# spark.driver.memory 4g\nspark.driver.memoryOverhead 1g\n", False),
])
def test_driver_memory_set_elsewhere_is_respected(environ: dict[str, str], defaults: str,
                                                  expected: bool) -> None:
    assert spark_engine.driver_memory_set(environ, defaults) is expected


def test_spark_defaults_come_from_the_conf_dir(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path))
    assert spark_engine.spark_defaults() == ""
    (tmp_path / "spark-defaults.conf").write_text("spark.driver.memory 3g\n")
    assert spark_engine.driver_memory_set({}, spark_engine.spark_defaults())


class Py4JJavaError(Exception):
    """Like py4j's: its message comes from the JVM, so str() fails once the JVM is gone."""

    __module__ = "py4j.protocol"

    def __init__(self, text: str | None) -> None:
        super().__init__()
        self.text = text

    def __str__(self) -> str:
        if self.text is None:
            raise ConnectionRefusedError(111, "Connection refused")
        return self.text


OOM_LINE = ("Spark job failed: the JVM ran out of memory (java.lang.OutOfMemoryError: Java heap "
            "space); raise spark.driver.memory")


def test_jvm_dead_of_out_of_memory_is_one_line(tmp_path: Path) -> None:
    jvm_log = tmp_path / spark_engine.JVM_ERRORS
    jvm_log.write_text("ERROR Executor: Exception in task 19.0 in stage 0.0 (TID 19)\n"
                       "java.lang.OutOfMemoryError: Java heap space\n\tat java.base/x.y(z)\n")
    with pytest.raises(StreamaggError) as caught:
        with spark_engine.spark_errors(str(jvm_log)):
            raise Py4JJavaError(None)
    assert caught.value.exit_code == 1
    assert str(caught.value).startswith(OOM_LINE) and "\n" not in str(caught.value)
    # Without the JVM's log, it still says the JVM is gone, not "ConnectionRefusedError".
    with pytest.raises(StreamaggError, match="the Spark JVM exited unexpectedly"):
        with spark_engine.spark_errors(str(tmp_path / "missing.log")):
            raise Py4JJavaError(None)


def test_connection_refused_inside_py4j_is_a_dead_jvm(tmp_path: Path) -> None:
    """Calls to a dead JVM end in a plain ConnectionRefusedError raised in py4j's code."""
    in_py4j = compile("raise ConnectionRefusedError(111, 'Connection refused')",
                      os.path.join("site-packages", "py4j", "java_gateway.py"), "exec")
    with pytest.raises(StreamaggError, match="JVM exited unexpectedly"):
        with spark_engine.spark_errors():
            exec(in_py4j)  # noqa: S102 - a frame that looks like py4j's
    with pytest.raises(ConnectionRefusedError):  # elsewhere (e.g. storage) it is not Spark's
        with spark_engine.spark_errors():
            raise ConnectionRefusedError(111, "Connection refused")


def test_task_out_of_memory_reported_by_a_live_jvm() -> None:
    text = ("An error occurred while calling o91.collectToPython.\n: org.apache.spark."
            "SparkException: Job aborted due to stage failure: Task 19 in stage 0.0 failed 1 "
            "times, most recent failure: Lost task 19.0 in stage 0.0 (TID 19) (host executor 3): "
            "java.lang.OutOfMemoryError: Java heap space\n\tat java.base/x.y(z)\n")
    assert spark_engine.failure_summary(Py4JJavaError(text)).startswith(
        "the JVM ran out of memory (java.lang.OutOfMemoryError: Java heap space); raise ")
    assert spark_engine.failure_summary(RuntimeError("")) == "RuntimeError"


def test_cli_says_out_of_memory_in_one_line(spark: SparkSession, cli: Callable[..., Any],
                                            partition: Callable[..., Path],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*args: Any) -> None:
        raise Py4JJavaError("Job aborted: java.lang.OutOfMemoryError: Java heap space\n\tat x")

    monkeypatch.setattr(spark_driver, "take_notes", crash)
    source = partition({"a.csv": H + "a,2021-01-30 10:00:00,1\n"})
    result = cli(DAY_ARG, "--source", source, "--engine", "spark", "--no-progress")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith(f"streamagg: error: {OOM_LINE}")
    assert "Traceback" not in result.output


def test_reader_hands_the_jvm_small_arrow_batches(partition: Callable[..., Path]) -> None:
    from streamagg.config import Config
    from streamagg.sources import storage_for

    rows = 2 * spark_engine.ARROW_BATCH_ROWS + 5
    source = partition({"a.csv": H + "".join(f"k{i},2021-01-30 10:00:00,1\n"
                                             for i in range(rows))})
    config = Config(day=DAY, source=str(source), chunk_size=10 * rows)
    inputs, _ = storage_for(str(source)).list_partition(day_path(DAY))
    batches = list(spark_engine.FileReader(config, inputs).read_file(storage_for(str(source)), 0))
    impressions = [b for b in batches if b.column(spark_engine.NOTE).null_count == b.num_rows]
    assert [b.num_rows for b in impressions] == [spark_engine.ARROW_BATCH_ROWS] * 2 + [5]
    assert [r for b in impressions for r in b.column(spark_engine.ROW_INDEX).to_pylist()] == list(
        range(rows))


@pytest.mark.parametrize("limit", ["100%", "3"])
def test_hostile_bad_rows_give_the_same_rejects(spark: SparkSession, partition: Callable[..., Path],
                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                limit: str) -> None:
    # Blank-looking lines before a header, a last field whose quote never closes, and bad rows
    # enough to go through BadRows' temporary files (three rows a run); a count limit stops the
    # reading on both engines at the same row.
    monkeypatch.setattr("streamagg.columns._RUN_ROWS", 3)
    flood = "".join(f"b{i},2021-01-30 10:00:00\n" if i % 2 else f"b{i},never,1\n"
                    for i in range(40))
    source = partition({"a.csv": " \t\n\ufeff\n" + H + "a,2021-01-30 10:00:00,1\n" + flood,
                        "b.csv": H + 'b,2021-01-30 11:00:00,2\nc,2021-01-30 11:00:00,"3\nd,x,4\n'})
    local, on_spark = both_engines(source, tmp_path, max_bad_rows=limit)
    assert_same(local, on_spark)
    if limit == "100%":
        assert local.rejects is not None and b"unterminated quote opened on line 3" in local.rejects
        assert local.totals["bad_rows"] == 41
    else:
        assert local.exit_code == 4


def test_the_jvms_stderr_becomes_log_records_at_their_own_level() -> None:
    import logging

    from streamagg.engines.spark import jvm

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("streamagg")
    keep, level = Keep(), logger.level
    logger.addHandler(keep)
    logger.setLevel(logging.DEBUG)
    read_end, write_end = os.pipe()
    os.write(write_end, b"WARNING: Using incubator modules: jdk.incubator.vector\n"
                        b"WARN TaskSetManager: Lost task 0.0\n\tat org.apache.Spark(x.java:1)\n"
                        b"\nERROR Executor: caf\xc3\xa9 \xff\n"
                        b"Exception in thread \"main\"\n")
    os.close(write_end)
    try:
        jvm.forward_lines(read_end)  # returns at the pipe's end, as when the JVM exits
    finally:
        logger.removeHandler(keep)
        logger.setLevel(level)
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.DEBUG, "spark: WARNING: Using incubator modules: jdk.incubator.vector"),
        (logging.WARNING, "spark: WARN TaskSetManager: Lost task 0.0"),
        (logging.WARNING, "spark: \tat org.apache.Spark(x.java:1)"),
        (logging.ERROR, "spark: ERROR Executor: caf\u00e9 \ufffd"),
        (logging.WARNING, 'spark: Exception in thread "main"'),
    ]
