"""Summarise a py-spy raw profile of streamagg by thread role and pipeline stage."""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

# Innermost match wins: each sample is charged to the most specific stage on its stack.
# (substring of a frame, stage)
STAGES: tuple[tuple[str, str], ...] = (
    # reader threads
    ("_to_utf8", "clean: UTF-8 check"),
    ("parse_instants", "clean: datetime parse"),
    ("_fixed_width_instants", "clean: datetime parse"),
    ("clean_columns", "clean: trim, empties, other"),
    ("_clean_pending", "clean: trim, empties, other"),
    ("read_batches", "parse: Arrow CSV"),
    ("locate_bad_rows", "bad rows: locate"),
    # reader threads, the backend's share (`Deduper.prepare`)
    ("fingerprints", "key fingerprints"),
    ("ordered_by_partition", "order by spill partition"),
    ("keyed", "key fingerprints"),
    ("count_pairs", "count per (campaign, hour)"),
    # main thread, while reading
    ("PartitionWriters.write", "spill write: IPC"),
    ("PartitionWriters._writer", "spill write: IPC"),
    ("PartitionWriters.close", "spill write: IPC"),
    ("fold_counts", "fold counts"),
    ("tally_buckets", "tally clean rows per hour"),
    ("ordered_prefetch", "wait for readers"),
    # de-duplication
    ("first_rows", "dedup: first occurrences"),
    ("first_occurrences", "dedup: first occurrences"),
    ("take_out", "dedup: take out later occurrences"),
    ("later_rows", "dedup: take out later occurrences"),
    ("PieceSplitter.done", "dedup: masks and filters"),
    ("_split_in_memory", "dedup: split partition in memory"),
    ("open_stream", "dedup: read spill file"),
    ("read_all", "dedup: read spill file"),
    ("SpillDeduper._done", "wait for dedup threads"),
    ("later_occurrences", "wait for dedup threads"),
    # everything around the day
    ("write_output", "write result"),
    ("_find_and_load", "start-up: imports"),
    ("<module>", "start-up: imports"),
)
_THREAD = re.compile(r"^thread \((\d+)\): ([^;]*)")
_ROLES = (("streamagg-reader", "reader threads"), ("streamagg-dedup", "dedup threads"),
          ("MainThread", "main thread"))


def short_name(frame: str) -> str:
    """A frame without its file, template arguments, parameters or namespaces."""
    name = re.sub(r" \([^()]*\)$", "", frame)
    if re.fullmatch(r"0x[0-9a-f]+", name):
        return "libc, unresolved (mostly futex and condition waits)"
    while True:
        shorter = re.sub(r"<[^<>]*>", "", name)
        shorter = re.sub(r"\([^()]*\)", "", shorter)
        if shorter == name:
            break
        name = shorter
    parts = [part for part in name.split("::") if part and "lambda" not in part]
    return "::".join(parts[-2:]) or name


def stage_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for needle, stage in STAGES:
            if needle in frame:
                return stage
    return "other"


def role_of(name: str) -> str:
    return next((role for prefix, role in _ROLES if name.startswith(prefix)), name or "other")


def summarise(path: Path, rate: float, cpu_seconds: float | None = None) -> str:
    """A markdown table; with cpu_seconds, each share is also shown as CPU seconds of a run.

    py-spy counts a thread that is runnable but not scheduled as active, so on a loaded
    machine its thread-seconds exceed CPU time: the shares are what carries over.
    """
    by_role: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    leaves: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    threads: dict[str, set[str]] = collections.defaultdict(set)
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        match = _THREAD.match(stack)
        if not match or not count_text.isdigit():
            continue
        tid, name = match.groups()
        frames = stack.split(";")[1:]
        role = role_of(name)
        threads[role].add(tid)
        stage = stage_of(frames)
        by_role[role][stage] += int(count_text)
        leaf = frames[-1] if frames else "?"
        leaves[f"{role}: {stage}"][short_name(leaf)] += int(count_text)
    total = sum(sum(c.values()) for c in by_role.values())
    lines = [f"{total} samples at {rate:g} Hz = {total / rate:.1f} thread-seconds on CPU", ""]
    scale = (cpu_seconds / total) if cpu_seconds else None

    def cpu(count: int) -> str:
        return f"{count * scale:.2f}" if scale else "-"

    lines += ["| thread role (threads) | stage | share of samples | ~ CPU s | top leaf frames |",
              "| --- | --- | ---: | ---: | --- |"]
    for role, stages in sorted(by_role.items(), key=lambda kv: -sum(kv[1].values())):
        role_total = sum(stages.values())
        lines.append(f"| **{role}** ({len(threads[role])}) | all | {role_total / total:.0%} "
                     f"| {cpu(role_total)} | |")
        for stage, count in stages.most_common():
            if count / total < 0.003:
                continue
            top = ", ".join(f"`{leaf}` {n / count:.0%}"
                            for leaf, n in leaves[f"{role}: {stage}"].most_common(3))
            lines.append(f"| | {stage} | {count / total:.1%} | {cpu(count)} | {top} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("raw", type=Path, help="py-spy record -f raw output")
    parser.add_argument("--rate", type=float, default=100.0, help="py-spy's sampling rate (Hz)")
    parser.add_argument("--cpu-seconds", type=float,
                        help="CPU seconds of an unprofiled run, to show shares as seconds")
    args = parser.parse_args()
    print(summarise(args.raw, args.rate, args.cpu_seconds))


if __name__ == "__main__":
    main()
