"""The names the CLI offers, `Config` accepts and the factories build: one table per kind.

Each entry names its implementation as ``module:attribute``, imported on first use, so a run
on local files never imports boto3 and a local run never imports pyspark. The tables sit in
this leaf module, not in their packages, because `config` (which validates against them) lies
below `engines` and `dedup` in the import graph.

`Registry.register` is the extension point for implementations outside the package (a plugin,
a test-only backend): one line, before the command line is built (``streamagg.ops.cli`` reads
the names when it is imported; `Config` and the factories read them at each call).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Registry:
    """Implementations of one kind by name, in the order the CLI lists them."""

    kind: str  # for messages: "engine", "dedupe backend", "storage scheme"
    targets: dict[str, str]  # name -> "module:attribute"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.targets)

    def __contains__(self, name: object) -> bool:
        return name in self.targets

    def __iter__(self) -> Iterator[str]:
        return iter(self.targets)

    def expected(self) -> str:
        """``local or spark``: the names, for a usage error."""
        return " or ".join(self.names)

    def register(self, name: str, target: str) -> None:
        """Offer ``target`` (``"module:attribute"``, imported on first use) as ``name``: a
        de-duplication backend is a `streamagg.dedup.Deduper` subclass, an engine a
        `streamagg.engines.Engine`, a storage a `streamagg.sources.Storage` class."""
        if name in self.targets:
            raise ValueError(f"{self.kind} {name!r} is registered already, as "
                             f"{self.targets[name]}")
        if not name or ":" not in target:
            raise ValueError(f"a {self.kind} is registered as a name and 'module:attribute'")
        self.targets[name] = target

    def load(self, name: str) -> Any:
        """The implementation registered as ``name``, imported now."""
        target = self.targets.get(name)
        if target is None:
            raise ValueError(f"unknown {self.kind} {name!r}: expected {self.expected()}")
        module, _, attribute = target.partition(":")
        return getattr(importlib.import_module(module), attribute)


ENGINES = Registry("engine", {
    "local": "streamagg.engines.local:count_day",
    "spark": "streamagg.engines.spark:count_day",
})
DEDUPE_BACKENDS = Registry("dedupe backend", {
    "spill": "streamagg.dedup.spill:SpillDeduper",
    "sqlite": "streamagg.dedup.sqlite:SqliteDeduper",
})
STORAGES = Registry("storage scheme", {
    "s3": "streamagg.sources.s3:S3Storage",
    "file": "streamagg.sources.local:LocalStorage",
})
