"""--incremental: after every arrival, the same bytes and totals as a full recompute."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import (
    DAY,
    DEDUPE_BACKENDS,
    MANIFEST_NAME,
    OUTPUT_NAME,
    PACKAGE_DEDUPE_BACKENDS,
    REJECTS_NAME,
    S3,
    day_path,
    run_api,
)
from tests.conftest import to_bytes as encoded
from tests.test_properties import NUMERIC_CAMPAIGNS, TEXT_CAMPAIGNS, csv_file

STATE_NAME = "_daily_agg_20210130_SA.state"
NAMES = ["a.csv", "b.csv.gz", "c/d.csv", "e.csv", "f.csv", "g/h.csv.gz", "m.csv", "z.csv"]
# Manifest entries that must equal a full recompute's (paths of the dest and times differ).
SAME = ("totals", "hourly", "inputs")


@st.composite
def arrivals(draw: st.DrawFn) -> list[tuple[str, str, bytes]]:
    """Steps of a day's arrivals: (action, name, bytes); ids and instants shared, so duplicates
    and conflicting duplicates happen across files and steps."""
    ids = draw(st.lists(st.sampled_from(["a", "b", "c", "d", "id-1", "\u00fc"]), min_size=1,
                        max_size=4, unique=True))
    campaigns = draw(st.sampled_from([NUMERIC_CAMPAIGNS, TEXT_CAMPAIGNS]).flatmap(
        lambda pool: st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True)))
    steps = []
    for _ in range(draw(st.integers(2, 6))):
        action = draw(st.sampled_from(["add"] * 5 + ["rewrite", "delete", "empty", "same"]))
        name = draw(st.sampled_from(NAMES))
        written = action in ("add", "rewrite")
        data = encoded(name, draw(csv_file(ids, campaigns))) if written else b""
        steps.append((action, name, data))
    return steps


class Day:
    """The partition as files arrive, with mtimes that always move on a write."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.clock = 1_600_000_000
        self.files: dict[str, bytes] = {}

    def apply(self, action: str, name: str, data: bytes) -> None:
        path = self.folder / name
        if action == "delete":
            path.unlink(missing_ok=True)
            self.files.pop(name, None)
            return
        if action == "same":
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.clock += 10  # a rewrite within the file system's timestamp granularity is unseen
        os.utime(path, (self.clock, self.clock))
        self.files[name] = data

    def inputs(self) -> dict[str, bytes]:
        return {n: d for n, d in self.files.items() if d}


def expected_mode(recorded: dict[str, tuple[bytes, int]] | None, day: Day,
                  mtimes: dict[str, int]) -> str:
    if recorded is None:
        return "full"
    now = day.inputs()
    for name, (data, mtime) in recorded.items():
        if name not in now or now[name] != data or mtimes.get(name) != mtime:
            return "full"
    last = max(recorded, default="")
    return "incremental" if all(n > last for n in now if n not in recorded) else "full"


def compare(inc: Any, full: Any, where: str) -> None:
    assert inc.exit_code == full.exit_code, (where, inc.message, full.message)
    if full.exit_code:
        return
    assert inc.output == full.output, where
    assert inc.rejects == full.rejects, where
    for key in SAME:
        assert inc.manifest[key] == full.manifest[key], (where, key)


