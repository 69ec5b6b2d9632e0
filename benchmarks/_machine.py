"""What the numbers were measured on: CPU, cores, library versions, commit, load."""

from __future__ import annotations

import os
import platform
import re
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["git_commit", "load_average", "machine_info", "machine_tag", "peak_rss_mib", "rss_mib"]

_PACKAGES = ("numpy", "onnxruntime", "scikit-learn", "cryptography", "pydantic", "matplotlib",
             "onnx", "edgepersona")


def _cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Hardware", "Model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    """Installed version of a distribution, None when absent."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_commit(root: Path) -> str | None:
    """The checked-out commit, read from ``.git`` (falls back to ``git rev-parse HEAD``)."""
    git = root / ".git"
    try:
        if git.is_file():  # a worktree: "gitdir: <path>"
            git = (root / git.read_text().split(":", 1)[1].strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(":", 1)[1].strip()
        common = git / "commondir"
        base = (git / common.read_text().strip()).resolve() if common.exists() else git
        for folder in (git, base):
            if (folder / ref).exists():
                return (folder / ref).read_text().strip()
            packed = folder / "packed-refs"
            if packed.exists():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split(" ", 1)[0]
    except OSError:
        pass
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def machine_tag() -> str:
    """A file-name-safe host name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", socket.gethostname()).strip("-") or "machine"


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (empty where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def _status_kib(field: str) -> int | None:
    """A ``VmRSS``/``VmHWM`` style field of /proc/self/status, in KiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_mib() -> float | None:
    """Current resident set size in MiB (Linux)."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib / 1024.0


def peak_rss_mib() -> float | None:
    """Peak resident set size in MiB (Linux)."""
    kib = _status_kib("VmHWM")
    return None if kib is None else kib / 1024.0


def machine_info(root: Path) -> dict[str, Any]:
    """Everything needed to compare two result files.

    Args:
        root: the repository root (for the commit).

    Returns:
        CPU, cores, OS, Python, library versions, commit.
    """
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "host": machine_tag(),
        "cpu_model": _cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_usable": usable,
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "versions": {name: _version(name) for name in _PACKAGES},
        "git_commit": git_commit(root),
    }
