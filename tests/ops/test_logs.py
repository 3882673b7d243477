"""Log lines: JSON objects sharing one run id; errors in the run's format; the summary."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from streamagg.ops import logs
from tests.conftest import DAY, DAY_ARG, MANIFEST_NAME, OUTPUT_NAME, REJECTS_NAME, day_path
from tests.ops.helpers import GOOD, MIXED, assert_ok, lines

Cli = Callable[..., Result]


def json_lines(text: str) -> list[dict[str, object]]:
    parsed = [json.loads(line) for line in lines(text)]
    assert all(isinstance(p, dict) for p in parsed)
    return parsed


def test_json_lines_parse_and_share_the_run_id(cli: Cli, partition: Callable[..., Path]) -> None:
    source = partition({"a.csv": MIXED, "b.csv.gz": GOOD})
    result = cli(DAY_ARG, "--source", source, "--log-format", "json", "--max-bad-rows", "50%",
                 "-v")
    assert_ok(result)
    records = json_lines(result.stderr)
    summary = json_lines(result.stdout)
    assert len(summary) == 1
    run_ids = {r["run_id"] for r in records} | {summary[0]["run_id"]}
    assert len(run_ids) == 1 and len(next(iter(run_ids))) == 12  # type: ignore[arg-type]
    for record in records:
        assert {"ts", "level", "run_id", "message"} <= record.keys()
        assert str(record["ts"]).endswith("Z") and record["level"] in ("info", "debug")
        assert record["day"] == DAY_ARG
    files = [r for r in records if "file" in r]
    folder = source / day_path(DAY)
    assert [r["file"] for r in files] == [str(folder / "a.csv"), str(folder / "b.csv.gz")]
    done = [r for r in records if r.get("status") == "done"]
    assert len(done) == 1 and done[0]["impressions"] == 4 and done[0]["bad_rows"] == 2
    # The summary: everything the text summary says, as fields.
    facts = summary[0]
    assert facts["status"] == "done" and facts["day"] == DAY_ARG
    assert facts["output"] == str(source / "results" / day_path(DAY) / OUTPUT_NAME)
    assert facts["totals"] == {"rows_read": 9, "bad_rows": 2, "duplicates": 3,
                               "conflicting_duplicates": 1, "outside_day": 1, "empty_files": 0,
                               "output_rows": 3, "impressions": 4}
    assert facts["inputs"] == 2 and facts["peak_memory_bytes"] > 0  # type: ignore[operator]
    assert str(facts["rejects"]).endswith(REJECTS_NAME)
    assert str(facts["manifest"]).endswith(MANIFEST_NAME)


def test_two_runs_have_different_run_ids(cli: Cli, partition: Callable[..., Path]) -> None:
    source = partition({"a.csv": GOOD})
    first = cli(DAY_ARG, "--source", source, "--log-format", "json")
    second = cli(DAY_ARG, "--source", source, "--log-format", "json")
    assert json_lines(first.stdout)[0]["run_id"] != json_lines(second.stdout)[0]["run_id"]


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--chunk-size", "0"], 2),  # refused by the option parser, before logging is set up
        (["--initials", "A1"], 2),  # refused by the configuration
        (["--max-bad-rows", "0"], 4),  # found while reading
    ],
)
def test_errors_are_one_json_line_in_json_mode(
    cli: Cli, partition: Callable[..., Path], args: list[str], code: int
) -> None:
    source = partition({"a.csv": MIXED})
    result = cli(DAY_ARG, "--source", source, "--log-format", "json", *args)
    assert result.exit_code == code, result.output
    records = json_lines(result.stderr)
    last = records[-1]
    assert last["level"] == "error" and last["exit_code"] == code
    assert len({r["run_id"] for r in records}) == 1
    assert result.stdout == ""


def test_errors_stay_one_text_line_in_text_mode(cli: Cli, partition: Callable[..., Path]) -> None:
    source = partition({"a.csv": GOOD})
    json_run = cli(DAY_ARG, "--source", source, "--log-format", "json")
    assert_ok(json_run)
    # A JSON run earlier in the same process must not change how the next run's errors look.
    result = cli(DAY_ARG, "--source", source, "--chunk-size", "0")
    assert result.exit_code == 2
    assert lines(result.stderr) == [lines(result.stderr)[-1]]
    assert lines(result.stderr)[-1].startswith("streamagg: error: ")


def test_text_summary_at_a_glance(cli: Cli, partition: Callable[..., Path]) -> None:
    source = partition({"a.csv": MIXED})
    result = cli(DAY_ARG, "--source", source, "--max-bad-rows", "50%")
    assert_ok(result)
    out = result.stdout
    for expected in ("wrote ", OUTPUT_NAME, "inputs       1 file,", "rows read    7",
                     "bad rows     2 (28.57%) -> ", REJECTS_NAME,
                     "duplicates   2 (1 with a different campaign)",
                     "impressions  3 (1 outside the day)", "output rows  3", "peak memory",
                     "manifest     ", MANIFEST_NAME):
        assert expected in out, (expected, out)


def test_json_formatter_adds_context_and_extra_fields() -> None:
    logs.setup("json", "abc123abc123")
    record = logging.LogRecord("streamagg", logging.WARNING, __file__, 1, "hello %s", ("you",),
                               None)
    record.file = "s3://b/k.csv"
    with logs.context(day="2021-01-30"):
        payload = json.loads(logs.JsonFormatter().format(record))
    assert payload["message"] == "hello you" and payload["level"] == "warning"
    assert payload["run_id"] == "abc123abc123"
    assert payload["day"] == "2021-01-30" and payload["file"] == "s3://b/k.csv"
    after = json.loads(logs.JsonFormatter().format(record))
    assert "day" not in after


def test_format_from_args() -> None:
    assert logs.format_from_args(["2021-01-30", "--log-format", "json"]) == "json"
    assert logs.format_from_args(["--log-format=json"]) == "json"
    assert logs.format_from_args(["2021-01-30"]) == "text"


def test_summary_warns_when_the_peak_passed_the_memory_limit(
        cli: Cli, partition: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from streamagg import pipeline

    source = partition({"a.csv": GOOD})
    # A measured peak of 132 MiB, as a fresh clone showed under --memory-limit 128MB.
    monkeypatch.setattr(pipeline, "peak_memory_bytes", lambda: 132 * 2**20)
    text = cli(DAY_ARG, "--source", source, "--memory-limit", "128MB")
    assert_ok(text)
    assert ("  warning      peak memory 132.0 MiB passed --memory-limit 128.0 MiB; limits below "
            "192MB hold only on some machines") in text.stdout, text.stdout
    as_json = cli(DAY_ARG, "--source", source, "--memory-limit", "128MB", "--log-format", "json")
    assert_ok(as_json)
    summary = json_lines(as_json.stdout)[-1]
    assert summary["peak_memory_bytes"] == 132 * 2**20
    assert summary["memory_limit_bytes"] == 128 * 2**20
    assert summary["warnings"] == [
        "peak memory 132.0 MiB passed --memory-limit 128.0 MiB; limits below 192MB hold only on "
        "some machines (README, Memory)"]


def test_no_memory_warning_within_the_limit(cli: Cli, partition: Callable[..., Path],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from streamagg import pipeline

    source = partition({"a.csv": GOOD})
    monkeypatch.setattr(pipeline, "peak_memory_bytes", lambda: 200 * 2**20)
    text = cli(DAY_ARG, "--source", source, "--memory-limit", "256MB")
    assert_ok(text)
    assert "  warning  " not in text.stdout and "passed --memory-limit" not in text.stdout
    as_json = cli(DAY_ARG, "--source", source, "--memory-limit", "256MB", "--log-format", "json")
    assert json_lines(as_json.stdout)[-1]["warnings"] == []


def test_help_gives_the_memory_limit_the_readme_meaning(cli: Cli) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    flat = " ".join(result.output.split())
    assert "Target for the peak resident memory of the whole process" in flat, flat
    assert "Working-set" not in flat
