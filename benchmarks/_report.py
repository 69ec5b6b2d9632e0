"""Writing a run: the JSON record, the Markdown table and the PNG charts."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._measure import SuiteResult

__all__ = ["suite_json", "write_charts", "write_json", "write_markdown"]


def suite_json(result: SuiteResult, seconds: float, load_before: list[float],
               load_after: list[float]) -> dict[str, Any]:
    """One suite as JSON data (raw samples are summarised, not kept)."""
    return {
        "seconds": round(seconds, 2),
        "load_before": load_before,
        "load_after": load_after,
        "measurements": {key: {**summary.as_dict(), "label": result.labels[key]}
                         for key, summary in result.measurements.items()},
        "figures": result.figures,
        "series": result.series,
        "targets": [t.as_dict() for t in result.targets],
        "notes": result.notes,
    }


def write_json(doc: Mapping[str, Any], path: Path) -> None:
    """Write the run record (sorted keys, stable across runs)."""
    path.write_text(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")


def _fmt(value: float) -> str:
    """Compact number for tables: 3 significant digits, thousands separated."""
    if value != value:  # NaN
        return "nan"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3g}"


def _figure_text(value: Any) -> str:
    """A figure for the Markdown list."""
    if isinstance(value, float):
        return _fmt(value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_figure_text(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "`" + json.dumps(value, default=str)[:300] + "`"
    return str(value)


def write_markdown(doc: Mapping[str, Any], path: Path, charts: Sequence[str]) -> None:
    """Write the human summary: targets first, then one table per suite."""
    machine = doc["machine"]
    lines = [
        f"# edgepersona benchmarks: {doc['date']} on {machine['host']} ({doc['mode']} run)",
        "",
        f"CPU {machine['cpu_model']}, {machine['cores_usable']} usable cores, Python {machine['python']},"
        f" commit `{machine.get('git_commit') or 'unknown'}`; load average at start"
        f" {doc['load_before']}, at end {doc['load_after']}. Latencies in µs (one sample per call,"
        " perf_counter_ns); ratios are against peers measured in the same run. Nothing here is"
        " asserted.",
        "",
        "## Targets",
        "",
        "| suite | target | measured | limit | met |",
        "| --- | --- | ---: | ---: | :---: |",
    ]
    for suite, body in doc["suites"].items():
        for t in body.get("targets", []):
            lines.append(f"| {suite} | {t['name']} | {_fmt(t['value'])} {t['unit']} | {t['op']} "
                         f"{_fmt(t['limit'])} {t['unit']} | {'yes' if t['met'] else '**no**'} |")
    for suite, body in doc["suites"].items():
        lines += ["", f"## {suite}", ""]
        if "error" in body:
            lines += [f"Failed: `{body['error']}`", ""]
            continue
        if body["measurements"]:
            lines += ["| measurement | n | min | median | p95 | p99 | max | what |",
                      "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
            for key, m in body["measurements"].items():
                lines.append(f"| {key} | {m['n']} | {_fmt(m['min_us'])} | {_fmt(m['median_us'])} | "
                             f"{_fmt(m['p95_us'])} | {_fmt(m['p99_us'])} | {_fmt(m['max_us'])} | "
                             f"{m['label']} |")
            lines.append("")
        for key, value in body["figures"].items():
            lines.append(f"- {key}: {_figure_text(value)}")
        for note in body["notes"]:
            lines.append(f"- note: {note}")
        lines.append(f"- suite time: {body['seconds']} s; load {body['load_before']} → {body['load_after']}")
    if charts:
        lines += ["", "## Charts", ""] + [f"![{name}]({name})" for name in charts]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_charts(results: Mapping[str, SuiteResult], out: Path) -> list[str]:
    """Latency distribution of single assignment and trainer scaling, as PNG files.

    Returns:
        The chart file names written (none when matplotlib is missing).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    assign = results.get("assign")
    if assign is not None and assign.samples:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for ax, prefix, title in ((axes[0], "tight.", "tight loop"),
                                  (axes[1], "spaced_100ms.", "100 ms idle before each call")):
            for key, samples in assign.samples.items():
                if not key.startswith(prefix) or key.endswith(("timer", "sdk_list")):
                    continue
                levels = np.unique(np.r_[np.linspace(0.0, 0.99, 991), np.linspace(0.99, 1.0, 1001)])
                us = np.quantile(samples / 1000.0, levels)  # the tail keeps 1000 points
                ax.plot(us, levels, drawstyle="steps-post", label=key.removeprefix(prefix))
            ax.set_xscale("log")
            ax.set_xlabel("latency per call (µs, log)")
            ax.set_ylabel("fraction of calls ≤ x")
            ax.set_title(f"single assignment, k=8 d=16: {title}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        fig.savefig(out / "assign_latency.png", dpi=110)
        plt.close(fig)
        written.append("assign_latency.png")
    trainer = results.get("trainer")
    if trainer is not None and trainer.series.get("fit_seconds"):
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        table = trainer.series["fit_seconds"]
        for name in sorted({row["model"] for row in table}):
            points = sorted((row["users"], row["median_s"]) for row in table if row["model"] == name)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("users (rows x 16 features)")
        ax.set_ylabel("fit time, median (s)")
        ax.set_title("trainer fit scaling, k=8")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
        fig.tight_layout()
        fig.savefig(out / "trainer_scaling.png", dpi=110)
        plt.close(fig)
        written.append("trainer_scaling.png")
    return written
