"""Fuzzing the command's option values: any of them ends in exit 0 to 4 with at most one error
line, never a traceback, a crash or an "unexpected error"; plus each shape once seen."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from hypothesis import example, given
from hypothesis import strategies as st

from streamagg.config import LARGEST
from streamagg.errors import UsageError
from streamagg.ops.cli import main
from tests.conftest import DAY, DAY_ARG, MANIFEST_NAME, day_path, to_bytes
from tests.fuzzing import fuzz_settings
from tests.ops.helpers import MIXED, H
from tests.reference import expected_for

# A day that reaches every stage: duplicates, bad rows (under the default 1%), a row outside
# the day, a gzip file.
FILES = {"a.csv": MIXED, "b.csv.gz": H + "z,2021-01-30 23:59:59,7\n",
         "c.csv": H + "".join(f"c{i},2021-01-30 {i % 24:02d}:00:00,{i % 5}\n" for i in range(300))}
HOSTILE = ["", " ", "-", "--", "0", "-1", "nan", "inf", "1e400", "%", "9" * 400,
           str(2**63), str(2**64), str(LARGEST), "\x00", "a\nb", "\x1b[31m", "\ud800",
           "\u0663", "1_000", "s3", "file:///nonexistent", "..", "/", "~", "a/" * 2100,
           "\udcff"]
# Options that take a value, as the command declares them, and what each is fed besides the
# hostile values: text close to valid, so that many examples get as far as a real run.
NEAR_VALID = {
    "--chunk-size": st.one_of(st.integers(1, 2**64).map(str), st.sampled_from(["1", "7"])),
    "--memory-limit": st.one_of(
        st.integers(0, 2**66).map(str),
        st.builds("{}{}".format, st.decimals(0, 10**6, places=3, allow_nan=False),
                  st.sampled_from(["", "B", "K", "KB", "MB", "MiB", "GB", "TB", "tb"]))),
    "--max-bad-rows": st.one_of(st.integers(-1, 2**64).map(str),
                                st.builds("{}%".format, st.floats(-1, 200))),
    "--initials": st.text(st.characters(min_codepoint=0x20, max_codepoint=0x17F), max_size=10),
    "--dedupe": st.sampled_from(["spill", "sqlite", "bloom"]),
    "--log-format": st.sampled_from(["text", "json", "xml"]),
    "--to": st.sampled_from(["2021-01-30", "2021-01-31", "2021-01-29", "2021-02-30",
                             "2262-04-12"]),
    "--spark-env": st.sampled_from(["auto", "none", "env.tar.gz", "env.zip"]),
}
VALUE_OPTIONS = sorted(opt for param in main.params if isinstance(param, click.Option)
                       and not param.is_flag and not param.count for opt in param.opts
                       if opt.startswith("--") and opt not in ("--progress", "--no-progress"))
FLAGS = ["--dry-run", "--keep-going", "--skip-unchanged", "--check", "--incremental", "-q",
         "-v", "--no-progress", "--progress"]


PATH_OPTIONS = ("--source", "--dest", "--state", "--tmp-dir")


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The folder the runs start in, holding the day below the default source, ./data."""
    root = tmp_path_factory.mktemp("fuzz-cli")
    folder = root / "data" / day_path(DAY)
    folder.mkdir(parents=True)
    for name, content in FILES.items():
        (folder / name).write_bytes(to_bytes(name, content))
    (root / "work").mkdir()
    yield root


def inside(value: str) -> str:
    """A path option's value kept below the run's folder, whatever its characters: nothing
    absolute, no way up, no S3 (the fuzzer must not write to / nor reach the network)."""
    parts = value.replace("://", "_").replace("\\", "/").split("/")
    return "/".join(p for p in parts if p not in ("", ".", "..", "~")) or "."


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    # Mostly values a run takes, so that most examples reach a real run; hostile ones besides.
    usual = draw(st.integers(0, 9)) < 7
    dates = st.one_of(st.text(max_size=12), st.sampled_from(
        ["2021-01-31", "2021-02-29", "1677-09-21", "30-01-2021", "2021-01-30T00:00"]))
    args: list[str] = [DAY_ARG if usual else draw(dates)]
    for _ in range(draw(st.integers(0, 3))):
        option = draw(st.sampled_from(VALUE_OPTIONS))
        values = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=12))
        usual = draw(st.integers(0, 9)) < 7
        if usual and option in NEAR_VALID:
            values = NEAR_VALID[option]
        elif usual and option in PATH_OPTIONS:
            values = st.sampled_from(["data", "out", "work", "state", "d\u00e9j\u00e0 vu"])
        value = draw(values)
        args += [option, inside(value) if option in PATH_OPTIONS else value]
    args += draw(st.lists(st.sampled_from(FLAGS), max_size=2, unique=True))
    return args


