"""--plot: a valid PNG beside the output, per-hour counts in the manifest, a clear missing extra."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import Result

from streamagg.aggregate import tally_counts
from streamagg.columns import BadRow
from streamagg.outputs.hourly import bad_row_bucket
from tests.conftest import DAY, DAY_ARG, MANIFEST_NAME, OUTPUT_NAME, S3, day_path
from tests.ops.helpers import GOOD, MIXED, assert_ok, lines

Cli = Callable[..., Result]
PNG_NAME = "_daily_agg_20210130_SA.png"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PART = day_path(DAY)
LENIENT = ("--max-bad-rows", "50%")


def read_png(path: Path) -> np.ndarray:
    from matplotlib import image

    return np.asarray(image.imread(str(path)))


def test_plot_is_a_png_beside_the_output(cli: Cli, partition: Callable[..., Path]) -> None:
    pytest.importorskip("matplotlib")
    source = partition({"a.csv": MIXED, "b.csv": GOOD})
    result = cli(DAY_ARG, "--source", source, "--plot", *LENIENT)
    assert_ok(result)
    out = source / "results" / PART
    png = out / PNG_NAME
    assert png.read_bytes()[:8] == PNG_MAGIC
    pixels = read_png(png)
    assert pixels.ndim == 3 and pixels.shape[0] >= 400 and pixels.shape[1] >= 600
    assert pixels.std() > 0  # something was drawn
    assert f"plot         {png}" in result.stdout
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["plot"] == {"path": str(png), "bytes": png.stat().st_size}
    # Only the files it owns, all published: no temp names left behind.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [OUTPUT_NAME, MANIFEST_NAME, "_daily_agg_20210130_SA.rejects.csv", PNG_NAME])


def test_same_day_same_picture(cli: Cli, partition: Callable[..., Path]) -> None:
    pytest.importorskip("matplotlib")
    source = partition({"a.csv": MIXED})
    assert_ok(cli(DAY_ARG, "--source", source, "--plot", *LENIENT))
    first = (source / "results" / PART / PNG_NAME).read_bytes()
    assert_ok(cli(DAY_ARG, "--source", source, "--plot", *LENIENT, "--dedupe", "sqlite"))
    assert (source / "results" / PART / PNG_NAME).read_bytes() == first


def test_manifest_hourly_section_adds_up(cli: Cli, partition: Callable[..., Path]) -> None:
    source = partition({"a.csv": MIXED, "b.csv": GOOD})
    assert_ok(cli(DAY_ARG, "--source", source, *LENIENT))
    manifest = json.loads((source / "results" / PART / MANIFEST_NAME).read_text())
    hourly, totals = manifest["hourly"], manifest["totals"]
    assert hourly["grain_seconds"] == 3600 and len(hourly["buckets"]) == 24
    assert hourly["buckets"][0]["start"] == "2021-01-30 00:00:00"
    by_hour = {b["start"][11:13]: b for b in hourly["buckets"]}
    assert by_hour["10"] == {"start": "2021-01-30 10:00:00", "impressions": 1, "duplicates": 2,
                             "bad_rows": 0}
    assert by_hour["11"] == {"start": "2021-01-30 11:00:00", "impressions": 2, "duplicates": 1,
                             "bad_rows": 1}  # the row with no campaign still has its hour
    assert hourly["outside_day"] == {"impressions": 1, "duplicates": 0, "bad_rows": 0}
    assert hourly["bad_rows_without_time"] == 1  # "not a time"
    for key in ("impressions", "duplicates", "bad_rows"):
        total = sum(b[key] for b in hourly["buckets"]) + hourly["outside_day"][key]
        if key == "bad_rows":
            total += hourly["bad_rows_without_time"]
        assert total == totals[key]
    assert manifest["plot"] is None


def test_a_run_without_plot_removes_a_stale_picture(
    cli: Cli, partition: Callable[..., Path]
) -> None:
    pytest.importorskip("matplotlib")
    source = partition({"a.csv": GOOD})
    assert_ok(cli(DAY_ARG, "--source", source, "--plot"))
    assert (source / "results" / PART / PNG_NAME).exists()
    assert_ok(cli(DAY_ARG, "--source", source))
    assert not (source / "results" / PART / PNG_NAME).exists()


def test_missing_matplotlib_is_one_clear_line_and_nothing_read(
    cli: Cli, partition: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    source = partition({"a.csv": GOOD})
    result = cli(DAY_ARG, "--source", source, "--plot")
    assert result.exit_code == 2
    assert lines(result.output) == [
        "streamagg: error: --plot needs matplotlib, which is not installed: "
        "install the plot extra (in streamagg's clone: pip install -e '.[plot]')"]
    assert not (source / "results").exists()


@pytest.mark.s3
def test_plot_on_s3(cli: Cli, s3: S3) -> None:
    pytest.importorskip("matplotlib")
    s3.put(f"in/{PART}/a.csv", GOOD)
    result = cli(DAY_ARG, "--source", f"{s3.uri}/in", "--endpoint-url", s3.endpoint, "--plot")
    assert_ok(result)
    assert s3.get(f"in/results/{PART}/{PNG_NAME}")[:8] == PNG_MAGIC
    assert not s3.pending_uploads()


def test_tally_counts_sums_each_bucket_over_campaigns() -> None:
    tally: dict[int, int] = {}
    counts = pa.table({"group": ["a", "b", "a", "c"],
                       "bucket": pa.array([0, 0, 1, 10**18 // 3600], pa.int64()),
                       "count": pa.array([2, 3, 1, 4], pa.int64())})
    tally_counts(tally, counts)
    # A stray far-future bucket is one more key, not a dense array of every hour in between.
    assert tally == {0: 5, 1: 1, 10**18 // 3600: 4}
    tally_counts(tally, counts.slice(0, 0))
    tally_counts(tally, counts.slice(2, 1))
    assert tally == {0: 5, 1: 2, 10**18 // 3600: 4}


def test_bad_row_bucket() -> None:
    def bad(fields: tuple[bytes, ...] | None) -> BadRow:
        return BadRow("f.csv", 1, "reason", fields=fields)

    hour_10 = (1611964800 + 10 * 3600) // 3600
    assert bad_row_bucket(bad((b"a", b" 2021-01-30T10:59:59Z ", b"")), 3600) == hour_10
    assert bad_row_bucket(bad((b"a", b"2021-01-30 11:00:00+01:00", b"")), 3600) == hour_10
    assert bad_row_bucket(bad((b"a", b"not a time", b"1")), 3600) is None
    assert bad_row_bucket(bad((b"a", b"\xff", b"1")), 3600) is None
    assert bad_row_bucket(bad(None), 3600) is None  # wrong number of fields


def _hourly(outside: int, without_time: int) -> dict[str, object]:
    buckets = [{"start": f"2021-01-30 {h:02d}:00:00", "impressions": 1_000_000 + h,
                "duplicates": 1200 + h, "bad_rows": h} for h in range(24)]
    return {"grain_seconds": 3600, "buckets": buckets,
            "outside_day": {"impressions": outside, "duplicates": 3, "bad_rows": 0},
            "bad_rows_without_time": without_time}


def test_every_axis_is_labelled_with_thousands_separators() -> None:
    pytest.importorskip("matplotlib")
    from streamagg.outputs.plot import draw_day

    top = [(str(1000 + i), 2_500_000 - i) for i in range(10)]
    figure = draw_day(day=DAY, title="t", top=top, hourly=_hourly(1234, 5),
                      totals={"impressions": 1, "duplicates": 1, "bad_rows": 1},
                      group_name="CAMPAIGN_ID")
    figure.canvas.draw()  # tick labels are formatted at draw time
    axes = {ax.get_title(loc="left").split("  ")[0]: ax for ax in figure.axes}
    assert set(axes) == {"Impressions per hour", "Top 10 campaigns by impressions",
                         "Duplicates dropped per hour", "Bad rows per hour"}
    for ax in figure.axes:
        assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title(loc="left")
    assert axes["Impressions per hour"].get_ylabel() == "impressions"
    assert axes["Top 10 campaigns by impressions"].get_ylabel() == "CAMPAIGN_ID"
    assert axes["Top 10 campaigns by impressions"].get_xlabel() == "impressions on 2021-01-30"
    impressions_ticks = [t.get_text() for t in axes["Impressions per hour"].get_yticklabels()]
    assert "200,000" in impressions_ticks and "800,000" in impressions_ticks, impressions_ticks
    top_ticks = [t.get_text() for t in
                 axes["Top 10 campaigns by impressions"].get_xticklabels()]
    assert any("," in t and t.replace(",", "").isdigit() for t in top_ticks), top_ticks
    # Impressions outside the day, and bad rows without a time, are bars, not only text.
    hour_labels = [t.get_text() for t in axes["Impressions per hour"].get_xticklabels()]
    assert hour_labels[-1] == "outside\nthe day"
    bars = axes["Impressions per hour"].patches
    assert len(bars) == 25 and bars[-1].get_height() == 1234
    assert "1,234" in [t.get_text() for t in axes["Impressions per hour"].texts]
    bad_labels = [t.get_text() for t in axes["Bad rows per hour"].get_xticklabels()]
    assert bad_labels[-1] == "no\ntime"  # no bad row outside the day: no bar for it
    assert axes["Bad rows per hour"].patches[-1].get_height() == 5
    assert axes["Duplicates dropped per hour"].patches[-1].get_height() == 3


def test_a_day_with_nothing_outside_it_draws_only_its_hours() -> None:
    pytest.importorskip("matplotlib")
    from streamagg.outputs.plot import draw_day

    figure = draw_day(day=DAY, title="t", top=[], hourly=_hourly(0, 0),
                      totals={"impressions": 0, "duplicates": 0, "bad_rows": 0})
    impressions = next(ax for ax in figure.axes
                       if ax.get_title(loc="left").startswith("Impressions"))
    assert len(impressions.patches) == 24
    top = next(ax for ax in figure.axes if ax.get_title(loc="left").startswith("Top"))
    assert top.get_ylabel() == "CAMPAIGN_ID" and top.get_xlabel()


# --- the picture for people: empty panels say so, names are text, ticks on round steps --------


def _panel(figure: object, heading: str) -> object:
    return next(ax for ax in figure.axes  # type: ignore[attr-defined]
                if ax.get_title(loc="left").startswith(heading))


def _quiet_hourly(impressions: int = 5) -> dict[str, object]:
    buckets = [{"start": f"2021-01-30 {h:02d}:00:00", "impressions": impressions if h == 10 else 0,
                "duplicates": 0, "bad_rows": 0} for h in range(24)]
    return {"grain_seconds": 3600, "buckets": buckets, "outside_day": {},
            "bad_rows_without_time": 0}


def test_a_panel_with_nothing_to_show_says_so() -> None:
    pytest.importorskip("matplotlib")
    from streamagg.outputs.plot import draw_day

    figure = draw_day(day=DAY, title="t", top=[("7", 5)], hourly=_quiet_hourly(),
                      totals={"impressions": 5, "duplicates": 0, "bad_rows": 0})
    figure.canvas.draw()
    for heading, said in (("Bad rows", "no bad rows on this day"),
                          ("Duplicates", "no duplicates on this day")):
        ax = _panel(figure, heading)
        assert [t.get_text() for t in ax.texts] == [said]  # type: ignore[attr-defined]
        # Not an axis of zeros: 0, 0, 0, -0, -0 said nothing.
        assert [t.get_text() for t in ax.get_yticklabels()] == []  # type: ignore[attr-defined]
    impressions = _panel(figure, "Impressions")
    assert list(impressions.texts) == []  # type: ignore[attr-defined]
    ticks = [t.get_text() for t in impressions.get_yticklabels()]  # type: ignore[attr-defined]
    assert "-0" not in ticks and len(set(ticks)) == len(ticks), ticks
    empty = draw_day(day=DAY, title="t", top=[], hourly=_quiet_hourly(0),
                     totals={"impressions": 0, "duplicates": 0, "bad_rows": 0})
    empty.canvas.draw()
    for heading in ("Impressions", "Top", "Bad rows", "Duplicates"):
        ax = _panel(empty, heading)
        assert any(t.get_text().startswith("no ") for t in ax.texts), heading  # type: ignore[attr-defined]
        assert [t.get_text() for t in ax.get_yticklabels()] == [], heading  # type: ignore[attr-defined]


def test_campaign_names_are_plain_text_never_math(tmp_path: Path) -> None:
    names = ["Save $$ now", "$5 off $10", "$", "a$b$c", "$\\alpha$", "x^2_y", "{}", "$$$$"]
    pytest.importorskip("matplotlib")
    from streamagg.outputs.plot import draw_day, render_day

    top = [(name, 10 - i) for i, name in enumerate(names)]
    args = dict(day=DAY, title="t", top=top, hourly=_quiet_hourly(),
                totals={"impressions": 5, "duplicates": 0, "bad_rows": 0})
    render_day(str(tmp_path / "day.png"), **args)  # type: ignore[arg-type]
    assert (tmp_path / "day.png").read_bytes()[:8] == PNG_MAGIC
    figure = draw_day(**args)  # type: ignore[arg-type]
    figure.canvas.draw()
    labels = _panel(figure, "Top").get_yticklabels()  # type: ignore[attr-defined]
    assert [label.get_text() for label in labels] == list(reversed(names))
    for label in labels:
        assert label.get_parse_math() is False, label.get_text()
        # Drawn as text: its width grows with every character, "$" included.
        assert label.get_window_extent().width > 0


@pytest.mark.parametrize("peak", [13, 48_611, 2**40 + 17])
def test_ticks_fall_on_round_steps(peak: int) -> None:
    pytest.importorskip("matplotlib")
    from streamagg.outputs.plot import draw_day

    figure = draw_day(day=DAY, title="t", top=[("1", peak), ("2", 1)],
                      hourly=_quiet_hourly(peak),
                      totals={"impressions": peak, "duplicates": 0, "bad_rows": 0})
    figure.canvas.draw()
    for axis in (_panel(figure, "Impressions").yaxis,  # type: ignore[attr-defined]
                 _panel(figure, "Top").xaxis):  # type: ignore[attr-defined]
        ticks = [int(t) for t in axis.get_majorticklocs()]
        steps = {b - a for a, b in zip(ticks, ticks[1:], strict=False)}
        assert len(steps) == 1, ticks
        (step,) = steps
        while step % 10 == 0:
            step //= 10
        assert step in (1, 2, 5), ticks