@pytest.mark.parametrize("dedupe", DEDUPE_BACKENDS)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=arrivals(), chunk_size=st.sampled_from([1, 3, 1000]))
def test_every_arrival_equals_a_full_recompute(dedupe: str, steps: list[tuple[str, str, bytes]],
                                               chunk_size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "source"
        day = Day(root / day_path(DAY))
        day.folder.mkdir(parents=True)
        recorded: dict[str, tuple[bytes, int]] | None = None
        mtimes: dict[str, int] = {}
        for number, (action, name, data) in enumerate(steps):
            day.apply(action, name, data)
            if action in ("add", "rewrite", "empty"):
                mtimes[name] = day.clock
            options = {"dedupe": dedupe, "chunk_size": chunk_size, "max_bad_rows": "100%",
                       "tmp_dir": tmp}
            inc = run_api(root, dest=Path(tmp) / "inc", incremental=True, **options)
            full = run_api(root, dest=Path(tmp) / "full", **options)
            compare(inc, full, f"step {number}: {action} {name}")
            if inc.exit_code == 0:
                assert inc.manifest["mode"] == expected_mode(recorded, day, mtimes), (
                    number, inc.manifest["mode_reason"])
                recorded = {n: (d, mtimes[n]) for n, d in day.inputs().items()}
        # Only the committed generation is left, and nothing in --tmp-dir.
        state = Path(tmp) / "inc" / day_path(DAY) / STATE_NAME
        if state.exists():
            indexes = [p.name for p in state.iterdir() if p.is_file()]
            assert len(indexes) == 1, indexes
        assert {p.name for p in Path(tmp).iterdir()} <= {"full", "inc", "source"}


def s3_outcome(s3: S3, prefix: str) -> dict[str, Any]:
    folder = f"{prefix}/{day_path(DAY)}"
    keys = set(s3.keys(folder))

    def get(name: str) -> bytes | None:
        return s3.get(f"{folder}/{name}") if f"{folder}/{name}" in keys else None

    manifest = get(MANIFEST_NAME)
    return {"output": get(OUTPUT_NAME), "rejects": get(REJECTS_NAME),
            "manifest": json.loads(manifest) if manifest else None}


@settings(max_examples=4, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(steps=arrivals())
def test_every_arrival_equals_a_full_recompute_on_s3(s3: S3,
                                                     steps: list[tuple[str, str, bytes]]) -> None:
    from streamagg import Config, run_day
    from streamagg.errors import StreamaggError

    run = f"r{os.urandom(4).hex()}"
    # S3 reaches a backend through the same run_day: the package's own here, every registered
    # one in the local property above.
    for dedupe in PACKAGE_DEDUPE_BACKENDS:
        present: dict[str, bytes] = {}
        for number, (action, name, data) in enumerate(steps):
            key = f"{run}/src/{day_path(DAY)}/{name}"
            if action == "delete":
                s3.client.delete_object(Bucket=s3.bucket, Key=key)
                present.pop(name, None)
            elif action != "same":
                s3.put(key, data)
                present[name] = data
            outcomes = {}
            for label, incremental in (("inc", True), ("full", False)):
                config = Config(day=DAY, source=f"{s3.uri}/{run}/src",
                                dest=f"{s3.uri}/{run}/{dedupe}-{label}", dedupe=dedupe,
                                endpoint_url=s3.endpoint, max_bad_rows="100%",
                                incremental=incremental)
                try:
                    run_day(config)
                    outcomes[label] = (0, s3_outcome(s3, f"{run}/{dedupe}-{label}"))
                except StreamaggError as err:
                    outcomes[label] = (err.exit_code, None)
            (inc_code, inc), (full_code, full) = outcomes["inc"], outcomes["full"]
            assert inc_code == full_code, (number, action, name)
            if inc is None or full is None:
                continue
            assert inc["output"] == full["output"], (number, action, name)
            assert inc["rejects"] == full["rejects"], (number, action, name)
            for entry in SAME:
                assert inc["manifest"][entry] == full["manifest"][entry], (number, entry)
        # Old generations are gone from the bucket: one index is left.
        state = f"{run}/{dedupe}-inc/{day_path(DAY)}/{STATE_NAME}/"
        indexes = [k for k in s3.keys(state) if k.rpartition("/")[2].startswith("index-")]
        assert len(indexes) <= 1, indexes


# --- kills ----------------------------------------------------------------------------------


def kill_day(root: Path, dedupe: str) -> tuple[Path, Path]:
    """A generated day run once with --incremental, then a late file the next run folds in."""
    from streamagg.testing.generate import generate_day

    source, dest = root / "source", root / "dest"
    generate_day(source, DAY, rows=30_000, files=3, gzip_files=1, bad_row_rate=0.001, seed=9)
    part = source / day_path(DAY)
    late = sorted(p for p in part.iterdir() if not p.name.endswith(".gz"))[-1]
    os.replace(late, root / "late.csv")
    first = run_api(source, dest=dest, incremental=True, max_bad_rows="5%", dedupe=dedupe)
    assert first.exit_code == 0, first.message
    os.replace(root / "late.csv", part / "zz-late.csv")
    return source, dest


def check_exact(source: Path, dest: Path, root: Path, dedupe: str) -> None:
    """A rerun gives the full recompute's bytes, and leaves one state generation."""
    again = run_api(source, dest=dest, incremental=True, max_bad_rows="5%", dedupe=dedupe)
    assert again.exit_code == 0, again.message
    full = run_api(source, dest=root / f"full-{dedupe}", max_bad_rows="5%", dedupe=dedupe)
    compare(again, full, "rerun after a kill")
    state = dest / day_path(DAY) / STATE_NAME
    assert len([p for p in state.iterdir() if p.name.startswith("index-")]) == 1
    referenced = set(json.loads(next(state.glob("index-*.json")).read_text())["files"])
    assert {p.name for p in (state / "segments").iterdir()} == referenced


class Crash(BaseException):
    """Stands for the process dying at this call: nothing after it runs."""


@pytest.mark.parametrize("dedupe", DEDUPE_BACKENDS)
def test_a_run_stopped_at_any_publish_step_then_rerun_is_exact(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dedupe: str) -> None:
    """Every step between the atomic writes: before and after each state file, the index, the
    output, the rejects and the manifest (the commit), and in the clean-up after it."""
    from streamagg.sources.local import LocalStorage

    steps = 0
    for nth in range(1, 40):
        root = tmp_path / f"n{nth}"
        source, dest = kill_day(root, dedupe)
        calls = [0]
        original_publish, original_remove = LocalStorage.publish, LocalStorage.remove

        def publish(self: Any, local_path: str, relative: str, *, _o: Any = original_publish,
                    _c: list[int] = calls, _n: int = nth) -> None:
            _c[0] += 1
            if _c[0] == _n:
                raise Crash
            _o(self, local_path, relative)

        def remove(self: Any, relative: str, *, _o: Any = original_remove,
                   _c: list[int] = calls, _n: int = nth) -> None:
            _c[0] += 1
            if _c[0] == _n:
                raise Crash
            _o(self, relative)

        monkeypatch.setattr(LocalStorage, "publish", publish)
        monkeypatch.setattr(LocalStorage, "remove", remove)
        try:
            done = run_api(source, dest=dest, incremental=True, max_bad_rows="5%", dedupe=dedupe)
            assert done.manifest["mode"] == "incremental", done.manifest["mode_reason"]
            finished = True
        except Crash:
            finished = False
        monkeypatch.setattr(LocalStorage, "publish", original_publish)
        monkeypatch.setattr(LocalStorage, "remove", original_remove)
        check_exact(source, dest, root, dedupe)
        if finished:
            break
        steps += 1
    assert steps >= 4  # state file(s), index, output, rejects, manifest


@pytest.mark.slow
@pytest.mark.parametrize("dedupe", PACKAGE_DEDUPE_BACKENDS)
def test_sigkill_at_random_moments_then_rerun_is_exact(tmp_path: Path, dedupe: str) -> None:
    import random
    import subprocess
    import sys
    import time

    from tests.reliability.helpers import REPO, child_env

    rng = random.Random(f"kill-{dedupe}")
    # How long an undisturbed incremental run of this day takes, start-up included.
    source, dest = kill_day(tmp_path / "timing", dedupe)
    command = [sys.executable, "-m", "streamagg", "2021-01-30", "--incremental",
               "--max-bad-rows", "5%", "--dedupe", dedupe, "--source"]
    began = time.monotonic()
    subprocess.run([*command, str(source), "--dest", str(dest)], check=True, cwd=REPO,
                   env=child_env(), capture_output=True)
    duration = time.monotonic() - began
    for attempt in range(6):
        root = tmp_path / f"k{attempt}"
        source, dest = kill_day(root, dedupe)
        child = subprocess.Popen([*command, str(source), "--dest", str(dest)], cwd=REPO,
                                 env=child_env(), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 1.0) * duration)
        child.kill()
        child.wait(timeout=30)
        check_exact(source, dest, root, dedupe)


# --- which mode, and why --------------------------------------------------------------------

H = "IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\n"


def small_day(root: Path) -> Path:
    part = root / day_path(DAY)
    part.mkdir(parents=True)
    (part / "b.csv").write_text(H + "i1,2021-01-30 10:00:00,7\ni2,2021-01-30 11:00:00,7\n")
    (part / "c.csv").write_text(H + "i1,2021-01-30 10:00:00,8\nbad,,7\n")
    return root


def state_folder(dest: Path) -> Path:
    return dest / day_path(DAY) / STATE_NAME


def bump(path: Path, text: str) -> None:
    path.write_text(text)
    stat = path.stat()
    os.utime(path, (stat.st_atime, stat.st_mtime + 10))


FALLBACKS: dict[str, tuple[Any, str]] = {
    # what happens between two runs: (change, the reason the second run gives)
    "no state kept": (None, "the earlier run kept no state"),
    "new file sorts first": (
        lambda src, dest: (src / day_path(DAY) / "a.csv").write_text(
            H + "i9,2021-01-30 01:00:00,1\n"),
        "a new input sorts before a recorded one"),
    "recorded file changed": (
        lambda src, dest: bump(src / day_path(DAY) / "b.csv", H + "i1,2021-01-30 10:00:00,9\n"),
        "a recorded input changed"),
    "recorded file gone": (lambda src, dest: (src / day_path(DAY) / "b.csv").unlink(),
                           "a recorded input is gone"),
    "output replaced": (
        lambda src, dest: (dest / day_path(DAY) / OUTPUT_NAME).write_text("x\n"),
        "the published output does not match its manifest"),
    "output gone": (lambda src, dest: (dest / day_path(DAY) / OUTPUT_NAME).unlink(),
                    "the published output is missing"),
    "rejects replaced": (
        lambda src, dest: (dest / day_path(DAY) / REJECTS_NAME).write_text("x\n"),
        "the published rejects do not match their manifest"),
    "index altered": (
        lambda src, dest: [p.write_text(p.read_text() + " ")
                           for p in state_folder(dest).glob("index-*.json")],
        "the kept state does not match the manifest"),
    "index gone": (lambda src, dest: [p.unlink() for p in state_folder(dest).glob("index-*")],
                   "the state generation the manifest names is missing"),
    "state file gone": (
        lambda src, dest: [p.unlink() for p in (state_folder(dest) / "segments").iterdir()],
        "a kept state file is missing"),
    "manifest unreadable": (
        lambda src, dest: (dest / day_path(DAY) / MANIFEST_NAME).write_text("{"),
        "the earlier manifest is unreadable"),
}


@pytest.mark.parametrize("case", list(FALLBACKS))
@pytest.mark.parametrize("dedupe", DEDUPE_BACKENDS)
def test_each_fallback_says_why_and_rebuilds_the_state(tmp_path: Path, case: str,
                                                       dedupe: str) -> None:
    source, dest = small_day(tmp_path / "source"), tmp_path / "dest"
    change, reason = FALLBACKS[case]
    first = run_api(source, dest=dest, incremental=change is not None, dedupe=dedupe,
                    max_bad_rows="100%")
    assert first.exit_code == 0, first.message
    if change is not None:
        change(source, dest)
    second = run_api(source, dest=dest, incremental=True, dedupe=dedupe, max_bad_rows="100%")
    assert second.exit_code == 0, second.message
    assert second.manifest["mode"] == "full"
    assert second.manifest["mode_reason"].startswith(reason), second.manifest["mode_reason"]
    full = run_api(source, dest=tmp_path / "full", dedupe=dedupe, max_bad_rows="100%")
    compare(second, full, case)
    # The full recompute kept a fresh state: the next run with nothing new is incremental.
    third = run_api(source, dest=dest, incremental=True, dedupe=dedupe, max_bad_rows="100%")
    assert third.manifest["mode"] == "incremental", third.manifest["mode_reason"]
    assert third.manifest["mode_reason"].startswith("0 new input files")
    compare(third, full, case)


@pytest.mark.parametrize("change, reason", [
    ({"max_bad_rows": "50%"}, "parameters changed since the state was kept: max_bad_rows"),
    ({"dedupe": DEDUPE_BACKENDS[-1]}, "parameters changed since the state was kept: dedupe"),
])
def test_a_changed_parameter_recomputes(tmp_path: Path, change: dict[str, str],
                                        reason: str) -> None:
    source, dest = small_day(tmp_path / "source"), tmp_path / "dest"
    options = {"incremental": True, "max_bad_rows": "100%", "dedupe": DEDUPE_BACKENDS[0]}
    assert run_api(source, dest=dest, **options).exit_code == 0
    again = run_api(source, dest=dest, **{**options, **change})
    assert (again.manifest["mode"], again.manifest["mode_reason"]) == ("full", reason)


def test_a_state_from_another_version_recomputes(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import streamagg.state

    source, dest = small_day(tmp_path / "source"), tmp_path / "dest"
    assert run_api(source, dest=dest, incremental=True, max_bad_rows="100%").exit_code == 0
    monkeypatch.setattr(streamagg.state, "__version__", "99.0")
    again = run_api(source, dest=dest, incremental=True, max_bad_rows="100%")
    assert again.manifest["mode_reason"] == "the kept state is from another version of streamagg"


def test_new_files_that_sort_last_are_read_alone(tmp_path: Path) -> None:
    source, dest = small_day(tmp_path / "source"), tmp_path / "dest"
    assert run_api(source, dest=dest, incremental=True, max_bad_rows="100%").exit_code == 0
    (source / day_path(DAY) / "d.csv").write_text(H + "i2,2021-01-30 11:00:00,9\n"
                                                  "i3,2021-01-30 12:00:00,7\n")
    again = run_api(source, dest=dest, incremental=True, max_bad_rows="100%")
    assert again.manifest["mode"] == "incremental"
    assert again.manifest["mode_reason"].startswith("1 new input file since the run")
    # i1 (b.csv, c.csv) and i2 (b.csv, d.csv) are duplicates, each with another campaign.
    assert again.totals["duplicates"] == 2 and again.totals["conflicting_duplicates"] == 2
    assert again.output == (b"CAMPAIGN_ID,HOUR,IMPRESSIONS\n7,2021-01-30 10:00:00,1\n"
                            b"7,2021-01-30 11:00:00,1\n7,2021-01-30 12:00:00,1\n")
    full = run_api(source, dest=tmp_path / "full", max_bad_rows="100%")
    compare(again, full, "late file")


def test_the_summary_says_the_mode(tmp_path: Path, cli: Any) -> None:
    source, dest = small_day(tmp_path / "source"), tmp_path / "dest"
    args = ["2021-01-30", "--source", str(source), "--dest", str(dest), "--incremental",
            "--max-bad-rows", "100%"]
    first = cli(*args)
    assert "mode         full (no earlier result of the day)" in first.output, first.output
    second = cli(*args, "--log-format", "json")
    summary = json.loads(second.output.strip().splitlines()[-1])
    assert summary["mode"] == "incremental" and summary["mode_reason"].startswith("0 new")


def test_a_run_without_incremental_removes_the_state(tmp_path: Path) -> None:
    source, dest = small_day(tmp_path / "source"), tmp_path / "dest"
    assert run_api(source, dest=dest, incremental=True, max_bad_rows="100%").exit_code == 0
    assert state_folder(dest).is_dir()
    plain = run_api(source, dest=dest, max_bad_rows="100%")
    assert plain.manifest["mode"] == "full" and plain.manifest["state"] is None
    assert not state_folder(dest).exists()


def test_the_state_can_live_elsewhere(tmp_path: Path) -> None:
    source, dest, elsewhere = small_day(tmp_path / "source"), tmp_path / "dest", tmp_path / "st"
    options = {"incremental": True, "max_bad_rows": "100%", "state": str(elsewhere)}
    assert run_api(source, dest=dest, **options).exit_code == 0
    assert not state_folder(dest).exists()
    assert (elsewhere / day_path(DAY) / STATE_NAME).is_dir()
    again = run_api(source, dest=dest, **options)
    assert again.manifest["mode"] == "incremental"


def test_spark_recomputes_fully(tmp_path: Path) -> None:
    from streamagg import Config
    from streamagg.sources import storage_for
    from streamagg.state import DayState

    config = Config(day=DAY, source=str(tmp_path), engine="spark", incremental=True)
    decision = DayState.of(config, storage_for(str(tmp_path))).decide(
        storage_for(str(tmp_path)), [], str(tmp_path))
    assert (decision.mode, decision.reason) == ("full", "the spark engine recomputes the whole day")


@pytest.mark.parametrize("tight", [False, True], ids=["roomy", "new-rows-split"])
def test_a_day_of_hourly_arrivals_merges_segments_and_stays_exact(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tight: bool) -> None:
    import streamagg.dedup.spill as spill

    if tight:  # every partition's new rows count as too many at once: cut into pieces
        monkeypatch.setattr(spill.SpillDeduper, "_new_rows_fit", lambda self, size: False)
    source, dest = tmp_path / "source", tmp_path / "dest"
    part = source / day_path(DAY)
    part.mkdir(parents=True)
    for hour in range(spill.MAX_SEGMENTS + 4):
        # Each hour's file repeats some of the hour before's impressions, some with another
        # campaign.
        rows = [f"h{hour}-{i},2021-01-30 {hour:02d}:{i % 60:02d}:{i % 7:02d},{i % 5}"
                for i in range(300)]
        rows += [f"h{hour - 1}-{i},2021-01-30 {hour - 1:02d}:{i % 60:02d}:{i % 7:02d},{i % 4}"
                 for i in range(0, 300, 7)] if hour else []
        (part / f"hour-{hour:02d}.csv").write_text(H + "\n".join(rows) + "\n")
        inc = run_api(source, dest=dest, incremental=True, max_bad_rows="100%")
        full = run_api(source, dest=tmp_path / "full", max_bad_rows="100%")
        compare(inc, full, f"hour {hour}")
        assert inc.manifest["mode"] == ("incremental" if hour else "full")
        index = json.loads(next(state_folder(dest).glob("index-*.json")).read_text())
        assert all(len(names) <= spill.MAX_SEGMENTS
                   for names in index["record"]["segments"].values())
    assert full.totals["conflicting_duplicates"] > 0
