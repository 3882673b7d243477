"""`DayLayout`: the one place a day's file names and folders are derived."""

from __future__ import annotations

from dataclasses import dataclass

from .config import Config, day_stamp


@dataclass(frozen=True)
class DayLayout:
    """The day's files: bare names (as in a work folder) and paths relative to the root of the
    source (the partition) or the destination (everything else). Built once, read everywhere."""

    folder: str  # YYYY/MM/DD: the partition below the source, the results below the destination
    stem: str  # daily_agg_YYYYMMDD_<INITIALS>

    @classmethod
    def of(cls, config: Config) -> DayLayout:
        return cls(folder=day_stamp(config.day, "/"),
                   stem=f"daily_agg_{day_stamp(config.day)}_{config.initials}")

    # Bare names. Everything but the output starts with "_", hidden from downstream readers.
    @property
    def output_name(self) -> str:
        return f"{self.stem}.csv"

    @property
    def manifest_name(self) -> str:
        return f"_{self.stem}.manifest.json"

    @property
    def rejects_name(self) -> str:
        return f"_{self.stem}.rejects.csv"

    @property
    def plot_name(self) -> str:
        return f"_{self.stem}.png"

    @property
    def state_name(self) -> str:
        return f"_{self.stem}.state"

    # Paths relative to the destination's root.
    @property
    def output(self) -> str:
        return self.under(self.output_name)

    @property
    def manifest(self) -> str:
        return self.under(self.manifest_name)

    @property
    def rejects(self) -> str:
        return self.under(self.rejects_name)

    @property
    def plot(self) -> str:
        return self.under(self.plot_name)

    @property
    def state(self) -> str:
        return self.under(self.state_name)

    def under(self, name: str) -> str:
        """Another path in the day's folder (a state folder, say)."""
        return f"{self.folder}/{name}"

    @property
    def published(self) -> tuple[str, ...]:
        """Every file a run may publish, the manifest last."""
        return (self.output, self.rejects, self.plot, self.manifest)
