"""Shared by the benchmark scripts: cached sample days and peak-memory measurement of a child."""

from __future__ import annotations

import compileall
import datetime as dt
import functools
import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
DATA_DIR = BENCH_DIR / "data"
DEFAULT_DATE = dt.date(2021, 1, 30)
_MARKER = "_generated.json"
_SIZE = re.compile(r"(?i)\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*")


@dataclass(frozen=True)
class Dataset:
    """A generated day on disk and what the generator says it holds."""

    source: Path
    day: dt.date
    rows: int
    files: int
    seed: int
    bytes: int
    duplicates: int
    impressions: int
    params: dict[str, object]


def generator_sha256(package: Path) -> str:
    """One digest over every module of the generator package (it is split across files)."""
    digest = hashlib.sha256()
    for module in sorted(package.glob("*.py")):
        digest.update(module.name.encode() + b"\0" + module.read_bytes())
    return digest.hexdigest()


def cached_day(rows: int, files: int, seed: int = 0, *, day: dt.date = DEFAULT_DATE,
               duplicate_rate: float = 0.05, bad_row_rate: float = 0.0,
               data_dir: Path = DATA_DIR, shape: str = "mixed", gzip: bool = False) -> Dataset:
    """Generate a day under data_dir/[<shape>[-gz]_]<rows>_<files>_<seed>/, or reuse it.

    The mixed shape keeps its old folder name (no prefix) so an existing cache stays valid.
    With ``gzip`` every file is a ``.csv.gz``.

    Reuse requires the same parameters and the same generator source: a changed generator
    writes different bytes, and comparing runs on different data would be meaningless.
    """
    from streamagg.testing import generate

    params: dict[str, object] = {
        "day": day.isoformat(), "rows": rows, "files": files, "seed": seed,
        "duplicate_rate": duplicate_rate, "bad_row_rate": bad_row_rate,
        "extra_columns": True, "gzip_files": files if gzip else 0, "shape": shape,
        "generator_sha256": generator_sha256(Path(generate.__file__).parent),
    }
    prefix = "" if shape == "mixed" and not gzip else f"{shape}{'-gz' if gzip else ''}_"
    source = data_dir / f"{prefix}{rows}_{files}_{seed}"
    marker = source / _MARKER
    if marker.exists():
        saved = json.loads(marker.read_text())
        if saved.get("params") == params:
            return _dataset(source, day, saved)
        print(f"regenerating {source}: parameters or generator changed", file=sys.stderr)
    if source.exists():
        shutil.rmtree(source)
    print(f"generating {rows:,} rows in {files} files under {source} ...", file=sys.stderr)
    started = time.perf_counter()
    generated = generate.generate_day(
        source, day, rows=rows, files=files, seed=seed, duplicate_rate=duplicate_rate,
        bad_row_rate=bad_row_rate, extra_columns=True, gzip_files=files if gzip else 0,
        shape=shape,
    )
    saved = {
        "params": params,
        "bytes": generated.bytes,
        "duplicates": generated.duplicates,
        "impressions": generated.impressions,
        "generate_seconds": round(time.perf_counter() - started, 2),
    }
    # Written last: a marker means the day is complete.
    marker.write_text(json.dumps(saved, indent=2) + "\n")
    print(f"generated {human_bytes(generated.bytes)} in {saved['generate_seconds']} s",
          file=sys.stderr)
    return _dataset(source, day, saved)


def _dataset(source: Path, day: dt.date, saved: dict[str, object]) -> Dataset:
    params = dict(saved["params"])  # type: ignore[call-overload]
    return Dataset(
        source=source, day=day, rows=int(params["rows"]), files=int(params["files"]),
        seed=int(params["seed"]), bytes=int(saved["bytes"]),  # type: ignore[call-overload]
        duplicates=int(saved["duplicates"]),  # type: ignore[call-overload]
        impressions=int(saved["impressions"]),  # type: ignore[call-overload]
        params=params,
    )


def warm_cache(paths: Sequence[Path]) -> None:
    """Read the inputs once so every system starts from the same warm page cache."""
    for path in paths:
        with open(path, "rb") as handle:
            while handle.read(16 << 20):
                pass


def input_files(dataset: Dataset) -> list[Path]:
    partition = dataset.source / f"{dataset.day:%Y}" / f"{dataset.day:%m}" / f"{dataset.day:%d}"
    return sorted(p for p in partition.rglob("*") if p.is_file())


@dataclass
class Measurement:
    """One child process: how long it took and the most memory it held."""

    command: list[str]
    exit_code: int
    wall_seconds: float
    peak_rss_bytes: int
    cpu_seconds: float = 0.0  # user + system of the child and every descendant it waited for
    killed: str | None = None  # why the harness stopped it, if it did
    log: str = ""
    # The machine's load: its 1-minute load average as the run started, and the CPU seconds
    # that everything else on it took during the run (all cores' busy time less the child's),
    # or the host stole from it.
    load_before: float = 0.0
    others_cpu_seconds: float = 0.0
    steal_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.killed is None

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["log"] = self.log[-2000:]
        return data


