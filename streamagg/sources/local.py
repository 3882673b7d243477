"""Local folders (paths or ``file://``): listing by walking, writes by temp file and rename."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

from ..errors import StorageError, UsageError
from . import InputFile, is_input_name


class LocalStorage:
    """A folder on the local file system."""

    def __init__(self, uri: str) -> None:
        path = uri[len("file://"):] if uri.startswith("file://") else uri
        if not path:
            raise UsageError(f"empty local path in {uri!r}")
        self.root = Path(path).expanduser().absolute()
        self.root_uri = str(self.root)

    def uri_of(self, relative: str) -> str:
        return str(self.root / relative)

    def list_partition(self, relative: str) -> tuple[list[InputFile], int]:
        base = self.root / relative
        if not base.is_dir():
            return [], 0
        found: list[InputFile] = []
        empty = 0

        def fail(err: OSError) -> None:
            raise StorageError(f"cannot list folder: {err.strerror}", uri=err.filename)

        for folder, dirs, files in os.walk(base, onerror=fail):
            dirs[:] = [d for d in dirs if not d.startswith(("_", "."))]
            for name in files:
                path = Path(folder) / name
                rel = path.relative_to(self.root).as_posix()
                if not is_input_name(path.relative_to(base).as_posix()):
                    continue
                try:
                    stat = path.stat()
                except OSError as err:
                    raise StorageError(f"cannot stat file: {err.strerror}", uri=str(path)) from err
                if stat.st_size == 0:
                    empty += 1
                    continue
                mtime = dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC).isoformat()
                found.append(InputFile(uri=str(path), key=rel, size=stat.st_size, version=mtime))
        found.sort(key=lambda item: item.key)
        return found, empty

    def open_input(self, item: InputFile) -> BinaryIO:
        try:
            return open(item.uri, "rb", buffering=1 << 20)
        except OSError as err:
            raise StorageError(f"cannot open input: {err.strerror}", uri=item.uri) from err

    def publish(self, local_path: str, relative: str) -> None:
        target = self.root / relative
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # A temp name in the target folder keeps the rename atomic (same file system).
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        except OSError as err:
            raise StorageError(f"cannot write: {err.strerror}", uri=str(target)) from err
        try:
            with os.fdopen(fd, "wb") as out, open(local_path, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except OSError as err:
            _unlink_quietly(tmp)
            raise StorageError(f"cannot write: {err.strerror}", uri=str(target)) from err
        except BaseException:
            _unlink_quietly(tmp)
            raise

    def remove(self, relative: str) -> None:
        try:
            (self.root / relative).unlink(missing_ok=True)
        except OSError as err:
            raise StorageError(f"cannot remove: {err.strerror}", uri=self.uri_of(relative)) from err

    def read_bytes(self, relative: str) -> bytes | None:
        try:
            return (self.root / relative).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise StorageError(f"cannot read: {err.strerror}", uri=self.uri_of(relative)) from err


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
