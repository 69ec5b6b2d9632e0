"""``python -m benchmarks [--quick] [--only NAME,...] [--out DIR] [--tag TAG]``.

Runs the suites in order, then writes ``<out>/<YYYY-MM-DD>-<tag>.json``
(``-quick`` appended for quick runs), ``<out>/latest.md`` and the PNG charts.
Exit status 1 when a suite failed (the others still run and are written).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ._machine import load_average, machine_info, machine_tag
from ._measure import RunConfig, SuiteResult
from ._report import suite_json, write_charts, write_json, write_markdown

SUITES = ("assign", "fold", "cold_start", "idle", "crypto", "trainer", "gateway", "forget")
# Run only when named in --only: slow; dask_scale needs the dask extra; dynamic_shift and
# poisoning are figures of merit (distances, displacements), not timings.
OPT_IN = ("dask_scale", "dynamic_shift", "poisoning")
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-sized run (< 30 s)")
    parser.add_argument("--only", default="", help=f"comma-separated suites out of {','.join(SUITES)}"
                        f" (opt-in: {','.join(OPT_IN)})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    parser.add_argument("--tag", default=None, help="machine tag for the file name (default: host name)")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()] or list(SUITES)
    unknown = sorted(set(chosen) - set(SUITES) - set(OPT_IN))
    if unknown:
        parser.error(f"unknown suite(s) {unknown}; choose from {', '.join(SUITES + OPT_IN)}")
    args.suites = [s for s in SUITES + OPT_IN if s in chosen]
    return args


def _run_suite(name: str, cfg: RunConfig) -> tuple[SuiteResult | None, dict[str, Any]]:
    """Run one suite; a failure is recorded, not raised."""
    load_before = load_average()
    started, cpu = time.perf_counter(), time.process_time()
    try:
        module = importlib.import_module(f"benchmarks.{name}")
        result: SuiteResult = module.run(cfg)
    except Exception as exc:  # one broken suite must not hide the others
        traceback.print_exc()
        return None, {"error": f"{type(exc).__name__}: {exc}", "seconds": time.perf_counter() - started}
    seconds = time.perf_counter() - started
    body = suite_json(result, seconds, load_before, load_average())
    body["cpu_seconds"] = round(time.process_time() - cpu, 2)  # this process only, not children
    return result, body


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen suites and write the reports."""
    args = _parse(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    doc: dict[str, Any] = {
        "schema": 1, "date": now.date().isoformat(), "started_at": now.isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full", "machine": machine_info(ROOT),
        "load_before": load_average(), "suites": {},
    }
    results: dict[str, SuiteResult] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgepersona-bench-") as scratch:
        cfg = RunConfig(quick=args.quick, scratch=Path(scratch))
        for name in args.suites:
            print(f"[benchmarks] {name} ...", file=sys.stderr, flush=True)
            result, body = _run_suite(name, cfg)
            doc["suites"][name] = body
            if result is not None:
                results[name] = result
            print(f"[benchmarks] {name}: {body['seconds']:.1f} s", file=sys.stderr, flush=True)
    doc["seconds"] = round(time.perf_counter() - started, 1)
    doc["load_after"] = load_average()
    tag = args.tag or machine_tag()
    json_path = out / f"{doc['date']}-{tag}{'-quick' if args.quick else ''}.json"
    charts = write_charts(results, out)
    doc["charts"] = charts
    write_json(doc, json_path)
    write_markdown(doc, out / "latest.md", charts)
    print(f"[benchmarks] wrote {json_path}, {out / 'latest.md'}"
          f"{''.join(', ' + str(out / c) for c in charts)}", file=sys.stderr)
    return 1 if any("error" in body for body in doc["suites"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
