"""The package's import contracts (.importlinter): the data path never imports the operator shell,
and no two modules import each other in a cycle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_hold() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint_imports), "--no-cache"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    contracts = (REPO / ".importlinter").read_text(encoding="utf-8").count(
        "[importlinter:contract:")
    assert f"{contracts} kept, 0 broken" in done.stdout, done.stdout


def _extras() -> dict[str, list[str]]:
    import configparser

    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    return {name: [line.split("#")[0].strip() for line in value.splitlines()
                   if line.split("#")[0].strip()]
            for name, value in parser["options.extras_require"].items()}


def test_packaging_has_one_version_a_license_and_a_dev_extra() -> None:
    import configparser

    import streamagg

    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    # The version lives in streamagg/__init__.py only; setup.cfg reads it from there.
    assert parser["metadata"]["version"] == "attr: streamagg.__version__"
    assert streamagg.__version__.count(".") == 2
    assert parser["metadata"]["license"] == "MIT"
    assert "MIT License" in (REPO / "LICENSE").read_text()
    extras = _extras()
    assert {"ruff", "mypy"} <= set(extras["dev"])
    assert not {"ruff", "mypy"} & set(extras["test"])
    # This very file runs lint-imports, so installing the test extra must bring it.
    assert "import-linter" in extras["test"]


def test_installed_pyspark_is_in_the_range_the_spark_extra_claims() -> None:
    from importlib.metadata import PackageNotFoundError, version

    import pytest
    from packaging.requirements import Requirement

    (requirement,) = [Requirement(line) for line in _extras()["spark"]]
    assert not list(requirement.specifier.filter(["3.4.0"])), "needs a lower bound"
    assert not list(requirement.specifier.filter(["99.0.0"])), "needs an upper bound"
    try:
        installed = version("pyspark")
    except PackageNotFoundError:
        pytest.skip("the spark extra is not installed")
    # The Spark tests run on this pyspark; the extra must claim the version they ran on.
    assert requirement.specifier.contains(installed), (installed, str(requirement.specifier))
