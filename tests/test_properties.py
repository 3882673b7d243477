"""Random small days through every backend and chunk size equal the reference, byte for byte."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import DAY, ENGINES, PACKAGE_DEDUPE_BACKENDS, run_api
from tests.reference import expected_day, partition_dir

DAY_START_NS = int(dt.datetime(2021, 1, 30, tzinfo=dt.UTC).timestamp()) * 10**9
COLUMNS = ["IMPRESSION_ID", "IMPRESSION_DATETIME", "CAMPAIGN_ID", "NOTE"]
NUMERIC_CAMPAIGNS = ["1", "2", "10", "007", "7", "-3", "+4", "123456789012345678901234567890"]
TEXT_CAMPAIGNS = ["alpha", "Beta", "a,b", 'q"t', "x\ny", "caf\u00e9", "10", "z z"]
# Seconds into the day (some before and after it: late and early rows) and sub-second parts.
SECONDS = [-3601, -1, 0, 1, 3599, 3600, 36000, 36001, 86399, 86400, 90000]
NANOS = [0, 0, 0, 500_000_000, 123_456_789, 1]
OFFSETS_MIN = [0, 60, -300, 330, -90, 14 * 60]
BAD_DATETIMES = [
    "2021-02-30 10:00:00",
    "2021-01-30 24:00:00",
    "yesterday",
    "2021-01-30 10:00",
    "2021-01-30T10:00:00+0100",
    "30/01/2021 10:00:00",
    "2021-01-30 10:00:00 UTC",
]


@st.composite
def datetime_text(draw: st.DrawFn, instant_ns: int) -> str:
    """One of the many spellings of an instant."""
    offset = draw(st.sampled_from(OFFSETS_MIN))
    local_ns = instant_ns + offset * 60 * 10**9
    seconds, nanos = divmod(local_ns, 10**9)
    local = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=seconds)
    text = (
        local.strftime("%Y-%m-%d") + draw(st.sampled_from([" ", "T"])) + local.strftime("%H:%M:%S")
    )
    digits = f"{nanos:09d}"
    style = draw(st.sampled_from(["none", "full", "short", "long"]))
    if nanos == 0 and style == "none":
        pass
    elif style == "short":
        text += "." + (digits.rstrip("0") or "0")
    elif style == "long":
        text += "." + digits + draw(st.sampled_from(["0", "9", "123"]))  # truncated beyond ns
    else:
        text += "." + digits
    if offset == 0:
        text += draw(st.sampled_from(["", "Z", "+00:00", "-00:00"]))
    else:
        sign = "+" if offset > 0 else "-"
        text += f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
    return text


def pad(draw: st.DrawFn, value: str) -> str:
    return (
        draw(st.sampled_from(["", " ", "\t", "  "]))
        + value
        + draw(st.sampled_from(["", " ", "\t"]))
    )


def csv_field(draw: st.DrawFn, value: str) -> str:
    """The value as written in a file: padded, and quoted when it must be or at random."""
    value = pad(draw, value)
    if any(ch in value for ch in ',"\r\n') or draw(st.booleans()):
        return '"' + value.replace('"', '""') + '"'
    return value


@st.composite
def row_text(draw: st.DrawFn, order: list[int], ids: list[str], campaigns: list[str]) -> str:
    """One data row (good or bad) with its fields in the file's column order."""
    kind = draw(st.sampled_from(["good"] * 8 + ["empty", "bad_time", "fields", "utf8"]))
    values = {
        "IMPRESSION_ID": draw(st.sampled_from(ids)),
        "IMPRESSION_DATETIME": draw(
            datetime_text(
                DAY_START_NS + draw(st.sampled_from(SECONDS)) * 10**9 + draw(st.sampled_from(NANOS))
            )
        ),
        "CAMPAIGN_ID": draw(st.sampled_from(campaigns)),
        "NOTE": draw(
            st.sampled_from(["", "n", "a, note", "\udcff\udcfe raw bytes", '"q"', "two\nlines"])
        ),
    }
    if kind == "empty":
        values[draw(st.sampled_from(COLUMNS[:3]))] = draw(st.sampled_from(["", " ", "\t"]))
    elif kind == "bad_time":
        values["IMPRESSION_DATETIME"] = draw(st.sampled_from(BAD_DATETIMES))
    elif kind == "utf8":
        column = draw(st.sampled_from(["IMPRESSION_ID", "CAMPAIGN_ID"]))
        values[column] = values[column] + "\udcff"
    fields = [csv_field(draw, values[COLUMNS[i]]) for i in order]
    if kind == "fields":
        fields = fields + ["extra"] if draw(st.booleans()) else fields[:-1]
    return ",".join(fields)


@st.composite
def csv_file(draw: st.DrawFn, ids: list[str], campaigns: list[str]) -> bytes:
    """A whole input file: header variant, rows, blank lines, LF or CRLF."""
    width = draw(st.sampled_from([3, 4]))
    order = draw(st.permutations(list(range(width))))
    header_names = []
    for i in order:
        name = COLUMNS[i]
        name = draw(st.sampled_from([name, name.lower(), name.title()]))
        header_names.append(
            draw(st.sampled_from(["", " "])) + name + draw(st.sampled_from(["", " "]))
        )
    bom = draw(st.sampled_from(["", "", "\ufeff"]))
    lines = [bom + ",".join(header_names)]
    for _ in range(draw(st.integers(0, 12))):
        if draw(st.integers(0, 9)) == 0:
            lines.append("")
        lines.append(draw(row_text(order, ids, campaigns)))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    text = newline.join(lines) + draw(st.sampled_from([newline, ""]))
    return text.encode("utf-8", "surrogateescape")


