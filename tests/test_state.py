"""The kept state (streamagg/state.py) is untrusted input: any damage means a full recompute."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamagg import Config, registry, run_day
from streamagg.sources import Storage, storage_for
from tests.conftest import DAY, PACKAGE_DEDUPE_BACKENDS, S3, day_path
from tests.reference import Expected, expected_for
from tests.test_properties import NUMERIC_CAMPAIGNS, TEXT_CAMPAIGNS, csv_file

BACKENDS = list(registry.DEDUPE_BACKENDS.names)
H = "IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\n"
LENIENT = "100%"
# What a refresh reads back from the destination: the manifest names the generation; the
# index, checked against it, names the rest.
TARGETS = ("manifest", "output", "rejects", "index", "segment")
DAMAGES = ("flip", "truncate", "delete", "swap")


class Results:
    """The day's folder in the destination, through the project's own storage interface (a
    local folder or a bucket alike): what the test reads, damages and swaps."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.folder = day_path(DAY)

    def files(self, target: str) -> list[str]:
        found = [r for r in self.storage.list_below(self.folder) if kind_of(r) == target]
        return sorted(found)

    def read(self, relative: str) -> bytes | None:
        return self.storage.read_bytes(relative)

    def write(self, relative: str, data: bytes) -> None:
        with tempfile.NamedTemporaryFile(delete=False) as out:
            out.write(data)
        try:
            self.storage.publish(out.name, relative)
        finally:
            os.unlink(out.name)

    def named(self, suffix: str) -> bytes | None:
        return self.read(f"{self.folder}/{suffix}")


def kind_of(relative: str) -> str:
    name = relative.rpartition("/")[2]
    if "/segments/" in relative:
        return "segment"
    if ".state/" in relative:
        return "index" if name.startswith("index-") else "other"
    if name.endswith(".manifest.json"):
        return "manifest"
    if name.endswith(".rejects.csv"):
        return "rejects"
    return "output" if name.startswith("daily_agg_") else "other"


@dataclass(frozen=True)
class Damage:
    target: str
    kind: str
    pick: int  # which file of the target, and of the others for a swap
    at: float  # where in the file: a fraction of its size
    mask: int  # the byte flipped bytes are xored with (never 0)
    width: int  # how many bytes a flip changes


# The state's own files twice as often as the others.
damages = st.builds(Damage, st.sampled_from([*TARGETS, "index", "segment"]),
                    st.sampled_from(DAMAGES),
                    st.integers(0, 7), st.floats(0, 1, exclude_max=True), st.integers(1, 255),
                    st.sampled_from([1, 1, 8, 64]))


def apply(results: Results, damage: Damage) -> set[str]:
    """Damage one file as asked; the targets whose bytes changed (two for a swap), or none."""
    files = results.files(damage.target)
    if not files:
        return set()
    relative = files[damage.pick % len(files)]
    data = results.read(relative) or b""
    if damage.kind == "delete":
        results.storage.remove(relative)
        return {damage.target}
    if damage.kind == "truncate":
        results.write(relative, data[:int(len(data) * damage.at)])
        return {damage.target} if data else set()
    if damage.kind == "flip":
        if not data:
            return set()
        start = int(len(data) * damage.at)
        changed = bytes(b ^ damage.mask for b in data[start:start + damage.width])
        results.write(relative, data[:start] + changed + data[start + len(changed):])
        return {damage.target}
    others = [r for t in TARGETS for r in results.files(t) if r != relative]
    if not others:
        return set()
    other = others[damage.pick % len(others)]
    theirs = results.read(other) or b""
    results.write(relative, theirs)
    results.write(other, data)
    return {damage.target, kind_of(other)} if theirs != data else set()


# What a full recompute's mode_reason says of each damaged target: the first thing a refresh
# finds wrong, named (state.py checks the index, then the output and rejects, then each file).
REASONS = {
    "output": ("the published output",),
    "rejects": ("the published rejects", "lists bad rows but no rejects file"),
    "index": ("the kept state does not match the manifest",
              "the state generation the manifest names is missing",
              "the kept state's index is unreadable"),
    "segment": ("a kept state file",),
}


