"""streamagg: one day of ad impressions, de-duplicated and counted per campaign and hour."""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# A library stays quiet until its caller configures logging (the command does, in ops.logs).
logging.getLogger(__name__).addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from .config import Config, Schema
    from .errors import StreamaggError
    from .outputs.report import RunReport
    from .pipeline import run_day

# Loaded on first use, so the command can choose Arrow's allocator before pyarrow loads.
_LAZY = {"Config": ".config", "Schema": ".config", "StreamaggError": ".errors",
         "RunReport": ".outputs.report", "run_day": ".pipeline"}

__all__ = ["Config", "RunReport", "Schema", "StreamaggError", "__version__", "run_day"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
