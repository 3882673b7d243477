"""The key fingerprint (streamagg/dedup/fingerprint.py), and de-duplication that stays exact
when fingerprint lanes collide."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamagg.dedup import rows as keyed_rows
from streamagg.dedup.fingerprint import fingerprints
from tests.dedup.test_backends import BACKENDS, expected, run

ODD_KEYS = ["", "a", "a\x00", "\x00a", "a" * 7, "a" * 8, "a" * 9, "\u00e9", "e\u0301",
            "abcdefgh" * 3, "abcdefgh" * 3 + "\x00", "x" * 256, "x" * 257, "y" * 5000]


def pairs(keys: list[str], instants: list[int]) -> list[tuple[int, int]]:
    high, low = fingerprints(pa.array(keys, pa.string()), pa.array(instants, pa.int64()))
    return list(zip(high.tolist(), low.tolist(), strict=True))


def test_distinct_keys_get_distinct_fingerprints() -> None:
    # Zero padding, length, the instant and multi-byte text all count.
    keys = [k for k in ODD_KEYS for _ in (0, 1)]
    instants = [t for _ in ODD_KEYS for t in (0, 1)]
    got = pairs(keys, instants)
    assert len(set(got)) == len(got)


def test_a_key_gets_the_same_fingerprint_in_any_batch() -> None:
    # One batch of one length takes the in-place path; a batch of many lengths gathers each
    # length's rows; ids over 256 bytes go through blake2b. All must agree.
    instants = list(range(len(ODD_KEYS)))
    together = pairs(ODD_KEYS, instants)
    alone = [pairs([k], [t])[0] for k, t in zip(ODD_KEYS, instants, strict=True)]
    assert together == alone
    sliced = pa.array(["zz", *ODD_KEYS], pa.string()).slice(1)
    high, low = fingerprints(sliced, pa.array(instants, pa.int64()))
    assert list(zip(high.tolist(), low.tolist(), strict=True)) == together


@pytest.mark.parametrize("key", ["x" * 257, "\u00e9" * 3000, "y" * 5000])
def test_a_long_id_is_fingerprinted_as_blake2b_of_its_bytes_and_instant(key: str) -> None:
    # Hashed in place, in two parts: the digest is the one kept states already hold.
    digest = hashlib.blake2b(key.encode() + (7).to_bytes(8, "little"), digest_size=16).digest()
    assert pairs(["short", key], [0, 7])[1] == (int.from_bytes(digest[:8], "little"),
                                                int.from_bytes(digest[8:], "little"))


def test_a_million_uuid_like_ids_do_not_collide_in_either_lane() -> None:
    ids = np.char.add("id-", np.arange(1_000_000).astype(str))
    high, low = fingerprints(pa.array(ids), pa.array(np.zeros(len(ids), np.int64)))
    assert len(np.unique(high)) == len(np.unique(low)) == len(ids)
    # The high lane's top bits choose the partition: they must spread evenly.
    counts = np.bincount((high >> np.uint64(60)).astype(np.int64), minlength=16)
    assert counts.min() > 0.9 * len(ids) / 16


def weak_fingerprints(keys: pa.Array, instants: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A high lane of two values (every partition and piece full of high-lane collisions)
    and an exact low lane: each distinct (key, instant) its own number."""
    numbers: dict[tuple[str, int], int] = weak_fingerprints.numbers  # type: ignore[attr-defined]
    rows = list(zip(keys.to_pylist(), instants.to_pylist(), strict=True))
    low = np.array([numbers.setdefault(row, len(numbers)) for row in rows], np.uint64)
    high = np.array([(hash(k) & 1) << 63 for k, _ in rows], np.uint64)
    return high, low


@pytest.fixture
def colliding(monkeypatch: pytest.MonkeyPatch) -> None:
    weak_fingerprints.numbers = {}  # type: ignore[attr-defined]
    monkeypatch.setattr(keyed_rows, "fingerprints", weak_fingerprints)


rows_strategy = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c", "ab", "\u00fc"]), st.integers(-2, 2),
              st.sampled_from(["1", "2", "x"])),
    max_size=80,
)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows_strategy, size=st.integers(1, 30))
def test_backends_stay_exact_when_high_lanes_collide(
    colliding: None, rows: list[tuple[str, int, str]], size: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    batches = [rows[i:i + size] for i in range(0, len(rows), size)]
    for kind in BACKENDS:
        assert run(kind, batches, tmp_path_factory.mktemp(kind)) == expected(rows), kind


def test_a_piece_of_one_high_lane_is_streamed_exactly(
    colliding: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A budget no piece fits: every partition goes to the bit cuts, then (one high lane
    # left) to streaming in slices, with several keys behind that one lane.
    from streamagg.dedup import pieces

    monkeypatch.setattr(pieces, "WORK_PER_SPILLED_BYTE", 2**16)
    streamed: list[str] = []
    real = pieces.PieceSplitter.streamed

    def spy(self: pieces.PieceSplitter, path: str) -> Iterator[pieces.Done]:
        streamed.append(path)
        return real(self, path)

    monkeypatch.setattr(pieces.PieceSplitter, "streamed", spy)
    rows = [(f"k{i % 37}", i % 2, f"g{i % 3}") for i in range(3000)]
    batches = [rows[i:i + 250] for i in range(0, len(rows), 250)]
    survivors, duplicates, conflicts = run("spill", batches, tmp_path)
    assert (survivors, duplicates, conflicts) == expected(rows)
    assert sum(Counter(survivors).values()) == 37 * 2
    assert len(streamed) == 2  # one piece per value of the high lane
    assert list(tmp_path.iterdir()) == []


# Fingerprints are kept on disk between runs (`--incremental`'s key set): a change to their
# function, even a faster form of it, must give the same 128 bits. Recorded at 64e6f13.
KEPT_FINGERPRINTS = [
    (15455012939403437471, 9471879065708102981), (14114385110194758313, 4148620697284570629),
    (11567588335080076673, 2482069487200590805), (11728586243479979300, 3564000057244943783),
    (7775041226685943559, 11049958486060723978), (2828956117734095650, 14297653823262473378),
    (14025144086279777674, 8697813584700813681), (7165203931021729658, 14998583733235192617),
    (14520754602628013464, 1647178385769827465), (6986058566807536135, 8895569210846225753),
    (18233873606304682996, 1674718711109516852), (14804220695272141788, 13393669572324809320),
    (3503273850313722067, 14208459098729965524), (1297705048939937972, 11780195950927751007),
    (8795902119568508863, 7654897488382986566),
]
KEPT_SAME_WIDTH_SHA256 = "53b5d20faddcddb8c7339654ecd86f3d25e2b4d011847f70fb9fb84d7d16992d"


def test_fingerprints_stay_those_of_earlier_versions() -> None:
    """Odd keys of every length class (the general path, the long ids' blake2b) and 20,000
    ids of one width (the in-place path, its padded last rows) give the recorded lanes."""
    keys = [*ODD_KEYS, "44e5b981-00c6-4fb0-95f0-95a997147825"]
    instants = [1611964800 * 10**9 + i * 10**9 - (i % 3) * 7 for i in range(len(keys))]
    instants[1] = -5
    assert pairs(keys, instants) == KEPT_FINGERPRINTS
    ids = [f"{i:08x}-00c6-4fb0-95f0-95a997147825" for i in range(20000)]
    high, low = fingerprints(pa.array(ids), pa.array(np.arange(20000, dtype=np.int64) * 10**9))
    assert hashlib.sha256(high.tobytes() + low.tobytes()).hexdigest() == KEPT_SAME_WIDTH_SHA256
