"""Listing a partition: names in any case, the warning for other files, any depth, any mtime,
and a generator of the names and metadata a listing can meet."""

from __future__ import annotations

import datetime as dt
import logging
import os
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamagg.errors import StreamaggError, printable
from streamagg.sources import storage_for
from streamagg.sources.local import LocalStorage, expanded_iso
from tests.conftest import DAY, DAY_ARG, S3, day_path
from tests.reference import is_input
from tests.reliability.helpers import H, rows

Cli = Callable[..., Result]
PART = day_path(DAY)


def not_input_warnings(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records
            if r.levelno == logging.WARNING and "not read: not .csv" in r.getMessage()]


OTHERS = {"notes.txt": b"x", "b.json": b"x", "sub/c.csv.bak": b"x", "d.txt": b"", "e.parquet": b"x"}
QUIET = {"_SUCCESS": b"", ".part.csv": b"x", "_tmp/x.txt": b"x", "A.CSV": b"x", "b.Csv.Gz": b"x"}


def test_other_visible_files_get_one_warning_with_a_count_and_a_few_names(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for name, data in {**OTHERS, **QUIET}.items():
        path = tmp_path / PART / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    with caplog.at_level(logging.WARNING, logger="streamagg"):
        inputs, empty = LocalStorage(str(tmp_path)).list_partition(PART)
    assert [i.key for i in inputs] == [f"{PART}/A.CSV", f"{PART}/b.Csv.Gz"]
    (warning,) = not_input_warnings(caplog.records)
    assert warning.startswith(f"5 file(s) of {tmp_path / PART} not read: ")
    assert warning.endswith(": b.json, d.txt, e.parquet and 2 more"), warning
    assert not [r for r in caplog.records if "_SUCCESS" in r.getMessage() or ".part" in
                r.getMessage()]


@pytest.mark.s3
def test_s3_warns_the_same(s3: S3, caplog: pytest.LogCaptureFixture) -> None:
    for name, data in {**OTHERS, **QUIET}.items():
        s3.client.put_object(Bucket=s3.bucket, Key=f"in/{PART}/{name}", Body=data)
    storage = storage_for(f"{s3.uri}/in", endpoint_url=s3.endpoint)
    with caplog.at_level(logging.WARNING, logger="streamagg"):
        inputs, _ = storage.list_partition(PART)
    assert [i.key for i in inputs] == [f"in/{PART}/A.CSV", f"in/{PART}/b.Csv.Gz"]
    (warning,) = not_input_warnings(caplog.records)
    assert warning.startswith(f"5 file(s) of s3://{s3.bucket}/in/{PART}/ not read: ")


def remove_tree(top: Path) -> None:
    """rm -rf: shutil.rmtree in Python 3.11 recurses, and fails past 1,000 folders deep."""
    subprocess.run(["rm", "-rf", "--", str(top)], check=True)


def make_folders(folder: Path, parts: list[str]) -> Path:
    """Folders one level at a time, each made from its parent's descriptor (os.makedirs
    recurses once a level, and a path from the root costs its whole depth each time)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts:
            try:
                os.mkdir(part, dir_fd=fd)
            except FileExistsError:
                pass
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)
    return folder.joinpath(*parts)


def test_a_partition_1100_folders_deep_is_read(cli: Cli, tmp_path: Path) -> None:
    folder = tmp_path / "source" / PART
    folder.mkdir(parents=True)
    try:
        (folder / "top.csv").write_text(H + rows(3, prefix="t"))
        (make_folders(folder, ["d"] * 1100) / "deep.csv").write_text(H + rows(4, prefix="d"))
        result = cli(DAY_ARG, "--source", tmp_path / "source", "--dest", tmp_path / "out")
        assert result.exit_code == 0, result.output
        assert "rows read    7" in result.stdout, result.stdout
    finally:
        remove_tree(tmp_path / "source")


@pytest.fixture
def tmpfs() -> Iterator[Path]:
    """A folder on tmpfs, which keeps mtimes past the year 9999 (ext4 stops at 2446)."""
    if not os.access("/dev/shm", os.W_OK):
        pytest.skip("no /dev/shm")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as folder:
        probe = Path(folder) / "probe"
        probe.touch()
        os.utime(probe, (4e11, 4e11))
        if probe.stat().st_mtime != 4e11:
            pytest.skip("/dev/shm does not keep an mtime past 9999")
        probe.unlink()
        yield Path(folder)


@pytest.mark.parametrize("mtime", [4e11, -1e13, 1e17])  # years 14645, -314918, and far beyond
def test_mtimes_outside_datetimes_range_work_in_a_run_a_dry_run_and_a_check(
        cli: Cli, tmpfs: Path, mtime: float) -> None:
    folder = tmpfs / "source" / PART
    folder.mkdir(parents=True)
    for name in ("a.csv", "b.csv"):
        (folder / name).write_text(H + rows(5, prefix=name[0]))
    os.utime(folder / "b.csv", (mtime, mtime))
    args = [DAY_ARG, "--source", tmpfs / "source", "--dest", tmpfs / "out"]
    for extra in (["--dry-run"], [], ["--check"], ["--skip-unchanged"]):
        result = cli(*args, *extra)
        assert result.exit_code == 0, (extra, result.output)
        assert "unexpected" not in result.output


@given(st.integers(-(10**24), 10**24))
@settings(max_examples=200)
def test_expanded_iso_is_datetimes_iso_where_datetime_reaches(ns: int) -> None:
    text = expanded_iso(ns)
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    try:
        moment = epoch + dt.timedelta(microseconds=ns // 1000)
    except OverflowError:
        assert text.startswith(("-", "+")) and text.endswith("+00:00")
        return
    assert text == "+" + moment.isoformat(timespec="microseconds")


# --- the class: names and metadata a listing can meet ----------------------------------------

EXTENSIONS = [".csv", ".CSV", ".Csv", ".csv.gz", ".CSV.GZ", ".cSv.Gz", ".txt", ".gz", ".csv.bak",
              ".c\u017fv", ""]
MTIMES = [None, 0.0, -1.0, 2**31 + 0.5, 1.6e9, 4e11, -6.3e10, -1e13, 1e17]
name_text = st.one_of(
    st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=["Cs"]),
            min_size=1, max_size=20),
    # bytes that are not UTF-8 too (any but NUL and "/", which no name can hold)
    st.binary(min_size=1, max_size=12).map(
        lambda raw: os.fsdecode(raw.replace(b"\x00", b"0").replace(b"/", b"1"))),
).filter(lambda name: name not in (".", ".."))


@st.composite
def entries(draw: st.DrawFn) -> list[tuple[str, str, bytes, float | None]]:
    """(kind, path below the partition, content, mtime): files, folders at any depth, links to
    files, folders, the partition itself, and to nothing."""
    made = []
    for _ in range(draw(st.integers(1, 8))):
        depth = 1100 if draw(st.integers(0, 40)) == 0 else draw(st.sampled_from([0, 0, 1, 2, 5]))
        folders = ["d"] * depth if depth > 5 else draw(st.lists(name_text, min_size=depth,
                                                                max_size=depth))
        name = draw(name_text) + draw(st.sampled_from(EXTENSIONS))
        path = "/".join([*folders, name])
        kind = draw(st.sampled_from(["file", "file", "file", "link-file", "link-folder",
                                     "link-partition", "link-nowhere", "folder"]))
        content = draw(st.sampled_from([b"", b"x", H.encode()]))
        made.append((kind, path, content, draw(st.sampled_from(MTIMES))))
    return made


def build(folder: Path, made: list[tuple[str, str, bytes, float | None]]) -> set[str]:
    """Write the entries; return the paths a listing must find: non-empty regular files with
    an input's name, reached through no link."""
    must, links = set(), set()
    for kind, relative, content, mtime in made:
        parts = relative.split("/")
        path = folder / relative
        try:
            make_folders(folder, parts[:-1])
            if kind == "folder":
                path.mkdir()
            elif kind == "file":
                path.write_bytes(content)
                if mtime is not None:
                    os.utime(path, (mtime, mtime))
            else:
                target = {"link-file": folder / "_target.csv", "link-folder": folder / "_dir",
                          "link-partition": folder, "link-nowhere": folder / "_gone"}[kind]
                (folder / "_target.csv").write_bytes(H.encode())
                (folder / "_dir").mkdir(exist_ok=True)
                path.symlink_to(target)
                links.add(relative)
        except OSError:
            continue  # a name the file system refuses (too long, taken): not an entry
        through_link = any("/".join(parts[:i]) in links for i in range(1, len(parts)))
        if kind == "file" and is_input(relative) and not through_link:
            must.add(relative)
    # As the entries left them: a later entry may have emptied or replaced an earlier one.
    return {m for m in must if stat.S_ISREG(os.lstat(folder / m).st_mode)
            and os.lstat(folder / m).st_size > 0}


@given(made=entries())
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_listing_lists_or_fails_in_one_line_naming_a_path(
        made: list[tuple[str, str, bytes, float | None]]) -> None:
    base = Path(tempfile.mkdtemp(dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None))
    try:
        root = base / "root"
        folder = root / PART
        folder.mkdir(parents=True)
        must = build(folder, made)
        try:
            inputs, _ = LocalStorage(str(root)).list_partition(PART)
        except StreamaggError as err:
            assert printable(str(folder)) in str(err), err
            assert "\n" not in str(err)
            return
        found = [i.key[len(PART) + 1:] for i in inputs]
        assert found == sorted(found)
        assert all(is_input(Path(key).name) for key in found)
        assert {m for m in must if _is_utf8(m)} <= set(found)
        assert all(i.version and i.size > 0 for i in inputs)
    finally:
        remove_tree(base)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
