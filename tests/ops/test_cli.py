"""The command line: exit statuses with one clear line each, dry runs, environment defaults."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from tests.conftest import DAY, DAY_ARG, MANIFEST_NAME, OUTPUT_NAME, REJECTS_NAME, day_path
from tests.reference import expected_for

H = "IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\n"
GOOD = H + "a,2021-01-30 10:00:00,1\nb,2021-01-30 11:00:00,2\n"

Cli = Callable[..., Result]


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def assert_failed(result: Result, code: int, *mentions: str) -> str:
    """Exit `code`, no traceback, and a last line on stderr that names every mention."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    message = lines(result.stderr)[-1] if lines(result.stderr) else ""
    for mention in mentions:
        assert mention in message, message
    return message


def written(root: Path) -> list[str]:
    return (
        sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        if root.exists()
        else []
    )


def test_success(cli: Cli, partition: Callable[..., Path]) -> None:
    source = partition({"a.csv": GOOD})
    result = cli(DAY_ARG, "--source", source)
    assert result.exit_code == 0, result.output
    output = source / "results" / day_path(DAY) / OUTPUT_NAME
    assert output.read_bytes() == expected_for(source, DAY).output
    assert str(output) in result.stdout
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "mention"),
    [
        (["2021-02-30"], "2021-02-30"),
        (["2021-1-30"], "2021-1-30"),
        (["30-01-2021"], "30-01-2021"),
        (["2021-01-30x"], "2021-01-30x"),
        ([DAY_ARG, "--initials", "A1"], "A1"),
        ([DAY_ARG, "--initials", "ABCDEFGHI"], "ABCDEFGHI"),
        ([DAY_ARG, "--initials", "\u00c9A"], "initials"),
        ([DAY_ARG, "--initials", ""], "initials"),
        ([DAY_ARG, "--chunk-size", "0"], "chunk-size"),
        ([DAY_ARG, "--chunk-size", "ten"], "chunk-size"),
        ([DAY_ARG, "--memory-limit", "lots"], "lots"),
        ([DAY_ARG, "--memory-limit", "1KB"], "memory"),
        ([DAY_ARG, "--dedupe", "bloom"], "bloom"),
        ([DAY_ARG, "--engine", "flink"], "flink"),
        ([DAY_ARG, "--max-bad-rows", "-1"], "-1"),
        ([DAY_ARG, "--max-bad-rows", "150%"], "150%"),
        ([DAY_ARG, "--max-bad-rows", "some"], "some"),
        ([DAY_ARG, "--log-format", "xml"], "xml"),
        ([DAY_ARG, "--frobnicate"], "--frobnicate"),
        ([], "DATE"),
    ],
)
def test_bad_usage_exits_2_and_reads_nothing(
    cli: Cli, partition: Callable[..., Path], args: list[str], mention: str
) -> None:
    source = partition({"a.csv": GOOD})
    result = cli(*args, "--source", source)
    assert_failed(result, 2, mention)
    assert len(lines(result.output)) == 1, result.output
    assert not (source / "results").exists()


def test_unknown_engine_names_the_choices(cli: Cli, partition: Callable[..., Path]) -> None:
    source = partition({"a.csv": GOOD})
    message = assert_failed(cli(DAY_ARG, "--source", source, "--engine", "flink"), 2, "flink")
    assert "local" in message and "spark" in message


@pytest.mark.parametrize(
    "files",
    [None, {}, {"_SUCCESS": "", "notes.txt": GOOD, ".hidden.csv": GOOD}],
    ids=["no-folder", "empty-folder", "only-ignored-files"],
)
def test_no_inputs_exits_3(
    cli: Cli, partition: Callable[..., Path], tmp_path: Path, files: dict[str, str] | None
) -> None:
    source = partition(files) if files is not None else tmp_path / "source"
    source.mkdir(exist_ok=True)  # an existing root without the day (a missing root is exit 2)
    (source / "2021" / "01" / "29").mkdir(parents=True, exist_ok=True)  # (one of no days: 2)
    result = cli(DAY_ARG, "--source", source)
    message = assert_failed(result, 3, str(source / day_path(DAY)))
    assert "input" in message.lower()
    # One error line; a visible file that is not input is named in a warning before it.
    assert [line for line in lines(result.stderr) if "error" in line] == [message]
    assert all(" WARNING " in line and "notes.txt" in line
               for line in lines(result.stderr)[:-1]), result.stderr
    assert not (source / "results").exists()


