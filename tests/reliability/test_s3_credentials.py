"""Credential mistakes: one line naming what to fix, exit 2, no request sent, no secret shown."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from tests.conftest import DAY_ARG, S3
from tests.reliability.faults import FaultProxy
from tests.reliability.helpers import error_line

pytestmark = pytest.mark.s3
Cli = Callable[..., Result]
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzCREDENTIALS"
KEY_ID = "AKIACREDENTIALTEST"

# Each mistake: the environment (and AWS files) that make it, and what the line must name.
MISTAKES: dict[str, tuple[dict[str, str], dict[str, str], tuple[str, ...]]] = {
    "unknown profile": ({"AWS_PROFILE": "prod-typo"},
                        {"config": "[profile prod]\nregion = eu-west-1\n"},
                        ("'prod-typo'", "AWS_PROFILE")),
    "unknown profile, no AWS files": ({"AWS_PROFILE": "nope"}, {}, ("'nope'", "AWS_PROFILE")),
    "key id without its secret": ({"AWS_ACCESS_KEY_ID": KEY_ID}, {},
                                  ("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY",)),
    "secret without its key id": ({"AWS_SECRET_ACCESS_KEY": SECRET}, {},
                                  ("AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID",)),
    "original key without its secret": ({"AWS_ACCESS_KEY": KEY_ID}, {},
                                        ("AWS_ACCESS_KEY is set but AWS_SECRET ",)),
    "original secret without its key": ({"AWS_SECRET": SECRET}, {},
                                        ("AWS_SECRET is set but AWS_ACCESS_KEY ",)),
    "profile with a key and no secret": (
        {"AWS_PROFILE": "half"}, {"credentials": f"[half]\naws_access_key_id = {KEY_ID}\n"},
        ("'half'", "aws_secret_access_key", "shared credentials file")),
    "no credentials at all": ({}, {}, ("no AWS credentials found", "AWS_ACCESS_KEY_ID",
                                       "AWS_PROFILE")),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
@pytest.mark.parametrize("role", ["source", "dest"])
def test_a_credential_mistake_is_exit_2_naming_what_to_fix(
    cli: Cli, s3: S3, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    partition: Callable[..., Path], mistake: str, role: str,
) -> None:
    variables, files, words = MISTAKES[mistake]
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # `s3` set them
        monkeypatch.delenv(name)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    for kind, text in files.items():
        path = tmp_path / f"aws-{kind}"
        path.write_text(text)
        variable = "AWS_CONFIG_FILE" if kind == "config" else "AWS_SHARED_CREDENTIALS_FILE"
        monkeypatch.setenv(variable, str(path))
    local = partition({"a.csv": "IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\n"})
    where = (["--source", f"{s3.uri}/in"] if role == "source"
             else ["--source", str(local), "--dest", f"{s3.uri}/out"])
    result = cli(DAY_ARG, *where, "--endpoint-url", proxy.url)
    assert result.exit_code == 2, result.output
    message = error_line(result.stderr)
    for word in words:
        assert word in f"{message} ", message
    assert SECRET not in result.output and KEY_ID not in result.output
    assert proxy.requests() == []  # found before anything was sent


# Providers of the chain that fail or hang: each named, none past the deadline.
PROVIDERS = {
    "credential_process not JSON": ("credential_process = echo not-json", 2,
                                    "AWS credentials could not be read"),
    "credential_process failing": ("credential_process = false", 2,
                                   "the profile's credential_process failed"),
    "credential_process hanging": ("credential_process = sleep 4", 1,
                                   "no answer from the AWS credential chain within"),
    "config file not parsing": ("[[[", 2, "cannot parse the AWS config file"),
}


@pytest.mark.parametrize("case", list(PROVIDERS))
def test_a_credential_provider_that_fails_or_hangs_is_one_line_within_the_deadline(
    cli: Cli, s3: S3, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    case: str,
) -> None:
    line, code, words = PROVIDERS[case]
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    config = tmp_path / "aws-config"
    config.write_text(line if line.startswith("[[") else f"[profile job]\n{line}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_PROFILE", "job")
    monkeypatch.setenv("STREAMAGG_S3_DEADLINE", "0.5")
    began = time.monotonic()
    result = cli(DAY_ARG, "--source", f"{s3.uri}/in", "--endpoint-url", proxy.url)
    assert result.exit_code == code, result.output
    assert words in error_line(result.stderr), result.stderr
    assert time.monotonic() - began < 3.5  # the hanging one is given up on at 0.5 s, not 4
    assert proxy.requests() == []
