"""A run's locked work folder, and removal of what killed runs left behind."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator

from .errors import StorageError
from .sources import Storage

log = logging.getLogger("streamagg")

WORK_PREFIX = "streamagg-"
LOCK_NAME = ".lock"
_WORK_NAME = re.compile(re.escape(WORK_PREFIX) + r"(\d+)-[^/]+")
# A work folder without its lock is either being set up this instant or was left by a run
# killed in that instant; past this age, and with its process gone, it is the latter.
UNLOCKED_GRACE_SECONDS = 60.0
# S3 cannot tell whether a multipart upload's writer lives: one younger than this may belong
# to a concurrent run and is left alone (a bucket lifecycle rule removes the rest).
STALE_UPLOAD_SECONDS = 600.0
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@contextlib.contextmanager
def work_folder(tmp_dir: str | None) -> Iterator[str]:
    """A private (0700) folder for one run below ``tmp_dir``, removed at exit.

    Its name carries the process id and it holds a lock for as long as the run lives, so a
    later run can tell a killed run's folder from a live one's.
    """
    parent = tmp_dir or tempfile.gettempdir()
    try:
        path, lock = _locked_folder(parent)
    except OSError as err:
        raise StorageError(f"cannot create a work folder: {err.strerror or err}",
                           uri=parent) from err
    try:
        yield path
    except OSError as err:
        # Spill and sqlite errors are named where they happen; what still arrives here raw is
        # the rejects, output or manifest file failing in this folder: say where.
        if err.errno in _FULL or (err.filename and str(err.filename).startswith(path)):
            raise StorageError(f"cannot write to the work folder: {err.strerror or err}",
                               uri=path) from err
        raise
    finally:
        try:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(lock)


def _locked_folder(parent: str) -> tuple[str, int]:
    while True:
        path = tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-", dir=parent)
        lock_path = os.path.join(path, LOCK_NAME)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                return path, fd
        except FileNotFoundError:
            pass  # a clean-up removed it between creation and lock: make another
        os.close(fd)


def remove_stale_work_folders(tmp_dir: str | None) -> list[str]:
    """Remove the work folders of dead runs in ``tmp_dir``; return their paths."""
    parent = tmp_dir or tempfile.gettempdir()
    removed: list[str] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        match = _WORK_NAME.fullmatch(entry.name)
        if match is None or not entry.is_dir(follow_symlinks=False):
            continue
        if _remove_if_abandoned(entry.path, int(match.group(1))):
            removed.append(entry.path)
    return removed


def _remove_if_abandoned(path: str, pid: int) -> bool:
    try:
        fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        try:
            age = time.time() - os.lstat(path).st_mtime
        except OSError:
            return False
        if _alive(pid) or age < UNLOCKED_GRACE_SECONDS:
            return False
        shutil.rmtree(path, ignore_errors=True)
        return not os.path.lexists(path)
    except OSError:
        return False  # not ours to look into (another user's folder)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # a live run holds it
    try:
        shutil.rmtree(path, ignore_errors=True)
        return not os.path.lexists(path)
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def remove_leftovers(dest: Storage, relatives: list[str], tmp_dir: str | None) -> list[str]:
    """Before a run: remove what killed runs left (work folders, temp files beside the
    outputs, pending multipart uploads to them). Never fails the run: it only tidies."""
    removed = remove_stale_work_folders(tmp_dir)
    try:
        removed += dest.remove_abandoned(relatives, older_than=STALE_UPLOAD_SECONDS)
    except StorageError as err:
        log.warning("could not look for leftovers of interrupted runs: %s", err)
    for item in removed:
        log.info("removed a leftover of an interrupted run: %s", item)
    return removed
