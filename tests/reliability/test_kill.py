"""Runs killed with SIGKILL at every stage, and runs of one day at once: nothing lost, no junk."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from streamagg import cleanup
from streamagg.testing.generate import generate_day
from tests.conftest import DAY, DAY_ARG, MANIFEST_NAME, OUTPUT_NAME, REJECTS_NAME, S3, day_path
from tests.reference import expected_day, expected_for, load_partition
from tests.reliability.faults import FaultProxy
from tests.reliability.helpers import PART, Child, child_env, results, wait_for

pytestmark = pytest.mark.slow
Cli = Callable[..., Result]
Spawn = Callable[..., Child]
LATE_FILE = "part-99999.csv"  # added after the first run, so a second run's output differs


@pytest.fixture(scope="module")
def day_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated day, made once for the module: each test gets a copy (`make_day`)."""
    root = tmp_path_factory.mktemp("kill-day") / "source"
    generate_day(root, DAY, rows=40_000, files=3, gzip_files=1, bad_row_rate=0.001, seed=5)
    return root


def make_day(root: Path, template: Path) -> Path:
    """A generated day (gzip, duplicates, bad rows), a copy of ``template``."""
    shutil.copytree(template, root)
    return root


def add_late_file(root: Path) -> None:
    (root / day_path(DAY) / LATE_FILE).write_text(
        "IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\n"
        + "".join(f"late{i},2021-01-30 23:{i % 60:02d}:00,9{i % 3}\n" for i in range(500)))


def tree(folder: Path) -> list[str]:
    """Every file and folder below ``folder``, hidden ones included."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def snapshot(folder: Path) -> dict[str, bytes]:
    """The published files (a killed run's dot-named temp file is no result)."""
    return {p.name: p.read_bytes() for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".")}


@pytest.fixture
def local_day(tmp_path: Path, cli: Cli, day_template: Path
              ) -> tuple[Path, Path, Path, dict[str, bytes]]:
    """(source, dest, scratch, earlier output files): one good run, then a late file arrives."""
    source, dest, scratch = tmp_path / "source", tmp_path / "dest", tmp_path / "scratch"
    scratch.mkdir()
    make_day(source, day_template)
    first = cli(DAY_ARG, "--source", source, "--dest", dest, "--tmp-dir", scratch,
                "--max-bad-rows", "5%")
    assert first.exit_code == 0, first.output
    add_late_file(source)
    return source, dest, scratch, snapshot(dest / day_path(DAY))


def args_for(source: Path, dest: Path, scratch: Path, *extra: str) -> list[object]:
    return [DAY_ARG, "--source", source, "--dest", dest, "--tmp-dir", scratch,
            "--max-bad-rows", "5%", "--chunk-size", "2000", *extra]


POINTS = {
    # point: (dedupe, what must be on disk when the run is killed)
    "read": ("spill", "a work folder"),
    "spill": ("spill", "spill files"),
    "sqlite": ("sqlite", "the key table"),
    "fold": ("spill", "spill files half consumed"),
    "publish": ("spill", "the output's temp file in the target folder"),
}


@pytest.mark.parametrize("point", list(POINTS))
def test_sigkill_leaves_the_earlier_output_and_the_next_run_cleans_up(
    spawn: Spawn, cli: Cli, local_day: tuple[Path, Path, Path, dict[str, bytes]], point: str,
    tmp_path: Path,
) -> None:
    source, dest, scratch, before = local_day
    out_dir = dest / day_path(DAY)
    dedupe, _ = POINTS[point]
    marker = tmp_path / "paused"
    child = spawn(args_for(source, dest, scratch, "--dedupe", dedupe), pause=point,
                  marker=marker)
    wait_for(lambda: marker.exists() or child.process.poll() is not None, what=point)
    assert marker.exists(), child.wait()
    left = tree(scratch)
    work = [name for name in left if "/" not in name]
    assert len(work) == 1 and work[0].startswith(f"streamagg-{child.process.pid}-"), left
    if point in ("spill", "fold"):
        assert any(name.endswith(".arrow") for name in left), left
    if point == "sqlite":
        assert any(name.endswith("keys.sqlite") for name in left), left
    if point == "publish":
        assert any(name.startswith(".daily_agg_") and name.endswith(".tmp")
                   for name in os.listdir(out_dir)), os.listdir(out_dir)

    child.kill()

    assert snapshot(out_dir) == before  # the earlier result, every byte of it
    assert tree(scratch) == left  # what the killed run left
    again = cli(*args_for(source, dest, scratch, "--dedupe", dedupe))
    assert again.exit_code == 0, again.output
    assert "removed a leftover of an interrupted run" in again.stderr
    assert tree(scratch) == []
    expected = expected_for(source, DAY)
    assert (out_dir / OUTPUT_NAME).read_bytes() == expected.output
    manifest = json.loads((out_dir / MANIFEST_NAME).read_text())
    assert manifest["totals"] == expected.totals
    assert sorted(os.listdir(out_dir)) == sorted([OUTPUT_NAME, MANIFEST_NAME, REJECTS_NAME])


def stopped_mid_run(spawn: Spawn, source: Path, dest: Path, scratch: Path, marker: Path,
                    signum: int) -> tuple[int, str]:
    child = spawn(args_for(source, dest, scratch), pause="spill", marker=marker)
    wait_for(lambda: marker.exists() or child.process.poll() is not None, what="spill")
    assert tree(scratch)
    os.kill(child.process.pid, signum)
    code, _, stderr = child.wait(timeout=30)
    return code, stderr


