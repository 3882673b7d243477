"""Once the manifest is published the day is done: stdout or stderr failing afterwards (a full
disk, a closed pipe) is a warning, never a failed run. Real processes, real file descriptors."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import DAY, DAY_ARG, MANIFEST_NAME, day_path
from tests.ops.helpers import GOOD, lines

pytestmark = pytest.mark.slow
DEV_FULL = Path("/dev/full")
WARNING = "the results are published, but cannot write to stdout"


@pytest.fixture
def closed_pipe() -> Iterator[int]:
    """The write end of a pipe whose reader is gone (``streamagg ... | true``)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    yield write_end
    os.close(write_end)


def run(args: list[str], *, stdout: int, stderr: int | None = subprocess.PIPE
        ) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "streamagg", *args], stdout=stdout,
                          stderr=stderr, text=True, timeout=120, check=False)
    return done.returncode, done.stderr or ""


def published(source: Path, day: dt.date = DAY) -> dict[str, object]:
    name = MANIFEST_NAME.replace(f"{DAY:%Y%m%d}", f"{day:%Y%m%d}")
    manifest: dict[str, object] = json.loads(
        (source / "results" / day_path(day) / name).read_text())
    return manifest


needs_dev_full = pytest.mark.skipif(not DEV_FULL.exists(), reason="no /dev/full here")


@needs_dev_full
def test_stdout_on_a_full_disk_after_publishing_is_exit_0_and_a_warning(
        partition: Callable[..., Path]) -> None:
    source = partition({"a.csv": GOOD})
    with DEV_FULL.open("w") as full:
        code, stderr = run([DAY_ARG, "--source", str(source)], stdout=full.fileno())
    assert code == 0, stderr
    assert published(source)["totals"]["impressions"] == 2  # type: ignore[index]
    (warning,) = [line for line in lines(stderr) if "WARNING" in line]
    assert WARNING in warning and "No space left on device" in warning, stderr
    assert "error" not in stderr, stderr


def test_json_logs_on_a_closed_pipe_say_it_as_a_json_warning(
        partition: Callable[..., Path], closed_pipe: int) -> None:
    source = partition({"a.csv": GOOD})
    code, stderr = run([DAY_ARG, "--source", str(source), "--log-format", "json"],
                       stdout=closed_pipe)
    assert code == 0, stderr
    records = [json.loads(line) for line in lines(stderr)]
    (warning,) = [r for r in records if r["level"] == "warning"]
    assert warning["message"].startswith(WARNING) and "Broken pipe" in warning["message"]
    assert warning["day"] == DAY_ARG and not [r for r in records if r["level"] == "error"]
    assert published(source)["totals"]["impressions"] == 2  # type: ignore[index]


@needs_dev_full
def test_a_backfill_whose_table_cannot_be_written_keeps_its_days_exit_status(
        partition: Callable[..., Path], closed_pipe: int) -> None:
    source = partition({"a.csv": GOOD})
    partition({"a.csv": GOOD.replace("2021-01-30", "2021-01-31")},
              day=DAY.replace(day=31))
    # Both streams broken: nobody can be told, and the days are still done.
    with DEV_FULL.open("w") as full:
        code, stderr = run([DAY_ARG, "--to", "2021-01-31", "--source", str(source)],
                           stdout=closed_pipe, stderr=full.fileno())
    assert code == 0
    for day in (DAY, DAY.replace(day=31)):
        assert published(source, day)["totals"]["impressions"] == 2  # type: ignore[index]


@needs_dev_full
def test_a_dry_run_that_cannot_show_its_listing_fails(partition: Callable[..., Path]) -> None:
    # Nothing is published: the listing on stdout is all a dry run gives.
    source = partition({"a.csv": GOOD})
    with DEV_FULL.open("w") as full:
        code, stderr = run([DAY_ARG, "--source", str(source), "--dry-run"],
                           stdout=full.fileno())
    assert code == 1
    assert lines(stderr) == ["streamagg: error: cannot write to stdout: No space left on device"]
    assert not (source / "results" / day_path(DAY)).exists()
