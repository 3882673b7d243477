"""`streamagg.cleanup`: what counts as a killed run's leftover, and what is a live run's."""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamagg import cleanup
from streamagg.errors import StorageError
from streamagg.sources.local import LocalStorage
from streamagg.sources.s3 import S3Storage
from tests.conftest import S3
from tests.reliability.faults import FaultProxy
from tests.reliability.helpers import REPO, child_env


def test_work_folder_is_private_locked_and_removed(tmp_path: Path) -> None:
    with cleanup.work_folder(str(tmp_path)) as work:
        name = os.path.basename(work)
        assert name.startswith(f"streamagg-{os.getpid()}-")
        assert stat.S_IMODE(os.stat(work).st_mode) == 0o700
        fd = os.open(os.path.join(work, cleanup.LOCK_NAME), os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        assert cleanup.remove_stale_work_folders(str(tmp_path)) == []  # a live run's
    assert os.listdir(tmp_path) == []
    with pytest.raises(RuntimeError), cleanup.work_folder(str(tmp_path)):
        raise RuntimeError("the run failed")
    assert os.listdir(tmp_path) == []


def test_a_dead_process_folder_is_removed(tmp_path: Path) -> None:
    # A real process that dies without cleaning up (os._exit skips every finally).
    code = ("import os, sys; from streamagg.cleanup import work_folder\n"
            "with work_folder(sys.argv[1]) as work:\n"
            "    open(os.path.join(work, 'p0000.arrow'), 'wb').write(b'spilled')\n"
            "    os._exit(0)\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, cwd=REPO,
                   env=child_env())
    left = os.listdir(tmp_path)
    assert len(left) == 1 and left[0].startswith("streamagg-")
    assert cleanup.remove_stale_work_folders(str(tmp_path)) == [str(tmp_path / left[0])]
    assert os.listdir(tmp_path) == []


def make_unlocked(parent: Path, pid: int, age: float) -> Path:
    folder = parent / f"streamagg-{pid}-abcd1234"
    folder.mkdir()
    (folder / "p0000.arrow").write_bytes(b"x")
    stamp = time.time() - age
    os.utime(folder, (stamp, stamp))
    return folder


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.parametrize(("pid", "age", "removed"), [
    ("dead", 3600, True),  # killed between creating its folder and its lock, long ago
    ("dead", 1, False),  # may be another host's run setting up (shared tmp dir)
    ("alive", 3600, False),  # a live process owns it
])
def test_folders_without_a_lock(tmp_path: Path, pid: str, age: float, removed: bool) -> None:
    folder = make_unlocked(tmp_path, dead_pid() if pid == "dead" else os.getpid(), age)
    assert cleanup.remove_stale_work_folders(str(tmp_path)) == ([str(folder)] if removed
                                                                  else [])
    assert folder.exists() is not removed


def test_other_names_are_never_touched(tmp_path: Path) -> None:
    keep = ["streamagg-spill-abcd1234", "streamagg-abcd1234", "other", "streamagg-1-x.csv"]
    for name in keep[:3]:
        (tmp_path / name).mkdir()
    (tmp_path / keep[3]).write_text("a file")
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / f"streamagg-{dead_pid()}-linkabcd").symlink_to(target)
    assert cleanup.remove_stale_work_folders(str(tmp_path)) == []
    assert sorted(name for name in os.listdir(tmp_path) if not name.endswith("linkabcd")) == (
        sorted([*keep, "elsewhere"]))
    assert len(os.listdir(tmp_path)) == len(keep) + 2 and os.listdir(target) == []


def test_local_temp_files_of_dead_writers_only(tmp_path: Path) -> None:
    storage = LocalStorage(str(tmp_path))
    folder = tmp_path / "2021/01/30"
    folder.mkdir(parents=True)
    dead = folder / ".daily_agg_20210130_SA.csv.dead1234.tmp"
    live = folder / ".daily_agg_20210130_SA.csv.live1234.tmp"
    other = [folder / name for name in (".daily_agg_20210130_XY.csv.abcd1234.tmp",
                                        "daily_agg_20210130_SA.csv", ".daily_agg_20210130_SA.csv")]
    for path in [dead, live, *other]:
        path.write_text("x")
    holder = os.open(live, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)  # as a live run's publish holds it
    try:
        removed = storage.remove_abandoned(["2021/01/30/daily_agg_20210130_SA.csv",
                                            "2021/01/30/_daily_agg_20210130_SA.manifest.json"],
                                           older_than=0)
    finally:
        os.close(holder)
    assert removed == [str(dead)]
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in [live, *other])
    assert storage.remove_abandoned(["no/such/folder/x.csv"], older_than=0) == []


@pytest.mark.s3
def test_s3_uploads_are_aborted_only_when_old_and_only_for_the_run_keys(
    s3: S3, proxy: FaultProxy
) -> None:
    # Through the proxy, which reports each upload's true start time as S3 does.
    storage = S3Storage(f"{s3.uri}/out", endpoint_url=proxy.url)
    mine = "out/2021/01/30/daily_agg_20210130_SA.csv"
    theirs = "out/2021/01/30/daily_agg_20210130_XY.csv"
    for key in (mine, theirs):
        storage.client.create_multipart_upload(Bucket=s3.bucket, Key=key)
    wanted = ["2021/01/30/daily_agg_20210130_SA.csv",
              "2021/01/30/_daily_agg_20210130_SA.manifest.json"]
    assert storage.remove_abandoned(wanted, older_than=cleanup.STALE_UPLOAD_SECONDS) == []
    assert len(s3.pending_uploads()) == 2
    removed = storage.remove_abandoned(wanted, older_than=0)
    assert len(removed) == 1 and mine in removed[0]
    assert [upload["Key"] for upload in s3.pending_uploads()] == [theirs]


def test_leftover_search_never_fails_a_run(tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    class Refusing(LocalStorage):
        def remove_abandoned(self, relatives: list[str], *, older_than: float = 0) -> list[str]:
            raise StorageError("access denied", uri="s3://bucket/out/")

    assert cleanup.remove_leftovers(Refusing(str(tmp_path)), ["x.csv"], str(tmp_path)) == []
    assert "could not look for leftovers" in caplog.text
