"""Every fenced ``bash`` and ``python`` block of README.md and docs/*.md runs as written.

The blocks of one page run in order in one new folder, as a reader follows the
page from the top: a block may use what an earlier one made (keys, bundles). The
folder holds what a clone holds that the examples read (``trainer/datasets``,
``models``), as read-only links. A block that needs the network, a server or
minutes says so with ``<!-- skip-snippet: reason -->`` on the line before its
fence; there must be few of them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MAX_SKIPPED = 3  # per page: installing, the full test suite, long benchmarks
SKIP = re.compile(r"<!--\s*skip-snippet:\s*(?P<reason>\S.*?)\s*-->")
FENCE = re.compile(r"^```(?P<language>python|bash)\s*$")
# `edgepersona` and `python` as a reader's activated virtual environment provides them
BASH_PRELUDE = 'edgepersona() { "$PYTHON" -m edgepersona.trainer.cli "$@"; }\npython() { "$PYTHON" "$@"; }\n'


@dataclass(frozen=True)
class Snippet:
    """One fenced block of a page."""

    page: str
    line: int
    language: str
    code: str
    skip_reason: str | None


def snippets(page: Path) -> list[Snippet]:
    """The page's python and bash blocks, in order, with their skip marks."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found, index = [], 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        end = lines.index("```", index + 1)
        previous = next((text for text in reversed(lines[:index]) if text.strip()), "")
        mark = SKIP.search(previous)
        found.append(Snippet(page.name, index + 1, fence.group("language"),
                             "\n".join(lines[index + 1:end]) + "\n",
                             mark.group("reason") if mark else None))
        index = end + 1
    return found


def test_the_snippet_reader_finds_blocks_and_marks() -> None:
    page = snippets(ROOT / "README.md")
    assert len(page) >= 6
    assert {s.language for s in page} == {"bash", "python"}
    assert all(s.code.strip() for s in page)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_few_snippets_are_skipped_and_each_says_why(page: Path) -> None:
    skipped = [s for s in snippets(page) if s.skip_reason is not None]
    assert len(skipped) <= MAX_SKIPPED, [f"{s.page}:{s.line}" for s in skipped]
    assert all(len(s.skip_reason or "") >= 10 for s in skipped)


def run_snippet(snippet: Snippet, folder: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable, "HOME": str(folder / ".home")}
    if snippet.language == "bash":
        command = ["bash", "-euo", "pipefail", "-c", BASH_PRELUDE + snippet.code]
    else:
        command = [sys.executable, "-c", snippet.code]
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_snippet_runs_as_written(page: Path, tmp_path: Path) -> None:
    (tmp_path / ".home").mkdir()
    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "datasets").symlink_to(ROOT / "trainer" / "datasets")
    (tmp_path / "models").symlink_to(ROOT / "models")
    ran = 0
    for snippet in snippets(page):
        if snippet.skip_reason is not None:
            continue
        done = run_snippet(snippet, tmp_path)
        assert done.returncode == 0, (
            f"{snippet.page}:{snippet.line} ({snippet.language}) failed with exit code"
            f" {done.returncode}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")
        ran += 1
    assert ran >= (3 if page.name == "README.md" else 0)
