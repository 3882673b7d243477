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


PACKAGE = REPO / "streamagg"
# A module longer than this is split along a seam that can be named (DESIGN.md, Habits).
MAX_MODULE_LINES = 400


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private_imports(path: Path) -> list[str]:
    """``module:line name`` for each ``_private`` name ``path`` imports from another module of
    the package (``from .x import _y``, ``from streamagg.x import _y``)."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package.split(".")
            base = base[:len(base) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        if not source.startswith("streamagg") or source == here:
            continue
        for alias in node.names:
            if alias.name.startswith("_") and not alias.name.startswith("__"):
                found.append(f"{path.relative_to(REPO)}:{node.lineno} {alias.name} from {source}")
    return found


def test_no_private_name_is_imported_across_modules() -> None:
    # A module's _underscore names are its own: what another module needs gets a public name
    # where it lives (issue 24). __future__ and dunder names are not private.
    found = [hit for path in _modules() for hit in _private_imports(path)]
    assert not found, "\n".join(found)


def test_no_module_is_longer_than_the_limit() -> None:
    long = {str(p.relative_to(REPO)): n for p in _modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, long
