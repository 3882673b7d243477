"""The shape of a kept state's index: what a refresh reads from it, checked before it is used."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .outputs.manifest import TOTALS

_INPUT = {"path": str, "bytes": int, "version": str, "rows": int, "bad_rows": int}
_FILE = {"bytes": int, "sha256": str}


def index_problem(index: dict[str, Any], safe_name: Callable[[object], bool]) -> str | None:
    """Why a parsed index (of this format and version) cannot be used, or None.

    Its bytes matched the sha256 the manifest recorded, so a problem here means a bug or a
    forgery, not damage; either way the day is recomputed instead of failing on a field.
    """
    if not isinstance(index.get("written"), str):
        return "written is not a string"
    if not isinstance(index.get("record"), dict):
        return "record is not an object"
    files = index.get("files")
    if not isinstance(files, dict):
        return "files is not an object"
    for name, entry in files.items():
        if not safe_name(name):
            return f"a state file has the name {name!r}"
        problem = _fields(entry, _FILE, f"files[{name!r}]")
        if problem:
            return problem
    return books_problem(index.get("books"))


def books_problem(books: object) -> str | None:
    """Why the index's ``books`` (see `streamagg.pipeline.state_books`) cannot be used."""
    if not isinstance(books, dict):
        return "books is not an object"
    for name in ("clean_per_bucket", "bad_per_bucket"):
        tally = books.get(name)
        if not isinstance(tally, dict) or not all(
                _is_int_text(k) and _is(v, int) for k, v in tally.items()):
            return f"books.{name} is not an object of counts per bucket"
    for name in ("bad_without_time", "headerless_files"):
        if not _is(books.get(name), int):
            return f"books.{name} is not an integer"
    first = books.get("first_bad")
    if first is not None and (_fields(first, {"uri": str, "reason": str}, "first_bad")
                              or not (first.get("line") is None or _is(first["line"], int))):
        return "books.first_bad is not a bad row"
    totals = books.get("totals")
    if not isinstance(totals, dict) or not all(_is(totals.get(n), int) for n in TOTALS):
        return "books.totals is not an object of counts"
    inputs = books.get("inputs")
    if not isinstance(inputs, list):
        return "books.inputs is not an array"
    for number, entry in enumerate(inputs):
        problem = _fields(entry, _INPUT, f"books.inputs[{number}]")
        if problem:
            return problem
    if not isinstance(books.get("output_sha256"), str):
        return "books.output_sha256 is not a string"
    if not (books.get("rejects_sha256") is None or isinstance(books["rejects_sha256"], str)):
        return "books.rejects_sha256 is not a string"
    return None


def _fields(entry: object, fields: dict[str, type], where: str) -> str | None:
    if not isinstance(entry, dict):
        return f"{where} is not an object"
    for name, kind in fields.items():
        if not _is(entry.get(name), kind):
            return f"{where}.{name} is not {'an integer' if kind is int else 'a string'}"
    return None


def _is(value: object, kind: type) -> bool:
    # JSON true/false load as bool, a subclass of int: never a count.
    return isinstance(value, kind) and not isinstance(value, bool)


def _is_int_text(text: object) -> bool:
    return isinstance(text, str) and text.lstrip("-").isdigit() and text.isascii()
