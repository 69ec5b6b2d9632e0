"""Cold start: a fresh process that imports, verifies a bundle and assigns once.

``sdk``: ``import edgepersona.sdk``, ``PersonaRuntime.open`` (signature,
digests, manifest, ONNX session) and one ``assign``. ``bare``: ``import numpy,
onnxruntime``, an ``InferenceSession`` with default options on the same
``model.onnx`` and one ``run`` (no verification). Wall time is measured by
the parent around the whole child (interpreter start included); each child
reports its phase times and its peak RSS (``VmHWM``) just before exiting. The
two kinds alternate so load changes hit both.

Also records ``python -X importtime -c "import edgepersona.sdk"``: the total
and what dominates it. The package root loads lazily, so this is the floor;
the ``sdk`` child's import phase is what opening and assigning pull in (no
pydantic: the device reads the verified manifest with ``json``).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ._fixtures import bench_bundle, bundle_dir
from ._measure import RunConfig, SuiteResult

__all__ = ["run"]

_REPORT = """
def _hwm():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            return int(line.split()[1])
    return -1
print(t1 - t0, t2 - t1, t3 - t2, _hwm())
"""

SDK_CHILD = """
import sys, time
t0 = time.perf_counter()
from edgepersona.sdk import PersonaRuntime
t1 = time.perf_counter()
with open(sys.argv[2], 'rb') as f:
    key = f.read()
runtime = PersonaRuntime.open(sys.argv[1], trusted_keys=[key])
t2 = time.perf_counter()
runtime.assign([float(v) for v in sys.argv[3].split(',')])
t3 = time.perf_counter()
""" + _REPORT

BARE_CHILD = """
import sys, time
t0 = time.perf_counter()
import numpy as np
import onnxruntime as ort
t1 = time.perf_counter()
with open(sys.argv[1] + '/model.onnx', 'rb') as f:
    session = ort.InferenceSession(f.read(), providers=['CPUExecutionProvider'])
t2 = time.perf_counter()
session.run(None, {'features': np.array([[float(v) for v in sys.argv[3].split(',')]], dtype=np.float32)})
t3 = time.perf_counter()
""" + _REPORT


def _child(script: str, args: list[str]) -> tuple[float, list[float]]:
    """Run one child; return (wall seconds, [import s, open s, first call s, VmHWM KiB])."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          check=True, timeout=120)
    wall = time.perf_counter() - start
    return wall, [float(v) for v in done.stdout.split()]


def import_time(top: int = 12) -> dict[str, Any]:
    """``-X importtime`` of the SDK: total, by top-level package, slowest modules."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import edgepersona.sdk"],
                          capture_output=True, text=True, check=True, timeout=120)
    rows = []
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if match:
            rows.append((int(match[1]), int(match[2]), len(match[3]) // 2, match[4]))
    by_package: dict[str, int] = defaultdict(int)
    for self_us, _cum, _depth, name in rows:
        by_package[name.split(".")[0]] += self_us
    total = next((cum for _s, cum, _d, name in rows if name == "edgepersona.sdk"), 0)
    leaves = sorted(rows, key=lambda r: -r[1])
    selfish = sorted(rows, key=lambda r: -r[0])
    return {
        "total_ms": round(total / 1000, 1),
        "by_top_level_package_self_ms": {
            name: round(us / 1000, 1)
            for name, us in sorted(by_package.items(), key=lambda kv: -kv[1])[:top]},
        "slowest_modules_cumulative_ms": {
            name: round(cum / 1000, 1) for _s, cum, _d, name in leaves[:top]},
        "slowest_modules_self_ms": {name: round(us / 1000, 1) for us, _c, _d, name in selfish[:top]},
    }


def run(cfg: RunConfig) -> SuiteResult:
    """Alternate SDK and bare children; summarise wall time and peak RSS."""
    result = SuiteResult("cold_start")
    folder = bundle_dir(cfg)
    public = bench_bundle(cfg).public_path
    row = ",".join(repr(v) for v in bench_bundle(cfg).rows[0].tolist())
    args = [str(folder), str(Path(public)), row]
    runs = cfg.pick(1, 20)
    walls: dict[str, list[int]] = {"sdk": [], "bare": []}
    phases: dict[str, list[list[float]]] = {"sdk": [], "bare": []}
    if not cfg.quick:  # warm the OS file cache for both kinds
        _child(BARE_CHILD, args)
        _child(SDK_CHILD, args)
    for _ in range(runs):
        for kind, script in (("sdk", SDK_CHILD), ("bare", BARE_CHILD)):
            wall, parts = _child(script, args)
            walls[kind].append(round(wall * 1e9))
            phases[kind].append(parts)
    for kind, what in (("sdk", "fresh process: import SDK, open+verify bundle, first assign"),
                       ("bare", "fresh process: import numpy+onnxruntime, session, one run")):
        result.add(f"wall.{kind}", walls[kind], what)
        table = np.asarray(phases[kind])
        result.figures[f"{kind}.import_ms_median"] = round(float(np.median(table[:, 0])) * 1e3, 1)
        result.figures[f"{kind}.open_or_session_ms_median"] = round(float(np.median(table[:, 1])) * 1e3, 1)
        result.figures[f"{kind}.first_call_ms_median"] = round(float(np.median(table[:, 2])) * 1e3, 2)
        result.figures[f"{kind}.peak_rss_mib_median"] = round(float(np.median(table[:, 3])) / 1024, 1)
    ratio = result.ratio("wall.sdk", "wall.bare")
    result.figures["ratio_median.wall_sdk_over_bare"] = round(ratio, 3)
    sdk_rss = result.figures["sdk.peak_rss_mib_median"]
    bare_rss = result.figures["bare.peak_rss_mib_median"]
    result.figures["ratio.peak_rss_sdk_over_bare"] = round(sdk_rss / bare_rss, 3)
    result.target("cold start wall <= 1.5x bare ORT", ratio, "<=", 1.5, "x", "wall.sdk / wall.bare medians")
    result.target("cold start peak RSS <= 70 MiB", sdk_rss, "<=", 70.0, "MiB", "VmHWM of the SDK child")
    result.figures["importtime_sdk"] = import_time()
    result.notes.append("Wall includes interpreter start-up in both; the bare child uses default "
                        "session options and verifies nothing.")
    return result
