"""Every share of ``--memory-limit``, derived in one place: one frozen table per limit."""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass

from .errors import BadDataError
from .units import count_of, human_bytes

MiB = 2**20
# --memory-limit when none is given (and no container's limit is lower; see container.py).
DEFAULT_LIMIT = 256 * MiB
# Python, pyarrow and numpy alone take about 90 MB resident: below this no working set is left.
MIN_MEMORY_LIMIT = 128 * MiB
# The smallest --memory-limit that holds on every machine measured, a fresh install included.
RELIABLE_MEMORY_LIMIT = 192 * MiB
# Below this the run uses one reader thread, and trims the heap tighter: at 128 and 192 MB
# those megabytes decide whether the limit holds. Below `RELIABLE_MEMORY_LIMIT` it also
# de-duplicates on one thread.
SMALL_LIMIT = 256 * MiB
# Python, pyarrow and numpy loaded, code pages included, before any work (measured: 72 MB).
RUNTIME_BYTES = 80 * MiB
# A reader thread holds about 30 MB (pyarrow's read-ahead, gathered rows, queued batches); one
# more thread per 96 MB of budget, up to four.
PER_READER_BYTES = 96 * MiB
MAX_READERS = 4
# What a listed input costs while the day runs, besides its key and version strings (counted by
# their size, `listed_bytes`): its InputFile, its place in the listing and its manifest record
# (measured, RSS of 1,000,000: 133 B a file listed and 104 B recorded).
LISTED_FILE_BYTES = 240
# What an S3 listing holds for every entry while it pages, kept or not, to find one listed twice
# (`sources/s3_listing.py`: a 128-bit digest and its set slot, whatever the key's length;
# measured: 82 B an entry at 1,000,000).
LISTING_SEEN_BYTES = 96
# What a local listing holds for a folder it walked or an entry it passed over, besides its path.
LISTING_PATH_BYTES = 200
# A prepared batch's bytes per row (its fingerprint, instant and group: what readers queue).
PREPARED_ROW_BYTES = 40


@dataclass(frozen=True)
class Budget:
    """What each part of a run may hold under ``memory_limit`` bytes."""

    memory_limit: int
    # Reader threads: one per core up to four, but one below 256 MB.
    reader_threads: int
    # Rows a reader gathers before cleaning: 65,536 at 256 MB, fewer under tighter limits.
    gather_rows: int
    # Prepared batches a reader may hold for the consumer, which takes files in order: only
    # the reader of the file being consumed is drained, so the others run on only as far as
    # their queues go. Two let the second reader wait 1 to 2 s of a 10M-row day; the queues
    # together get an eighth of the budget (six each at 256 MB, about a file of that day). Two
    # below 256 MB, where there is one reader.
    queue_depth: int
    # What those queues may hold in bytes, all readers together (as `prefetch.ordered_prefetch`
    # measures prepared batches): what the depth above was sized for, so batches of long or wide
    # rows queue fewer, not more memory. The batch the consumer waits for always gets through.
    queue_bytes: int
    # CSV bytes pyarrow parses at once. pyarrow's read-ahead thread queues up to 32 blocks per
    # file being read (arrow's background generator), so the block is what bounds a reader's
    # memory: the readers' queues together get an eighth of the budget, 512 KiB blocks at 256 MB
    # on two readers, 256 KiB below 256 MB. Per block, pyarrow and the reader pay a fixed cost:
    # 512 KiB took 0.94x to 0.98x the wall of 256 KiB on the five benchmark days (paired runs),
    # for 20 to 30 MB more peak (205 to 210 MiB at 256 MB). It also caps the longest row
    # pyarrow can take (longer rows go through the slower csv fallback).
    reader_block_size: int
    # The reader's bounds on what follows the shape of a file, not its size (see read/limits.py):
    # gathered blocks stop at this many bytes of the three columns as well as at gather_rows, so
    # long fields gather fewer rows, not more memory: a 32nd of the budget, about twice what
    # gather_rows rows of a typical log take.
    reader_gather_bytes: int
    # The widest header read: a column costs a few hundred bytes (its name as Python and as
    # pyarrow strings, pyarrow's per-column state); one column per 4 KiB of budget keeps the
    # widest header under a tenth of it (65,536 columns at 256 MB). Wider ones are refused.
    reader_max_columns: int
    # The longest row (or header) read: the csv fallback holds a row a few times over (its line,
    # its fields, their bytes, the Arrow batch). 16 MiB, or a sixteenth of the budget below 256 MB.
    reader_max_row_bytes: int
    # The longest group value (CAMPAIGN_ID) read: it is copied several times on its way to the
    # output (the reader's batch, dictionary encoding and taking in the counts, the sort key of
    # a spilled run and the merge's Python bound, the output's lines): two 15 MiB values peaked
    # at 295 MiB under 256MB, 11 MiB ones at 235 MiB under 192MB. A 256th of the budget, at
    # most 1 MiB (a campaign id is a few dozen bytes); longer ones are refused (exit 4).
    reader_max_group_bytes: int
    # The spill backend: two partitions at once from 192 MB (on two cores), each getting half of
    # the share, so twice the partitions hold the same memory. At 192 MB, the default in a
    # 256 MiB container, the one reader leaves a core idle after the read: two threads took
    # 0.92x the wall (adlog day, paired runs), peaks 127 to 136 MiB as before.
    # A partition's work gets half of what the runtime leaves of 0.9x the limit (the
    # other half is what the allocators keep and the hourly counts; the tenth is the margin:
    # with the whole limit, a day of 300,000 (campaign, hour) pairs and 1,000 small files
    # peaked at 157 to 166 MiB under 192MB, 0.82 to 0.87x, and 177 MiB once in a cgroup;
    # 148 to 155 MiB now). A third of the whole budget, as it was, let a
    # 100M-row day peak at 145 MB under 128MB.
    spill_threads: int
    spill_partition_bytes: int
    # Prepared batches the spill writer may hold to write fewer, larger messages when the
    # partitions are many: a sixteenth of the budget; none below 256 MB, where the megabytes
    # decide whether the limit holds.
    spill_buffer_bytes: int
    # The (group, bucket) counts: folded in memory up to an eighth of this, then spilled as
    # sorted runs and merged back in the output's order (aggregate.py). A sixteenth of the
    # budget: 960,000 pairs (a 26 MiB output) spill a few runs at 256 MB.
    counts_bytes: int
    # The day's listing and its per-file records (`listed_bytes` each), kept to the end for the
    # manifest, and what the listing holds while it runs: an eighth of the budget, 65,000 to 80,000
    # files at 256 MB. `ListingAccount` charges it entry by entry: a day that lists more is
    # refused (exit 4) as the share is passed, before any file is read.
    listing_bytes: int
    # The sqlite backend's page cache, its only large allocation: a thirty-second of the budget.
    # On a 10M-row day 4 to 32 MB made no difference to the time (the kernel's page cache serves
    # the rest), and a larger one cost the 128 MB limit.
    sqlite_cache_kib: int
    # glibc trims the heap past this much free memory.
    heap_trim_threshold: int

    @classmethod
    def of(cls, memory_limit: int) -> Budget:
        """The table for ``memory_limit`` bytes on this machine's cores."""
        return _budget(memory_limit, os.cpu_count() or 1)


