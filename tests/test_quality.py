"""Static checks run as tests, so the README's one test command covers them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> list[str]:
    if shutil.which(name) is None and not (Path(sys.executable).parent / name).exists():
        pytest.fail(f"{name} is not installed; install the test extras: pip install -e '.[test]'")
    return [sys.executable, "-m", name]


def test_ruff_is_clean() -> None:
    result = subprocess.run([*_tool("ruff"), "check", "sdk", "trainer", "tests", "benchmarks"],
                            cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_packages(tmp_path: Path) -> None:
    # sdk/ and trainer/ install as edgepersona.sdk and edgepersona.trainer; mypy needs
    # that layout on disk, so check a tree of symlinks with the import names.
    tree = tmp_path / "edgepersona"
    tree.mkdir()
    (tree / "sdk").symlink_to(ROOT / "sdk")
    (tree / "trainer").symlink_to(ROOT / "trainer")
    result = subprocess.run(
        [*_tool("mypy"), "--config-file", str(ROOT / "pyproject.toml"), "--no-incremental",
         "-p", "edgepersona.sdk", "-p", "edgepersona.trainer"],
        cwd=tmp_path, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
