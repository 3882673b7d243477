"""Native-library settings made before numpy and libarrow load."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

THREADS_AFTER_NUMPY = (
    "from streamagg.ops.allocators import no_blas_threads; no_blas_threads(); "
    "import os, numpy; print(len(os.listdir('/proc/self/task')), "
    "os.environ['OPENBLAS_NUM_THREADS'])"
)


def _child(env: dict[str, str]) -> list[str]:
    done = subprocess.run([sys.executable, "-c", THREADS_AFTER_NUMPY], env=env,
                          capture_output=True, text=True, check=True, timeout=60)
    return done.stdout.split()


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_numpy_starts_no_blas_threads_and_an_operator_setting_wins() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    assert _child(env) == ["1", "1"]  # the interpreter's own thread only
    assert _child({**env, "OPENBLAS_NUM_THREADS": "2"})[1] == "2"
