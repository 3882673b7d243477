"""Anything standing where a kept file or folder goes (a FIFO, /dev/zero, a folder, a file, a link
to another folder) ends in the right day: never a hang, a wedged day, or a file removed that this
tool did not write."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import Result
from hypothesis import example, given
from hypothesis import strategies as st

from tests.conftest import DAY_ARG, MANIFEST_NAME, OUTPUT_NAME
from tests.fuzzing import fuzz_settings
from tests.reliability.helpers import PART, H, rows

Cli = Callable[..., Result]
STATE = MANIFEST_NAME.removesuffix(".manifest.json") + ".state"
# Where a damaged day holds something else: relative to the day's folder of the destination.
TARGETS = {"manifest": MANIFEST_NAME, "output": OUTPUT_NAME, "state folder": STATE,
           "segments folder": f"{STATE}/segments", "index": f"{STATE}/index-*.json",
           "segment": f"{STATE}/segments/*"}
THINGS = ("fifo", "dev zero", "folder", "file", "foreign folder")
MODES = {"incremental": ["--incremental"], "check": ["--check"],
         "skip unchanged": ["--skip-unchanged"], "full": []}


@contextmanager
def at_most(seconds: float) -> Iterator[None]:
    """Fail instead of waiting for ever (a FIFO's open blocks until a writer comes)."""
    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    before = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)


def put_in_the_way(path: Path, thing: str, foreign: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    if thing == "fifo":
        os.mkfifo(path)
    elif thing == "dev zero":
        path.symlink_to("/dev/zero")
    elif thing == "folder":
        path.mkdir()
    elif thing == "file":
        path.write_text("not what was kept")
    else:
        path.symlink_to(foreign, target_is_directory=True)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kept-source")
    (root / PART).mkdir(parents=True)
    for name in "ab":
        (root / PART / f"{name}.csv").write_text(H + rows(40, prefix=name))
    return root


@pytest.mark.fuzz
@fuzz_settings(12)
@given(target=st.sampled_from(list(TARGETS)), thing=st.sampled_from(THINGS),
       mode=st.sampled_from(list(MODES)))
@example(target="manifest", thing="fifo", mode="check")  # --check waited for ever
@example(target="output", thing="fifo", mode="skip unchanged")  # waited for ever
@example(target="segment", thing="fifo", mode="incremental")  # waited for ever (linked, hashed)
@example(target="index", thing="dev zero", mode="incremental")  # read without end
@example(target="state folder", thing="file", mode="incremental")  # every refresh exit 1
@example(target="segments folder", thing="file", mode="incremental")  # every refresh exit 1
@example(target="state folder", thing="foreign folder", mode="full")  # its files were removed
def test_whatever_stands_where_a_kept_file_goes_the_day_comes_out_right(
    cli: Cli, source: Path, tmp_path: Path, target: str, thing: str, mode: str
) -> None:
    base = Path(tempfile.mkdtemp(dir=tmp_path))
    dest, foreign = base / "out", base / "elsewhere"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("not streamagg's")
    args = [DAY_ARG, "--source", str(source), "--dest", str(dest)]
    assert cli(*args, "--incremental").exit_code == 0
    day = dest / PART
    good = (day / OUTPUT_NAME).read_bytes()
    (path,) = day.glob(TARGETS[target])
    put_in_the_way(path, thing, foreign)
    with at_most(30):
        result = cli(*args, *MODES[mode])
        assert result.exit_code == 0, result.output
        if mode != "check":  # a check writes nothing; the day is written again otherwise
            assert (day / OUTPUT_NAME).read_bytes() == good
            again = cli(*args, "--incremental")
            assert again.exit_code == 0, again.output
            assert (day / OUTPUT_NAME).read_bytes() == good
    assert (foreign / "thesis.txt").read_text() == "not streamagg's"
