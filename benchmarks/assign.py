"""Single-row assignment: the SDK against raw onnxruntime, scikit-learn and numpy.

Peers, all on the same k=8, d=16 model and the same input rows:

* ``sdk``: ``PersonaRuntime.assign(row)``, the public API (validation,
  clipping, persona card, confidence); ``sdk_list`` passes a Python list.
* ``ort_run``: ``InferenceSession.run`` on the bundle's graph with the SDK's
  session options (one thread, no spinning), float32 input prepared in advance.
* ``ort_iobinding``: the same graph through preallocated I/O bindings (the
  SDK's floor when it uses onnxruntime).
* ``sklearn``: a fitted ``Pipeline`` (clip+log1p, StandardScaler, weights,
  KMeans) ``predict`` on one row.
* ``numpy_argmin``: the same maths in numpy ufuncs writing into preallocated
  buffers, index only.
* ``sdk_numpy_backend``: the SDK with ``backend="numpy"`` (devices without
  onnxruntime), preallocated buffers.
* ``sdk_fastest``: the SDK with ``backend="fastest"``: both verified backends
  built, checked to agree and timed at open, the faster one kept.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from edgepersona.sdk import FeatureSpec, PersonaRuntime
from edgepersona.sdk.protocol.assign import INPUT_NAME, OUTPUT_NAMES, session_options
from edgepersona.sdk.protocol.manifest import AssignerParams

from ._fixtures import bench_bundle
from ._measure import Call, RunConfig, SuiteResult, time_interleaved, time_spaced

__all__ = ["run"]

F64 = npt.NDArray[np.float64]
POOL = 1024  # distinct input rows, cycled


class PreallocatedNumpyAssigner:
    """The assignment maths in numpy ufuncs with ``out=`` buffers: no allocation per call."""

    def __init__(self, params: AssignerParams) -> None:
        self.lower, self.upper = np.asarray(params.lower), np.asarray(params.upper)
        self.mask = np.asarray(params.log1p, dtype=bool)
        self.center, self.scale = np.asarray(params.center), np.asarray(params.scale)
        self.centroids = np.asarray(params.centroids)
        self.z = np.empty_like(self.center)
        self.diff = np.empty_like(self.centroids)
        self.d2 = np.empty(len(self.centroids))

    def __call__(self, row: F64) -> int:
        z, diff = self.z, self.diff
        np.clip(row, self.lower, self.upper, out=z)
        np.log1p(z, out=z, where=self.mask)
        np.subtract(z, self.center, out=z)
        np.multiply(z, self.scale, out=z)
        np.subtract(self.centroids, z, out=diff)
        np.multiply(diff, diff, out=diff)
        np.sum(diff, axis=1, out=self.d2)
        return int(self.d2.argmin())


def _sklearn_pipeline(params: AssignerParams, spec: FeatureSpec, rows: F64, seed: int) -> Any:
    """Clip+log1p, standardise, weight, KMeans(k=8): the scikit-learn way to the same model."""
    from sklearn.cluster import KMeans
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    lower, upper = np.asarray(params.lower), np.asarray(params.upper)
    mask = np.asarray(params.log1p, dtype=bool)
    weights = np.sqrt(np.asarray(spec.normalised_weights()))

    def clip_log(x: F64) -> F64:
        out = np.asarray(np.clip(x, lower, upper), dtype=np.float64)
        out[:, mask] = np.log1p(out[:, mask])
        return out

    def weigh(x: F64) -> F64:
        return np.asarray(x * weights, dtype=np.float64)

    pipe = Pipeline([("clip_log", FunctionTransformer(clip_log)), ("scale", StandardScaler()),
                     ("weigh", FunctionTransformer(weigh)),
                     ("kmeans", KMeans(n_clusters=len(params.centroids), n_init=1, random_state=seed))])
    return pipe.fit(rows)


def _cycle(items: list[Any], call: Callable[[Any], object]) -> Call:
    """A zero-argument call that feeds the next pooled input each time."""
    feed = itertools.cycle(items).__next__
    return lambda: call(feed())


def _peers(cfg: RunConfig) -> tuple[dict[str, Call], dict[str, Any]]:
    """Build every peer on the same graph and rows; return (cases, facts)."""
    import onnxruntime as ort

    bundle = bench_bundle(cfg)
    runtime = PersonaRuntime.open(bundle.files, trusted_keys=[bundle.public_pem])
    fallback = PersonaRuntime.open(bundle.files, trusted_keys=[bundle.public_pem], backend="numpy")
    fastest = PersonaRuntime.open(bundle.files, trusted_keys=[bundle.public_pem], backend="fastest")
    params = runtime.manifest.assigner
    model = bundle.files["model.onnx"]
    width = len(params.lower)
    rng = np.random.default_rng(cfg.seed + 1)
    pool = bundle.rows[rng.integers(0, len(bundle.rows), POOL)] * rng.uniform(0.9, 1.1, (POOL, width))
    rows64 = [np.ascontiguousarray(r) for r in pool]
    rows32 = [r[None, :].astype(np.float32) for r in pool]

    run_session = ort.InferenceSession(model, sess_options=session_options(),
                                       providers=["CPUExecutionProvider"])
    bound_session = ort.InferenceSession(model, sess_options=session_options(),
                                         providers=["CPUExecutionProvider"])
    bound_in = np.zeros((1, width), dtype=np.float32)
    outputs = (np.zeros(1, np.int64), np.zeros((1, len(params.centroids)), np.float32),
               np.zeros(1, np.float32))
    binding = bound_session.io_binding()
    binding.bind_ortvalue_input(INPUT_NAME, ort.OrtValue.ortvalue_from_numpy(bound_in))
    for name, buffer in zip(OUTPUT_NAMES, outputs, strict=True):
        binding.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(buffer))

    def iobinding(x: npt.NDArray[np.float32]) -> int:
        bound_in[...] = x
        bound_session.run_with_iobinding(binding)
        return int(outputs[0][0])

    pipe = _sklearn_pipeline(params, bundle.spec, bundle.rows, cfg.seed)
    numpy_argmin = PreallocatedNumpyAssigner(params)
    cases: dict[str, Call] = {
        "sdk": _cycle(rows64, runtime.assign),
        "sdk_list": _cycle([r.tolist() for r in pool], runtime.assign),
        "ort_run": _cycle(rows32, lambda x: run_session.run(None, {INPUT_NAME: x})),
        "ort_iobinding": _cycle(rows32, iobinding),
        "sklearn": _cycle([r[None, :] for r in rows64], pipe.predict),
        "numpy_argmin": _cycle(rows64, numpy_argmin),
        "sdk_numpy_backend": _cycle(rows64, fallback.assign),
        "sdk_fastest": _cycle(rows64, fastest.assign),
        "timer": _cycle(rows64, lambda _x: None),
    }
    sdk_labels = np.array([runtime.assign(r).index for r in rows64])
    facts = {
        "labels_sdk_vs_numpy_argmin": float(np.mean(sdk_labels == [numpy_argmin(r) for r in rows64])),
        "labels_sdk_vs_sdk_numpy_backend": float(np.mean(
            sdk_labels == [fallback.assign(r).index for r in rows64])),
        "fastest_backend_chosen": fastest.backend,
        "input_rows": POOL,
        "k": len(params.centroids),
        "d": len(params.lower),
        "bundle_train_seconds": round(bundle.train_seconds, 3),
    }
    return cases, facts


LABELS = {
    "sdk": "PersonaRuntime.assign(float64 ndarray)",
    "sdk_list": "PersonaRuntime.assign(list of floats)",
    "ort_run": "InferenceSession.run, SDK session options, float32 input ready",
    "ort_iobinding": "run_with_iobinding, preallocated buffers (copy row in)",
    "sklearn": "sklearn Pipeline.predict, one row",
    "numpy_argmin": "numpy ufuncs into preallocated buffers, argmin only",
    "sdk_numpy_backend": "PersonaRuntime.assign, backend='numpy'",
    "sdk_fastest": "PersonaRuntime.assign, backend='fastest'",
    "timer": "loop + perf_counter_ns overhead (empty call)",
}
SPACED = ("sdk", "ort_run", "ort_iobinding", "sklearn", "numpy_argmin")


def run(cfg: RunConfig) -> SuiteResult:
    """Measure single assignment in a tight loop and with idle gaps."""
    result = SuiteResult("assign")
    cases, facts = _peers(cfg)
    result.figures.update(facts)
    fast = cfg.pick(4_000, 200_000)
    counts = {name: fast for name in cases}
    counts["sklearn"] = cfg.pick(400, 20_000)
    tight = time_interleaved(cases, counts, block=cfg.pick(1_000, 5_000))
    for name, samples in tight.items():
        result.add(f"tight.{name}", samples, LABELS[name], keep=True)
    for spacing, n in ((0.001, cfg.pick(20, 200)), (0.1, cfg.pick(2, 50))):
        tag = f"spaced_{round(spacing * 1000)}ms"
        spaced = time_spaced({name: cases[name] for name in SPACED}, n, spacing)
        for name, samples in spaced.items():
            result.add(f"{tag}.{name}", samples, f"{LABELS[name]}, {tag.split('_')[1]} idle before each",
                       keep=True)
    _targets(result)
    result.notes.append("Samples include ~0.1-0.2 µs of loop and timer overhead (see tight.timer);"
                        " GC stays enabled.")
    return result


def _targets(result: SuiteResult) -> None:
    """Ratios against peers and the brief's goals."""
    m = result.measurements
    for peer in ("ort_run", "ort_iobinding", "numpy_argmin", "sklearn", "sdk_numpy_backend", "sdk_fastest"):
        result.figures[f"ratio_median.sdk_over_{peer}"] = round(result.ratio("tight.sdk", f"tight.{peer}"), 3)
    result.target("sdk median <= raw ORT run median", result.ratio("tight.sdk", "tight.ort_run"),
                  "<=", 1.0, "x", "tight.sdk median / tight.ort_run median")
    result.target(">= 30x faster than scikit-learn", result.ratio("tight.sklearn", "tight.sdk"),
                  ">=", 30.0, "x", "tight.sklearn median / tight.sdk median")
    result.target("p99 <= 20 µs (tight loop)", m["tight.sdk"].p99_us, "<=", 20.0, "µs",
                  "tight.sdk p99")
    result.target("p99 <= 1 ms at 100 ms spacing", m["spaced_100ms.sdk"].p99_us, "<=", 1000.0, "µs",
                  "spaced_100ms.sdk p99")
    result.target("numpy backend <= 1.5x preallocated numpy argmin",
                  result.ratio("tight.sdk_numpy_backend", "tight.numpy_argmin"), "<=", 1.5, "x",
                  "tight.sdk_numpy_backend median / tight.numpy_argmin median")
    result.target("moonshot: within 1.5x numpy", result.ratio("tight.sdk", "tight.numpy_argmin"),
                  "<=", 1.5, "x", "tight.sdk median / tight.numpy_argmin median")
    result.target("backend='fastest' median <= raw ORT run median",
                  result.ratio("tight.sdk_fastest", "tight.ort_run"), "<=", 1.0, "x",
                  "tight.sdk_fastest median / tight.ort_run median")
