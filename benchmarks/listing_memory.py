"""Peak memory (VmHWM) of listing a huge S3 day: held whole, or charged to its share and refused."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from streamagg.budget import ListingAccount
from streamagg.config import parse_size
from streamagg.errors import StreamaggError
from streamagg.sources import s3_listing
from streamagg.sources.s3 import S3Storage

PAGE = 1_000  # what S3 gives a page


class FakeS3:
    """A client whose listing of ``in/2021/01/30/`` pages ``entries`` keys, made as asked for:
    only the pages requested ever exist."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self.pages = 0

    def list_objects_v2(self, **params: Any) -> dict[str, Any]:
        self.pages += 1
        start = int(params.get("ContinuationToken", "0"))
        end = min(start + PAGE, self.entries)
        page: dict[str, Any] = {"IsTruncated": end < self.entries, "Contents": [
            {"Key": f"in/2021/01/30/part-{i:09d}.csv", "Size": 1000 + i, "ETag": f'"{i:032x}"'}
            for i in range(start, end)]}
        if end < self.entries:
            page["NextContinuationToken"] = str(end)
        return page


def vmhwm() -> int:
    """The process's peak resident memory so far, in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--memory-limit", default="256MB", help="the limit whose share is used")
    parser.add_argument("--whole", action="store_true",
                        help="list without a share, as before (every entry held)")
    args = parser.parse_args()
    s3_listing.MAX_ENTRIES = max(s3_listing.MAX_ENTRIES, args.entries + PAGE)
    client = FakeS3(args.entries)
    storage = S3Storage("s3://bucket/in", client=client)
    account = None if args.whole else ListingAccount(parse_size(args.memory_limit),
                                                     "s3://bucket/in/2021/01/30/")
    before, began = vmhwm(), time.monotonic()
    refused, listed = "", 0
    try:
        listed = len(storage.list_partition("2021/01/30", account)[0])
    except StreamaggError as err:
        refused = str(err)
    print(json.dumps({
        "entries": args.entries, "memory_limit": args.memory_limit, "whole": args.whole,
        "listed": listed, "pages_requested": client.pages, "refused": refused,
        "vmhwm_before_mib": round(before / 2**20, 1), "vmhwm_mib": round(vmhwm() / 2**20, 1),
        "share_mib": round(account.share / 2**20, 1) if account else None,
        "seconds": round(time.monotonic() - began, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
