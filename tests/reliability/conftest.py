"""Reliability fixtures: a fault proxy before moto, short retry backoff, CLI subprocesses."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.reliability.faults import FaultProxy
from tests.reliability.helpers import LAUNCHER, REPO, Child, allow_small_parts, child_env


@pytest.fixture(autouse=True)
def short_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the real retry counts but not their seconds of sleep (in this process only)."""
    import smart_open.s3
    from botocore.retries.standard import ExponentialBackoff

    config = ExponentialBackoff._DEFAULT_BACKOFF_CONFIG
    monkeypatch.setitem(config, "throttling_base_scale", 0.01)
    monkeypatch.setitem(config, "non_throttling_base_scale", 0.005)
    # smart_open sleeps 1, 2, 4, 8, 16 s between its own re-reads of a broken body.
    monkeypatch.setattr(smart_open.s3, "time", SimpleNamespace(sleep=lambda seconds: None))


@pytest.fixture
def proxy(moto_server: str) -> Iterator[FaultProxy]:
    """A fault proxy in front of the session's moto server, with no fault yet."""
    fault_proxy = FaultProxy(moto_server).start()
    try:
        yield fault_proxy
    finally:
        fault_proxy.stop()


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> int:
    """Multipart uploads of any output above 1 KiB, in 1 KiB parts (moto told to accept them)."""
    import moto.s3.models

    from streamagg.sources import s3 as s3_module

    monkeypatch.setattr(s3_module, "MULTIPART_THRESHOLD", 1024)
    monkeypatch.setattr(s3_module, "PART_SIZE", 1024)
    monkeypatch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", 256)
    allow_small_parts(monkeypatch.setattr)
    return 1024


def default_stop_signals() -> None:
    """In the child: SIGINT and SIGHUP at their defaults. A suite started in the background
    (``cmd &`` ignores SIGINT) or under ``nohup`` (ignores SIGHUP) passes the ignoring on, and
    streamagg rightly keeps an ignored signal ignored: the signal tests' child then never
    stopped (they timed out in a CI run started with ``nohup ... &``)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@pytest.fixture
def spawn() -> Iterator[Callable[..., Child]]:
    """Start ``streamagg`` through the test launcher as a subprocess; killed at teardown."""
    children: list[Child] = []

    def start(args: Sequence[object], *, pause: str | None = None,
              marker: Path | None = None, env: dict[str, str] | None = None,
              settings: Sequence[str] = ()) -> Child:
        command = [sys.executable, str(LAUNCHER)]
        if pause is not None:
            assert marker is not None
            command += ["--pause", pause, "--marker", str(marker)]
        for item in settings:
            command += ["--set", item]
        command += ["--", *[str(a) for a in args]]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, cwd=REPO, env=env or child_env(),
                                   preexec_fn=default_stop_signals)
        child = Child(process)
        children.append(child)
        return child

    yield start
    for child in children:
        if child.process.poll() is None:
            child.process.kill()
            child.process.communicate(timeout=30)
