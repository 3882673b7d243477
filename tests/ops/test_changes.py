"""Reruns that notice change: --check reports, --skip-unchanged skips, locally and on S3."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamagg.ops.changes import Changes, compare_inputs
from streamagg.sources import InputFile
from tests.conftest import DAY, DAY_ARG, MANIFEST_NAME, OUTPUT_NAME, S3, day_path
from tests.ops.helpers import GOOD, H, assert_ok, lines

Cli = Callable[..., Result]
PART = day_path(DAY)


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file's mtime (ns) and bytes: proves a run wrote nothing."""
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir())}


@pytest.fixture
def day_done(cli: Cli, partition: Callable[..., Path]) -> tuple[Path, Path]:
    """A day already aggregated: (source root, results folder)."""
    source = partition({"a.csv": GOOD, "b.csv": H + "c,2021-01-30 12:00:00,3\n"})
    assert_ok(cli(DAY_ARG, "--source", source))
    return source, source / "results" / PART


def test_unchanged_day_is_skipped_and_checked_clean(
    cli: Cli, day_done: tuple[Path, Path]
) -> None:
    source, out = day_done
    before = snapshot(out)
    check = cli(DAY_ARG, "--source", source, "--check")
    assert_ok(check)
    assert "2021-01-30: unchanged: 2 input files" in check.stdout
    skip = cli(DAY_ARG, "--source", source, "--skip-unchanged")
    assert_ok(skip)
    assert "2021-01-30: skipped" in skip.stdout and str(out / OUTPUT_NAME) in skip.stdout
    assert snapshot(out) == before


def test_new_modified_and_gone_files_are_reported(
    cli: Cli, day_done: tuple[Path, Path]
) -> None:
    source, out = day_done
    folder = source / PART
    (folder / "late.csv").write_text(H + "d,2021-01-30 13:00:00,4\n")
    (folder / "a.csv").write_text(GOOD.replace("b,", "x,"))  # same size, other content
    stat = (folder / "a.csv").stat()
    os.utime(folder / "a.csv", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    (folder / "b.csv").unlink()
    before = snapshot(out)
    result = cli(DAY_ARG, "--source", source, "--check")
    assert_ok(result)
    shown = lines(result.stdout)
    assert "1 new, 1 gone, 1 modified" in shown[0]
    assert f"  new       {folder / 'late.csv'} (" in result.stdout
    assert f"  gone      {folder / 'b.csv'}" in result.stdout
    assert f"  modified  {folder / 'a.csv'} (mtime " in result.stdout
    assert shown[-1] == "a run recomputes the whole day"
    assert snapshot(out) == before  # --check writes nothing

    as_json = cli(DAY_ARG, "--source", source, "--check", "--log-format", "json")
    facts = json.loads(lines(as_json.stdout)[-1])
    assert facts["changed"] is True and facts["status"] == "changed"
    assert facts["new"] == [str(folder / "late.csv")] and facts["gone"] == [str(folder / "b.csv")]


def test_skip_unchanged_recomputes_the_whole_day_after_a_late_file(
    cli: Cli, day_done: tuple[Path, Path]
) -> None:
    source, out = day_done
    # The late file repeats an impression already counted and adds one: both must show.
    late = H + "a,2021-01-30 10:00:00,9\nd,2021-01-30 13:00:00,4\n"
    (source / PART / "late.csv").write_text(late)
    result = cli(DAY_ARG, "--source", source, "--skip-unchanged")
    assert_ok(result)
    assert "wrote " in result.stdout and "2021-01-30: skipped" not in result.stdout
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["totals"]["duplicates"] == 1 and manifest["totals"]["impressions"] == 4
    assert len(manifest["inputs"]) == 3
    again = cli(DAY_ARG, "--source", source, "--skip-unchanged")
    assert "skipped" in again.stdout


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("delete-output", "output missing"),
        ("edit-output", "output differs from the manifest's sha256"),
        ("max-bad-rows", "parameter max_bad_rows was '1%', now '0'"),
        ("plot", "plot missing"),
    ],
)
def test_other_reasons_to_recompute(
    cli: Cli, day_done: tuple[Path, Path], change: str, reason: str
) -> None:
    source, out = day_done
    extra: list[str] = []
    if change == "delete-output":
        (out / OUTPUT_NAME).unlink()
    elif change == "edit-output":
        (out / OUTPUT_NAME).write_text("CAMPAIGN_ID,HOUR,IMPRESSIONS\n")
    elif change == "max-bad-rows":
        extra = ["--max-bad-rows", "0"]
    else:
        pytest.importorskip("matplotlib")
        extra = ["--plot"]
    check = cli(DAY_ARG, "--source", source, "--check", *extra)
    assert_ok(check)
    assert f"  {reason}" in check.stdout, check.stdout
    skip = cli(DAY_ARG, "--source", source, "--skip-unchanged", *extra)
    assert_ok(skip)
    assert "wrote " in skip.stdout
    assert "unchanged" in cli(DAY_ARG, "--source", source, "--check", *extra).stdout


