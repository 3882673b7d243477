"""Local files written whole or not at all, and copies whose errors name the side that failed."""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import StorageError
from . import Digest

CHUNK = 1 << 20


def copy_chunks(src: Any, src_name: str, out: BinaryIO, out_name: str,
                digest: Digest | None = None) -> None:
    """Copy ``src`` (anything with ``read``) into ``out``, feeding ``digest`` the bytes. An
    OSError reading names the source, one writing names the target: a full disk is never
    blamed on what was read."""
    while True:
        try:
            chunk = src.read(CHUNK)
        except OSError as err:
            raise StorageError(f"cannot read: {err.strerror or err}", uri=src_name) from err
        if not chunk:
            return
        try:
            out.write(chunk)
        except OSError as err:
            raise StorageError(f"cannot write: {err.strerror or err}", uri=out_name) from err
        if digest is not None:
            digest.update(chunk)


def copy_to_file(src: Any, src_name: str, path: str, digest: Digest | None = None) -> None:
    """Copy ``src`` into a new local file at ``path`` (feeding ``digest``); errors name the
    side that failed."""
    try:
        out = open(path, "wb")  # noqa: SIM115 - closed below, its errors named
    except OSError as err:
        raise StorageError(f"cannot write: {err.strerror or err}", uri=path) from err
    try:
        copy_chunks(src, src_name, out, path, digest)
        out.flush()
    except OSError as err:
        raise StorageError(f"cannot write: {err.strerror or err}", uri=path) from err
    finally:
        _close_quietly(out)  # flushed above: a failure here was already raised


def publish_file(local_path: str, target: Path) -> None:
    """Replace ``target`` with the bytes of ``local_path`` atomically: a locked temp file in
    the target folder (the rename stays on one file system), synced, then renamed."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _locked_temp(target)
    except OSError as err:
        raise StorageError(f"cannot write: {err.strerror}", uri=str(target)) from err
    out = os.fdopen(fd, "wb")
    try:
        try:
            src = open(local_path, "rb")  # noqa: SIM115 - closed by the with below
        except OSError as err:
            raise StorageError(f"cannot read: {err.strerror}", uri=local_path) from err
        with src:
            copy_chunks(src, local_path, out, str(target))
        out.flush()
        os.fsync(out.fileno())
        os.fchmod(fd, 0o644)
        # Renamed while still open, so the lock covers the file's whole life as a temp file.
        os.replace(tmp, target)
    except OSError as err:
        _close_quietly(out)
        _unlink_quietly(tmp)
        raise StorageError(f"cannot write: {err.strerror}", uri=str(target)) from err
    except BaseException:
        # Closing flushes what is still buffered, which fails again on a full disk: that
        # second error must not replace the first, which names the right place.
        _close_quietly(out)
        _unlink_quietly(tmp)
        raise
    out.close()  # everything was flushed and synced above


def remove_abandoned_temps(target: Path) -> list[str]:
    """Remove the temp files killed runs left beside ``target``; return their paths.

    A writer holds a lock on its temp file until it is renamed, so a temp file whose lock can
    be taken belongs to no live process, whatever its age.
    """
    pattern = re.compile(re.escape(f".{target.name}.") + r"[^/]+\.tmp")
    try:
        names = os.listdir(target.parent)
    except OSError:
        return []  # no folder yet: nothing left behind
    return [str(target.parent / name) for name in names
            if pattern.fullmatch(name) and _remove_if_unlocked(str(target.parent / name))]


def _locked_temp(target: Path) -> tuple[int, str]:
    """A new temp file beside ``target``, locked for as long as this process holds it open.

    The lock tells a later run's clean-up that the file is in use; it is re-checked after
    locking in case a clean-up removed the file in between.
    """
    while True:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(tmp).st_ino == os.fstat(fd).st_ino:
                return fd, tmp
        except FileNotFoundError:
            pass
        os.close(fd)


def _remove_if_unlocked(path: str) -> bool:
    """Delete a temp file no live process holds a lock on."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.unlink(path)
        return True
    except OSError:
        return False  # locked: a live run is writing it
    finally:
        os.close(fd)


def _close_quietly(out: Any) -> None:
    try:
        out.close()
    except OSError:
        pass


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