@functools.cache
def _budget(limit: int, cpus: int) -> Budget:
    small = limit < SMALL_LIMIT
    gather = max(8_192, limit // 4096)
    spill_threads = 1 if limit < RELIABLE_MEMORY_LIMIT else max(1, min(2, cpus))
    working = max(limit * 9 // 10 - RUNTIME_BYTES, limit // 4)
    readers = 1 if small else max(1, min(MAX_READERS, cpus, limit // PER_READER_BYTES))
    depth = 2 if small else max(2, limit // 8 // (readers * gather * PREPARED_ROW_BYTES))
    return Budget(
        memory_limit=limit,
        reader_threads=readers,
        gather_rows=gather,
        queue_depth=depth,
        queue_bytes=readers * depth * gather * PREPARED_ROW_BYTES,
        reader_block_size=256 << 10 if small else max(256 << 10, min(4 << 20,
                                                                  limit // 256 // readers)),
        reader_gather_bytes=limit // 32,
        reader_max_columns=limit // 4096,
        reader_max_row_bytes=min(16 * MiB, limit // 16),
        reader_max_group_bytes=min(MiB, limit // 256),
        spill_threads=spill_threads,
        spill_partition_bytes=max(working // 2 // spill_threads, 8 * MiB),
        spill_buffer_bytes=0 if small else limit // 16,
        counts_bytes=limit // 16,
        listing_bytes=limit // 8,
        sqlite_cache_kib=max(limit // 32 // 1024, 2048),
        heap_trim_threshold=(2 if small else 8) * MiB,
    )


def listed_bytes(key: str, version: str) -> int:
    """What keeping one listed input costs until the run ends: the one formula."""
    return LISTED_FILE_BYTES + sys.getsizeof(key) + sys.getsizeof(version)


class ListingAccount:
    """The listing's share of ``memory_limit``, charged as the listing grows (the storages call
    it for each entry they hold): past the share the listing stops with exit 4, before its
    memory grows further, naming ``where``."""

    def __init__(self, memory_limit: int, where: str) -> None:
        self.memory_limit = memory_limit
        self.share = Budget.of(memory_limit).listing_bytes
        self.where = where
        self.held = 0
        self.files = 0

    def keep(self, key: str, version: str) -> None:
        """An input kept to the end of the run."""
        self.files += 1
        self.charge(listed_bytes(key, version))

    def hold(self, path: str) -> None:
        """A path held while listing: a folder walked, an entry passed over."""
        self.charge(LISTING_PATH_BYTES + sys.getsizeof(path))

    def charge(self, size: int) -> None:
        """``size`` bytes more held by the listing."""
        self.held += size
        if self.held > self.share:
            raise BadDataError(
                f"listing stopped after {count_of(self.files, 'input file')}: keeping the "
                f"listing for the manifest takes more than the {human_bytes(self.share)} "
                f"--memory-limit {human_bytes(self.memory_limit)} allows; raise --memory-limit "
                "(the share is an eighth) or split the day", uri=self.where)
