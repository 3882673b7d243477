"""docs/CONTRACT.md through the library and the CLI, for every engine and dedupe backend."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import (
    DAY,
    DEDUPE_BACKENDS,
    OUTPUT_NAME,
    PACKAGE_DEDUPE_BACKENDS,
    REJECTS_NAME,
    RUNNERS,
    Outcome,
    day_path,
    run_on_s3,
)
from tests.reference import Expected, expected_for

H = "IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\n"
LENIENT = {"max_bad_rows": "100%"}

Job = Callable[..., Outcome]


# On S3 over HTTP a run costs seconds more (a client, a moto server, uploads and downloads), so
# storage joins the matrix on a subset that covers what storage decides: listing and path
# order, empty and gzip objects, a destination prefix, publishing, removing stale files.
S3_SUBSET = {
    "test_duplicates_within_and_across_files", "test_conflicting_duplicates_first_occurrence_wins",
    "test_which_files_are_inputs", "test_empty_files_skipped_and_counted", "test_gzip_inputs",
    "test_rejects_file", "test_stale_rejects_removed_on_clean_rerun",
    "test_output_path_and_initials", "test_first_occurrence_follows_path_order_over_many_files",
}


@pytest.fixture(params=[("api", "local"), ("cli", "local"), ("api", "s3")],
                ids=["api", "cli", "api-s3"])
def job(request: pytest.FixtureRequest, engine: str, dedupe: str) -> Job:
    """Run a day through the API or the CLI with this test's engine and backend, on local
    files or in a bucket over HTTP. The CLI reaches storage through the same code as the API,
    so S3 runs through the API only, on `S3_SUBSET`."""
    via, storage = request.param
    if via == "cli" and engine == "spark":
        # The CLI builds the same Config for every engine and hands it to the same run_day:
        # through the CLI, Spark would run each contract day a second time (a Spark job
        # each) on the path api-spark already runs. test_spark.py runs the CLI on Spark.
        pytest.skip("the CLI adds nothing engine-specific: api-spark runs the same path")
    if dedupe not in PACKAGE_DEDUPE_BACKENDS and (via, storage) != ("api", "local"):
        # A backend from outside the package (tests/dedup/memory.py) runs the contract through
        # the API on local files: the CLI and S3 reach a backend through the same run_day, and
        # each backend more costs the suite every test of the matrix again.
        pytest.skip("the CLI and S3 add nothing backend-specific: api-local runs the same path")
    runner = RUNNERS[via]
    if storage == "local":
        def run(source: Path, **options: object) -> Outcome:
            return runner(source, engine=engine, dedupe=dedupe, **options)

        return run
    if request.node.originalname not in S3_SUBSET:
        pytest.skip("S3 runs a representative subset of the contract (S3_SUBSET)")
    s3 = request.getfixturevalue("s3")

    def run_s3(source: Path, **options: object) -> Outcome:
        return run_on_s3(runner, s3, source, engine=engine, dedupe=dedupe, **options)

    return run_s3


def agrees(outcome: Outcome, source: Path) -> Expected:
    """The run succeeded and matches the reference byte for byte, totals included."""
    assert outcome.exit_code == 0, outcome.message
    expected = expected_for(source, DAY)
    assert outcome.output is not None, f"no output in {outcome.out_dir}: {outcome.files}"
    assert outcome.output.decode() == expected.output.decode()
    assert outcome.output == expected.output
    assert outcome.totals == expected.totals
    return expected


def rows(outcome: Outcome) -> list[str]:
    assert outcome.output is not None, outcome.message
    return outcome.output.decode().split("\n")[1:-1]


def test_duplicates_within_and_across_files(partition: Callable[..., Path], job: Job) -> None:
    source = partition(
        {
            "part-1.csv": H
            + "a,2021-01-30 10:00:00,1\na,2021-01-30 10:00:00,1\nb,2021-01-30 10:05:00,1\n",
            "part-2.csv": H
            + "a,2021-01-30 10:00:00,1\nb,2021-01-30 10:05:01,1\nc,2021-01-30 11:00:00,2\n",
        }
    )
    outcome = job(source)
    agrees(outcome, source)
    assert rows(outcome) == ["1,2021-01-30 10:00:00,3", "2,2021-01-30 11:00:00,1"]
    assert outcome.totals["duplicates"] == 2
    assert outcome.totals["rows_read"] == 6
    assert outcome.totals["impressions"] == 4


def test_same_instant_in_three_notations_is_one(partition: Callable[..., Path], job: Job) -> None:
    source = partition(
        {
            "a.csv": H + "x,2021-01-30 10:00:00,5\n",
            "b.csv": H + "x,2021-01-30T10:00:00Z,5\nx,2021-01-30T11:00:00+01:00,5\n"
            "x,2021-01-30T05:30:00-04:30,5\nx,2021-01-30 10:00:00.000,5\n",
            "c.csv": H + "x,2021-01-30 10:00:00.5,5\nx,2021-01-30T10:00:00.500+00:00,5\n",
        }
    )
    outcome = job(source)
    agrees(outcome, source)
    assert rows(outcome) == ["5,2021-01-30 10:00:00,2"]
    assert outcome.totals["duplicates"] == 5


def test_key_and_values_are_trimmed(partition: Callable[..., Path], job: Job) -> None:
    source = partition(
        {
            "a.csv": H + "x,2021-01-30 10:00:00,5\n  x\t, 2021-01-30 10:00:00 ,\t5 \n"
            " y ,2021-01-30 10:00:00, 5\n"
        }
    )
    outcome = job(source)
    agrees(outcome, source)
    assert rows(outcome) == ["5,2021-01-30 10:00:00,2"]


def test_conflicting_duplicates_first_occurrence_wins(
    partition: Callable[..., Path], job: Job
) -> None:
    # b.csv sorts after a.csv, so a.csv's campaign wins although b.csv was written first.
    source = partition(
        {
            "b.csv": H + "k1,2021-01-30 10:00:00,200\nk2,2021-01-30 10:00:00,200\n",
            "a.csv": H + "k1,2021-01-30 10:00:00,100\nk1,2021-01-30 10:00:00,100\n"
            "k2,2021-01-30T10:00:00Z,100\nk2,2021-01-30 10:00:00,300\n",
        }
    )
    outcome = job(source)
    agrees(outcome, source)
    assert rows(outcome) == ["100,2021-01-30 10:00:00,2"]
    assert outcome.totals["duplicates"] == 4
    assert outcome.totals["conflicting_duplicates"] == 3


def test_header_variants(partition: Callable[..., Path], job: Job) -> None:
    source = partition(
        {
            "1.csv": "campaign_id,Impression_Datetime,impression_id\n7,2021-01-30 10:00:00,a\n",
            "2.csv": "\ufeffIMPRESSION_ID , CAMPAIGN_ID,  IMPRESSION_DATETIME,COST\n"
            "b,7,2021-01-30 10:00:00,0.5\na,7,2021-01-30 10:00:00,0.5\n",
            "3.csv": "\ufeff ExtraCol,impression_datetime ,Impression_Id,Campaign_Id,note\n"
            'zz,2021-01-30 12:00:00,c,8,"free, text"\n',
        }
    )
    outcome = job(source)
    agrees(outcome, source)
    assert rows(outcome) == ["7,2021-01-30 10:00:00,2", "8,2021-01-30 12:00:00,1"]


def test_quoted_fields(partition: Callable[..., Path], job: Job) -> None:
    source = partition(
        {
            "a.csv": H
            + '"id,1","2021-01-30 10:00:00","Acme, Inc."\n'
            + '"id ""2""",2021-01-30 10:00:00,"say ""hi"""\n'
            + '"id\n3",2021-01-30 10:00:00,"multi\nline"\n'
            + '"id,1",2021-01-30T10:00:00Z,"Acme, Inc."\n'
            + 'id4,2021-01-30 10:00:00,"Acme, Inc."\n'
        }
    )
    outcome = job(source, **LENIENT)
    agrees(outcome, source)
    assert outcome.output == (
        b"CAMPAIGN_ID,HOUR,IMPRESSIONS\n"
        b'"Acme, Inc.",2021-01-30 10:00:00,2\n'
        b'"multi\nline",2021-01-30 10:00:00,1\n'
        b'"say ""hi""",2021-01-30 10:00:00,1\n'
    )
    assert outcome.totals["duplicates"] == 1


