"""Progress: counted bytes (compressed for gzip), throttled drawing, on only on a terminal."""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from streamagg.ops import progress as progress_module
from streamagg.ops.progress import Progress, progress_for
from streamagg.sources import InputFile
from streamagg.sources.local import LocalStorage
from streamagg.units import human_bytes, human_duration
from tests.conftest import DAY, DAY_ARG, OUTPUT_NAME, day_path
from tests.ops.helpers import GOOD, H, assert_ok

Cli = Callable[..., Result]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def item(name: str, size: int) -> InputFile:
    return InputFile(uri=f"/data/{name}", key=name, size=size, version="v")


def test_bar_shows_files_bytes_rate_and_time_left() -> None:
    clock, out = FakeClock(), io.StringIO()
    bar = Progress("2021-01-30", stream=out, clock=clock)
    a, b = item("a.csv", 3 * 2**20), item("b.csv", 1 * 2**20)
    bar.start([a, b])
    clock.now += 1
    bar.bytes_read(a, 2**20)
    text = bar.text()
    assert "2021-01-30 [" in text
    assert "0/2 files" in text and "1.0/4.0 MiB" in text and "25%" in text
    assert "1.0 MiB/s 0:03 left" in text
    assert len(bar.text(72)) < 72 and bar.text(72).endswith("0:03 left")  # the bar gives way
    assert out.getvalue().startswith("\r2021-01-30 [")


def test_drawing_is_throttled_but_the_last_file_always_shows() -> None:
    clock, out = FakeClock(), io.StringIO()
    bar = Progress("day", stream=out, clock=clock)
    a = item("a.csv", 10_000)
    bar.start([a])
    for _ in range(100):  # a hundred reads within the same instant: no redraw
        bar.bytes_read(a, 10)
    assert out.getvalue().count("\r") == 1
    clock.now += 0.25
    bar.bytes_read(a, 10)
    assert out.getvalue().count("\r") == 2
    bar.file_done(a)  # not throttled: the final state is always drawn
    assert "1/1 files" in out.getvalue().split("\r")[-1]
    bar.close()
    assert out.getvalue().endswith("\r\x1b[K")  # the bar leaves the terminal clean


def test_a_file_read_twice_counts_once_and_never_beyond_its_size() -> None:
    bar = Progress("day", stream=io.StringIO(), clock=FakeClock())
    a, b = item("a.csv", 100), item("b.csv", 50)
    bar.start([a, b])
    bar.bytes_read(a, 80)
    bar.bytes_read(a, 80)  # the reader's exact second pass over a file with bad rows
    bar.bytes_read(b, 10)
    assert bar.bytes_done == 110
    bar.file_done(b)  # bytes a stream did not report (Spark reads on executors) count now
    assert bar.bytes_done == 150 and bar.files_done == 1


def test_gzip_counts_compressed_bytes_as_the_file_is_read(tmp_path: Path) -> None:
    rows = "".join(f"id{i},2021-01-30 10:{i % 60:02d}:00,{i % 7}\n" for i in range(200_000))
    folder = tmp_path / day_path(DAY)
    folder.mkdir(parents=True)
    (folder / "a.csv.gz").write_bytes(gzip.compress((H + rows).encode(), compresslevel=1))
    storage = LocalStorage(str(tmp_path))
    inputs, _ = storage.list_partition("2021/01/30")
    seen: list[int] = []

    class Recorder(Progress):
        def bytes_read(self, item: InputFile, count: int) -> None:
            super().bytes_read(item, count)
            seen.append(self.bytes_done)

    bar = Recorder("day", stream=io.StringIO(), clock=FakeClock())
    counted, _ = bar.attach(storage, inputs, None)
    with counted.open_input(inputs[0]) as raw, gzip.GzipFile(fileobj=raw) as plain:
        while plain.read(64 * 1024):
            pass
    size = os.path.getsize(folder / "a.csv.gz")
    assert bar.bytes_done == size  # compressed bytes: the bar ends where the file ends
    assert len(seen) > 3 and 0 < seen[0] < size  # and it moved within the file


def test_default_is_off_without_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_module, "stderr_is_terminal", lambda: False)
    assert progress_for("day", None) is None
    assert progress_for("day", False) is None
    explicit = progress_for("day", True)  # asked for: log lines, never \r on a log file
    assert explicit is not None and explicit.mode == "log"
    monkeypatch.setattr(progress_module, "stderr_is_terminal", lambda: True)
    bar = progress_for("day", None)
    assert bar is not None and bar.mode == "bar"
    assert progress_for("day", False) is None


def test_cli_draws_no_bar_when_stderr_is_not_a_terminal(
    cli: Cli, partition: Callable[..., Path]
) -> None:
    source = partition({"a.csv": GOOD, "b.csv": GOOD})
    result = cli(DAY_ARG, "--source", source)
    assert_ok(result)
    assert "\r" not in result.stderr and "/2 files" not in result.stderr


def test_cli_draws_a_bar_on_a_terminal(
    cli: Cli, partition: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress_module, "stderr_is_terminal", lambda: True)
    source = partition({"a.csv": GOOD, "b.csv.gz": GOOD})
    result = cli(DAY_ARG, "--source", source)
    assert_ok(result)
    frames = result.stderr.split("\r")
    assert any(f.startswith("2021-01-30 [") and "0/2 files" in f for f in frames)
    assert any("2/2 files" in f and "100%" in f for f in frames)
    assert (source / "results" / day_path(DAY) / OUTPUT_NAME).exists()
    assert "\r" not in result.stdout  # the summary stays clean for pipes
    quiet = cli(DAY_ARG, "--source", source, "--no-progress")
    assert_ok(quiet)
    assert "\r" not in quiet.stderr


