"""Every command the README shows runs as written: its ``sh`` blocks, on a generated demo day."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from streamagg.testing.generate import generate_day
from tests.conftest import DAY, day_path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
LIBRARY = REPO / "docs" / "LIBRARY.md"  # the library's examples, moved out of the README
# The only commands not run here, by how they start, and why. Keep this short: anything else
# the README shows must run as written.
NOT_RUN = {
    "make demo": "builds a fresh .venv; this test runs inside one (check by hand on a clean clone)",
    "make test": "runs the whole suite, this test included",
    "pip install": "installs into the venv, which has every extra already",
    "docker ": "needs docker",
    "spark-submit --master yarn": "needs a YARN cluster",
}
# Lines that prepare the shell for the commands after them (the README is one shell session).
SETUP = (". ", "source ", "export ")
BUCKET = "ad-logs"  # the bucket the README's S3 examples name, on the local moto server


@dataclass(frozen=True)
class Command:
    text: str
    line: int  # in README.md, for the failure message
    expected_exit: int


def sh_blocks(text: str) -> Iterator[tuple[int, list[str]]]:
    """The ``sh`` fenced blocks: (line of the first command, its lines)."""
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        if lines[index].strip() == "```sh":
            start = index + 1
            end = next(i for i in range(start, len(lines)) if lines[i].strip() == "```")
            yield start + 1, lines[start:end]
            index = end
        index += 1


def readme_commands(text: str) -> tuple[list[str], list[Command]]:
    """The shell setup lines and the commands of the README, continuation lines joined."""
    setup: list[str] = []
    commands: list[Command] = []
    for first, block in sh_blocks(text):
        pending, at = "", first
        for offset, raw in enumerate(block):
            if not pending:
                at = first + offset
            pending += raw.rstrip()
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            line, pending = pending.strip(), ""
            if not line or line.startswith("#"):
                continue
            if line.startswith(SETUP):
                setup.append(line)
                continue
            # "exits N" in a command's comment: the README says it fails, and how.
            said = re.search(r"#.*\bexits (\d+)", line)
            commands.append(Command(line, at, int(said.group(1)) if said else 0))
    return setup, commands


def not_run_reason(command: Command) -> str | None:
    return next((why for start, why in NOT_RUN.items() if command.text.startswith(start)), None)


def is_spark(command: Command) -> bool:
    return "--engine spark" in command.text


@pytest.fixture
def clone(tmp_path: Path, moto_server: str, spark_conf_dir: Path) -> tuple[Path, dict[str, str]]:
    """A folder standing in for a fresh clone after ``make demo``: its .venv, the package, the
    demo day (smaller than make demo's 200,000 rows), and an S3 bucket holding the same day."""
    root = tmp_path / "clone"
    root.mkdir()
    (root / ".venv").symlink_to(Path(sys.executable).parent.parent)
    (root / "streamagg").symlink_to(REPO / "streamagg")
    data = root / "demo" / "data"
    # As the Makefile's demo target does: the day, and a smaller one before it.
    generate_day(data, DAY, rows=20_000, files=6, gzip_files=1, seed=1)
    generate_day(data, DAY - dt.timedelta(days=1), rows=5_000, files=2, seed=2)
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    buckets = [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
    if BUCKET not in buckets:
        s3.create_bucket(Bucket=BUCKET)
    for path in sorted((data / day_path(DAY)).iterdir()):
        s3.put_object(Bucket=BUCKET, Key=f"impressions/{day_path(DAY)}/{path.name}",
                      Body=path.read_bytes())
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "SPARK_HOME")}
    # Not activated: the README's own `. .venv/bin/activate` has to put streamagg on PATH.
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if Path(p) != Path(sys.executable).parent)
    # The local S3 server, and the test JVM options for the --engine spark examples.
    env.update(AWS_ENDPOINT_URL=moto_server, AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
               SPARK_CONF_DIR=str(spark_conf_dir))
    return root, env


