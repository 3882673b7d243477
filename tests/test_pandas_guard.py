"""The local command keeps pandas out; the Spark engine lets it back in by the hook's class."""

from __future__ import annotations

import importlib
import sys

import pytest

from streamagg.pandas_guard import PandasBlocker, let_pandas_in


def test_the_blocker_refuses_pandas_until_the_spark_engine_lets_it_in(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "meta_path", [PandasBlocker(), *sys.meta_path])
    monkeypatch.delitem(sys.modules, "pandas.streamagg_probe", raising=False)
    with pytest.raises(ModuleNotFoundError, match="keeps pandas out"):
        importlib.import_module("pandas.streamagg_probe")
    let_pandas_in()
    assert not any(isinstance(f, PandasBlocker) for f in sys.meta_path)
    assert sys.meta_path  # the interpreter's own finders stay
