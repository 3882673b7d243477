"""Run streamagg on a generated day under a --memory-limit and report its peak RSS against it."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from common import (
    BENCH_DIR,
    cached_day,
    human_bytes,
    measure,
    parse_size,
    streamagg_command,
    streamagg_output,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-limit", default="256MB", help="passed to streamagg")
    parser.add_argument("--dedupe", choices=["spill", "sqlite"], default="spill")
    parser.add_argument("--chunk-size", type=int, help="passed to streamagg when given")
    parser.add_argument(
        "--max-ratio", type=float,
        help="fail (exit 1) when peak RSS exceeds this multiple of the limit, e.g. 1.0; "
             "peak RSS includes the interpreter and libraries, not only the working set")
    parser.add_argument("--data-dir", type=Path, default=BENCH_DIR / "data")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    limit = parse_size(args.memory_limit)

    dataset = cached_day(args.rows, args.files, args.seed, data_dir=args.data_dir)
    workdir = Path(tempfile.mkdtemp(prefix="streamagg-memcheck-"))
    try:
        extra = ["--memory-limit", args.memory_limit, "--dedupe", args.dedupe]
        if args.chunk_size:
            extra += ["--chunk-size", str(args.chunk_size)]
        run = measure(streamagg_command(dataset, workdir / "dest", *extra),
                      log_path=workdir / "log.txt")
        produced = streamagg_output(dataset, workdir / "dest").exists()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    ratio = run.peak_rss_bytes / limit
    over = args.max_ratio is not None and ratio > args.max_ratio
    result = {
        "rows": dataset.rows,
        "files": dataset.files,
        "input_bytes": dataset.bytes,
        "dedupe": args.dedupe,
        "memory_limit_bytes": limit,
        "peak_rss_bytes": run.peak_rss_bytes,
        "ratio": round(ratio, 3),
        "max_ratio": args.max_ratio,
        "wall_seconds": round(run.wall_seconds, 3),
        "exit_code": run.exit_code,
        "output_written": produced,
        "ok": run.ok and produced and not over,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        verdict = "within" if ratio <= 1 else "OVER"
        print(f"streamagg --dedupe {args.dedupe} on {dataset.rows:,} rows "
              f"({human_bytes(dataset.bytes)}): peak RSS {human_bytes(run.peak_rss_bytes)} vs "
              f"--memory-limit {human_bytes(limit)} ({ratio:.0%}, {verdict} the limit), "
              f"{run.wall_seconds:.1f} s, exit {run.exit_code}")
    if not run.ok or not produced:
        print("streamagg failed; last lines of its log:\n" + "\n".join(run.log.splitlines()[-5:]),
              file=sys.stderr)
        return 1
    if over:
        print(f"peak RSS is {ratio:.2f} x the limit, above --max-ratio {args.max_ratio}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
