"""The local engine (streamagg/engines/local.py): it counts every row as it arrives, on the
reader threads, and takes out what de-duplication yields; counting is aggregate's alone."""

from __future__ import annotations

import errno
import io
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamagg.columns import BadRow
from streamagg.config import Config, Schema
from streamagg.engines import FileResult, RunContext
from streamagg.engines.local import count_day
from streamagg.errors import StorageError
from streamagg.outputs.csv import write_output
from streamagg.sources import InputFile, storage_for
from tests.conftest import DAY, DEDUPE_BACKENDS, day_path
from tests.reference import expected_for
from tests.test_properties import day_files


class Books:
    """What an engine reports to, kept as lists."""

    def __init__(self) -> None:
        self.files: list[tuple[str, FileResult]] = []
        self.bad: list[BadRow] = []
        self.all_read_calls = 0

    def bad_rows(self, rows: Iterable[BadRow], *, read_so_far: int = 0) -> None:
        self.bad += list(rows)

    def file_done(self, item: InputFile, result: FileResult) -> None:
        self.files.append((item.uri, result))

    def all_read(self) -> None:
        self.all_read_calls += 1


def count(root: Path, dedupe: str, work: Path, **options: Any) -> tuple[Any, Books]:
    config = Config(day=DAY, source=str(root), dedupe=dedupe, max_bad_rows="100%", **options)
    source = storage_for(str(root))
    inputs, _ = source.list_partition(day_path(DAY))
    books = Books()
    return count_day(RunContext(config, source, inputs, str(work)), books), books


@pytest.mark.parametrize("dedupe", DEDUPE_BACKENDS)
@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(files=day_files(), chunk_size=st.sampled_from([1, 5, 1000]),
       run_batches=st.sampled_from([0, 4]))