def test_crlf_and_blank_lines(partition: Callable[..., Path], job: Job) -> None:
    source = partition(
        {
            "crlf.csv": H.replace("\n", "\r\n")
            + "a,2021-01-30 10:00:00,1\r\n\r\nb,2021-01-30 10:00:00,1\r\n\r\n\r\n"
            + 'c,2021-01-30 10:00:00,"x\r\ny"\r\nd,2021-01-30 10:00:00,1',
            "lf.csv": H + "\n\na,2021-01-30 10:00:00,1\n\ne,2021-01-30 11:00:00,2\n\n",
        }
    )
    outcome = job(source)
    agrees(outcome, source)
    assert outcome.totals["rows_read"] == 6  # blank lines are not rows
    assert outcome.totals["bad_rows"] == 0
    assert b"\r" not in outcome.output.replace(b'"x\r\ny"', b"")


def test_which_files_are_inputs(partition: Callable[..., Path], job: Job) -> None:
    row = "a{},2021-01-30 10:00:00,{}\n"
    source = partition(
        {
            "part-1.csv": H + row.format(1, 1),
            "hour=10/part-2.csv": H + row.format(2, 1),
            "deep/er/part-3.csv.gz": H + row.format(3, 1),
            "_SUCCESS": "",
            "_part-4.csv": H + row.format(4, 9),
            ".hidden.csv": H + row.format(5, 9),
            ".staging/part-6.csv": H + row.format(6, 9),
            "notes.txt": H + row.format(7, 9),
            "part-8.csv.bak": H + row.format(8, 9),
            "part-9.json": "{}",
        }
    )
    outcome = job(source)
    agrees(outcome, source)
    assert rows(outcome) == ["1,2021-01-30 10:00:00,3"]