@pytest.mark.parametrize(("signum", "line"), [
    (signal.SIGTERM, "terminated by SIGTERM"),
    # A closed terminal: today's default action killed the run silently, its work folder left.
    (signal.SIGHUP, "terminated by SIGHUP (the terminal closed)"),
], ids=["SIGTERM", "SIGHUP"])
def test_a_stop_signal_unwinds_and_leaves_nothing(
    spawn: Spawn, local_day: tuple[Path, Path, Path, dict[str, bytes]], tmp_path: Path,
    signum: int, line: str,
) -> None:
    source, dest, scratch, before = local_day
    code, stderr = stopped_mid_run(spawn, source, dest, scratch, tmp_path / "paused", signum)
    assert code == 128 + signum, (code, stderr)  # 143, 129: as a shell reports the signal
    assert stderr.splitlines()[-1] == f"streamagg: error: {line}", stderr
    assert [text for text in stderr.splitlines() if "error" in text.lower()] == [
        f"streamagg: error: {line}"], stderr
    assert tree(scratch) == []
    assert snapshot(dest / day_path(DAY)) == before


@pytest.mark.s3
@pytest.mark.parametrize("upload", ["single", "multipart"])
def test_sigkill_during_an_s3_upload_then_a_clean_rerun(
    spawn: Spawn, cli: Cli, s3: S3, proxy: FaultProxy, small_parts: int,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, upload: str, day_template: Path,
) -> None:
    source = make_day(tmp_path / "source", day_template)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    args = [DAY_ARG, "--source", source, "--dest", f"{s3.uri}/out", "--endpoint-url",
            proxy.url, "--tmp-dir", scratch, "--max-bad-rows", "5%"]
    assert cli(*args).exit_code == 0
    before = results(s3, "out")
    add_late_file(source)
    settings = [] if upload == "single" else [
        f"streamagg.sources.s3:MULTIPART_THRESHOLD={small_parts}",
        f"streamagg.sources.s3:PART_SIZE={small_parts}"]
    # The upload hangs on its second part (or its only PUT): the run is killed mid-upload.
    stall = proxy.add("stall", method="PUT", path=rf"/out/{PART}/daily_agg_",
                      query="partNumber=2" if upload == "multipart" else "")
    child = spawn(args, env=child_env(s3), settings=settings)
    wait_for(lambda: stall.reached.is_set() or child.process.poll() is not None,
             what="the upload")
    assert stall.reached.is_set(), child.wait()
    child.kill()
    stall.release.set()

    assert results(s3, "out") == before
    pending = s3.pending_uploads()
    assert len(pending) == (1 if upload == "multipart" else 0)
    assert tree(scratch) != []

    # A pending upload this young may be a live concurrent run's: the next run keeps it...
    fresh = cli(*args)
    assert fresh.exit_code == 0, fresh.output
    assert len(s3.pending_uploads()) == len(pending)
    # ...and aborts it once it is older than the grace period.
    monkeypatch.setattr(cleanup, "STALE_UPLOAD_SECONDS", 0.0)
    again = cli(*args)
    assert again.exit_code == 0, again.output
    assert s3.pending_uploads() == []
    assert tree(scratch) == []
    expected = expected_for(source, DAY)
    found = results(s3, "out")
    assert found[OUTPUT_NAME] == expected.output
    assert json.loads(found[MANIFEST_NAME])["totals"] == expected.totals


# --- two runs of one day at once --------------------------------------------------------------


def test_two_local_runs_at_once(spawn: Spawn, tmp_path: Path, day_template: Path) -> None:
    source = make_day(tmp_path / "source", day_template)
    dest, scratch = tmp_path / "dest", tmp_path / "scratch"
    scratch.mkdir()
    children = [spawn(args_for(source, dest, scratch, "--dedupe", dedupe))
                for dedupe in ("spill", "sqlite")]
    outcomes = [child.wait() for child in children]
    assert [code for code, _, _ in outcomes] == [0, 0], outcomes
    out_dir = dest / day_path(DAY)
    expected = expected_for(source, DAY)
    assert (out_dir / OUTPUT_NAME).read_bytes() == expected.output
    assert json.loads((out_dir / MANIFEST_NAME).read_text())["totals"] == expected.totals
    assert sorted(os.listdir(out_dir)) == sorted([OUTPUT_NAME, MANIFEST_NAME, REJECTS_NAME])
    assert tree(scratch) == []


@pytest.mark.s3
def test_two_s3_runs_at_once(
    spawn: Spawn, s3: S3, proxy: FaultProxy, small_parts: int, tmp_path: Path,
    day_template: Path
) -> None:
    # Through the proxy, which gives uploads their true start time as S3 would: a run must
    # not take the other's live upload for a killed run's leftover.
    source = make_day(tmp_path / "source", day_template)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    settings = [f"streamagg.sources.s3:MULTIPART_THRESHOLD={small_parts}",
                f"streamagg.sources.s3:PART_SIZE={small_parts}"]
    args = [DAY_ARG, "--source", source, "--dest", f"{s3.uri}/out", "--endpoint-url",
            proxy.url, "--tmp-dir", scratch, "--max-bad-rows", "5%"]
    children = [spawn(args, env=child_env(s3), settings=settings) for _ in range(2)]
    outcomes = [child.wait() for child in children]
    assert [code for code, _, _ in outcomes] == [0, 0], outcomes
    expected = expected_day(load_partition(source, DAY), DAY)
    found = results(s3, "out")
    assert sorted(found) == sorted([OUTPUT_NAME, MANIFEST_NAME, REJECTS_NAME])
    assert found[OUTPUT_NAME] == expected.output
    assert json.loads(found[MANIFEST_NAME])["totals"] == expected.totals
    assert s3.pending_uploads() == []
    assert tree(scratch) == []
