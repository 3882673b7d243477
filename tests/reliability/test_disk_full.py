"""A full spill folder: exit 1 naming it, its files removed, nothing uploaded."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from click.testing import Result

from streamagg.testing.generate import generate_day
from tests.conftest import DAY, DAY_ARG, PACKAGE_DEDUPE_BACKENDS, S3
from tests.reliability.faults import FaultProxy
from tests.reliability.helpers import PART, H, error_line, results, rows

pytestmark = pytest.mark.s3
Cli = Callable[..., Result]


@pytest.fixture(scope="module")
def day_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated day, made once for the module; each test gets a copy."""
    source = tmp_path_factory.mktemp("disk-full-day") / "source"
    generate_day(source, DAY, rows=30_000, files=2, gzip_files=1, seed=9)
    return source


@pytest.fixture
def day(tmp_path: Path, day_template: Path) -> Path:
    source = tmp_path / "source"
    shutil.copytree(day_template, source)
    return source


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """Mounts tiny tmpfs folders, ``tmpfs(name, size)``: real file systems that fill up. Needs
    root (CAP_SYS_ADMIN); skips where mounting is impossible."""
    mounted: list[Path] = []

    def mount(name: str, size: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        done = os.geteuid() == 0 and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(folder)],
            capture_output=True, check=False).returncode == 0
        if not done:
            pytest.skip("cannot mount a tmpfs here (not root); the patched-write tests cover "
                        "this")
        mounted.append(folder)
        return folder

    try:
        yield mount
    finally:
        for folder in mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def tiny_tmpfs(tmpfs: Callable[[str, str], Path]) -> Path:
    """A 192 KiB tmpfs."""
    return tmpfs("tiny", "192k")


def run_to_s3(cli: Cli, source: Path, s3: S3, proxy: FaultProxy, tmp_dir: Path,
              *extra: str) -> Result:
    return cli(DAY_ARG, "--source", source, "--dest", f"{s3.uri}/out", "--endpoint-url",
               proxy.url, "--tmp-dir", tmp_dir, "--max-bad-rows", "5%", *extra)


def assert_nothing_uploaded(s3: S3, proxy: FaultProxy) -> None:
    writes = [seen for seen in proxy.requests() if seen.method in ("PUT", "POST")]
    assert writes == [] and results(s3, "out") == {} and s3.pending_uploads() == []


@pytest.mark.parametrize("dedupe", ["spill", "sqlite"])
def test_a_real_full_file_system(
    cli: Cli, day: Path, s3: S3, proxy: FaultProxy, tiny_tmpfs: Path, dedupe: str
) -> None:
    result = run_to_s3(cli, day, s3, proxy, tiny_tmpfs, "--dedupe", dedupe)
    assert result.exit_code == 1, result.output
    message = error_line(result.stderr)
    assert str(tiny_tmpfs) in message, message
    assert "No space left on device" in message or "disk is full" in message, message
    assert os.listdir(tiny_tmpfs) == []
    assert_nothing_uploaded(s3, proxy)


class _FillingFile:
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, path: str, room: list[int]) -> None:
        self._out = open(path, "wb")  # noqa: SIM115 - closed by pyarrow through close()
        self._room = room

    def write(self, data: Any) -> int:
        size = len(memoryview(data).cast("B"))
        if size > self._room[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room[0] -= size
        return self._out.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._out, name)