def run_all(root: Path, env: dict[str, str], setup: list[str], commands: list[Command]) -> None:
    for command in commands:
        script = "\n".join([*setup, command.text])
        done = subprocess.run(["bash", "-c", script], cwd=root, env=env, capture_output=True,
                              text=True, timeout=600)
        where = f"README.md line {command.line}: {command.text}"
        assert done.returncode == command.expected_exit, (
            f"{where}\nexit {done.returncode}, expected {command.expected_exit}\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
        assert "Traceback" not in done.stderr, f"{where}\n{done.stderr[-3000:]}"


def test_readme_shows_commands_in_sh_blocks() -> None:
    setup, commands = readme_commands(README.read_text())
    # How `streamagg` gets on PATH is said (the test runs each command in that shell).
    assert any(line.startswith(". .venv/bin/activate") for line in setup), setup
    assert len(commands) >= 12
    # Installing the clone's extras, never a package of that name from the index.
    for command in commands:
        assert not re.search(r"pip install ['\"]?streamagg\[", command.text), command.text
    skipped = {c.text: not_run_reason(c) for c in commands if not_run_reason(c)}
    # The commands left out are few, and each is there for a stated reason.
    assert len(skipped) <= 8, skipped
    assert {why for why in skipped.values()} <= set(NOT_RUN.values())


@pytest.mark.slow
@pytest.mark.s3
def test_readme_commands_run_as_written(clone: tuple[Path, dict[str, str]]) -> None:
    root, env = clone
    setup, commands = readme_commands(README.read_text())
    try:
        import matplotlib  # noqa: F401
        plot = True
    except ImportError:  # the test extra without the plot one: the --plot example cannot run
        plot = False
    runnable = [c for c in commands if not not_run_reason(c) and not is_spark(c)
                and (plot or "--plot" not in c.text)]
    assert len(runnable) >= 10, runnable
    run_all(root, env, setup, runnable)
    results = root / "demo" / "data" / "results" / day_path(DAY)
    assert (results / "daily_agg_20210130_SA.csv").stat().st_size > 0
    assert (results / "_daily_agg_20210130_SA.png").exists() or not plot  # the --plot example
    assert (root / "demo" / "agg" / day_path(DAY) / "daily_agg_20210130_JD.csv").exists()
    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    key = f"impressions/results/{day_path(DAY)}/daily_agg_20210130_SA.csv"
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == (
        results / "daily_agg_20210130_SA.csv").read_bytes()


@pytest.mark.slow
@pytest.mark.s3
@pytest.mark.spark
def test_readme_spark_commands_run_as_written(clone: tuple[Path, dict[str, str]]) -> None:
    pytest.importorskip("pyspark.sql", reason="the spark extra is not installed")
    root, env = clone
    setup, commands = readme_commands(README.read_text())
    spark = [c for c in commands if is_spark(c) and not not_run_reason(c)]
    assert spark, "the README shows no --engine spark command"
    run_all(root, env, setup, spark)


def python_blocks(text: str) -> list[str]:
    """The ``python`` fenced blocks' code."""
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)


def test_library_stages_snippet_runs_as_written(tmp_path: Path) -> None:
    """docs/LIBRARY.md's example that runs the stages one by one gives the command's bytes."""
    snippet = next(b for b in python_blocks(LIBRARY.read_text()) if "make_deduper" in b)
    data = tmp_path / "data"
    generate_day(data, DAY, rows=3000, files=2, seed=5)
    code = snippet.replace('"/data"', repr(str(data)))
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, timeout=120)
    subprocess.run([sys.executable, "-m", "streamagg", DAY.isoformat(), "--source", str(data),
                    "--dest", str(tmp_path / "dest"), "--max-bad-rows", "100%"],
                   check=True, timeout=120, capture_output=True)
    made = next((tmp_path / "dest" / day_path(DAY)).glob("daily_agg_*.csv"))
    assert (tmp_path / "out.csv").read_bytes() == made.read_bytes()


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings (lowercase, punctuation dropped, spaces to -)."""
    heads = re.findall(r"^#{1,6} (.+)$", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S),
                       flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def test_links_between_the_readme_and_docs_resolve() -> None:
    """Every relative link of the README, docs/ and benchmarks/README.md names a file that
    exists and, with a #fragment, a heading of that file: what moved out of the README is
    still reached from it."""
    pages = [README, *sorted((REPO / "docs").glob("*.md")), REPO / "benchmarks" / "README.md"]
    broken = []
    for page in pages:
        text = page.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, fragment = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
            elif fragment and linked.is_file() and fragment not in anchors(linked.read_text()):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_schedule_examples_parse_and_fit_their_memory_limit() -> None:
    """The Kubernetes CronJob is valid YAML whose --memory-limit (if given) fits under the
    container's memory limit, and the Airflow DAG is valid Python: copyable as shown."""
    yaml = pytest.importorskip("yaml")
    text = README.read_text()
    blocks = re.findall(r"^```yaml\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)
    job = yaml.safe_load(blocks[0])
    assert job["kind"] == "CronJob"
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Mi"), limit
    command = " ".join(container.get("command", []) + container.get("args", []))
    assert "streamagg" in command
    asked = re.search(r"--memory-limit (\d+)MB", command)
    if asked:  # binary units: 256MB is 256 MiB, and the page cache needs head room above it
        assert int(asked.group(1)) < int(limit[:-2]), (asked.group(0), limit)
    dag = next(b for b in python_blocks(text) if "BashOperator" in b)
    compile(dag, "README.md (Airflow)", "exec")
