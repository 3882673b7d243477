"""Keeps pandas out of a process that never needs it, and lets it back in for the Spark engine."""

from __future__ import annotations

import importlib.abc
import sys
from typing import Any


class PandasBlocker(importlib.abc.MetaPathFinder):
    """An import hook that refuses pandas and its submodules."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError("streamagg keeps pandas out of its process")
        return None


def keep_pandas_out() -> None:
    """pyarrow imports pandas, when installed, on its first conversion of a Python value,
    which costs about 40 MB of a 256 MB budget for nothing: the local engine never needs it."""
    if "pandas" not in sys.modules and not any(isinstance(f, PandasBlocker)
                                               for f in sys.meta_path):
        sys.meta_path.insert(0, PandasBlocker())


def let_pandas_in() -> None:
    """pyspark's Arrow functions need pandas on the driver; an earlier local run in this
    process (tests, a notebook) may have kept it out."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, PandasBlocker)]