# Extensions in any letter case; compression goes by the content (a `.csv` may hold gzip).
NAMES = ["part-0.csv", "part-1.csv.gz", "sub/part-2.csv", "part-10.csv", "a/b/late.csv.gz",
         "PART-3.CSV", "b/Part-4.Csv.Gz"]


@st.composite
def day_files(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    """1 to 4 files sharing ids and instants, so duplicates happen within and across files."""
    ids = draw(
        st.lists(
            st.sampled_from(["a", "b", "c", "d", "e", "id-1", "\u00fc"]),
            min_size=1,
            max_size=4,
            unique=True,
        )
    )
    campaigns = draw(
        st.sampled_from([NUMERIC_CAMPAIGNS, TEXT_CAMPAIGNS]).flatmap(
            lambda pool: st.lists(st.sampled_from(pool), min_size=1, max_size=4, unique=True)
        )
    )
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
    files = []
    for name in names:
        data = b"" if draw(st.integers(0, 12)) == 0 else draw(csv_file(ids, campaigns))
        gzipped = name.lower().endswith(".gz")
        if draw(st.integers(0, 3)) == 0:
            gzipped = not gzipped  # the name says otherwise
        files.append((name, gzip.compress(data, mtime=0) if gzipped and data else data))
    if draw(st.integers(0, 5)) == 0:
        files.append(("_SUCCESS", b""))
    return files


def printable(raw: str) -> str:
    """Raw text as the rejects file shows it: no line end, invalid bytes as backslash escapes."""
    return raw.rstrip("\r\n").encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def rejected_lines(data: bytes) -> list[tuple[str, int, str]]:
    """(path below the partition, line, raw text) of each reject."""
    found = []
    for row in csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")):
        path = row["file"].split("/2021/01/30/", 1)[1]
        found.append((path, int(row["line"]), row["raw"]))
    return found


def write_day(root: Path, files: list[tuple[str, bytes]]) -> None:
    folder = partition_dir(root, DAY)
    for name, data in files:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


# Examples per engine: a Spark run costs a job (about a second) where a local one costs
# milliseconds, and the same strategies reach the same cases; test_spark.py holds Spark to the
# local engine on random days as well. The properties are the same for both engines.
EVERY_BACKEND_EXAMPLES = {"local": 40, "spark": 15}
# Spark's chunk-size examples cost five jobs each; every_backend's 15 draw a chunk size of the
# same five too, each held to the reference, so two more days suffice here (5 took 44 s, the
# slowest test on the shared session).
CHUNK_SIZE_EXAMPLES = {"local": 15, "spark": 2}


def examples(count: int) -> settings:
    return settings(max_examples=count, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("engine", ENGINES)
def test_every_backend_equals_reference(engine: str) -> None:
    # The Spark engine de-duplicates in Spark whatever --dedupe says (the contract tests skip
    # spark with sqlite for that reason): one backend there, both locally.
    backends = PACKAGE_DEDUPE_BACKENDS if engine == "local" else PACKAGE_DEDUPE_BACKENDS[:1]

    @examples(EVERY_BACKEND_EXAMPLES[engine])
    @given(
        files=day_files(),
        chunk_size=st.sampled_from([1, 2, 3, 7, 1000]),
        memory_limit=st.sampled_from(["128MB", "256MB"]),
    )
    def check(files: list[tuple[str, bytes]], chunk_size: int, memory_limit: str) -> None:
        expected = expected_day(files, DAY)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "source"
            write_day(root, files)
            for backend in backends:
                outcome = run_api(
                    root,
                    dest=Path(tmp) / backend,
                    engine=engine,
                    dedupe=backend,
                    chunk_size=chunk_size,
                    memory_limit=memory_limit,
                    max_bad_rows="100%",
                    tmp_dir=tmp,
                )
                assert outcome.exit_code == 0, outcome.message
                assert outcome.output == expected.output, backend
                assert outcome.totals == expected.totals, backend
                assert (outcome.rejects is not None) == bool(expected.rejects), backend
                if outcome.rejects is not None:
                    assert rejected_lines(outcome.rejects) == [
                        (r.path, r.line, printable(r.raw)) for r in expected.rejects
                    ], backend
            # The backends leave nothing behind in --tmp-dir.
            assert sorted(p.name for p in Path(tmp).iterdir()) == ["source", *backends]

    check()


@pytest.mark.parametrize("engine", ENGINES)
def test_chunk_size_never_changes_the_bytes(engine: str) -> None:
    @examples(CHUNK_SIZE_EXAMPLES[engine])
    @given(files=day_files())
    def check(files: list[tuple[str, bytes]]) -> None:
        expected = expected_day(files, DAY)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "source"
            write_day(root, files)
            for chunk_size in (1, 2, 3, 7, 1000):
                outcome = run_api(
                    root,
                    dest=Path(tmp) / f"out{chunk_size}",
                    engine=engine,
                    chunk_size=chunk_size,
                    max_bad_rows="100%",
                )
                assert outcome.exit_code == 0, outcome.message
                assert outcome.output == expected.output, chunk_size

    check()
