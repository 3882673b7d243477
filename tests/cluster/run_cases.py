"""A driver for the cluster tests: one session on a master, several days through the Spark engine.

``python -m tests.cluster.run_cases MASTER SPEC.json``: SPEC lists cases (source, dest, options);
each outcome's exit code and message are written back beside it as JSON lines.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from streamagg.engines.spark.session import spark_session
from tests.conftest import run_api


def main(master: str, spec_path: str) -> None:
    cases = json.loads(Path(spec_path).read_text())
    results = []
    with tempfile.TemporaryDirectory() as work, spark_session(master, work, "auto") as spark:
        # The engine's own session start: the package and the environment are shipped, and
        # each run below joins this session as it would a notebook's.
        for case in cases:
            outcome = run_api(case["source"], dest=case["dest"], engine="spark",
                              **case["options"])
            results.append({"name": case["name"], "exit_code": outcome.exit_code,
                            "message": outcome.message})
        python = spark.sparkContext.parallelize([0], 1).map(lambda _: sys.executable).collect()
    Path(spec_path).with_suffix(".out").write_text(
        json.dumps({"results": results, "executor_python": python[0]}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
