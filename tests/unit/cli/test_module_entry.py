"""`python -m courierguard`: the CLI without the console script, e.g. from a shared virtualenv's python."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import courierguard


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(courierguard.__file__).resolve().parents[1])}
    command = [sys.executable, "-m", "courierguard", *args]
    return subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=60)


def test_python_dash_m_runs_the_cli() -> None:
    done = _run("version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == courierguard.__version__
    helped = _run("--help")
    assert helped.returncode == 0 and "Usage: courierguard" in helped.stdout, helped.stdout + helped.stderr
