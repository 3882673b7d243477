"""A real memory cgroup for a test's child (v1 or v2), as a container runtime would make it."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

V1 = Path("/sys/fs/cgroup/memory")
V2 = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class MemoryCgroup:
    """A memory cgroup made for one test: a limit, and the kernel's count of OOM kills."""

    path: Path
    version: int

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this cgroup: the shell joins it, then becomes the command, so
        the child's whole life is charged to it."""
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.path / "cgroup.procs"),
                *argv]

    def oom_kills(self) -> int:
        """OOM kills in this cgroup so far (v1 memory.oom_control, v2 memory.events)."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        for line in (self.path / name).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def peak_bytes(self) -> int | None:
        """The cgroup's peak charge, page cache included (v1, or v2 from Linux 5.19)."""
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        with contextlib.suppress(OSError, ValueError):
            return int((self.path / name).read_text())
        return None


def why_no_cgroup() -> str | None:
    """Why no memory cgroup can be made here; None when one can."""
    if (V1 / "cgroup.procs").exists():
        return None if os.access(V1, os.W_OK) else f"{V1} is not writable (not root?)"
    controllers = V2 / "cgroup.subtree_control"
    if controllers.exists():
        if "memory" not in controllers.read_text().split():
            return f"the memory controller is not enabled in {controllers}"
        return None if os.access(V2, os.W_OK) else f"{V2} is not writable (not root?)"
    return "no cgroup memory controller mounted at /sys/fs/cgroup"


@contextlib.contextmanager
def memory_cgroup(name: str, limit_bytes: int) -> Iterator[MemoryCgroup]:
    """A fresh cgroup of ``limit_bytes`` (swap included), removed after; skip-worthy callers
    check `why_no_cgroup` first."""
    version = 1 if (V1 / "cgroup.procs").exists() else 2
    path = (V1 if version == 1 else V2) / f"{name}-{os.getpid()}"
    path.mkdir()
    try:
        if version == 1:
            (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
            with contextlib.suppress(OSError):  # only where swap accounting is on
                (path / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))
        else:
            (path / "memory.max").write_text(str(limit_bytes))
            with contextlib.suppress(OSError):
                (path / "memory.swap.max").write_text("0")
        yield MemoryCgroup(path, version)
    finally:
        # The child has exited; its page cache is handed to the parent cgroup on removal.
        for _ in range(50):
            try:
                path.rmdir()
                break
            except OSError:
                time.sleep(0.1)
