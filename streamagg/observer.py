"""What `run_day` tells an observer (a progress bar, a scheduler) as the day is read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .sources import InputFile, Storage

# The one callback type for progress: called once per input, in file order, when it is read.
FileCallback = Callable[[InputFile], None]


class ProgressSink(Protocol):
    """What `run_day` tells about progress; ``attach`` hooks it onto the storage and callback."""

    def attach(self, source: Storage, inputs: list[InputFile],
               on_file_done: FileCallback | None) -> tuple[Storage, FileCallback]: ...