def test_engine_backend_and_chunk_size_do_not_force_a_rerun(
    cli: Cli, day_done: tuple[Path, Path]
) -> None:
    # They give the same bytes by contract; only what changes the output or the verdict counts.
    source, _ = day_done
    result = cli(DAY_ARG, "--source", source, "--skip-unchanged", "--dedupe", "sqlite",
                 "--chunk-size", "1", "--memory-limit", "1GB")
    assert_ok(result)
    assert "skipped" in result.stdout


def test_check_without_a_manifest_says_all_files_are_new(
    cli: Cli, partition: Callable[..., Path]
) -> None:
    source = partition({"a.csv": GOOD})
    result = cli(DAY_ARG, "--source", source, "--check")
    assert_ok(result)
    assert "no manifest" in result.stdout and "1 input file is new" in result.stdout
    assert not (source / "results").exists()
    skip = cli(DAY_ARG, "--source", source, "--skip-unchanged")
    assert_ok(skip)
    assert (source / "results" / PART / OUTPUT_NAME).exists()


def test_check_of_an_empty_partition_exits_3(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "2021" / "01" / "30").mkdir(parents=True)  # the day's folder, empty
    result = cli(DAY_ARG, "--source", tmp_path, "--check")
    assert result.exit_code == 3
    assert lines(result.stderr)[-1].startswith("streamagg: error: no input files")


def test_check_with_dry_run_or_skip_is_bad_usage(cli: Cli, partition: Callable[..., Path]) -> None:
    source = partition({"a.csv": GOOD})
    for other in ("--dry-run", "--skip-unchanged"):
        result = cli(DAY_ARG, "--source", source, "--check", other)
        assert result.exit_code == 2
        assert "--check" in lines(result.stderr)[-1]


def test_unreadable_manifest_means_recompute(cli: Cli, day_done: tuple[Path, Path]) -> None:
    source, out = day_done
    (out / MANIFEST_NAME).write_text("{not json")
    result = cli(DAY_ARG, "--source", source, "--skip-unchanged")
    assert_ok(result)
    assert "wrote " in result.stdout
    assert json.loads((out / MANIFEST_NAME).read_text())["totals"]["impressions"] == 3


def test_compare_inputs_by_path_size_and_version() -> None:
    def item(path: str, size: int, version: str) -> InputFile:
        return InputFile(uri=path, key=path, size=size, version=version)

    recorded = [{"path": "s3://b/a", "bytes": 1, "etag": '"x"'},
                {"path": "s3://b/b", "bytes": 2, "etag": '"y"'},
                {"path": "s3://b/c", "bytes": 3, "etag": '"z"'}]
    changes = Changes(day=DAY_ARG, manifest_uri="m")
    compare_inputs([item("s3://b/a", 1, '"x"'), item("s3://b/b", 2, '"y2"'),
                    item("s3://b/d", 4, '"w"')], recorded, changes)
    assert [i.uri for i in changes.new] == ["s3://b/d"]
    assert [i.uri for _, i in changes.modified] == ["s3://b/b"]
    assert [e["path"] for e in changes.gone] == ["s3://b/c"]
    assert not changes.unchanged


# --- S3 ----------------------------------------------------------------------------------------


