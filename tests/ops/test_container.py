"""The Dockerfile, checked without a Docker engine: base, user, entry point, build context."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_slim_python_311_base_non_root_user_and_entry_point() -> None:
    steps = instructions()
    assert steps[0] == ("FROM", "python:3.11-slim")
    users = [rest for keyword, rest in steps if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert steps[-2] == ("ENTRYPOINT", '["streamagg"]')
    assert ("USER", users[-1]) in steps[: steps.index(steps[-2])]


def test_installs_the_package_without_dev_dependencies() -> None:
    runs = " ".join(rest for keyword, rest in instructions() if keyword == "RUN")
    assert re.search(r'pip install "\.\$\{EXTRAS:\+\[\$EXTRAS\]\}"', runs)
    for dev in ("test", "pytest", "moto", "ruff", "mypy", "-e "):
        assert dev not in runs


def test_every_copied_path_exists_and_passes_the_dockerignore() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for keyword, rest in instructions():
        if keyword == "COPY":
            *sources, _ = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert source.rstrip("/") in kept, source


def test_readme_gives_the_memory_limit_it_is_meant_for() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docker run --rm --memory 320m" in readme and "--memory-limit 256MB" in readme
