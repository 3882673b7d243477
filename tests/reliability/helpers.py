"""Shared helpers of the reliability suite: inputs, S3 look-ups, subprocess runs, polling."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import S3, to_bytes

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = Path(__file__).with_name("launcher.py")
H = "IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\n"
PART = "2021/01/30"


def allow_small_parts(setattr_: Callable[[object, str, object], None] = setattr) -> None:
    """Let s3transfer make parts under S3's 5 MiB floor (it enlarges smaller ones), so a test
    can upload KiB parts to moto; ``setattr_`` may be a monkeypatch's, to undo it after."""
    import s3transfer.upload
    from s3transfer.utils import ChunksizeAdjuster

    setattr_(s3transfer.upload, "ChunksizeAdjuster", functools.partial(ChunksizeAdjuster,
                                                                       min_size=1))


def rows(n: int, prefix: str = "i", campaigns: int = 7) -> str:
    """``n`` distinct impressions spread over the day's hours and a few campaigns."""
    return "".join(f"{prefix}{i},2021-01-30 {i % 24:02d}:{i % 60:02d}:00,{i % campaigns}\n"
                   for i in range(n))


def put_day(s3: S3, prefix: str, files: dict[str, str | bytes]) -> list[tuple[str, bytes]]:
    """Upload a day's files below ``prefix/2021/01/30/``; return them as the reference wants."""
    stored = [(name, to_bytes(name, data)) for name, data in files.items()]
    for name, data in stored:
        s3.put(f"{prefix}/{PART}/{name}", data)
    return stored


def results(s3: S3, prefix: str) -> dict[str, bytes]:
    """The objects in the day's result folder below ``prefix``, by name."""
    base = f"{prefix}/{PART}/"
    return {key[len(base):]: s3.get(key) for key in s3.keys(base)}


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def error_line(stderr: str) -> str:
    """The one error line of a failed run (text, or the message of a JSON log line); fails if
    there is not exactly one, or if a traceback was printed."""
    errors = []
    for line in lines(stderr):
        if line.startswith("streamagg: error:"):
            errors.append(line)
        elif line.startswith("{"):
            record = json.loads(line)
            if record.get("level") == "error":
                errors.append(record["message"])
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr, stderr
    return errors[0]


def child_env(s3: S3 | None = None) -> dict[str, str]:
    """A CLI child's environment: this one (cleaned by `clean_env`), plus fake S3 keys."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    if s3 is not None:
        env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                   AWS_DEFAULT_REGION="us-east-1")
    return env


@dataclass
class Child:
    """A CLI run in its own process."""

    process: subprocess.Popen[str]

    def wait(self, timeout: float = 120) -> tuple[int, str, str]:
        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, out, err

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.communicate(timeout=30)
        assert self.process.returncode == -signal.SIGKILL


def wait_for(condition: Callable[[], object], timeout: float = 60, what: str = "") -> None:
    """Poll until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)