def test_missing_column_exits_4_naming_file_and_column(
    cli: Cli, partition: Callable[..., Path]
) -> None:
    source = partition({"a.csv": GOOD})
    assert cli(DAY_ARG, "--source", source).exit_code == 0
    out = source / "results" / day_path(DAY)
    before = {name: (out / name).read_bytes() for name in (OUTPUT_NAME, MANIFEST_NAME)}
    partition({"b.csv": "IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAING_ID\n1,2021-01-30 10:00:00,3\n"})
    result = cli(DAY_ARG, "--source", source)
    assert_failed(result, 4, "b.csv", "CAMPAIGN_ID")
    # Nothing written: the earlier result stands, byte for byte.
    assert {name: (out / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in out.iterdir()) == sorted(before)


def bad_day(partition: Callable[..., Path], good: int, bad: int) -> Path:
    rows = [f"g{i},2021-01-30 10:00:00,1\n" for i in range(good)]
    rows += [f"b{i},not a time,1\n" for i in range(bad)]
    return partition({"a.csv": H + "".join(rows)})


@pytest.mark.parametrize(
    ("good", "bad", "limit", "code"),
    [
        (9, 1, "0", 4),
        (9, 1, "1", 0),
        (8, 2, "1", 4),
        (8, 2, "10%", 4),  # 2 > 10% of 10 rows read
        (8, 2, "20%", 0),  # 2 is not more than 20% of 10
        (99, 1, None, 0),  # default 1%: 1 of 100 is allowed
        (98, 2, None, 4),
        (0, 3, "100%", 0),
    ],
)
def test_bad_row_limit(
    cli: Cli, partition: Callable[..., Path], good: int, bad: int, limit: str | None, code: int
) -> None:
    source = bad_day(partition, good, bad)
    args = ["--max-bad-rows", limit] if limit is not None else []
    result = cli(DAY_ARG, "--source", source, *args)
    out = source / "results"
    if code == 0:
        assert result.exit_code == 0, result.output
        assert (out / day_path(DAY) / REJECTS_NAME).exists()
    else:
        message = assert_failed(result, 4, "a.csv")
        assert "bad" in message.lower()
        assert written(out) == []


def test_too_many_bad_rows_keeps_earlier_result(cli: Cli, partition: Callable[..., Path]) -> None:
    source = partition({"a.csv": GOOD})
    assert cli(DAY_ARG, "--source", source).exit_code == 0
    before = {
        name: p.read_bytes()
        for name, p in ((p.name, p) for p in (source / "results").rglob("*") if p.is_file())
    }
    partition({"b.csv": H + "x,never,1\n"})
    assert_failed(cli(DAY_ARG, "--source", source, "--max-bad-rows", "0"), 4, "b.csv")
    after = {p.name: p.read_bytes() for p in (source / "results").rglob("*") if p.is_file()}
    assert after == before


def test_storage_error_exits_1(cli: Cli, partition: Callable[..., Path], tmp_path: Path) -> None:
    source = partition({"a.csv": GOOD})
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the dest folder should be")
    result = cli(DAY_ARG, "--source", source, "--dest", blocker / "results")
    assert_failed(result, 1, str(blocker))
    assert blocker.read_text() == "a file where the dest folder should be"


def test_dry_run_lists_and_writes_nothing(
    cli: Cli, partition: Callable[..., Path], tmp_path: Path
) -> None:
    source = partition({"b.csv": GOOD, "sub/a.csv.gz": GOOD, "_SUCCESS": "", "x.txt": "no"})
    dest = tmp_path / "dest"
    result = cli(DAY_ARG, "--source", source, "--dest", dest, "--dry-run")
    assert result.exit_code == 0, result.output
    folder = source / day_path(DAY)
    shown = result.stdout
    assert str(folder / "b.csv") in shown and str(folder / "sub/a.csv.gz") in shown
    assert "_SUCCESS" not in shown and "x.txt" not in shown
    assert shown.index(str(folder / "b.csv")) < shown.index(str(folder / "sub/a.csv.gz"))
    assert str(dest / day_path(DAY) / OUTPUT_NAME) in shown
    assert not dest.exists()
    assert written(source) == [
        "2021/01/30/_SUCCESS",
        "2021/01/30/b.csv",
        "2021/01/30/sub/a.csv.gz",
        "2021/01/30/x.txt",
    ]


def test_environment_defaults(
    cli: Cli, partition: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = partition({"a.csv": GOOD})
    monkeypatch.setenv("STREAMAGG_SOURCE", str(source))
    monkeypatch.setenv("STREAMAGG_DEST", str(tmp_path / "env-dest"))
    monkeypatch.setenv("STREAMAGG_INITIALS", "EnV")
    result = cli(DAY_ARG)
    assert result.exit_code == 0, result.output
    output = tmp_path / "env-dest" / day_path(DAY) / "daily_agg_20210130_EnV.csv"
    assert output.read_bytes() == expected_for(source, DAY).output
    # Options win over the environment.
    result = cli(DAY_ARG, "--dest", tmp_path / "opt-dest", "--initials", "OPT")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "opt-dest" / day_path(DAY) / "daily_agg_20210130_OPT.csv").exists()


def test_bad_initials_from_environment_exit_2(
    cli: Cli, partition: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = partition({"a.csv": GOOD})
    monkeypatch.setenv("STREAMAGG_INITIALS", "A1")
    assert_failed(cli(DAY_ARG, "--source", source), 2, "A1")


def test_default_source_is_data_in_working_dir(
    cli: Cli, partition: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    partition({"a.csv": GOOD}, root=tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    result = cli(DAY_ARG)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "data" / "results" / day_path(DAY) / OUTPUT_NAME).exists()


def test_tmp_dir_is_cleaned_on_success_and_failure(
    cli: Cli, partition: Callable[..., Path], tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    source = partition({"a.csv": GOOD})
    for dedupe in ("spill", "sqlite"):
        result = cli(DAY_ARG, "--source", source, "--tmp-dir", work, "--dedupe", dedupe)
        assert result.exit_code == 0, result.output
        assert list(work.iterdir()) == []
    partition({"b.csv": H + "x,never,1\n"})
    for dedupe in ("spill", "sqlite"):
        result = cli(
            DAY_ARG,
            "--source",
            source,
            "--tmp-dir",
            work,
            "--dedupe",
            dedupe,
            "--max-bad-rows",
            "0",
        )
        assert result.exit_code == 4, result.output
        assert list(work.iterdir()) == []


def test_json_logs(cli: Cli, partition: Callable[..., Path]) -> None:
    source = partition({"a.csv": GOOD})
    result = cli(DAY_ARG, "--source", source, "--log-format", "json")
    assert result.exit_code == 0, result.output
    for line in lines(result.stderr):
        assert isinstance(json.loads(line), dict), line
    summary = json.loads(lines(result.stdout)[-1])
    assert summary["totals"]["impressions"] == 2


def test_python_dash_m(partition: Callable[..., Path]) -> None:
    source = partition({"a.csv": GOOD})
    done = subprocess.run(
        [sys.executable, "-m", "streamagg", DAY_ARG, "--source", str(source)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (source / "results" / day_path(DAY) / OUTPUT_NAME).exists()
    bad = subprocess.run(
        [sys.executable, "-m", "streamagg", "2021-02-30", "--source", str(source)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2
    assert lines(bad.stderr) == [lines(bad.stderr)[-1]] and "2021-02-30" in bad.stderr


def test_dest_inside_the_partition_is_refused(cli: Cli, partition: Callable[..., Path]) -> None:
    # Its output would be read back as input by the next run.
    source = partition({"a.csv": GOOD})
    inside = source / day_path(DAY) / "out"
    assert_failed(cli(DAY_ARG, "--source", source, "--dest", inside), 2)
    assert not inside.exists()


def test_trailing_slash_on_source(cli: Cli, partition: Callable[..., Path]) -> None:
    source = partition({"a.csv": GOOD})
    result = cli(DAY_ARG, "--source", f"{source}/")
    assert result.exit_code == 0, result.output
    assert (source / "results" / day_path(DAY) / OUTPUT_NAME).exists()


def test_progress_bar_does_not_change_the_result(cli: Cli, partition: Callable[..., Path]) -> None:
    source = partition({"a.csv": GOOD, "b.csv": GOOD})
    result = cli(DAY_ARG, "--source", source, "--progress")
    assert result.exit_code == 0, result.output
    output = source / "results" / day_path(DAY) / OUTPUT_NAME
    assert output.read_bytes() == expected_for(source, DAY).output
    assert cli(DAY_ARG, "--source", source, "--no-progress").exit_code == 0