@pytest.mark.s3
def test_skip_and_check_on_s3(cli: Cli, s3: S3) -> None:
    s3.put(f"in/{PART}/a.csv", GOOD)
    s3.put(f"in/{PART}/b.csv.gz", H + "c,2021-01-30 12:00:00,3\n")
    args = [DAY_ARG, "--source", f"{s3.uri}/in", "--endpoint-url", s3.endpoint]
    assert_ok(cli(*args))
    output_key = f"in/results/{PART}/{OUTPUT_NAME}"
    first_output = s3.get(output_key)

    check = cli(*args, "--check")
    assert_ok(check)
    assert "unchanged: 2 input files" in check.stdout
    skip = cli(*args, "--skip-unchanged", "--log-format", "json")
    assert_ok(skip)
    assert json.loads(lines(skip.stdout)[-1])["status"] == "skipped"

    # Rewritten in place with other bytes of the same size: the ETag tells.
    s3.put(f"in/{PART}/a.csv", GOOD.replace("b,", "x,"))
    s3.put(f"in/{PART}/late.csv", H + "d,2021-01-30 13:00:00,4\n")
    check = cli(*args, "--check")
    assert_ok(check)
    assert "1 new, 0 gone, 1 modified" in check.stdout
    assert f"modified  {s3.uri}/in/{PART}/a.csv (etag " in check.stdout
    assert s3.get(output_key) == first_output  # --check wrote nothing

    rerun = cli(*args, "--skip-unchanged")
    assert_ok(rerun)
    assert "wrote " in rerun.stdout
    manifest = json.loads(s3.get(f"in/results/{PART}/{MANIFEST_NAME}"))
    assert manifest["totals"]["impressions"] == 4
    assert "skipped" in cli(*args, "--skip-unchanged").stdout

    s3.client.delete_object(Bucket=s3.bucket, Key=output_key)
    check = cli(*args, "--check")
    assert "output missing" in check.stdout


ALIASED = ("IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID,ALT_ID,ALT_TIME,ALT_GROUP\n"
           "a,2021-01-30 10:00:00,1,a,2021-01-30 10:20:00,9\n"
           "b,2021-01-30 10:30:00,1,a,2021-01-30 10:20:00,8\n"
           "b,2021-01-30 10:30:00,2,c,2021-01-30 12:00:00,8\n"
           "c,bad,3,d,2021-01-30 13:00:00,7\n")


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(st.sampled_from(
    ["id_column", "time_column", "group_column", "count_column", "bucket_column",
     "grain_seconds", "max_bad_rows"]), st.integers(0, 2), min_size=1))
def test_every_parameter_of_the_outputs_bytes_forces_a_rerun(
        tmp_path_factory: pytest.TempPathFactory, changes: dict[str, int]) -> None:
    """Through the library: --skip-unchanged after any change to what decides the output's
    bytes (its columns, the header's names, the grain) or its verdict gives what a fresh run
    gives. The header's names were not recorded, so a stale header was kept."""
    from dataclasses import replace

    from streamagg import Config, Schema, run_day
    from streamagg.ops.backfill import run_days
    from streamagg.ops.changes import inspect_day

    values = {"id_column": ["IMPRESSION_ID", "ALT_ID", "alt_id"],
              "time_column": ["IMPRESSION_DATETIME", "ALT_TIME", "ALT_TIME"],
              "group_column": ["CAMPAIGN_ID", "ALT_GROUP", "ALT_GROUP"],
              "count_column": ["IMPRESSIONS", "N", "COUNT"],
              "bucket_column": ["HOUR", "BUCKET", "Hour"], "grain_seconds": [3600, 60, 900],
              "max_bad_rows": ["50%", "40%", "30%"]}
    root = tmp_path_factory.mktemp("day")
    (root / "source" / PART).mkdir(parents=True)
    (root / "source" / PART / "a.csv").write_text(ALIASED)
    before = Config(day=DAY, source=str(root / "source"), max_bad_rows="50%")
    run_day(before)
    schema = replace(Schema(), **{k: values[k][v] for k, v in changes.items()
                                  if k != "max_bad_rows"})
    after = replace(before, schema=schema,
                    max_bad_rows=values["max_bad_rows"][changes.get("max_bad_rows", 0)])
    changed = inspect_day(after)
    differs = changed.reasons != []
    assert differs == (after != before), changed.reasons
    run_days(after, mode="skip-unchanged")
    fresh = replace(after, dest=str(root / "fresh"))
    run_day(fresh)
    out = root / "source" / "results" / PART / OUTPUT_NAME
    assert out.read_bytes() == (root / "fresh" / PART / OUTPUT_NAME).read_bytes()
    assert inspect_day(after).unchanged
