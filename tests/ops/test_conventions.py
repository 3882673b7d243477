"""The conventions of a good CLI: a usage line, --quiet and --verbose, grouped help with
examples and exit codes, one voice for messages, one timestamp format, stop signals."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from streamagg.ops import command
from tests.conftest import DAY, DAY_ARG, OUTPUT_NAME, day_path
from tests.ops.helpers import GOOD, MIXED, assert_ok, lines

Cli = Callable[..., Result]
TIMESTAMP = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z"


def test_a_bare_command_prints_a_usage_line_and_points_at_help(cli: Cli) -> None:
    result = cli()
    assert result.exit_code == 2
    assert lines(result.output) == [
        "streamagg: error: missing DATE (usage: streamagg DATE [OPTIONS], e.g. streamagg "
        "2021-01-30 --source ./data); try streamagg --help"]


def test_quiet_keeps_stderr_silent_on_a_clean_run(cli: Cli, partition: Callable[..., Path]
                                                  ) -> None:
    source = partition({"a.csv": GOOD, "b.csv": GOOD})
    for quiet in ("-q", "--quiet"):
        result = cli(DAY_ARG, "--source", source, quiet)
        assert_ok(result)
        assert result.stderr == ""
        # The summary still goes to stdout.
        assert f"wrote {source / 'results' / day_path(DAY) / OUTPUT_NAME}" in result.stdout
        assert "impressions  2" in result.stdout
    # Warnings and errors still show.
    partition({"b.csv": GOOD.replace("a,", ",")})
    bad = cli(DAY_ARG, "--source", source, "-q", "--max-bad-rows", "0")
    assert bad.exit_code == 4 and lines(bad.stderr)[-1].startswith("streamagg: error: ")
    assert len(lines(bad.stderr)) == 1, bad.stderr


def test_verbose_adds_a_line_per_file_which_the_default_leaves_out(
        cli: Cli, partition: Callable[..., Path]) -> None:
    source = partition({"a.csv": GOOD, "b.csv": GOOD})
    folder = source / day_path(DAY)
    default = cli(DAY_ARG, "--source", source)
    assert_ok(default)
    assert not [line for line in lines(default.stderr) if " read " in line], default.stderr
    verbose = cli(DAY_ARG, "--source", source, "-v")
    assert_ok(verbose)
    read = [line for line in lines(verbose.stderr) if re.search(r" DEBUG read ", line)]
    assert [line.split(" read ")[1] for line in read] == [str(folder / "a.csv"),
                                                          str(folder / "b.csv")]
    both = cli(DAY_ARG, "--source", source, "-q", "-v")
    assert both.exit_code == 2 and "contradict" in both.stderr


def test_help_groups_the_options_and_ends_with_examples_and_exit_codes(cli: Cli) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    text = result.output
    headings = [line.rstrip(":") for line in text.splitlines()
                if line and not line.startswith(" ") and line.endswith(":")]
    assert headings == ["Input", "Output", "Memory and speed", "Engine", "Scheduling",
                        "Messages", "Other"]
    sections = re.split(r"\n(?=\S[^\n]*:\n)", text)
    where = {section.split(":", 1)[0]: section for section in sections}
    assert "--source" in where["Input"] and "--dest" in where["Output"]
    assert "--memory-limit" in where["Memory and speed"] and "--engine" in where["Engine"]
    assert "--to LAST_DATE" in where["Scheduling"] and "-q, --quiet" in where["Messages"]
    flat = " ".join(text.split())
    assert "run DATE, then each following day up to and including LAST_DATE" in flat
    assert "streamagg 2021-01-01 --to 2021-01-31" in text
    for code in ("0 ", "2 ", "3 ", "4 ", "1 ", "130 ", "143 ", "129 "):
        assert re.search(rf"(^|\s){code}", text.split("Exit status:")[1]), code
    # Defaults come from Config, with thousands separators.
    assert "[default: 100,000]" in flat and "[default: 1%]" in flat
    assert "[default: 256MB, or 3/4 of the container's memory limit if smaller]" in flat


@pytest.mark.parametrize(("args", "expected"), [
    (["--frobnicate"], "streamagg: error: no such option --frobnicate"),
    (["--engine", "flink"], "streamagg: error: invalid value for --engine: 'flink' is not one "
                            "of 'local', 'spark'"),
    (["--source"], "streamagg: error: option --source requires an argument"),
    (["--chunk-size", "ten"], "streamagg: error: invalid --chunk-size 'ten': expected a whole "
                              "number from 1 to 9,223,372,036,854,775,807"),
])
def test_one_voice_for_click_and_streamagg_errors(cli: Cli, args: list[str], expected: str
                                                  ) -> None:
    result = cli(DAY_ARG, *args)
    assert result.exit_code == 2
    assert lines(result.output) == [expected]


def test_counts_read_as_people_write_them(cli: Cli, partition: Callable[..., Path]) -> None:
    source = partition({"a.csv": MIXED.splitlines(keepends=True)[0]
                        + "".join(f"i{n},2021-01-30 10:00:00,1\n" for n in range(1234))})
    result = cli(DAY_ARG, "--source", source)
    assert_ok(result)
    assert re.search(rf"^{TIMESTAMP} INFO reading 1 file \(", result.stderr, re.M), result.stderr
    assert "rows read    1,234" in result.stdout and "1 file," in result.stdout
    logged = [line for line in lines(result.stderr)]
    assert all(re.match(rf"{TIMESTAMP} (INFO|WARNING) ", line) for line in logged), logged
    assert "1,234 impressions from 1,234 rows" in result.stderr


def test_one_timestamp_format_in_logs_and_messages(cli: Cli, partition: Callable[..., Path]
                                                   ) -> None:
    source = partition({"a.csv": GOOD})
    assert_ok(cli(DAY_ARG, "--source", source))
    checked = cli(DAY_ARG, "--source", source, "--check")
    assert_ok(checked)
    assert re.search(rf"the run that finished {TIMESTAMP}; output present", checked.stdout), \
        checked.stdout
    as_json = cli(DAY_ARG, "--source", source, "--log-format", "json")
    stamps = [json.loads(line)["ts"] for line in lines(as_json.stderr)]
    # The JSON records' time is the same format, to the millisecond.
    assert stamps and all(re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", s)
                          for s in stamps), stamps


def test_a_sighup_already_ignored_stays_ignored() -> None:
    # nohup: the operator asked for the run to outlive the terminal.
    before_hup, before_term = signal.getsignal(signal.SIGHUP), signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        command.stop_on_signals()
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is not before_term
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        command.stop_on_signals()
        assert callable(signal.getsignal(signal.SIGHUP))
        assert command.stop_line(command.Stopped(signal.SIGHUP)) == (
            "terminated by SIGHUP (the terminal closed)", 129)
    finally:
        signal.signal(signal.SIGHUP, before_hup)
        signal.signal(signal.SIGTERM, before_term)
