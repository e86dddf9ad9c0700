"""Structural guards for the live app's CPU budget (issue 18 item 8; figures in `avatar bench live-cpu`)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# what a fresh interpreter reports: threads alive after importing the package and numpy and doing a matrix product
COUNT_THREADS = ("import avatar, numpy, os\n"
                 "a = numpy.ones((400, 400), numpy.float32); a @ a\n"
                 "print(len(os.listdir('/proc/self/task')), os.environ['OPENBLAS_NUM_THREADS'])")


def _fresh(env_extra: dict) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", COUNT_THREADS], cwd=ROOT, env={**env, **env_extra},
                         capture_output=True, text=True, timeout=60, check=True)
    threads, value = out.stdout.split()
    return int(threads), value


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through Linux /proc")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="OpenBLAS starts no helper threads on one core anyway")
def test_importing_the_package_keeps_numpy_blas_to_one_thread_unless_the_user_says_otherwise():
    assert _fresh({}) == (1, "1")  # set before numpy loaded: no BLAS helper thread to spin between blocks
    threads, value = _fresh({"OPENBLAS_NUM_THREADS": "2"})
    assert value == "2" and threads == 2