def test_explicit_progress_without_a_terminal_logs_lines(
    cli: Cli, partition: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress_module, "stderr_is_terminal", lambda: False)
    source = partition({"a.csv": GOOD})
    result = cli(DAY_ARG, "--source", source, "--progress")
    assert_ok(result)
    assert "\r" not in result.stderr
    assert "2021-01-30: 1/1 files" in result.stderr


@pytest.mark.parametrize(
    ("size", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (3 * 2**30, "3.0 GiB")]
)
def test_human_bytes(size: int, text: str) -> None:
    assert human_bytes(size) == text


def test_human_duration() -> None:
    assert human_duration(83) == "1:23"
    assert human_duration(3723) == "1:02:03"


def test_rate_follows_the_last_ten_seconds_and_survives_a_long_silence() -> None:
    clock = FakeClock()
    bar = Progress("day", stream=io.StringIO(), clock=clock)
    a = item("a.csv", 10**9)
    bar.start([a])
    clock.now += 30  # a slow start (a JVM, a cold bucket): nothing read yet
    bar.bytes_read(a, 30 * 2**20)
    assert bar.rate() == pytest.approx(2**20)
    for _ in range(20):  # then 10 MiB/s for twenty seconds
        clock.now += 1
        bar.bytes_read(a, 10 * 2**20)
    assert bar.rate() == pytest.approx(10 * 2**20, rel=0.1)


def test_all_bytes_read_is_not_done_until_the_last_file_is_finished() -> None:
    # A gzipped file's compressed bytes are all read while its last blocks are still being
    # decompressed and counted: the bar must not say 100% and "0:00 left" meanwhile.
    clock = FakeClock()
    bar = Progress("day", stream=io.StringIO(), clock=clock)
    a, b = item("a.csv", 3 * 2**20), item("b.csv.gz", 2**20)
    bar.start([a, b])
    clock.now += 1
    bar.bytes_read(a, 3 * 2**20)
    bar.file_done(a)
    clock.now += 1
    bar.bytes_read(b, 2**20 - 4000)  # 99.6%: rounded down, not up to 100%
    assert " 99% 1/2 files" in bar.text() and "left" in bar.text()
    clock.now += 1
    bar.bytes_read(b, 4000)  # every byte read, the file not finished
    text = bar.text()
    assert " 99% 1/2 files" in text and "4.0/4.0 MiB" in text, text
    assert "finishing 1 file" in text and "left" not in text and "100%" not in text, text
    assert "#" * 20 not in text  # the bar is not full either
    bar.file_done(b)
    assert "100% 2/2 files" in bar.text() and "all read, counting" in bar.text()
    assert "#" * 20 in bar.text()


def test_finishing_counts_the_files_still_open() -> None:
    bar = Progress("day", stream=io.StringIO(), clock=FakeClock())
    a, b = item("a.csv.gz", 100), item("b.csv.gz", 100)
    bar.start([a, b])
    bar.bytes_read(a, 100)
    bar.bytes_read(b, 100)
    assert "finishing 2 files" in bar.text() and " 99% 0/2 files" in bar.text()


def test_a_bar_from_python_draws_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str],
                                                    tmp_path: Path) -> None:
    from streamagg import Config, run_day

    monkeypatch.setattr(progress_module, "stderr_is_terminal", lambda: False)
    day = tmp_path / "in" / "2021" / "01" / "30"
    day.mkdir(parents=True)
    (day / "a.csv").write_text("IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\n"
                               "a,2021-01-30 10:00:00,1\n")
    bar = Progress("2021-01-30")
    assert bar.mode == "log"
    run_day(Config(day="2021-01-30", source=str(tmp_path / "in")), progress=bar)
    err = capsys.readouterr().err  # log records, if a handler was set up; never a bar
    assert "\r" not in err and "\x1b" not in err
    monkeypatch.setattr(progress_module, "stderr_is_terminal", lambda: True)
    assert Progress("2021-01-30").mode == "bar"


def test_the_package_logger_is_quiet_for_a_library_caller() -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import logging, streamagg; print([type(h)."
                           "__name__ for h in logging.getLogger('streamagg').handlers])"],
                          capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "['NullHandler']"


def test_a_stage_record_tells_the_bar_what_happens_before_any_byte(
        capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from streamagg.ops import logs

    logs.setup("text")
    clock, out = FakeClock(), io.StringIO()
    bar = Progress("2021-01-30", stream=out, clock=clock)
    bar.start([item("a.csv", 1000)])
    assert bar.text().endswith("starting")
    logging.getLogger("streamagg").info("starting Spark on local[*]",
                                        extra={"stage": "starting Spark"})
    # The record goes above the bar; the bar, redrawn, names the stage.
    assert "INFO starting Spark on local[*]" in capsys.readouterr().err
    assert out.getvalue().endswith("starting Spark\x1b[K")
    clock.now += 1
    bar.bytes_read(item("a.csv", 1000), 500)
    assert "starting" not in bar.text() and "left" in bar.text()
    bar.close()
    logs.reset()


def test_counts_on_the_bar_have_thousands_separators() -> None:
    clock = FakeClock()
    bar = Progress("day", stream=io.StringIO(), clock=clock)
    inputs = [item(f"{n}.csv", 10) for n in range(1234)]
    bar.start(inputs)
    assert "0/1,234 files" in bar.text(200)
    for done in inputs[:-1]:
        bar.file_done(done)
    bar.bytes_read(inputs[-1], 10)
    assert bar.text(200).endswith("finishing 1 file")