def test_empty_files_skipped_and_counted(partition: Callable[..., Path], job: Job) -> None:
    source = partition(
        {"a.csv": "", "b.csv": H + "a,2021-01-30 10:00:00,1\n", "sub/c.csv": "", "d.csv.gz": b""}
    )
    outcome = job(source)
    agrees(outcome, source)
    assert outcome.totals["empty_files"] == 3
    assert rows(outcome) == ["1,2021-01-30 10:00:00,1"]


def test_header_only_file_gives_header_only_output(
    partition: Callable[..., Path], job: Job
) -> None:
    source = partition({"a.csv": H})
    outcome = job(source)
    agrees(outcome, source)
    assert outcome.output == b"CAMPAIGN_ID,HOUR,IMPRESSIONS\n"


def test_gzip_inputs(partition: Callable[..., Path], job: Job) -> None:
    lines = [f"id{i},2021-01-30 {i % 24:02d}:00:00,{i % 5}\n" for i in range(500)]
    source = partition({"a.csv.gz": H + "".join(lines), "b.csv": H + "".join(lines[::3])})
    outcome = job(source)
    expected = agrees(outcome, source)
    assert expected.totals["duplicates"] > 0
    assert outcome.totals["impressions"] == 500


def test_late_rows_counted_outside_day(partition: Callable[..., Path], job: Job) -> None:
    source = partition(
        {
            "a.csv": H
            + "a,2021-01-29 23:59:59,1\n"
            + "b,2021-01-30T00:30:00+01:00,1\n"  # 2021-01-29 23:30 UTC
            + "c,2021-01-30 00:00:00,1\n"
            + "d,2021-01-31 00:00:00,1\n"
            + "e,2021-01-30T20:00:00-05:00,1\n"  # 2021-01-31 01:00 UTC
            + "f,2021-01-25 08:00:00,2\n"
        }
    )
    outcome = job(source)
    agrees(outcome, source)
    assert rows(outcome) == [
        "2,2021-01-25 08:00:00,1",
        "1,2021-01-29 23:00:00,2",
        "1,2021-01-30 00:00:00,1",
        "1,2021-01-31 00:00:00,1",
        "1,2021-01-31 01:00:00,1",
    ]
    assert outcome.totals["outside_day"] == 5


