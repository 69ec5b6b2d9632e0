"""CI-short mode of the coverage-guided harnesses in ``fuzz/``: each runs for a few seconds.

Skipped where atheris is not installed (it ships wheels for CPython on Linux
and macOS x86-64; elsewhere it needs clang to build). A harness that finds a
crash exits non-zero and leaves the reproducer in the test's temporary folder.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
HARNESSES = ("fuzz_envelope.py", "fuzz_bundle.py", "fuzz_store.py")
SECONDS = 4  # per harness: a smoke run, not a campaign (see fuzz/README.md)

pytestmark = pytest.mark.skipif(importlib.util.find_spec("atheris") is None,
                                reason="atheris is not installed (pip install atheris)")


@pytest.mark.parametrize("harness", HARNESSES)
def test_harness_runs_without_finding_a_crash(harness: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, str(FUZZ / harness), f"-max_total_time={SECONDS}",
         f"-artifact_prefix={tmp_path}/", "-print_final_stats=1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=SECONDS * 30, check=False)
    tail = "\n".join(done.stderr.splitlines()[-25:])
    assert done.returncode == 0, f"{harness} crashed or failed:\n{tail}"
    assert "stat::number_of_executed_units" in done.stderr, tail
    assert not list(tmp_path.glob("crash-*")), tail
