"""streamagg: one day of ad impressions, de-duplicated and counted per campaign and hour."""

from __future__ import annotations

__version__ = "0.1.0"

from .config import Config, Schema  # noqa: E402
from .errors import StreamaggError  # noqa: E402
from .pipeline import RunReport, run_day  # noqa: E402

__all__ = ["Config", "RunReport", "Schema", "StreamaggError", "__version__", "run_day"]
