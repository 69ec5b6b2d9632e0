"""CPU burnt per second by an app that assigns once per millisecond, and after it stops.

``sdk`` is ``PersonaRuntime.assign`` (one intra-op thread, spinning off);
``ort_default`` is ``InferenceSession.run`` with onnxruntime's default
session options (a thread pool sized to the cores, spinning on);
``loop_only`` is the same 1 ms sleep loop calling nothing, the floor. CPU is
``time.process_time`` (all threads of the process) over wall time; ``after``
is the same measure during a pure sleep right after the loop, with the
session still alive (do pool threads keep spinning?).
"""

from __future__ import annotations

import gc
import resource
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from edgepersona.sdk import PersonaRuntime
from edgepersona.sdk.protocol.assign import INPUT_NAME

from ._fixtures import bench_bundle
from ._measure import RunConfig, SuiteResult

__all__ = ["run"]


def _cpu_per_second(call: Callable[[], object], seconds: float, period: float = 0.001) -> dict[str, float]:
    """Call once per ``period`` for ``seconds``; CPU seconds per wall second, during and after."""
    gc.collect()
    usage0, cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time(), time.perf_counter()
    calls, deadline = 0, wall0
    while True:
        now = time.perf_counter()
        if now - wall0 >= seconds:
            break
        deadline += period
        if deadline > now:
            time.sleep(deadline - now)
        call()
        calls += 1
    cpu1, wall1, usage1 = time.process_time(), time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(seconds / 2)
    cpu2, wall2 = time.process_time(), time.perf_counter()
    return {
        "cpu_s_per_s": round((cpu1 - cpu0) / (wall1 - wall0), 4),
        "cpu_us_per_call": round((cpu1 - cpu0) / max(calls, 1) * 1e6, 1),
        "user_s_per_s": round((usage1.ru_utime - usage0.ru_utime) / (wall1 - wall0), 4),
        "system_s_per_s": round((usage1.ru_stime - usage0.ru_stime) / (wall1 - wall0), 4),
        "calls_per_s": round(calls / (wall1 - wall0), 1),
        "after_cpu_s_per_s": round((cpu2 - cpu1) / (wall2 - wall1), 4),
        "involuntary_switches": float(usage1.ru_nivcsw - usage0.ru_nivcsw),
    }


def _ort_default(model: bytes, row: npt.NDArray[np.float64], seconds: float) -> dict[str, float]:
    """The 1 ms loop on a session with onnxruntime's default options (freed on return)."""
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    feed = {INPUT_NAME: row[None, :].astype(np.float32)}
    return _cpu_per_second(lambda: session.run(None, feed), seconds)


def run(cfg: RunConfig) -> SuiteResult:
    """Measure CPU per second: the loop alone, the SDK, onnxruntime with default options."""
    result = SuiteResult("idle")
    seconds = cfg.pick(0.3, 2.0)
    bundle = bench_bundle(cfg)
    runtime = PersonaRuntime.open(bundle.files, trusted_keys=[bundle.public_pem])
    row = bundle.rows[0].copy()
    result.figures["loop_only"] = _cpu_per_second(lambda: None, seconds)
    result.figures["sdk"] = _cpu_per_second(lambda: runtime.assign(row), seconds)
    result.figures["ort_default"] = _ort_default(bundle.files["model.onnx"], row, seconds)
    gc.collect()  # the default session (and its thread pool) is gone now
    sdk, ort_default = result.figures["sdk"]["cpu_s_per_s"], result.figures["ort_default"]["cpu_s_per_s"]
    result.figures["ratio.cpu_ort_default_over_sdk"] = round(ort_default / sdk, 3) if sdk else None
    result.figures["seconds_per_case"] = seconds
    result.notes.append("cpu_s_per_s of 1.0 is one core fully busy; values include the 1 ms sleep loop"
                        " itself (loop_only).")
    return result
