"""What the Spark engine ships to cluster executors: the package, an environment, the option."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from streamagg.config import Config
from streamagg.engines.spark import shipping
from streamagg.errors import UsageError
from tests.conftest import DAY, run_api

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

H = "IMPRESSION_ID,IMPRESSION_DATETIME,CAMPAIGN_ID\n"


@pytest.mark.parametrize("value", ["", "  ", "env.whl", "auto\n", "missing.tar.gz"])
def test_spark_env_must_be_auto_none_or_an_archive(value: str) -> None:
    with pytest.raises(UsageError, match="spark-env"):
        Config(day=DAY, spark_env=value)


def test_spark_env_accepts_an_existing_archive(tmp_path: Path) -> None:
    archive = tmp_path / "env.tar.gz"
    archive.write_bytes(b"")
    assert Config(day=DAY, spark_env=str(archive)).spark_env == str(archive)
    assert Config(day=DAY).spark_env == "auto"


def test_cli_refuses_a_bad_spark_env(cli: Callable[..., Any]) -> None:
    result = cli("2021-01-30", "--engine", "spark", "--spark-env", "nowhere.tar.gz")
    assert result.exit_code == 2
    assert "invalid --spark-env 'nowhere.tar.gz': no such file" in result.output


@pytest.mark.parametrize(("spark_env", "master", "environ", "expected"), [
    ("auto", "spark://h:7077", {}, "built"),
    ("auto", "yarn", {"PYSPARK_PYTHON": "/opt/py/bin/python"}, None),  # someone chose
    ("auto", "local[*]", {}, None),  # local executors run this interpreter
    ("auto", " local[2] ", {}, None),
    ("none", "yarn", {}, None),
    ("env.tar.gz", "k8s://https://h", {}, "path"),
    ("env.tar.gz", "local", {}, None),
])
def test_which_environment_is_shipped(monkeypatch: pytest.MonkeyPatch, spark_env: str,
                                      master: str, environ: dict[str, str],
                                      expected: str | None) -> None:
    monkeypatch.setattr(shipping, "environment_archive", lambda: "built")
    found = shipping.environment_to_ship(spark_env, master, environ)
    if expected == "path":
        assert found is not None and Path(found).is_absolute() and found.endswith(spark_env)
    else:
        assert found == expected


def test_runtime_distributions_are_what_executors_import() -> None:
    names = {shipping.normalise(d.metadata["Name"]) for d in shipping.runtime_distributions()}
    assert {"pyarrow", "numpy", "boto3", "botocore", "smart-open", "click"} <= names
    assert not names & {"streamagg", "pyspark", "py4j", "pytest", "hypothesis", "moto", "mypy",
                        "pandas"}


def test_environment_archive_is_a_venv_that_runs(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Built from a small set (click), unpacked as Spark unpacks it, its python imports it."""
    from importlib import metadata

    monkeypatch.setattr(shipping, "runtime_distributions", lambda: [metadata.distribution("click")])
    path = shipping.environment_archive(str(tmp_path / "cache"))
    assert shipping.environment_archive(str(tmp_path / "cache")) == path  # cached, not rebuilt
    assert Path(path).stat().st_mode & 0o044 == 0o044  # readable by a cluster's other users
    with tarfile.open(path) as tar:
        names = tar.getnames()
        assert tar.getmember("bin/python").linkname == shipping.base_python()
        tar.extractall(tmp_path / "environment", filter="fully_trusted")
    assert "pyvenv.cfg" in names and not any("__pycache__" in n for n in names)
    python = tmp_path / "environment" / "bin" / "python"
    code = "import sys, click; print(sys.prefix, click.__file__)"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert done.returncode == 0, done.stderr
    prefix, module = done.stdout.split()
    assert Path(prefix) == tmp_path / "environment"
    assert Path(module).is_relative_to(tmp_path / "environment")


def test_environment_key_follows_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    class Dist:
        def __init__(self, version: str) -> None:
            self.metadata = {"Name": "numpy"}
            self.version = version

    first = shipping.environment_key([Dist("2.0.0")])  # type: ignore[list-item]
    assert shipping.environment_key([Dist("2.0.0")]) == first  # type: ignore[list-item]
    assert shipping.environment_key([Dist("2.0.1")]) != first  # type: ignore[list-item]


def test_package_is_shipped_once_per_context(tmp_path: Path) -> None:
    class Context:
        def __init__(self) -> None:
            self.added: list[str] = []

        def addPyFile(self, path: str) -> None:  # noqa: N802 - Spark's name
            self.added.append(path)

    context = Context()
    shipping.ship_package(context, str(tmp_path))  # type: ignore[arg-type]
    shipping.ship_package(context, str(tmp_path))  # type: ignore[arg-type]
    assert len(context.added) == 1
    with zipfile.ZipFile(context.added[0]) as archive:
        names = archive.namelist()
    assert "streamagg/engines/spark/shipping.py" in names and "streamagg/__init__.py" in names
    assert not any(n.endswith(".pyc") for n in names)


@pytest.mark.spark
def test_manifest_reports_the_driver_jvms_peak_memory(spark: SparkSession,
                                                      partition: Callable[..., Path],
                                                      tmp_path: Path) -> None:
    source = partition({"a.csv": H + "a,2021-01-30 10:00:00,1\n"})
    on_spark = run_api(source, dest=tmp_path / "spark", engine="spark")
    local = run_api(source, dest=tmp_path / "local")
    assert on_spark.manifest is not None and local.manifest is not None
    # A JVM with Spark loaded holds far more than 64 MiB; the local engine has none.
    assert on_spark.manifest["jvm_peak_memory_bytes"] > 64 * 2**20
    assert local.manifest["jvm_peak_memory_bytes"] is None
    assert sys.platform != "linux" or on_spark.manifest["jvm_peak_memory_bytes"] != \
        on_spark.manifest["peak_memory_bytes"]


def test_the_drivers_s3_deadline_settings_reach_the_executors() -> None:
    # A cluster's executors read the inputs and do not inherit the driver's environment.
    environ = {"STREAMAGG_S3_DEADLINE": "30", "STREAMAGG_S3_MIN_RATE": "0",
               "STREAMAGG_S3_SLOW_SECONDS": " ", "AWS_SECRET_ACCESS_KEY": "never shipped"}
    assert shipping.s3_settings_for_executors(environ) == {
        "spark.executorEnv.STREAMAGG_S3_DEADLINE": "30",
        "spark.executorEnv.STREAMAGG_S3_MIN_RATE": "0"}
    assert shipping.s3_settings_for_executors({}) == {}