def run(day: Path, args: list[str]) -> Result:
    """The command in ``day``'s folder; never on Spark (seconds of JVM an example)."""
    with contextlib.chdir(day):
        return CliRunner().invoke(main, [*args, "--engine", "local"])


def assert_one_clear_ending(result: Result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        repr(result.exception), result.output)
    assert 0 <= result.exit_code <= 4, (result.exit_code, result.output)
    assert "Traceback" not in result.output and "unexpected error" not in result.output, \
        result.output
    errors = [line for line in result.stderr.splitlines()
              if line.startswith("streamagg: error:")
              or (line.startswith("{") and json.loads(line).get("level") == "error")]
    if result.exit_code:
        assert len(errors) == 1 and result.stderr.splitlines()[-1] in errors, result.stderr
    else:
        assert errors == [], result.stderr


@pytest.mark.fuzz
@fuzz_settings(60)
@given(args=command_lines())
@example(args=[DAY_ARG, "--chunk-size", str(2**63)])
@example(args=[DAY_ARG, "--chunk-size", str(LARGEST), "--memory-limit", str(LARGEST)])
@example(args=[DAY_ARG, "--memory-limit", "9" * 400])
@example(args=[DAY_ARG, "--memory-limit", "9" * 400 + "TB", "--log-format", "json"])
@example(args=[DAY_ARG, "--max-bad-rows", "9" * 5000])
@example(args=[DAY_ARG, "--initials", "\ud800"])
@example(args=[DAY_ARG, "--state", "9" * 400])  # longer than a file name can be
@example(args=[DAY_ARG, "--dest", "\ud800"])  # no file name holds a lone surrogate
def test_any_option_value_ends_in_one_clear_line(day: Path, args: list[str]) -> None:
    if "--to" in args and "--dry-run" not in args and "--check" not in args:
        args = [*args, "--dry-run"]  # a backfill of real days stays a listing: seconds, not hours
    assert_one_clear_ending(run(day, args))


@pytest.mark.parametrize(("args", "mention"), [
    (["--chunk-size", str(2**63)], "--chunk-size"),
    (["--chunk-size", str(2**70)], "--chunk-size"),
    (["--memory-limit", "9" * 400], "--memory-limit"),
    (["--memory-limit", "8388608TB"], "--memory-limit"),
])
def test_values_beyond_what_the_run_holds_are_bad_usage(day: Path, args: list[str],
                                                        mention: str) -> None:
    result = run(day, [DAY_ARG, *args])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"streamagg: error: invalid {mention} ") and len(line) < 200, line


def test_the_largest_values_the_run_holds_run(day: Path) -> None:
    for dedupe in ("spill", "sqlite"):
        result = run(day, [DAY_ARG, "--chunk-size", str(LARGEST), "--memory-limit",
                           str(LARGEST), "--max-bad-rows", str(LARGEST), "--dedupe", dedupe,
                           "--dest", "largest"])
        assert result.exit_code == 0, result.output
        manifest = json.loads((day / "largest" / day_path(DAY) / MANIFEST_NAME).read_text())
        assert manifest["totals"] == expected_for(day / "data", DAY).totals
        assert manifest["parameters"]["chunk_size"] == LARGEST


def test_an_s3_rate_of_400_nines_is_bad_usage(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamagg.sources.s3_reads import MIN_RATE_VARIABLE, Pace

    monkeypatch.setenv(MIN_RATE_VARIABLE, "9" * 400)
    with pytest.raises(UsageError) as info:
        Pace.from_environment()
    assert info.value.exit_code == 2 and MIN_RATE_VARIABLE in str(info.value)


def test_an_airflow_logical_date_is_its_day(day: Path) -> None:
    from streamagg import Config, run_day

    logical_date = dt.datetime(2021, 1, 30, 0, 0, tzinfo=dt.UTC)
    report = run_day(Config(day=logical_date, source=str(day / "data"),
                            dest=str(day / "airflow"), max_bad_rows="50%"))
    assert report.config.day == DAY
    assert report.totals == expected_for(day / "data", DAY).totals