def test_numeric_campaigns_sort_numerically(partition: Callable[..., Path], job: Job) -> None:
    campaigns = ["10", "9", "100", "-2", "+9", "09", "0"]
    body = "".join(f"i{n},2021-01-30 10:00:00,{c}\n" for n, c in enumerate(campaigns))
    source = partition({"a.csv": H + body + "z,2021-01-30 09:00:00,1000\n"})
    outcome = job(source)
    agrees(outcome, source)
    assert [r.split(",")[0] for r in rows(outcome)] == [
        "1000",
        "-2",
        "0",
        "+9",
        "09",
        "9",
        "10",
        "100",
    ]


def test_one_text_campaign_makes_the_sort_textual(partition: Callable[..., Path], job: Job) -> None:
    campaigns = ["10", "9", "100", "b", "B", "\u00e9", "-2"]
    body = "".join(f"i{n},2021-01-30 10:00:00,{c}\n" for n, c in enumerate(campaigns))
    source = partition({"a.csv": H + body})
    outcome = job(source)
    agrees(outcome, source)
    assert [r.split(",")[0] for r in rows(outcome)] == ["-2", "10", "100", "9", "B", "b", "\u00e9"]


def test_dropped_text_duplicate_does_not_change_numeric_sort(
    partition: Callable[..., Path], job: Job
) -> None:
    # Only counted campaigns decide the order; the losing "x" is not in the output.
    body = "a,2021-01-30 10:00:00,10\nb,2021-01-30 10:00:00,9\na,2021-01-30 10:00:00,x\n"
    source = partition({"a.csv": H + body})
    outcome = job(source)
    agrees(outcome, source)
    assert [r.split(",")[0] for r in rows(outcome)] == ["9", "10"]


def test_invalid_utf8(partition: Callable[..., Path], job: Job) -> None:
    data = (
        b"IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID,NOTE\n"
        b"a,2021-01-30 10:00:00,1,\xff\xfe not text\n"  # other columns are never parsed
        b"b\xff,2021-01-30 10:00:00,1,ok\n"
        b"c,2021-01-30 10:00:00,\xc3(,ok\n"
        b"d,2021-01-30 10:00:00,caf\xc3\xa9,ok\n"
    )
    source = partition({"a.csv": data})
    outcome = job(source, **LENIENT)
    agrees(outcome, source)
    assert rows(outcome) == ["1,2021-01-30 10:00:00,1", "caf\u00e9,2021-01-30 10:00:00,1"]
    assert outcome.totals["bad_rows"] == 2


BAD_ROWS = (
    H
    + "ok1,2021-01-30 10:00:00,1\n"  # line 2
    + ",2021-01-30 10:00:00,1\n"  # 3: empty id
    + 'q,2021-01-30 10:00:00,"multi\nline"\n'  # 4-5
    + "b,,1\n"  # 6: empty datetime
    + "c,2021-01-30 10:00:00,\n"  # 7: empty campaign
    + "d,2021-02-30 10:00:00,1\n"  # 8: no such day
    + "e,30/01/2021 10:00,1\n"  # 9: bad format
    + "\n"  # 10: blank
    + "f,2021-01-30 10:00:00,1,extra\n"  # 11: too many fields
    + "g,2021-01-30 10:00:00\n"  # 12: too few fields
    + "ok2,2021-01-30 10:00:00,1\n"  # 13
)


def parse_rejects(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))