def as_written(raw: str) -> str:
    """A reference reject's raw text as the rejects file holds it: bytes that are not UTF-8
    escaped, the line end dropped."""
    return raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace").rstrip(
        "\r\n")


def rejects_of(data: bytes | None) -> list[tuple[str, int, str]]:
    if data is None:
        return []
    rows = csv.DictReader(io.StringIO(data.decode("utf-8"), newline=""))
    return [(row["file"].rpartition(f"{day_path(DAY)}/")[2], int(row["line"]), row["raw"])
            for row in rows]


def agrees(results: Results, expected: Expected, where: str) -> dict[str, Any]:
    """The refreshed day equals the reference's: output, rejects and the manifest's totals."""
    manifest = json.loads(results.named("_daily_agg_20210130_SA.manifest.json") or b"null")
    assert results.named("daily_agg_20210130_SA.csv") == expected.output, where
    assert manifest["totals"] == expected.totals, where
    assert rejects_of(results.named("_daily_agg_20210130_SA.rejects.csv")) == [
        (r.path, r.line, as_written(r.raw)) for r in expected.rejects], where
    return dict(manifest)


@st.composite
def refreshes(draw: st.DrawFn) -> tuple[bytes, list[tuple[bytes | None, Damage | None]]]:
    """A first file (with a bad row, so there are rejects), then steps: a late file arriving
    or not, a damage or not; ids and instants shared so duplicates span files and steps."""
    ids = draw(st.lists(st.sampled_from(["a", "b", "c", "id-1", "\u00fc"]), min_size=1,
                        max_size=3, unique=True))
    campaigns = draw(st.sampled_from([NUMERIC_CAMPAIGNS, TEXT_CAMPAIGNS]).flatmap(
        lambda pool: st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True)))
    first = draw(csv_file(ids, campaigns)).rstrip(b"\r\n") + b"\nbad,not-a-time,1\n"
    steps = [(draw(st.none() | csv_file(ids, campaigns)),
              draw(st.one_of(damages, damages, damages, st.none())))
             for _ in range(draw(st.integers(1, 3)))]
    return first, steps


def refresh_all(source: Path, results: Results, config: Config,
                steps: list[tuple[bytes | None, Damage | None]]) -> None:
    run_day(config)
    for number, (late, damage) in enumerate(steps):
        if late is not None:
            (source / day_path(DAY) / f"z{number}.csv").write_bytes(late)
        damaged = apply(results, damage) if damage is not None else set()
        where = f"step {number}: {damage}"
        report = run_day(config)
        agrees(results, expected_for(source, DAY), where)
        if damaged and damage is not None and damage.target != "manifest":
            assert report.mode == "full", (where, report.mode_reason)
            # The reason names what was found damaged (one of the two files, for a swap).
            said = [p for t in damaged - {"manifest"} for p in REASONS[t]
                    if p in report.mode_reason]
            assert said or "manifest" in damaged, (where, report.mode_reason)
        elif damage is None:
            assert report.mode == "incremental", (where, report.mode_reason)


@pytest.mark.parametrize("dedupe", BACKENDS)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(day=refreshes())
def test_damaged_state_recomputes_to_the_reference(
        dedupe: str, day: tuple[bytes, list[tuple[bytes | None, Damage | None]]]) -> None:
    first, steps = day
    with tempfile.TemporaryDirectory() as tmp:
        source, dest = Path(tmp) / "source", Path(tmp) / "dest"
        (source / day_path(DAY)).mkdir(parents=True)
        (source / day_path(DAY) / "a.csv").write_bytes(first)
        config = Config(day=DAY, source=str(source), dest=str(dest), dedupe=dedupe,
                        incremental=True, max_bad_rows=LENIENT, tmp_dir=tmp)
        refresh_all(source, Results(storage_for(str(dest))), config, steps)


