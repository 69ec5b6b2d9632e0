"""``python -m benchmarks.summarize``: the median of repeated runs, per target, with the loads."""

from __future__ import annotations

from typing import Any

from benchmarks.summarize import summary_markdown


def run(value: float, load: float) -> dict[str, Any]:
    target = {"name": "sdk <= ORT", "value": value, "op": "<=", "limit": 1.0, "unit": "x",
              "met": value <= 1.0, "detail": "ratio"}
    return {"suites": {"assign": {"targets": [target]}},
            "load_before": [load, load, load], "load_after": [load, load, load]}


def test_the_median_of_the_runs_decides_met_and_every_run_and_load_is_shown() -> None:
    text = summary_markdown([run(0.9, 1.0), run(1.2, 2.0), run(0.95, 3.0)])
    row = next(line for line in text.splitlines() if line.startswith("| assign"))
    assert row.split(" | ")[2:7] == ["0.9", "1.2", "0.95", "**0.95 x**", "<= 1"]
    assert row.endswith("| yes |")
    assert "run 2: [2.0, 2.0, 2.0]" in text


def test_a_median_beyond_the_limit_is_marked_missed() -> None:
    text = summary_markdown([run(1.1, 1.0), run(1.3, 1.0)])
    assert text.splitlines()[2].endswith("| **no** |")