def reject_field(row: dict[str, str], *names: str) -> str:
    for name in row:
        if name.strip().lower() in names:
            return row[name]
    raise AssertionError(f"no column among {names} in rejects header {list(row)}")


def test_rejects_file(partition: Callable[..., Path], job: Job) -> None:
    source = partition({"good.csv": H + "z,2021-01-30 10:00:00,1\n", "sub/bad.csv": BAD_ROWS})
    outcome = job(source, **LENIENT)
    expected = agrees(outcome, source)
    assert outcome.totals["bad_rows"] == 7
    assert outcome.rejects is not None, f"no {REJECTS_NAME} in {outcome.files}"
    found = parse_rejects(outcome.rejects)
    assert [int(reject_field(r, "line", "line_number")) for r in found] == [3, 6, 7, 8, 9, 11, 12]
    assert [int(reject_field(r, "line", "line_number")) for r in found] == [
        r.line for r in expected.rejects
    ]
    for row, ref in zip(found, expected.rejects, strict=True):
        assert reject_field(row, "file", "path", "uri", "input").endswith("sub/bad.csv")
        assert reject_field(row, "raw", "text", "raw_text", "row") == ref.raw.rstrip("\r\n")
        assert reject_field(row, "reason", "error")
    reasons = [reject_field(r, "reason", "error").lower() for r in found]
    assert "impression_id" in reasons[0]
    assert "campaign_id" in reasons[2]
    assert "field" in reasons[5] and "field" in reasons[6]


def test_stale_rejects_removed_on_clean_rerun(partition: Callable[..., Path], job: Job) -> None:
    source = partition({"a.csv": H + "a,2021-01-30 10:00:00,1\nb,bad,1\n"})
    first = job(source, **LENIENT)
    assert first.exit_code == 0, first.message
    assert first.rejects is not None
    partition({"a.csv": H + "a,2021-01-30 10:00:00,1\nb,2021-01-30 10:00:00,1\n"})
    second = job(source, **LENIENT)
    agrees(second, source)
    assert second.rejects is None, second.files
    assert REJECTS_NAME not in second.files


def test_rerun_is_byte_identical_and_idempotent(partition: Callable[..., Path], job: Job) -> None:
    lines = [f"id{i % 300},2021-01-30 {i % 24:02d}:{i % 60:02d}:00,{i % 7}\n" for i in range(900)]
    source = partition({"a.csv": H + "".join(lines), "b.csv.gz": H + "".join(lines[::-2])})
    first = job(source)
    agrees(first, source)
    assert first.output is not None
    second = job(source)
    third = job(source, chunk_size=7)
    assert second.output == first.output
    assert third.output == first.output
    assert second.totals == first.totals
    # Nothing else piles up beside the output on reruns: no temp files left behind.
    assert sorted(second.files) == sorted(first.files) == sorted(third.files)
    assert all(name == OUTPUT_NAME or name.startswith("_") for name in first.files)


def test_output_path_and_initials(partition: Callable[..., Path], job: Job, tmp_path: Path) -> None:
    source = partition({"a.csv": H + "a,2021-01-30 10:00:00,1\n"})
    dest = tmp_path / "out"
    outcome = job(source, dest=dest, initials="JDoe")
    assert outcome.exit_code == 0, outcome.message
    folder = dest / "2021" / "01" / "30"
    assert sorted(p.name for p in folder.iterdir()) == [
        "_daily_agg_20210130_JDoe.manifest.json",
        "daily_agg_20210130_JDoe.csv",
    ]
    assert (folder / "daily_agg_20210130_JDoe.csv").read_bytes() == expected_for(source, DAY).output
    assert not (source / "results").exists()


def test_default_dest_is_source_results(partition: Callable[..., Path], job: Job) -> None:
    source = partition({"a.csv": H + "a,2021-01-30 10:00:00,1\n"})
    outcome = job(source)
    assert outcome.exit_code == 0, outcome.message
    output = source / "results" / day_path(DAY) / OUTPUT_NAME
    assert output.read_bytes() == expected_for(source, DAY).output
    # A rerun does not read its own results back as input.
    again = job(source)
    assert again.output == output.read_bytes()


