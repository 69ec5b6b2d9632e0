"""The benchmark harness runs end to end in its quick form and writes its reports.

Only the shape of the reports is checked: no figure is compared with a limit
(timings belong in benchmarks/results/, never in assertions).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITES = {"assign", "fold", "cold_start", "idle", "crypto", "trainer", "gateway", "forget"}
SUMMARY_KEYS = {"n", "min_us", "median_us", "p95_us", "p99_us", "max_us", "label"}
MACHINE_KEYS = {"cpu_model", "cores_logical", "cores_usable", "python", "versions", "git_commit"}
KEY_MEASUREMENTS = {
    "assign": {"tight.sdk", "tight.ort_run", "tight.ort_iobinding", "tight.sklearn",
               "tight.numpy_argmin", "spaced_1ms.sdk", "spaced_100ms.sdk"},
    "fold": {"fold.retail", "fold.spec16", "fold_assign.spec16", "client.track_durable",
             "client.track_many_per_event"},
    "cold_start": {"wall.sdk", "wall.bare"},
    "crypto": {"seal.x25519", "raw_encrypt.x25519", "open.mlkem768_x25519", "verify.ed25519"},
    "trainer": {"fit.sklearn_kmeans.10000", "fit.persona_kmeans_n1.10000", "export.build_onnx"},
    "gateway": {"assign", "track_many_per_event", "track_durable"},
}


def test_quick_run_writes_json_markdown_and_charts(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path), "--tag", "smoke"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-4000:]

    [record] = tmp_path.glob("*-smoke-quick.json")
    doc = json.loads(record.read_text(encoding="utf-8"))
    assert doc["mode"] == "quick"
    assert doc["machine"].keys() >= MACHINE_KEYS
    assert {"numpy", "onnxruntime", "scikit-learn", "cryptography"} <= doc["machine"]["versions"].keys()
    assert len(doc["load_before"]) == 3
    assert set(doc["suites"]) == SUITES
    for name, body in doc["suites"].items():
        assert "error" not in body, (name, body.get("error"))
        assert KEY_MEASUREMENTS.get(name, set()) <= body["measurements"].keys(), name
        for key, summary in body["measurements"].items():
            assert summary.keys() >= SUMMARY_KEYS, (name, key)
            assert summary["n"] > 0
            assert summary["min_us"] <= summary["median_us"] <= summary["p99_us"] <= summary["max_us"]
        for target in body["targets"]:
            assert {"name", "value", "op", "limit", "unit", "met"} <= target.keys()
    assert {"cpu_s_per_s", "after_cpu_s_per_s"} <= doc["suites"]["idle"]["figures"]["sdk"].keys()
    assert "total_ms" in doc["suites"]["cold_start"]["figures"]["importtime_sdk"]
    assert doc["suites"]["gateway"]["figures"]["subjects"] == 500
    assert doc["suites"]["trainer"]["series"]["fit_seconds"]

    markdown = (tmp_path / "latest.md").read_text(encoding="utf-8")
    assert "## Targets" in markdown
    for name in SUITES:
        assert f"## {name}" in markdown
    assert "tight.sdk" in markdown
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "assign_latency.png").stat().st_size > 0
        assert (tmp_path / "trainer_scaling.png").stat().st_size > 0