def test_spill_writes_failing_with_enospc(
    cli: Cli, day: Path, s3: S3, proxy: FaultProxy, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    room = [200_000]  # shared by all spill files, like the free space of one disk
    real = pa.OSFile

    def filling(path: str, mode: str = "r") -> Any:
        if mode[:1] in ("w", "a") and path.endswith(".arrow"):  # spill files append
            return pa.PythonFile(_FillingFile(path, room), mode="w")
        return real(path, mode)

    monkeypatch.setattr(pa, "OSFile", filling)
    result = run_to_s3(cli, day, s3, proxy, scratch, "--chunk-size", "1000")
    assert room[0] < 200_000, "no spill file was written"
    assert result.exit_code == 1, result.output
    message = error_line(result.stderr)
    assert "cannot write spill files" in message and "No space left on device" in message
    assert str(scratch) in message
    assert os.listdir(scratch) == []
    assert_nothing_uploaded(s3, proxy)


@pytest.mark.parametrize("where", ["rejects", "output"])
def test_other_work_files_failing_with_enospc(
    cli: Cli, day: Path, s3: S3, proxy: FaultProxy, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if where == "rejects":
        from streamagg.outputs.rejects import RejectsFile

        monkeypatch.setattr(RejectsFile, "write", full)
    else:
        import streamagg.pipeline

        monkeypatch.setattr(streamagg.pipeline, "write_output", full)
    result = run_to_s3(cli, day, s3, proxy, scratch)
    assert result.exit_code == 1, result.output
    message = error_line(result.stderr)
    assert "cannot write to the work folder: No space left on device" in message, message
    assert f"{scratch}/streamagg-" in message
    assert os.listdir(scratch) == []
    assert_nothing_uploaded(s3, proxy)


def test_unwritable_tmp_dir_is_one_clear_line(
    cli: Cli, day: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    def refused(*args: object, **kwargs: object) -> str:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(tempfile, "mkdtemp", refused)
    result = cli(DAY_ARG, "--source", day, "--tmp-dir", tmp_path)
    assert result.exit_code == 1, result.output
    message = error_line(result.stderr)
    assert "cannot create a work folder: Permission denied" in message and str(tmp_path) in message
    assert not (day / "results" / PART).exists()


# Each place a run writes, filled up: the tmpfs goes there, and the error must name it.
# "bad rows" fills --tmp-dir with the rows a file's reading sets aside (columns.BadRows).
PLACES = ["destination", "tmp-dir", "bad rows", "state"]


@pytest.mark.parametrize("dedupe", PACKAGE_DEDUPE_BACKENDS)
@pytest.mark.parametrize("place", PLACES)
def test_a_full_place_is_the_place_the_error_names(
    cli: Cli, tmp_path: Path, tmpfs: Callable[[str, str], Path], place: str, dedupe: str
) -> None:
    source = tmp_path / "source"
    folder = source / PART
    folder.mkdir(parents=True)
    # An output of 264 rows (6.5 KiB): more than the destination holds, less than a write
    # buffer, so it fails when flushed. 6,000 bad rows: over the 4,096 a file keeps in memory.
    # They come first: set aside before any key is, so the sqlite key table, which shares the
    # --tmp-dir, cannot be the first to fill it (it was, once in six runs, when they came last).
    bad = "".join(f"bad{i},not a time,{i % 7}\n" for i in range(6000 if place == "bad rows"
                                                                 else 0))
    (folder / "a.csv").write_text(H + bad + rows(6000, campaigns=11))
    full = tmpfs("full", "16k" if place == "state" else "4k" if place == "destination"
                 else "64k")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    where = {"destination": ["--dest", full], "tmp-dir": ["--tmp-dir", full],
             "bad rows": ["--tmp-dir", full], "state": ["--state", full, "--incremental"]}
    args = ["--tmp-dir", scratch, "--dest", tmp_path / "out", *where[place]]
    result = cli(DAY_ARG, "--source", source, "--dedupe", dedupe, "--max-bad-rows", "100%",
                 "--chunk-size", "500", *args)
    assert result.exit_code == 1, result.output
    message = error_line(result.stderr)
    assert f"({full}/" in message or f"({full})" in message, message
    assert "No space left on device" in message or "disk is full" in message, message
    assert "read failed" not in message  # an input was never the place that failed
    if place == "bad rows":
        assert "cannot set bad rows aside" in message, message
    assert not (tmp_path / "out" / PART).exists() or place == "state"


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_fetching_into_a_full_folder_names_the_folder_not_the_object(
    tmp_path: Path, tmpfs: Callable[[str, str], Path], s3: S3, storage: str
) -> None:
    # How a kept state comes down into the work folder: its failure is the folder's.
    from streamagg.errors import StorageError
    from streamagg.sources import storage_for

    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "state.arrow").write_bytes(b"x" * 20_000)
    s3.put("store/state.arrow", b"x" * 20_000)
    root = str(tmp_path / "store") if storage == "local" else f"{s3.uri}/store"
    full = tmpfs("full", "4k")
    with pytest.raises(StorageError) as failed:
        storage_for(root, endpoint_url=s3.endpoint).fetch("state.arrow", str(full / "copy"))
    assert str(failed.value) == ("cannot write: No space left on device "
                                 f"({full / 'copy'})"), failed.value
