"""What a run did, for its caller: a view of the manifest it published."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import Config
from ..sources import InputFile
from .manifest import Manifest


@dataclass
class RunReport:
    """What a run did: a view of the manifest it published (None for a dry run), with the
    day's inputs and where its files went."""

    config: Config
    inputs: list[InputFile]
    output_uri: str
    written: Manifest | None = None  # the manifest as published; None: a dry run
    manifest_uri: str | None = None
    # A stop (Ctrl-C, SIGTERM) that came after the manifest was published: the day is done;
    # the caller ends a backfill with it, but a single day still exits 0.
    stopped: KeyboardInterrupt | None = None

    @property
    def dry_run(self) -> bool:
        return self.written is None

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest as written (JSON-shaped); empty for a dry run."""
        return self.written.as_dict() if self.written is not None else {}

    @property
    def totals(self) -> dict[str, int]:
        return self.written.totals.as_dict() if self.written is not None else {}

    @property
    def rejects_uri(self) -> str | None:
        return self._path_of(self.written.rejects if self.written is not None else None)

    @property
    def plot_uri(self) -> str | None:
        return self._path_of(self.written.plot if self.written is not None else None)

    @property
    def mode(self) -> str:
        """``full``, or ``incremental`` when only new files were read."""
        return self.written.mode if self.written is not None else "full"

    @property
    def mode_reason(self) -> str:
        return self.written.mode_reason if self.written is not None else ""

    @property
    def peak_memory_bytes(self) -> int:
        return self.written.peak_memory_bytes if self.written is not None else 0

    @property
    def jvm_peak_memory_bytes(self) -> int | None:
        return self.written.jvm_peak_memory_bytes if self.written is not None else None

    @staticmethod
    def _path_of(entry: dict[str, Any] | None) -> str | None:
        return entry.get("path") if entry else None
