"""A manifest that parses as JSON but has another shape: recompute, saying why, never a crash."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from streamagg.outputs.manifest import schema_problem
from tests.conftest import DAY, DAY_ARG, MANIFEST_NAME, OUTPUT_NAME, day_path
from tests.reliability.helpers import H, rows

Cli = Callable[..., Result]


def reshaped(manifest: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """A copy of ``manifest`` with the field at ``a.b.0.c`` set to ``value`` (or removed)."""
    copy = json.loads(json.dumps(manifest))
    *parents, last = path.split(".")
    target: Any = copy
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if value is _REMOVE:
        del target[int(last) if isinstance(target, list) else last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return copy


class _Removed:
    """Marks a key taken out of the manifest; its repr keeps test ids the same in every process."""

    def __repr__(self) -> str:
        return "REMOVED"


_REMOVE = _Removed()
SHAPES = [
    ("inputs", "x"), ("inputs", None), ("inputs.0", "x"), ("inputs.0.path", 3),
    ("inputs.0.bytes", "12"), ("inputs.0.mtime", _REMOVE), ("inputs.0.mtime", [1]),
    ("output", 7), ("output", None), ("output.sha256", _REMOVE), ("totals", []),
    ("totals.impressions", "3"), ("totals.rows_read", True), ("parameters", "p"),
    ("finished", 5), ("version", 2), ("version", "1"), ("version", True),
]


@pytest.fixture
def day_done(cli: Cli, partition: Callable[..., Path]) -> tuple[Path, Path]:
    source = partition({"a.csv": H + rows(5)})
    assert cli(DAY_ARG, "--source", source).exit_code == 0
    return source, source / "results" / day_path(DAY)


@pytest.mark.parametrize(("path", "value"), SHAPES, ids=[f"{p}={v!r}" for p, v in SHAPES])
def test_a_manifest_of_another_shape_is_recomputed_saying_why(
    cli: Cli, day_done: tuple[Path, Path], path: str, value: object
) -> None:
    source, out = day_done
    good = json.loads((out / MANIFEST_NAME).read_text())
    assert schema_problem(good) is None
    (out / MANIFEST_NAME).write_text(json.dumps(reshaped(good, path, value)))
    field = path.split(".")[-1] if not path.startswith("inputs.0") else "inputs[0]"
    check = cli(DAY_ARG, "--source", source, "--check")
    assert check.exit_code == 0, check.output
    assert "Traceback" not in check.output and "unexpected" not in check.output
    assert "manifest unreadable" in check.stdout and field in check.stdout, check.stdout
    skip = cli(DAY_ARG, "--source", source, "--skip-unchanged", "--log-format", "json")
    assert skip.exit_code == 0, skip.output
    assert "manifest unreadable" in skip.stderr and "recomputing" in skip.stderr, skip.stderr
    rewritten = json.loads((out / MANIFEST_NAME).read_text())  # recomputed: whole again
    assert schema_problem(rewritten) is None
    assert rewritten["totals"] == good["totals"] and rewritten["inputs"] == good["inputs"]
    assert (out / OUTPUT_NAME).exists()


@pytest.mark.parametrize("data", [[], "x", 7, None])
def test_json_that_is_not_an_object_is_refused_by_the_schema(data: object) -> None:
    assert "not a JSON object" in str(schema_problem(data))
