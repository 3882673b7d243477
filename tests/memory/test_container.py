"""The container's memory limit, found as the JVM finds it, and the defaults taken from it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from streamagg import Config, container
from streamagg.budget import DEFAULT_LIMIT, MIN_MEMORY_LIMIT
from streamagg.container import (
    ContainerLimit,
    container_memory_limit,
    default_memory_limit,
    limit_warning,
)
from tests.conftest import DAY, run_api

MiB = 2**20
UNLIMITED_V1 = "9223372036854771712"  # what cgroup v1 reports for "no limit"


def fake_proc(tmp_path: Path, *, cgroup: str, mounts: list[tuple[str, str, str, str]],
              mem_total_kib: int = 24 * 2**20) -> str:
    """A /proc with the process's cgroup lines and mounts (root, mount point, fstype, options)."""
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(cgroup)
    (proc / "self" / "mountinfo").write_text("".join(
        f"{30 + i} 23 0:{28 + i} {root} {point} rw,relatime - {fstype} {fstype} {options}\n"
        for i, (root, point, fstype, options) in enumerate(mounts)))
    (proc / "meminfo").write_text(f"MemTotal:       {mem_total_kib} kB\nMemFree: 1 kB\n")
    return str(proc)


def write_limit(folder: Path, name: str, value: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(value + "\n")


def test_v1_the_smallest_limit_on_the_way_up_to_the_mount(tmp_path: Path) -> None:
    mount = tmp_path / "sys/fs/cgroup/memory"
    proc = fake_proc(tmp_path, cgroup="12:pids:/x\n4:memory:/kubepods/pod1/ctr\n0::/\n",
                     mounts=[("/", str(mount), "cgroup", "rw,memory")])
    write_limit(mount, "memory.limit_in_bytes", UNLIMITED_V1)
    write_limit(mount / "kubepods", "memory.limit_in_bytes", str(2048 * MiB))
    write_limit(mount / "kubepods/pod1", "memory.limit_in_bytes", str(300 * MiB))
    write_limit(mount / "kubepods/pod1/ctr", "memory.limit_in_bytes", str(400 * MiB))
    found = container_memory_limit(proc)
    assert found == ContainerLimit(300 * MiB, str(mount / "kubepods/pod1/memory.limit_in_bytes"))


def test_v1_a_container_whose_mount_is_its_own_cgroup(tmp_path: Path) -> None:
    # Docker without a cgroup namespace: the mount's root is the container's cgroup.
    mount = tmp_path / "sys/fs/cgroup/memory"
    proc = fake_proc(tmp_path, cgroup="4:memory:/docker/abc\n",
                     mounts=[("/docker/abc", str(mount), "cgroup", "rw,memory")])
    write_limit(mount, "memory.limit_in_bytes", str(256 * MiB))
    assert container_memory_limit(proc) == ContainerLimit(
        256 * MiB, str(mount / "memory.limit_in_bytes"))


def test_v2_memory_max_max_is_no_limit_but_a_parents_holds(tmp_path: Path) -> None:
    mount = tmp_path / "sys/fs/cgroup"
    proc = fake_proc(tmp_path, cgroup="0::/system.slice/job.service\n",
                     mounts=[("/", str(mount), "cgroup2", "rw,nsdelegate")])
    write_limit(mount / "system.slice/job.service", "memory.max", "max")
    write_limit(mount / "system.slice", "memory.max", str(512 * MiB))
    found = container_memory_limit(proc)
    assert found is not None and found.bytes == 512 * MiB
    assert found.source.endswith("system.slice/memory.max")


@pytest.mark.parametrize("value", [UNLIMITED_V1, "max", str(48 * 2**30), "", "garbage"])
def test_no_limit_unlimited_above_the_machine_or_unreadable(tmp_path: Path, value: str) -> None:
    mount = tmp_path / "sys/fs/cgroup"
    proc = fake_proc(tmp_path, cgroup="0::/\n", mounts=[("/", str(mount), "cgroup2", "rw")])
    write_limit(mount, "memory.max", value)
    assert container_memory_limit(proc) is None


def test_no_cgroup_mounted_at_all(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, cgroup="0::/\n", mounts=[("/", "/proc", "proc", "rw")])
    assert container_memory_limit(proc) is None
    assert container_memory_limit(str(tmp_path / "no-proc")) is None


@pytest.mark.parametrize(("container_mib", "want"), [
    (None, DEFAULT_LIMIT),                # no container: 256MB
    (4096, DEFAULT_LIMIT),                # a large one: 256MB still
    (320, 240 * MiB),                     # three quarters of it
    (256, 192 * MiB),
    (100, MIN_MEMORY_LIMIT),              # never below the minimum (with a warning, below)
])
def test_the_default_is_the_smaller_of_256mb_and_three_quarters_of_the_container(
    container_mib: int | None, want: int
) -> None:
    container = None if container_mib is None else ContainerLimit(container_mib * MiB, "f")
    assert default_memory_limit(container) == want


def test_a_limit_above_the_containers_is_warned_about() -> None:
    container = ContainerLimit(256 * MiB, "/sys/fs/cgroup/memory/memory.limit_in_bytes")
    warning = limit_warning(512 * MiB, container)
    assert warning is not None
    assert "above the container's memory limit of 256 MiB" in warning
    assert "/sys/fs/cgroup/memory/memory.limit_in_bytes" in warning and "192 MiB" in warning
    assert limit_warning(256 * MiB, container) is None
    assert limit_warning(192 * MiB, container) is None
    assert limit_warning(512 * MiB, None) is None
    small = ContainerLimit(160 * MiB, "f")  # three quarters: 120 MiB
    assert "leaves less than" in (limit_warning(MIN_MEMORY_LIMIT, small) or "")


def test_a_run_records_the_containers_limit_and_warns_when_asked_for_more(
    monkeypatch: pytest.MonkeyPatch, partition: Callable[..., Path],
    caplog: pytest.LogCaptureFixture
) -> None:
    found = ContainerLimit(300 * MiB, "/sys/fs/cgroup/memory/job/memory.limit_in_bytes")
    monkeypatch.setattr(container, "container_memory_limit", lambda: found)
    assert Config(day=DAY).memory_limit == 225 * MiB  # the default: three quarters of it
    source = partition({"a.csv": "IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\n"
                                 "a,2021-01-30 10:00:00,7\n"})
    with caplog.at_level(logging.WARNING, logger="streamagg"):
        outcome = run_api(source, memory_limit="512MB")
    assert outcome.exit_code == 0, outcome.message
    assert outcome.manifest is not None
    assert outcome.manifest["container_memory_limit_bytes"] == 300 * MiB
    assert outcome.manifest["parameters"]["memory_limit"] == 512 * MiB
    warned = [r.getMessage() for r in caplog.records if "container's memory limit" in
              r.getMessage()]
    assert len(warned) == 1 and "memory/job/memory.limit_in_bytes" in warned[0], warned


def test_outside_a_container_nothing_is_recorded_or_said(
    monkeypatch: pytest.MonkeyPatch, partition: Callable[..., Path],
    caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(container, "container_memory_limit", lambda: None)
    assert Config(day=DAY).memory_limit == DEFAULT_LIMIT
    source = partition({"a.csv": "IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\n"
                                 "a,2021-01-30 10:00:00,7\n"})
    with caplog.at_level(logging.WARNING, logger="streamagg"):
        outcome = run_api(source, memory_limit="4GB")
    assert outcome.manifest is not None
    assert outcome.manifest["container_memory_limit_bytes"] is None
    assert not [r for r in caplog.records if "container" in r.getMessage()]
