"""The memory limit of the process's container (its cgroup), read as the JVM and DuckDB read it."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .budget import DEFAULT_LIMIT, MIN_MEMORY_LIMIT

# Of the container's limit, the share --memory-limit takes by default; the rest is left to the
# kernel's page cache of spill files and inputs, which a memory cgroup charges too (the JVM's
# MaxRAMPercentage is 25 by default for the same reason, and DuckDB takes 80% of it).
CONTAINER_SHARE = 0.75


@dataclass(frozen=True)
class ContainerLimit:
    """A memory cgroup's limit as found: its bytes and the file it was read from."""

    bytes: int
    source: str  # e.g. /sys/fs/cgroup/memory/kubepods/.../memory.limit_in_bytes


def container_memory_limit(proc: str = "/proc") -> ContainerLimit | None:
    """The memory limit of this process's cgroup, or None when there is none.

    As the JVM's container support does: the process's cgroup is found in /proc/self/cgroup
    (v1: the ``memory`` controller's line; v2: the ``0::`` line), its folder through the cgroup
    mounts in /proc/self/mountinfo, and the limit read there (v1 ``memory.limit_in_bytes``, v2
    ``memory.max``) and in every folder above it up to the mount: the smallest one holds. A limit
    at or above the machine's memory, ``max``, or anything unreadable counts as no limit.
    """
    paths = _cgroup_paths(os.path.join(proc, "self/cgroup"))
    mounts = memory_cgroup_mounts(proc)
    physical = _physical_memory(os.path.join(proc, "meminfo"))
    found: ContainerLimit | None = None
    for version, file_name in ((1, "memory.limit_in_bytes"), (2, "memory.max")):
        path = paths.get(version)
        mount = mounts.get(version)
        if path is None or mount is None:
            continue
        root, mount_point = mount
        inside = path == root or path.startswith(root.rstrip("/") + "/")
        relative = os.path.relpath(path, root) if inside else "."
        folder = os.path.normpath(os.path.join(mount_point, relative))
        while True:
            limit = _read_limit(os.path.join(folder, file_name))
            if limit is not None and (physical is None or limit < physical) and (
                    found is None or limit < found.bytes):
                found = ContainerLimit(limit, os.path.join(folder, file_name))
            if folder == mount_point or not folder.startswith(mount_point):
                break
            folder = os.path.dirname(folder)
    return found


def default_memory_limit(container: ContainerLimit | None = None) -> int:
    """--memory-limit when none is given: 256MB, or three quarters of the container's memory
    limit when that is smaller (never below the minimum streamagg runs in)."""
    if container is None:
        return DEFAULT_LIMIT
    return max(MIN_MEMORY_LIMIT, min(DEFAULT_LIMIT, int(container.bytes * CONTAINER_SHARE)))


def limit_warning(memory_limit: int, container: ContainerLimit | None) -> str | None:
    """A warning when ``memory_limit`` does not fit the container: above its limit (the kernel
    would kill the run first), or its default clamped to the minimum."""
    if container is None:
        return None
    if memory_limit > container.bytes:
        return (f"--memory-limit {_mib(memory_limit)} is above the container's memory limit of "
                f"{_mib(container.bytes)} ({container.source}): the kernel kills the run "
                f"before streamagg can keep to it; give at most "
                f"{_mib(int(container.bytes * CONTAINER_SHARE))}")
    if container.bytes * CONTAINER_SHARE < MIN_MEMORY_LIMIT <= memory_limit:
        return (f"the container's memory limit of {_mib(container.bytes)} "
                f"({container.source}) leaves less than the {_mib(MIN_MEMORY_LIMIT)} streamagg "
                f"needs beside the kernel's page cache")
    return None


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB"


def _cgroup_paths(path: str) -> dict[int, str]:
    """The process's cgroup path per hierarchy version: {1: memory controller's, 2: unified}."""
    found: dict[int, str] = {}
    for line in _lines(path):
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        number, controllers, cgroup = parts
        if number == "0" and controllers == "":
            found[2] = cgroup
        elif "memory" in controllers.split(","):
            found[1] = cgroup
    return found


def memory_cgroup_mounts(proc: str = "/proc") -> dict[int, tuple[str, str]]:
    """The memory cgroup mounts this process sees: {1: v1's memory controller, 2: the unified
    hierarchy}, each as (its root inside the hierarchy, its mount point)."""
    found: dict[int, tuple[str, str]] = {}
    for line in _lines(os.path.join(proc, "self/mountinfo")):
        fields = line.split(" ")
        if " - " not in line or len(fields) < 5:
            continue
        tail = line.split(" - ", 1)[1].split(" ")
        fstype, options = tail[0], tail[2] if len(tail) > 2 else ""
        root, mount_point = _unescape(fields[3]), _unescape(fields[4])
        if fstype == "cgroup" and "memory" in options.split(","):
            found.setdefault(1, (root, mount_point))
        elif fstype == "cgroup2":
            found.setdefault(2, (root, mount_point))
    return found


def _unescape(field: str) -> str:
    """mountinfo escapes spaces, tabs, newlines and backslashes as octal."""
    return (field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            .replace("\\134", "\\"))


def _read_limit(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as limit:
            text = limit.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if text == "max" or not text.isdigit():
        return None
    value = int(text)
    return value if value > 0 else None


def _physical_memory(path: str) -> int | None:
    for line in _lines(path):
        if line.startswith("MemTotal:"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                return int(fields[1]) * 1024
    return None


def _lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as source:
            return source.read().splitlines()
    except OSError:
        return []
