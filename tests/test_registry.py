"""One registry per kind: the CLI's choices, Config's validation and the factories read it."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamagg import registry
from streamagg.config import Config
from streamagg.dedup import make_deduper
from streamagg.engines import engine_for
from streamagg.errors import UsageError
from streamagg.ops.cli import main
from streamagg.sources import storage_for


def choices(option: str) -> tuple[str, ...]:
    param = next(p for p in main.params if p.name == option)
    return tuple(param.type.choices)  # type: ignore[attr-defined]


def test_the_cli_offers_what_the_registries_hold() -> None:
    assert choices("engine") == registry.ENGINES.names == ("local", "spark")
    # The package's two, and the test-only backend tests/conftest.py registers.
    assert choices("dedupe") == registry.DEDUPE_BACKENDS.names == ("spill", "sqlite", "memory")


def test_register_is_the_one_line_that_adds_a_backend(tmp_path: Path) -> None:
    before = dict(registry.DEDUPE_BACKENDS.targets)
    try:
        registry.DEDUPE_BACKENDS.register("again", "tests.dedup.memory:MemoryDeduper")
        assert Config(day="2021-01-30", dedupe="again").dedupe == "again"
        with make_deduper("again", tmp_dir=str(tmp_path), memory_limit=256 * 2**20) as dedup:
            assert type(dedup).__name__ == "MemoryDeduper"
        with pytest.raises(ValueError, match="registered already"):
            registry.DEDUPE_BACKENDS.register("spill", "tests.dedup.memory:MemoryDeduper")
        registry.DEDUPE_BACKENDS.register("plain", "streamagg.config:Config")
        with pytest.raises(TypeError, match="is not a streamagg.dedup.Deduper"):
            make_deduper("plain", tmp_dir=str(tmp_path), memory_limit=256 * 2**20)
    finally:
        registry.DEDUPE_BACKENDS.targets.clear()
        registry.DEDUPE_BACKENDS.targets.update(before)


def test_a_registered_engine_is_accepted_and_built(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="expected local or spark"):
        Config(day="2021-01-30", engine="custom")
    monkeypatch.setitem(registry.ENGINES.targets, "custom", "streamagg.engines.local:count_day")
    assert Config(day="2021-01-30", engine="custom").engine == "custom"
    assert engine_for("custom") is engine_for("local")


def test_a_registered_backend_and_storage_are_built(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.DEDUPE_BACKENDS.targets, "keys",
                        "streamagg.dedup.sqlite:SqliteDeduper")
    assert Config(day="2021-01-30", dedupe="keys").dedupe == "keys"
    with make_deduper("keys", tmp_dir=str(tmp_path), memory_limit=256 * 2**20) as dedup:
        assert type(dedup).__name__ == "SqliteDeduper"
    monkeypatch.setitem(registry.STORAGES.targets, "disk", "streamagg.sources.local:LocalStorage")
    assert type(storage_for(f"disk://{tmp_path}")).__name__ == "LocalStorage"
    with pytest.raises(UsageError, match=r"expected s3:// or file:// or disk://"):
        storage_for("gs://bucket")


def test_every_storage_sweeps_its_leftovers(tmp_path: Path) -> None:
    assert storage_for(str(tmp_path)).remove_abandoned(["a/b.csv"], older_than=0) == []
