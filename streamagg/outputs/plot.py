"""A PNG of the day: impressions per hour, top campaigns, duplicates and bad rows per hour."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from ..errors import StorageError, UsageError

INSTALL_HINT = "install the plot extra (in streamagg's clone: pip install -e '.[plot]')"
TOP_CAMPAIGNS = 10
_LABEL_CHARS = 24
# Tick labels of the bars beside the day's hours.
_OUTSIDE = "outside\nthe day"
_NO_TIME = "no\ntime"
# Ticks on round steps: 1, 2 or 5 times a power of ten.
ROUND_STEPS = (1, 2, 5, 10)
_COLOURS = {"impressions": "#3b6ea8", "campaigns": "#5b8c5a", "duplicates": "#c07a2c",
            "bad_rows": "#b5473a"}


def require_matplotlib() -> None:
    """Fail before anything is read, with one clear line, when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise UsageError(f"--plot needs matplotlib, which is not installed: {INSTALL_HINT}"
                         ) from err


def render_day(path: str, *, day: dt.date, title: str, top: Sequence[tuple[str, int]],
               hourly: dict[str, Any], totals: dict[str, int],
               group_name: str = "CAMPAIGN_ID") -> None:
    """Draw the day into a PNG at ``path`` with matplotlib's Agg canvas (no display, no pyplot
    state shared with a caller's figures)."""
    from matplotlib import rc_context

    figure = draw_day(day=day, title=title, top=top, hourly=hourly, totals=totals,
                      group_name=group_name)
    try:
        # No software version in the metadata: the same day gives the same bytes. Names are
        # text, never math: a tick label made at draw time takes parse_math from here.
        with rc_context({"text.parse_math": False}):
            figure.savefig(path, format="png", metadata={"Software": None})
    except OSError as err:
        raise StorageError(f"cannot write the plot: {err.strerror or err}", uri=path) from err


def draw_day(*, day: dt.date, title: str, top: Sequence[tuple[str, int]], hourly: dict[str, Any],
             totals: dict[str, int], group_name: str = "CAMPAIGN_ID") -> Any:
    """The day's matplotlib ``Figure``: four panels, every axis labelled, counts with thousands
    separators on round steps; rows outside the day (and bad rows without a time) as bars of
    their own; a panel with nothing to show says so. Every text is plain text: a campaign named
    ``Save $$ now`` is drawn as written, never parsed as math."""
    require_matplotlib()
    from matplotlib import rc_context

    with rc_context({"text.parse_math": False}):
        return _draw(day=day, title=title, top=top, hourly=hourly, totals=totals,
                     group_name=group_name)


def _draw(*, day: dt.date, title: str, top: Sequence[tuple[str, int]], hourly: dict[str, Any],
          totals: dict[str, int], group_name: str) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    counts = FuncFormatter(lambda value, _: f"{value:,.0f}")
    buckets = hourly["buckets"]
    hourly_grain = hourly["grain_seconds"] == 3600
    labels = [b["start"][11:13] if hourly_grain else b["start"][11:16] for b in buckets]
    positions = list(range(len(buckets)))
    figure = Figure(figsize=(13, 8), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, 2)
    figure.suptitle(f"{title}: {totals['impressions']:,} impressions, "
                    f"{totals['duplicates']:,} duplicates, {totals['bad_rows']:,} bad rows",
                    fontsize=13)
    outside = hourly.get("outside_day") or {}
    without_time = hourly.get("bad_rows_without_time", 0)

    def counted(axis: Any) -> None:
        # Counts: whole numbers (no 0.25 of a row) on round steps, with thousands separators.
        axis.set_major_locator(MaxNLocator(integer=True, steps=ROUND_STEPS))
        axis.set_major_formatter(counts)

    def per_bucket(ax: Any, key: str, heading: str, unit: str, nothing: str,
                   extra: list[tuple[str, int]]) -> None:
        values = [b[key] for b in buckets]
        step = max(1, len(positions) // 12)
        ticks, names = positions[::step], labels[::step]
        ax.bar(positions, values, color=_COLOURS[key], width=0.8)
        # Counts the day's hours cannot hold get bars of their own, set apart by a gap.
        for offset, (name, value) in enumerate(extra, start=1):
            at = len(positions) + offset
            ax.bar([at], [value], color="white", edgecolor=_COLOURS[key], hatch="//",
                   width=0.8, label=name)
            ax.annotate(f"{value:,}", (at, value), ha="center", va="bottom", fontsize=8)
            ticks, names = [*ticks, at], [*names, name]
        ax.set_title(heading, loc="left")
        ax.set_xticks(ticks, names)
        ax.set_xlabel(f"{'hour' if hourly_grain else 'time'} of {day} (UTC)")
        ax.set_ylabel(unit)
        ax.grid(axis="y", alpha=0.3)
        counted(ax.yaxis)
        if not any(values) and not any(value for _, value in extra):
            say_nothing(ax, nothing)
            ax.set_yticks([])  # an axis of zeros alone would tick 0, 0, 0, -0, -0

    def outside_bar(key: str) -> list[tuple[str, int]]:
        value = outside.get(key) or 0
        return [(_OUTSIDE, value)] if value else []

    per_bucket(axes[0][0], "impressions", "Impressions per hour", "impressions",
               "no impressions on this day", outside_bar("impressions"))
    per_bucket(axes[1][0], "duplicates", "Duplicates dropped per hour", "duplicates dropped",
               "no duplicates on this day", outside_bar("duplicates"))
    per_bucket(axes[1][1], "bad_rows", "Bad rows per hour", "bad rows",
               "no bad rows on this day",
               outside_bar("bad_rows") + ([(_NO_TIME, without_time)] if without_time else []))

    ax = axes[0][1]
    top = list(top)  # the day's top campaigns and their impressions, most first
    if top:
        names = [_short(name) for name, _ in reversed(top)]
        ax.barh(range(len(top)), [count for _, count in reversed(top)],
                color=_COLOURS["campaigns"])
        ax.set_yticks(range(len(top)), names, parse_math=False)
        counted(ax.xaxis)
        ax.grid(axis="x", alpha=0.3)
    else:
        say_nothing(ax, "no impressions on this day")
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_xlabel(f"impressions on {day}")
    ax.set_ylabel(group_name)
    ax.set_title(f"Top {len(top)} campaigns by impressions", loc="left")
    return figure


def say_nothing(ax: Any, text: str) -> None:
    """A panel with nothing to show says so, in its middle."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey",
            parse_math=False)


def _short(name: str) -> str:
    return name if len(name) <= _LABEL_CHARS else name[:_LABEL_CHARS - 1] + "\u2026"
