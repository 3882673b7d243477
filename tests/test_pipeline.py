"""The pipeline keeps the books for every engine: an engine only reports files and bad rows."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from streamagg import pipeline
from streamagg.aggregate import HourlyCounts
from streamagg.columns import BadRow
from streamagg.config import Config
from streamagg.engines import Books, DayCounts, FileResult, RunContext, engine_for
from streamagg.errors import BadDataError, StorageError

DAY = "2021-01-30"


def partition(root: Path, names: list[str]) -> Path:
    day = root / "2021" / "01" / "30"
    day.mkdir(parents=True)
    for name in names:
        (day / name).write_text("IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\n")
    return root


def reporting_engine(bad_per_file: int, rows_per_file: int = 10):
    """An engine that reads nothing: it reports each file with a few bad rows, counts nothing."""

    def count_day(run: RunContext, books: Books) -> DayCounts:
        for item in run.inputs:
            bad = [BadRow(item.uri, n, "empty CAMPAIGN_ID", f"raw{n}", n + 1)
                   for n in range(1, bad_per_file + 1)]
            books.bad_rows(bad, read_so_far=rows_per_file)
            books.file_done(item, FileResult(rows_per_file, len(bad)))
        books.all_read()
        result = DayCounts(HourlyCounts(run.config.schema.grain_seconds))
        # Nothing survives: every good row counts as a duplicate, so the totals add up.
        result.duplicates = (rows_per_file - bad_per_file) * len(run.inputs)
        result.clean_per_bucket = {0: result.duplicates}
        return result

    return count_day


def test_pipeline_records_what_the_engine_reports(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    source = partition(tmp_path / "in", ["a.csv", "b.csv"])
    monkeypatch.setattr(pipeline, "engine_for", lambda name: reporting_engine(1))
    seen: list[str] = []
    report = pipeline.run_day(Config(day=DAY, source=str(source), dest=str(tmp_path / "out"),
                                     max_bad_rows="50%"),
                              on_file_done=lambda item: seen.append(item.uri))
    assert [Path(uri).name for uri in seen] == ["a.csv", "b.csv"]
    manifest = json.loads(Path(report.manifest_uri or "").read_text())
    assert manifest["totals"]["rows_read"] == 20
    assert manifest["totals"]["bad_rows"] == 2
    assert [(Path(i["path"]).name, i["rows"], i["bad_rows"]) for i in manifest["inputs"]] == [
        ("a.csv", 10, 1), ("b.csv", 10, 1)]
    rejects = Path(report.rejects_uri or "").read_text().splitlines()
    assert rejects[1:] == [f"{source}/2021/01/30/a.csv,2,empty CAMPAIGN_ID,raw1",
                           f"{source}/2021/01/30/b.csv,2,empty CAMPAIGN_ID,raw1"]


def test_a_count_limit_stops_the_engine_as_the_bad_row_arrives(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = partition(tmp_path / "in", ["a.csv", "b.csv"])
    monkeypatch.setattr(pipeline, "engine_for", lambda name: reporting_engine(3))
    with pytest.raises(BadDataError, match=r"too many bad rows: 3 of 10 rows read"):
        pipeline.run_day(Config(day=DAY, source=str(source), dest=str(tmp_path / "out"),
                                max_bad_rows="2"))
    assert not (tmp_path / "out" / "2021").exists()


@pytest.mark.parametrize("name", ["local", "spark"])
def test_an_engine_takes_a_run_and_the_books(name: str) -> None:
    assert list(inspect.signature(engine_for(name)).parameters) == ["run", "books"]


def test_the_day_layout_names_every_published_file() -> None:
    layout = pipeline.DayLayout.of(Config(day=DAY, initials="XY"))
    assert layout.published == (
        "2021/01/30/daily_agg_20210130_XY.csv", "2021/01/30/_daily_agg_20210130_XY.rejects.csv",
        "2021/01/30/_daily_agg_20210130_XY.png", "2021/01/30/_daily_agg_20210130_XY.manifest.json")
    assert layout.under("state") == "2021/01/30/state"


def test_clean_rows_that_do_not_add_up_publish_nothing(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    source = partition(tmp_path / "in", ["a.csv"])
    engine = reporting_engine(0)

    def unreported(run: RunContext, books: Books) -> DayCounts:
        result = engine(run, books)
        result.clean_per_bucket = {}  # an engine that forgot to report them
        return result

    monkeypatch.setattr(pipeline, "engine_for", lambda name: unreported)
    with pytest.raises(StorageError, match="clean rows per bucket do not add up"):
        pipeline.run_day(Config(day=DAY, source=str(source), dest=str(tmp_path / "out")))
    assert not (tmp_path / "out" / "2021").exists()