def test_file_uri_source(partition: Callable[..., Path], job: Job, tmp_path: Path) -> None:
    source = partition({"a.csv": H + "a,2021-01-30 10:00:00,1\n"})
    outcome = job(f"file://{source}", dest=tmp_path / "out")
    assert outcome.exit_code == 0, outcome.message
    assert outcome.output == expected_for(source, DAY).output


def test_manifest(partition: Callable[..., Path], job: Job) -> None:
    source = partition(
        {
            "a.csv": H + "a,2021-01-30 10:00:00,1\na,2021-01-30 10:00:00,2\nb,nope,1\n",
            "b.csv.gz": H + "c,2021-01-31 10:00:00,1\n",
            "c.csv": "",
        }
    )
    outcome = job(source, **LENIENT)
    expected = agrees(outcome, source)
    manifest = outcome.manifest
    assert manifest is not None
    for key in ("version", "totals"):
        assert key in manifest, sorted(manifest)
    totals = manifest["totals"]
    assert totals == {
        "rows_read": 4,
        "bad_rows": 1,
        "duplicates": 1,
        "conflicting_duplicates": 1,
        "outside_day": 1,
        "empty_files": 1,
        "output_rows": 2,
        "impressions": 2,
    }
    assert totals["impressions"] == totals["rows_read"] - totals["bad_rows"] - totals["duplicates"]
    assert expected.totals == totals
    # The output is described: path, size and sha256 of the bytes written.
    assert outcome.output is not None
    out_path = source / "results" / day_path(DAY) / OUTPUT_NAME
    assert manifest["output"] == {
        "path": str(out_path),
        "bytes": len(outcome.output),
        "sha256": hashlib.sha256(outcome.output).hexdigest(),
    }
    # Each input with its size, mtime and counts, in the order read.
    folder = source / day_path(DAY)
    listed = [(e["path"], e["bytes"], e["rows"], e["bad_rows"]) for e in manifest["inputs"]]
    assert listed[:2] == [
        (str(folder / "a.csv"), (folder / "a.csv").stat().st_size, 3, 1),
        (str(folder / "b.csv.gz"), (folder / "b.csv.gz").stat().st_size, 1, 0),
    ]
    assert all(e.get("mtime") for e in manifest["inputs"])
    # How the run was made, when, and what it cost.
    parameters = manifest["parameters"]
    assert parameters["date"] == "2021-01-30"
    assert parameters["dedupe"] in DEDUPE_BACKENDS
    assert parameters["initials"] == "SA"
    assert manifest["version"] >= 1
    assert manifest["started"] <= manifest["finished"]
    assert manifest["elapsed_seconds"] >= 0
    assert manifest["peak_memory_bytes"] > 0


def test_backends_and_chunk_sizes_agree(partition: Callable[..., Path], engine: str) -> None:
    lines = [
        f"id{i % 97},2021-01-30T{i % 24:02d}:{i % 60:02d}:00{'Z' if i % 2 else ''},{i % 11}\n"
        for i in range(400)
    ]
    source = partition({"a.csv": H + "".join(lines), "b.csv": H + "".join(lines[::3])})
    outputs = set()
    # The Spark engine de-duplicates in Spark whatever --dedupe says: one backend there.
    backends = DEDUPE_BACKENDS if engine == "local" else DEDUPE_BACKENDS[:1]
    for via, runner in RUNNERS.items():
        for backend in backends:
            for chunk in (1, 3, 1000):
                dest = source.parent / f"out-{via}-{backend}-{chunk}"
                outcome = runner(source, dest=dest, engine=engine, dedupe=backend, chunk_size=chunk)
                assert outcome.exit_code == 0, outcome.message
                outputs.add(outcome.output)
    assert outputs == {expected_for(source, DAY).output}


