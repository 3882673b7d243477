"""Hostile parameters are refused before any storage call; temp files are private and neutral."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from streamagg import registry
from streamagg.sources.local import LocalStorage
from tests.conftest import (
    DAY,
    DAY_ARG,
    MANIFEST_NAME,
    OUTPUT_NAME,
    PACKAGE_DEDUPE_BACKENDS,
    S3,
    day_path,
)
from tests.reliability.faults import FaultProxy
from tests.reliability.helpers import PART, H, error_line, rows

Cli = Callable[..., Result]
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYzSECRET"

BAD_DATES = ["2021-01-30/../x", "*", "%2F", "2021-01-30\n", "2021-01\n-30", "../2021-01-30",
             "2021-01-30/", "2021%2F01%2F30", "2021-02-30", "2021-13-01", " 2021-01-30", "",
             "2021-01-30\x00", "２０２１-01-30", "2021-01-30T00:00:00"]
BAD_INITIALS = ["A/B", "../x", "a b", "AB\n", "\u00c9A", "12", "A%2FB", "A*", ""]


@pytest.mark.s3
@pytest.mark.parametrize("args", [
    *([date] for date in BAD_DATES),
    *([DAY_ARG, "--initials", initials] for initials in BAD_INITIALS),
    [DAY_ARG, "--source", f"s3://AKIAEXAMPLE:{SECRET}@BUCKET/in"],
    [DAY_ARG, "--dest", f"s3://AKIAEXAMPLE:{SECRET}@BUCKET/out"],
    [DAY_ARG, "--dest", "s3://BUCKET/in/2021/01/30"],
    [DAY_ARG, "--dest", "s3://BUCKET/in/2021/01/30/deeper"],
    [DAY_ARG, "--dest", "s3://BUCKET/in"],
    [DAY_ARG, "--source", "s3://BUCKET/in\n/x"],
    [DAY_ARG, "--source", "ftp://BUCKET/in"],
    [DAY_ARG, "--chunk-size", "0"],
    [DAY_ARG, "--memory-limit", "1KB"],
    [DAY_ARG, "--max-bad-rows", "-1"],
], ids=repr)
def test_refused_with_exit_2_before_any_request(
    cli: Cli, s3: S3, proxy: FaultProxy, args: list[str]
) -> None:
    args = [a.replace("BUCKET", s3.bucket) for a in args]
    if "--source" not in args:
        args += ["--source", f"{s3.uri}/in"]
    s3.put(f"in/{PART}/a.csv", H + rows(5))
    result = cli(*args, "--endpoint-url", proxy.url)
    assert result.exit_code == 2, result.output
    error_line(result.stderr)
    assert proxy.requests() == []  # refused before any storage call
    assert SECRET not in result.output


@pytest.fixture
def no_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("the partition was listed")

    monkeypatch.setattr(LocalStorage, "list_partition", refuse)


@pytest.mark.parametrize("dest", [
    "{source}",
    "{source}/2021/01/30",
    "{source}/2021/01/30/out",
    "{source}/2021/01/x/../30",  # lexically outside, really inside
    "{source}/2021/../2021/01/30/y",
    "file://{source}/2021/01/30",
    "{link}",  # a link into the partition
])
def test_destination_inside_the_source_partition_is_refused(
    cli: Cli, tmp_path: Path, no_listing: None, dest: str
) -> None:
    source = tmp_path / "source"
    (source / day_path(DAY)).mkdir(parents=True)
    (source / day_path(DAY) / "a.csv").write_text(H + rows(5))
    link = tmp_path / "link"
    link.symlink_to(source / "2021" / "01" / "30" / "inner", target_is_directory=True)
    before = sorted(p.as_posix() for p in tmp_path.rglob("*"))
    result = cli(DAY_ARG, "--source", source, "--dest", dest.format(source=source, link=link))
    assert result.exit_code == 2, result.output
    assert "inside the source partition" in error_line(result.stderr)
    assert sorted(p.as_posix() for p in tmp_path.rglob("*")) == before


# --- temp files: private, and named by the program, never by an input -------------------------

HOSTILE_NAMES = ["a b.csv", "$(touch pwned).csv", "..%2F..%2Fx.csv", "new\nline.csv",
                 "ü-ñ.csv", "-rf.csv", "x;rm -rf.csv", "sub/..hidden/y.csv", "'quote\".csv"]
NAME_PATTERNS = [r"streamagg-\d+-[a-z0-9_]{8}", r"\.lock", r"rejects\.csv",
                 r"streamagg-(spill|sqlite)-[a-z0-9_]{8}", r"p\d{4}\.arrow", r"keys\.sqlite",
                 r"p\d{4}\.arrow\.\d{4}\.arrow"]


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The loosest umask: whatever stays private is private by the program's own doing."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("dedupe", PACKAGE_DEDUPE_BACKENDS)
def test_work_files_are_private_and_never_named_after_inputs(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, open_umask: None, dedupe: str
) -> None:
    source, scratch = tmp_path / "source", tmp_path / "scratch"
    folder = source / day_path(DAY)
    for i, name in enumerate(HOSTILE_NAMES):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(H + rows(3000, prefix=f"f{i}-") + "bad,,1\n")
    scratch.mkdir()
    seen: dict[str, int] = {}
    backend: Any = registry.DEDUPE_BACKENDS.load(dedupe)
    original = backend.add

    def look(self: Any, batch: Any) -> None:
        original(self, batch)
        for path in scratch.rglob("*"):
            seen[path.relative_to(scratch).as_posix()] = stat.S_IMODE(path.lstat().st_mode)

    monkeypatch.setattr(backend, "add", look)
    result = cli(DAY_ARG, "--source", source, "--tmp-dir", scratch, "--dedupe", dedupe,
                 "--chunk-size", "1000", "--max-bad-rows", "50%")
    assert result.exit_code == 0, result.output
    assert any(name.endswith((".arrow", ".sqlite")) for name in seen), seen
    for name, mode in seen.items():
        assert any(re.fullmatch(p, name.split("/")[-1]) for p in NAME_PATTERNS), name
        is_dir = (scratch / name).is_dir() if (scratch / name).exists() else "." not in name
        assert mode == (0o700 if is_dir else 0o600), (name, oct(mode))
    assert os.listdir(scratch) == []
    assert "pwned" not in os.listdir(tmp_path) and not Path("pwned").exists()
    out = source / "results" / day_path(DAY)
    assert sorted(os.listdir(out)) == sorted(
        [OUTPUT_NAME, MANIFEST_NAME, "_daily_agg_20210130_SA.rejects.csv"])
    # Published results are meant to be read: not private, whatever the umask.
    assert stat.S_IMODE((out / OUTPUT_NAME).stat().st_mode) == 0o644


@pytest.mark.s3
def test_keys_that_climb_out_of_the_partition_are_not_inputs(cli: Cli, s3: S3) -> None:
    s3.put(f"in/{PART}/a.csv", H + rows(5))
    for key in (f"in/{PART}/../b.csv", f"in/{PART}/./c.csv", f"in/{PART}/.d.csv",
                f"in/{PART}/x/../../e.csv"):
        s3.put(key, H + rows(5, prefix="evil"))
    result = cli(DAY_ARG, "--source", f"{s3.uri}/in", "--endpoint-url", s3.endpoint,
                 "--dry-run")
    assert result.exit_code == 0, result.output
    listed = [line.split()[0] for line in result.stdout.splitlines() if "s3://" in line
              and "output" not in line]
    assert listed == [f"{s3.uri}/in/{PART}/a.csv"], result.stdout