@pytest.mark.slow
@settings(max_examples=3, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(day=refreshes())
def test_damaged_state_recomputes_to_the_reference_on_s3(
        s3: S3, day: tuple[bytes, list[tuple[bytes | None, Damage | None]]]) -> None:
    first, steps = day
    # S3 reaches a backend through the same run_day: the package's own here, every registered
    # one in the local property above.
    for dedupe in PACKAGE_DEDUPE_BACKENDS:
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "source"
            (source / day_path(DAY)).mkdir(parents=True)
            (source / day_path(DAY) / "a.csv").write_bytes(first)
            dest = f"{s3.uri}/{os.urandom(4).hex()}"
            config = Config(day=DAY, source=str(source), dest=dest, dedupe=dedupe,
                            incremental=True, max_bad_rows=LENIENT, endpoint_url=s3.endpoint)
            refresh_all(source, Results(storage_for(dest, endpoint_url=s3.endpoint)), config,
                        steps)


# --- the shapes seen, one regression test each ---------------------------------------------


@pytest.fixture
def kept_day(tmp_path: Path) -> Iterator[Any]:
    """A 1,000-row day (100 of them repeated across two files) kept with --incremental, and a
    late file arrived: a refresh would be incremental."""

    def make(dedupe: str) -> tuple[Path, Config, Results]:
        source, dest = tmp_path / "source", tmp_path / "dest"
        folder = source / day_path(DAY)
        folder.mkdir(parents=True)
        rows = [f"id-{i},2021-01-30 {i % 24:02d}:{i % 60:02d}:00,{i % 13}\n" for i in range(1000)]
        (folder / "a.csv").write_text(H + "".join(rows[:600]))
        (folder / "b.csv").write_text(H + "".join(rows[500:]))
        config = Config(day=DAY, source=str(source), dest=str(dest), dedupe=dedupe,
                        incremental=True, max_bad_rows=LENIENT)
        run_day(config)
        (folder / "c.csv").write_text(H + "".join(rows[::50]))
        return source, config, Results(storage_for(str(dest)))

    yield make


@pytest.mark.parametrize("dedupe", BACKENDS)
def test_64_bytes_changed_in_place_recompute(kept_day: Any, dedupe: str) -> None:
    """Seen: 1,009 impressions instead of 1,000, exit 0, mode incremental."""
    source, config, results = kept_day(dedupe)
    segment = results.files("segment")[0]
    data = results.read(segment) or b""
    middle = len(data) // 2
    results.write(segment, data[:middle] + bytes(64) + data[middle + 64:])
    report = run_day(config)
    assert (report.mode, report.mode_reason) == (
        "full", f"a kept state file is damaged: {segment.rpartition('/')[2]}")
    agrees(results, expected_for(source, DAY), "64 bytes")
    assert report.totals["impressions"] == 1000


@pytest.mark.parametrize("dedupe", BACKENDS)
def test_a_truncated_or_malformed_state_file_recomputes(kept_day: Any, dedupe: str) -> None:
    """Seen: `ArrowInvalid: Not an Arrow file` (spill), `database disk image is malformed`
    naming a temp path (sqlite), on every later refresh."""
    source, config, results = kept_day(dedupe)
    for segment in results.files("segment"):
        data = results.read(segment) or b""
        results.write(segment, data[: len(data) // 3])
    report = run_day(config)
    assert report.mode == "full"
    assert report.mode_reason.startswith("a kept state file is damaged: "), report.mode_reason
    agrees(results, expected_for(source, DAY), "truncated")
    assert run_day(config).mode == "incremental"  # the recompute kept a sound state


def rewrite_index(results: Results, change: Any) -> None:
    """Change the index and make the manifest name its new sha256: a state a bug or another
    writer could leave, consistent but not this version's own."""
    import hashlib

    index = results.files("index")[0]
    data = json.loads(results.read(index) or b"{}")
    change(data)
    raw = json.dumps(data).encode()
    results.write(index, raw)
    manifest_name = results.files("manifest")[0]
    manifest = json.loads(results.read(manifest_name) or b"{}")
    manifest["state"]["index_sha256"] = hashlib.sha256(raw).hexdigest()
    results.write(manifest_name, json.dumps(manifest).encode())


@pytest.mark.parametrize("change, reason", [
    (lambda i: i["files"][next(iter(i["files"]))].pop("sha256"),
     "the kept state's index is unreadable: files["),
    (lambda i: i.update(format=3), "the kept state is from another version of streamagg"),
    (lambda i: i["books"].update(totals={}), "the kept state's index is unreadable: books.totals"),
    (lambda i: i["files"].update({"../../x": {"bytes": 1, "sha256": "0"}}),
     "the kept state's index is unreadable: a state file has the name '../../x'"),
], ids=["no checksum", "older format", "no totals", "a path for a name"])
def test_an_index_without_what_a_refresh_trusts_recomputes(kept_day: Any, change: Any,
                                                           reason: str) -> None:
    """Older generations recorded no sha256 for the files they kept from before."""
    source, config, results = kept_day(BACKENDS[0])
    rewrite_index(results, change)
    report = run_day(config)
    assert report.mode == "full" and report.mode_reason.startswith(reason), report.mode_reason
    agrees(results, expected_for(source, DAY), reason)


def test_the_manifests_figures_are_not_trusted(kept_day: Any) -> None:
    """The manifest is trusted for the generation it names and its index's sha256 only: a
    refresh takes the day's totals and inputs from the checked index."""
    source, config, results = kept_day(BACKENDS[0])
    name = results.files("manifest")[0]
    manifest = json.loads(results.read(name) or b"{}")
    manifest["totals"] = {key: value + 7 for key, value in manifest["totals"].items()}
    for entry in manifest["inputs"]:
        entry["rows"] += 1
    results.write(name, json.dumps(manifest).encode())
    report = run_day(config)
    assert report.mode == "incremental", report.mode_reason
    agrees(results, expected_for(source, DAY), "manifest figures")


def test_a_state_that_cannot_be_read_recomputes(kept_day: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from streamagg.errors import StorageError
    from streamagg.sources.local import LocalStorage

    source, config, results = kept_day(BACKENDS[0])
    real = LocalStorage.fetch

    def fetch(self: Any, relative: str, local_path: str, **kwargs: Any) -> bool:
        if "/segments/" in relative:
            raise StorageError("cannot read: Permission denied", uri=self.uri_of(relative))
        return real(self, relative, local_path, **kwargs)

    # Fetched, as from another file system or S3, and refused.
    monkeypatch.setattr(LocalStorage, "local_path", lambda self, relative: None)
    monkeypatch.setattr(LocalStorage, "fetch", fetch)
    report = run_day(config)
    assert report.mode == "full"
    assert report.mode_reason.startswith("the kept state is unreadable: cannot read: "
                                         "Permission denied"), report.mode_reason
    agrees(results, expected_for(source, DAY), "unreadable")


@pytest.mark.parametrize("dedupe", BACKENDS)
def test_a_state_on_another_file_system_is_copied_and_checked(
        kept_day: Any, dedupe: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the work folder cannot link to the stored files, each is copied through its
    digest: damage is found the same way, and an intact state still refreshes."""
    import errno

    def no_links(*args: Any) -> None:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(os, "link", no_links)
    source, config, results = kept_day(dedupe)
    report = run_day(config)
    assert report.mode == "incremental", report.mode_reason
    agrees(results, expected_for(source, DAY), "copied")
    (source / day_path(DAY) / "d.csv").write_text(H + "id-1,2021-01-30 01:01:00,5\n")
    segment = results.files("segment")[-1]
    data = results.read(segment) or b""
    results.write(segment, data[:-1] + bytes([data[-1] ^ 1]))
    report = run_day(config)
    assert report.mode_reason.startswith("a kept state file is damaged"), report.mode_reason
    agrees(results, expected_for(source, DAY), "copied, damaged")