def test_counts_equal_the_reference(dedupe: str, files: list[tuple[str, bytes]],
                                    chunk_size: int, run_batches: int,
                                    tmp_path_factory: pytest.TempPathFactory,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Arrivals folded, later occurrences taken out: the reference's counts, duplicates,
    conflicts and clean rows per hour; each file reported once, in order, with its rows and
    bad rows, whether each file is read alone or small files share batches."""
    import streamagg.engines.local as local

    monkeypatch.setattr(local, "RUN_BATCHES", run_batches)
    root = tmp_path_factory.mktemp("day")
    folder = root / day_path(DAY)
    for name, data in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    work = tmp_path_factory.mktemp("work")
    day, books = count(root, dedupe, work, chunk_size=chunk_size)
    expected = expected_for(root, DAY)
    written = io.BytesIO()
    write_output(day.counts.sorted_parts(), written, Schema())
    day.counts.close()
    assert written.getvalue() == expected.output
    assert (day.duplicates, day.conflicting_duplicates) == (
        expected.totals["duplicates"], expected.totals["conflicting_duplicates"])
    clean = expected.totals["rows_read"] - expected.totals["bad_rows"]
    assert sum(day.clean_per_bucket.values()) == clean
    assert [uri for uri, _ in books.files] == [str(folder / p) for p in expected.inputs
                                                if (folder / p).stat().st_size]
    assert [(r.rows_read, r.bad_rows) for _, r in books.files] == [
        expected.rows_per_input[p] for p in expected.inputs if (folder / p).stat().st_size]
    assert books.all_read_calls == 1
    assert list(work.iterdir()) == []


def test_hashing_and_counting_run_on_the_reader_threads(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Prepared rows (fingerprints, the backend's order) and each batch's counts are made on
    reader threads, in parallel; the main thread only adds them in the day's order."""
    import streamagg.engines.local as local
    from streamagg.dedup.spill import SpillDeduper

    threads: dict[str, set[str]] = {"prepare": set(), "count": set(), "add": set()}
    real_prepare, real_count, real_add = SpillDeduper.prepare, local.count_pairs, \
        SpillDeduper.add

    def prepare(self: Any, batch: Any) -> Any:
        threads["prepare"].add(threading.current_thread().name)
        return real_prepare(self, batch)

    def count_pairs(batch: Any, grain: int) -> Any:
        threads["count"].add(threading.current_thread().name)
        return real_count(batch, grain)

    def add(self: Any, prepared: Any) -> None:
        threads["add"].add(threading.current_thread().name)
        real_add(self, prepared)

    monkeypatch.setattr(SpillDeduper, "prepare", prepare)
    monkeypatch.setattr(SpillDeduper, "add", add)
    monkeypatch.setattr(local, "count_pairs", count_pairs)
    folder = tmp_path / "source" / day_path(DAY)
    folder.mkdir(parents=True)
    for name in ("a.csv", "b.csv", "c.csv"):
        (folder / name).write_text("IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\n" + "".join(
            f"{name}{i % 50},2021-01-30 10:00:00,{i % 3}\n" for i in range(200)))
    (tmp_path / "work").mkdir()
    day, _ = count(tmp_path / "source", "spill", tmp_path / "work", chunk_size=50)
    assert threads["prepare"] == threads["count"] == {"streamagg-reader"}
    assert threads["add"] == {threading.main_thread().name}
    assert day.duplicates == 3 * 150


def test_small_files_share_batches_and_keep_their_books(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Consecutive small files' clean rows reach the backend in batches of up to the gathered
    size, fewer batches than files, in file then row order; every file keeps its own books
    (rows, bad rows and their record numbers), empty and header-only files included."""
    from streamagg.dedup.spill import SpillDeduper

    sizes: list[int] = []
    real_prepare = SpillDeduper.prepare

    def prepare(self: Any, batch: Any) -> Any:
        sizes.append(batch.num_rows)
        return real_prepare(self, batch)

    monkeypatch.setattr(SpillDeduper, "prepare", prepare)
    root = tmp_path / "source"
    folder = root / day_path(DAY)
    folder.mkdir(parents=True)
    header = "IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\n"
    for n in range(30):
        rows = [f"id{(n * 7 + i) % 90},2021-01-30 {i:02d}:00:00,{n % 4}\n" for i in range(7)]
        if n % 5 == 1:
            rows[n % 7] = f"id{n},not a time,1\n"  # a bad row, at another place each time
        text = "" if n == 12 else header if n == 13 else header + "".join(rows)
        (folder / f"f{n:02d}.csv").write_text(text)
    (tmp_path / "work").mkdir()
    day, books = count(root, "spill", tmp_path / "work", chunk_size=20)
    expected = expected_for(root, DAY)
    written = io.BytesIO()
    write_output(day.counts.sorted_parts(), written, Schema())
    day.counts.close()
    assert written.getvalue() == expected.output
    assert day.duplicates == expected.totals["duplicates"]
    assert max(sizes) <= 20 and len(sizes) <= 190 // 20 + 7 and sum(sizes) == sum(
        rows - bad for rows, bad in expected.rows_per_input.values())
    read = [(Path(uri).name, r.rows_read, r.bad_rows) for uri, r in books.files]
    assert read == [(p, *expected.rows_per_input[p]) for p in expected.inputs if p != "f12.csv"]
    assert [(Path(b.uri).name, b.record) for b in books.bad] == [
        (f"f{n:02d}.csv", n % 7 + 1) for n in range(30) if n % 5 == 1]


def test_files_too_large_to_join_are_opened_once(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Small files are read joined, the others alone: each file is opened once, whatever its
    size (a file of more than half a joined group was a group of its own, loaded, then read
    again alone), and the counts are the reference's."""
    import streamagg.engines.local as local_module
    import streamagg.read.stitch as stitch_module

    opened: list[str] = []
    real_open = local_module.open_input

    def open_input(source: Any, item: InputFile) -> Any:
        opened.append(Path(item.uri).name)
        return real_open(source, item)

    parses: list[int] = []
    real_open_parser = stitch_module.open_parser

    def open_parser(*args: Any, **kwargs: Any) -> Any:
        parses.append(1)
        return real_open_parser(*args, **kwargs)

    monkeypatch.setattr(local_module, "open_input", open_input)
    monkeypatch.setattr(stitch_module, "open_parser", open_parser)
    root = tmp_path / "source"
    folder = root / day_path(DAY)
    folder.mkdir(parents=True)
    header = "IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\n"
    # At 128MB a joined group holds 2 MiB of text: files of 210 KB join; those of 1.1 MB do
    # not (each would have been a group of its own).
    for n, rows in enumerate([6_000, 6_000, 6_000, 32_000, 32_000, 6_000, 6_000, 32_000]):
        lines = [f"id{n}-{i:08d},2021-01-30 {i % 24:02d}:00:00,{i % 3}\n" for i in range(rows)]
        (folder / f"f{n}.csv").write_text(header + "".join(lines))
    (tmp_path / "work").mkdir()
    day, books = count(root, "spill", tmp_path / "work", memory_limit="128MB")
    written = io.BytesIO()
    write_output(day.counts.sorted_parts(), written, Schema())
    day.counts.close()
    assert written.getvalue() == expected_for(root, DAY).output
    assert sorted(opened) == sorted(f"f{n}.csv" for n in range(8))
    assert len(parses) == 2  # f0 to f2, f5 and f6


def test_a_file_left_alone_in_its_joined_group_is_opened_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file of another column order amid small files is a joined group of one: it is parsed
    from the bytes loaded, not opened and read a second time."""
    import streamagg.engines.local as local_module

    opened: list[str] = []
    real_open = local_module.open_input

    def open_input(source: Any, item: InputFile) -> Any:
        opened.append(Path(item.uri).name)
        return real_open(source, item)

    monkeypatch.setattr(local_module, "open_input", open_input)
    root = tmp_path / "source"
    folder = root / day_path(DAY)
    folder.mkdir(parents=True)
    for n in range(5):
        lines = [f"id{n}-{i:06d},2021-01-30 {i % 24:02d}:00:00,{i % 3}" for i in range(500)]
        if n == 2:
            header = "CAMPAIGN_ID,IMPRESSION_ID,IMPRESSION_DATETIME\n"
            lines = [",".join([c, k, t]) for k, t, c in (line.split(",") for line in lines)]
        else:
            header = "IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\n"
        (folder / f"f{n}.csv").write_text(header + "\n".join(lines) + "\n")
    (tmp_path / "work").mkdir()
    day, books = count(root, "spill", tmp_path / "work")
    written = io.BytesIO()
    write_output(day.counts.sorted_parts(), written, Schema())
    day.counts.close()
    assert written.getvalue() == expected_for(root, DAY).output
    assert sorted(opened) == [f"f{n}.csv" for n in range(5)]


@pytest.mark.parametrize("dedupe", DEDUPE_BACKENDS)
def test_a_backend_failing_is_one_line_naming_its_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dedupe: str) -> None:
    from streamagg import registry

    backend = registry.DEDUPE_BACKENDS.load(dedupe)

    def full(self: Any, prepared: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(backend, "_add", full)
    folder = tmp_path / "source" / day_path(DAY)
    folder.mkdir(parents=True)
    (folder / "a.csv").write_text("IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\n"
                                  "a,2021-01-30 10:00:00,1\n")
    (tmp_path / "work").mkdir()
    with pytest.raises(StorageError, match=r"^cannot write .*: No space left on device "
                                           r"\(.*/work/streamagg-") as failed:
        count(tmp_path / "source", dedupe, tmp_path / "work")
    assert backend.files in str(failed.value)
    assert list((tmp_path / "work").iterdir()) == []
