"""A process's peak memory as Linux counts it (VmHWM), for the manifest."""

from __future__ import annotations


def process_peak_memory(pid: int | str) -> int | None:
    """The peak resident set size of process ``pid`` (or ``"self"``), or None where it cannot
    be read (not Linux, another host's process, gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None
