"""Drop the venv's shared libraries from the page cache before the suite measures peak memory.

Right after `pip install` the kernel holds those files in large page-cache folios and maps whole
folios into every process that touches them: a fresh clone's run counted 84 MB of mapped
library pages (VmRSS, RssFile) where a venv installed earlier counts 46 MB, for the same imports
(measured 2026-12-07). That is the page cache's history, not streamagg's memory; the VmHWM
tests (tests/memory, tests/read/test_memory_shapes.py) would measure it. Evicted, the files are
read back in ordinary pages. Usage: python tests/cold_libraries.py VENV
"""

from __future__ import annotations

import os
import sys


def evict(root: str) -> int:
    """POSIX_FADV_DONTNEED on every shared library below ``root``; the number of files."""
    count = 0
    for folder, _, names in os.walk(root):
        for name in names:
            if ".so" not in name:
                continue
            try:
                fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                count += 1
            finally:
                os.close(fd)
    return count


if __name__ == "__main__":
    print(f"cold_libraries: {evict(sys.argv[1])} shared libraries dropped from the page cache")
