"""Configuration mistakes fail fast with the fix: a source root that holds no partitions, a
destination that cannot take the results, the default source nobody chose."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import DAY_ARG, S3, bucket_on
from tests.fuzzing import fuzz_settings
from tests.reliability.faults import FaultProxy

pytestmark = pytest.mark.s3
Cli = Callable[..., Result]
H = "IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\n"
PART = "2021/01/30"
ROW = "a,2021-01-30 10:00:00,1\n"


def last(result: Result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.output and lines, result.output
    return lines[-1]


@pytest.fixture
def proxy(moto_server: str) -> FaultProxy:
    fault_proxy = FaultProxy(moto_server).start()
    yield fault_proxy  # type: ignore[misc]
    fault_proxy.stop()


@pytest.fixture
def bucket(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> S3:
    return bucket_on(moto_server, monkeypatch)


# Where the source root points, what it holds, and the exit code and words wanted.
LOCAL_ROOTS = {
    "a day's folder": (PART, {"a.csv": H + ROW}, 2, "looks like a day's folder; give --source"),
    "a folder with no partitions": ("", {"a.csv": H + ROW}, 2, "no date partitions"),
    "an empty folder": ("", {}, 2, "no date partitions"),
    "a root without today": ("", {"2021/01/29/a.csv": H + ROW}, 3,
                             "no input files in the partition"),
}


@pytest.mark.parametrize("case", list(LOCAL_ROOTS))
@pytest.mark.parametrize("storage", ["local", "s3"])
def test_a_source_root_without_partitions_is_exit_2_with_the_fix(
    cli: Cli, tmp_path: Path, proxy: FaultProxy, bucket: S3, case: str, storage: str
) -> None:
    below, files, code, words = LOCAL_ROOTS[case]
    root = tmp_path / "logs"
    root.mkdir()
    for name, text in files.items():
        where = root / (f"{below}/{name}" if below else name)
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_text(text)
        if storage == "s3":
            bucket.put(f"logs/{where.relative_to(root).as_posix()}", text)
    base = str(root) if storage == "local" else f"{bucket.uri}/logs"
    source = f"{base}/{below}" if below else base
    result = cli(DAY_ARG, "--source", source, "--dest", tmp_path / "out", "--endpoint-url",
                 proxy.url)
    assert result.exit_code == code, result.output
    message = last(result)
    assert words in message, message
    if case == "a day's folder":
        assert message.endswith(f"give --source {base} ({source})"), message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_destination_bucket_that_does_not_exist_is_found_before_reading(
    cli: Cli, bucket: S3, proxy: FaultProxy, dry_run: bool
) -> None:
    bucket.put(f"in/{PART}/a.csv", H + ROW)
    result = cli(DAY_ARG, "--source", f"{bucket.uri}/in", "--dest",
                 "s3://streamagg-no-such-dest-bucket/out", "--endpoint-url", proxy.url,
                 *(["--dry-run"] if dry_run else []))
    assert result.exit_code == 1, result.output
    assert last(result) == ("streamagg: error: destination bucket does not exist: create it, "
                            "or give another --dest (s3://streamagg-no-such-dest-bucket)")
    reads = [seen for seen in proxy.requests() if seen.path.endswith(".csv")]
    assert reads == []  # not one input was read


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_local_destination_that_cannot_be_a_folder_is_found_before_reading(
    cli: Cli, partition: Callable[..., Path], tmp_path: Path, dry_run: bool
) -> None:
    source = partition({"a.csv": H + ROW})
    (tmp_path / "taken").write_text("a file where the results should go")
    result = cli(DAY_ARG, "--source", source, "--dest", tmp_path / "taken" / "results",
                 *(["--dry-run"] if dry_run else []))
    assert result.exit_code == 1, result.output
    assert last(result) == ("streamagg: error: cannot write the results: not a folder; give "
                            f"another --dest ({tmp_path / 'taken'})")


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_a_state_root_that_cannot_take_the_state_is_found_before_reading(
    cli: Cli, bucket: S3, proxy: FaultProxy, tmp_path: Path, storage: str
) -> None:
    # The kept state is written before the output: its root is checked with the destination's.
    bucket.put(f"in/{PART}/a.csv", H + ROW)
    (tmp_path / "taken").write_text("a file where the states should go")
    state, where = ((str(tmp_path / "taken" / "states"), str(tmp_path / "taken"))
                    if storage == "local" else
                    ("s3://streamagg-no-such-state-bucket/st",
                     "s3://streamagg-no-such-state-bucket"))
    result = cli(DAY_ARG, "--source", f"{bucket.uri}/in", "--dest", tmp_path / "out",
                 "--incremental", "--state", state, "--endpoint-url", proxy.url)
    assert result.exit_code == 1, result.output
    words = ("cannot write to --state: not a folder; give another --state" if storage == "local"
             else "--state bucket does not exist: create it, or give another --state")
    assert last(result) == f"streamagg: error: {words} ({where})"
    assert [seen for seen in proxy.requests() if seen.path.endswith(".csv")] == []
    assert not (tmp_path / "out").exists()


def test_state_without_incremental_is_warned_of(cli: Cli, tmp_path: Path) -> None:
    # A forgotten --incremental: the run is a full one, and it says so rather than nothing.
    folder = tmp_path / "in" / PART
    folder.mkdir(parents=True)
    (folder / "a.csv").write_text(H + ROW)
    result = cli(DAY_ARG, "--source", tmp_path / "in", "--dest", tmp_path / "out",
                 "--state", tmp_path / "st", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "--state is used only with --incremental" in result.stderr
    assert not (tmp_path / "st").exists()
    quiet = cli(DAY_ARG, "--source", tmp_path / "in", "--dest", tmp_path / "out",
                "--state", tmp_path / "st", "--incremental", "--no-progress")
    assert quiet.exit_code == 0 and "--state is used only" not in quiet.stderr


# Names botocore refuses (its VALID_BUCKET; S3 itself is stricter and answers for the rest).
@pytest.mark.parametrize("name", ["bucket name", "a%2fb", "caf\u00e9", "tab\there", "a?b",
                                  "arn:aws:s3:us-east-1:123456789012:accesspoint:ap"])
@pytest.mark.parametrize("option", ["--source", "--dest", "--state"])
def test_a_bucket_name_s3_would_refuse_is_exit_2_before_any_request(
    cli: Cli, bucket: S3, proxy: FaultProxy, tmp_path: Path, name: str, option: str
) -> None:
    bucket.put(f"in/{PART}/a.csv", H + ROW)
    where = {"--source": f"{bucket.uri}/in", "--dest": str(tmp_path / "out")}
    where[option] = f"s3://{name}/x"
    extra = ["--incremental"] if option == "--state" else []
    result = cli(DAY_ARG, *[word for pair in where.items() for word in pair], *extra,
                 "--endpoint-url", proxy.url)
    assert result.exit_code == 2, result.output
    assert "invalid bucket name" in last(result), last(result)
    assert proxy.requests() == []
    assert not (tmp_path / "out").exists()


def test_the_default_source_says_it_is_the_default(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where ./data does not exist
    result = cli(DAY_ARG)
    assert result.exit_code == 2, result.output
    assert last(result) == (
        "streamagg: error: source folder does not exist; ./data is the default source: give "
        f"--source or set STREAMAGG_SOURCE ({tmp_path / 'data'})")


@pytest.mark.fuzz
@fuzz_settings(20)
@given(key_id=st.from_regex(r"AKIA[A-Z0-9]{4,16}", fullmatch=True),
       secret=st.from_regex(r"[A-Za-z0-9/+]{8,40}", fullmatch=True),
       option=st.sampled_from(["--source", "--dest", "--state"]))
def test_credentials_written_into_a_uri_are_refused_and_never_shown(
    cli: Cli, tmp_path: Path, key_id: str, secret: str, option: str
) -> None:
    # An AWS secret holds "/" and "+": the "@" may come after the first "/".
    where = {"--source": str(tmp_path / "in"), "--dest": str(tmp_path / "out")}
    where[option] = f"s3://{key_id}:{secret}@bucket/x"
    extra = ["--incremental"] if option == "--state" else []
    result = cli(DAY_ARG, *[word for pair in where.items() for word in pair], *extra)
    assert result.exit_code == 2, result.output
    assert "credentials in an s3:// URI are refused" in last(result), last(result)
    assert secret not in result.output and key_id not in result.output