def measure(command: Sequence[str], *, log_path: Path, rss_cap_bytes: int | None = None,
            timeout_seconds: float | None = None, env: dict[str, str] | None = None) -> Measurement:
    """Run command as a child and measure its wall time and peak RSS.

    Peak RSS comes from GNU time's %M where /usr/bin/time exists, else from wait4's ru_maxrss.
    ru_maxrss alone is unreliable here: Linux keeps it across exec, so a child forked from this
    harness (which holds generated data) would report the harness's size as its own.
    CPU seconds are wait4's ru_utime + ru_stime: on Linux they include the descendants the child
    reaped, so GNU time's wrapper passes the measured command's own time through (GNU time's
    own share is a millisecond or so).

    A watchdog thread kills the child if it passes rss_cap_bytes or timeout_seconds, so a peer
    that would exhaust the machine's memory fails alone instead of taking the host down.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    peak_file = log_path.with_suffix(".peak")
    wrapped = list(command)
    if os.path.exists(GNU_TIME):
        wrapped = [GNU_TIME, "-f", "%M", "-o", str(peak_file), *command]
    load_before = os.getloadavg()[0]
    with open(log_path, "wb") as log:
        busy_before = machine_cpu_seconds()
        started = time.perf_counter()
        child = subprocess.Popen(wrapped, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        done = threading.Event()
        reason: list[str] = []

        def watchdog() -> None:
            while not done.wait(0.1):
                rss = _current_rss(child.pid)
                elapsed = time.perf_counter() - started
                if rss_cap_bytes is not None and rss > rss_cap_bytes:
                    reason.append(f"RSS passed the cap of {human_bytes(rss_cap_bytes)}")
                elif timeout_seconds is not None and elapsed > timeout_seconds:
                    reason.append(f"ran longer than {timeout_seconds:.0f} s")
                else:
                    continue
                _kill_group(child.pid)
                return

        thread = threading.Thread(target=watchdog, daemon=True)
        thread.start()
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        busy_after = machine_cpu_seconds()
        done.set()
        thread.join()
        child.returncode = os.waitstatus_to_exitcode(status)  # already reaped by wait4
    return Measurement(
        command=list(command),
        exit_code=child.returncode,
        wall_seconds=wall,
        peak_rss_bytes=_peak_from(peak_file, usage.ru_maxrss) * 1024,  # kilobytes on Linux
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        killed=reason[0] if reason else None,
        log=log_path.read_text(errors="replace"),
        load_before=load_before,
        others_cpu_seconds=max(0.0, busy_after[0] - busy_before[0]
                               - (usage.ru_utime + usage.ru_stime)),
        steal_seconds=busy_after[1] - busy_before[1],
    )


def machine_cpu_seconds() -> tuple[float, float]:
    """All cores' busy seconds since boot (user, nice, system, interrupts), and stolen ones."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / tick, steal / tick


GNU_TIME = "/usr/bin/time"


def _peak_from(peak_file: Path, fallback_kib: int) -> int:
    """GNU time's last line is the child's peak RSS in KiB."""
    try:
        lines = peak_file.read_text().split()
        return int(lines[-1]) if lines else fallback_kib
    except (OSError, ValueError):
        return fallback_kib


def _current_rss(pid: int) -> int:
    """RSS of a process and its descendants (GNU time runs the measured command as a child)."""
    total = 0
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            for child in children.read().split():
                total += _current_rss(int(child))
    except (OSError, ValueError):
        pass
    return total


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)  # the child leads its own session, see start_new_session
    except ProcessLookupError:
        pass


@functools.cache
def byte_compiled() -> None:
    """Byte-compile streamagg and the peers' scripts, as pip does when it installs a package.

    Python skips writing ``__pycache__`` under ``PYTHONDONTWRITEBYTECODE`` (set on the machines
    these figures come from), so an editable checkout compiled its 85 modules from source at
    every start: 0.11 s of each streamagg run, which an installed tool does not pay. Stale
    files are harmless: Python checks each against its source's time and size.
    """
    spec = importlib.util.find_spec("streamagg")  # the copy the commands import
    folders = [*(spec.submodule_search_locations or []), str(BENCH_DIR / "peers")] if spec else []
    for folder in folders:
        compileall.compile_dir(folder, quiet=1)


def streamagg_command(dataset: Dataset, dest: Path, *extra: str) -> list[str]:
    """The streamagg command line for a day, preferring the installed console script (whose
    modules are byte-compiled first: `byte_compiled`)."""
    byte_compiled()
    script = Path(sys.executable).with_name("streamagg")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "streamagg"]
    return [*base, dataset.day.isoformat(), "--source", str(dataset.source), "--dest", str(dest),
            "--no-progress", *extra]


def streamagg_output(dataset: Dataset, dest: Path, initials: str = "SA") -> Path:
    day = dataset.day
    return dest / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}" / f"daily_agg_{day:%Y%m%d}_{initials}.csv"


def parse_size(text: str) -> int:
    """'256MB' -> bytes, binary multiples as streamagg reads them."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a size: {text!r}")
    number, unit = match.groups()
    return int(float(number) * 1024 ** "BKMGT".index(unit.upper() or "B"))


def human_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit in ("B", "KB") else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def human_count(n: int) -> str:
    for value, suffix in ((10**9, "G"), (10**6, "M"), (10**3, "k")):
        if n >= value and n % value == 0:
            return f"{n // value}{suffix}"
    return str(n)