def test_header_after_blank_lines(partition: Callable[..., Path], job: Job) -> None:
    source = partition({"a.csv": "\n\r\n" + H + "a,2021-01-30 10:00:00,1\nb,bad,1\n"})
    outcome = job(source, **LENIENT)
    agrees(outcome, source)
    assert outcome.rejects is not None
    assert [int(r["line"]) for r in parse_rejects(outcome.rejects)] == [5]


def test_multi_member_gzip(partition: Callable[..., Path], job: Job) -> None:
    # Appending to a .gz log writes a second gzip member; both are one file's text.
    data = gzip.compress((H + "a,2021-01-30 10:00:00,1\n").encode()) + gzip.compress(
        b"b,2021-01-30 10:00:00,1\n"
    )
    source = partition({"a.csv.gz": data})
    outcome = job(source)
    agrees(outcome, source)
    assert rows(outcome) == ["1,2021-01-30 10:00:00,2"]


def test_wrong_field_count_with_invalid_utf8_is_a_bad_row(
    partition: Callable[..., Path], job: Job
) -> None:
    data = H.encode() + b"a,2021-01-30 10:00:00,1,\xff\nb,2021-01-30 10:00:00,1\n"
    source = partition({"a.csv": data})
    outcome = job(source, **LENIENT)
    agrees(outcome, source)
    assert outcome.rejects is not None
    assert [int(r["line"]) for r in parse_rejects(outcome.rejects)] == [2]


def test_huge_ignored_field(partition: Callable[..., Path], job: Job) -> None:
    # A 5 MiB note, once plain and once quoted over many lines: other columns are never parsed.
    head = "IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID,NOTE\n"
    source = partition(
        {
            "a.csv": head
            + "a,2021-01-30 10:00:00,1,"
            + "x" * (5 * 2**20)
            + "\nb,2021-01-30 10:00:00,1,y\n",
            "b.csv": head + 'c,2021-01-30 10:00:00,1,"' + "x\n" * (3 * 2**20) + '"\n',
        }
    )
    outcome = job(source)
    agrees(outcome, source)
    assert rows(outcome) == ["1,2021-01-30 10:00:00,3"]


def test_lone_cr_in_quoted_value_is_not_a_line_end(
    partition: Callable[..., Path], job: Job
) -> None:
    # Line ends are LF or CRLF, so the bad row is on line 3 as editors and `sed -n 3p` show.
    source = partition({"a.csv": H + 'a,2021-01-30 10:00:00,"x\ry"\nb,bad,1\n'})
    outcome = job(source, **LENIENT)
    agrees(outcome, source)
    assert outcome.rejects is not None
    assert [int(r["line"]) for r in parse_rejects(outcome.rejects)] == [3]


def test_non_ascii_digits_are_text(partition: Callable[..., Path], job: Job) -> None:
    # "\u0663" (ARABIC-INDIC DIGIT THREE) is no integer to Spark, SQL or a CSV reader: text sort.
    source = partition({"a.csv": H + "a,2021-01-30 10:00:00,10\nb,2021-01-30 10:00:00,\u0663\n"})
    outcome = job(source)
    agrees(outcome, source)
    assert [r.split(",")[0] for r in rows(outcome)] == ["10", "\u0663"]


def test_first_occurrence_follows_path_order_over_many_files(
    partition: Callable[..., Path], job: Job
) -> None:
    # Lexicographic path order, not numeric or creation order: "part-10" < "part-2"; files
    # are written last-first so modification times disagree too.
    names = [f"part-{i}.csv" for i in range(2, 40)]
    for i in reversed(range(2, 40)):
        source = partition(
            {names[i - 2]: H + f"k,2021-01-30 10:00:00,{i}\nu{i},2021-01-30 10:00:00,{i}\n"}
        )
    outcome = job(source, chunk_size=1)
    agrees(outcome, source)
    assert "10,2021-01-30 10:00:00,2" in rows(outcome)
    assert outcome.totals["conflicting_duplicates"] == 37
