"""Trainer fit time against users, and export time.

Per size (users x 16 features, the same rows for every model):

* ``sklearn_kmeans``: ``sklearn.cluster.KMeans(n_clusters=8, n_init=1)`` on the raw rows;
* ``persona_kmeans_n1``: ``PersonaKMeans(n_clusters=8, n_init=1,
  stability_rounds=0)``: the like-for-like peer (clip, transform, weights,
  k-min check, metrics, labels on top of one Lloyd run);
* ``persona_kmeans_default``: the same with the default ``n_init`` (what
  ``train_bundle`` runs), for reference.

Export: ``build_onnx`` of the fitted parameters (graph build and full check).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt

from edgepersona.sdk import FeatureSpec
from edgepersona.trainer.engines.kmeans import PersonaKMeans
from edgepersona.trainer.release.export_onnx import build_onnx

from ._fixtures import K, spec16, user_rows
from ._measure import RunConfig, SuiteResult, time_calls

__all__ = ["run"]

F64 = npt.NDArray[np.float64]


def _sklearn_fit(rows: F64, seed: int) -> Any:
    """scikit-learn's KMeans, one initialisation."""
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=K, n_init=1, random_state=seed).fit(rows)


def _persona_fit(spec: FeatureSpec, rows: F64, seed: int, n_init: int | None) -> PersonaKMeans:
    """PersonaKMeans at fixed k, no stability rounds; ``None`` keeps the default n_init."""
    extra = {} if n_init is None else {"n_init": n_init}
    return PersonaKMeans(spec=spec, n_clusters=K, stability_rounds=0, random_state=seed, **extra).fit(rows)


def _timed(fit: Callable[[], Any]) -> tuple[int, Any]:
    """Wall nanoseconds of one fit, and the fitted model."""
    start = time.perf_counter_ns()
    model = fit()
    return time.perf_counter_ns() - start, model


def run(cfg: RunConfig) -> SuiteResult:
    """Fit each model at each size; report medians, ratios and the scaling series."""
    result = SuiteResult("trainer")
    spec = spec16()
    sizes = cfg.pick([(10_000, 1)], [(10_000, 7), (100_000, 5), (1_000_000, 3)])
    series: list[dict[str, Any]] = []
    default_n_init = PersonaKMeans(spec=spec).n_init
    seed = cfg.seed
    for users, repeats in sizes:
        rows = user_rows(spec, users, seed + users)
        models: dict[str, Callable[[], Any]] = {
            "sklearn_kmeans": partial(_sklearn_fit, rows, seed),
            "persona_kmeans_n1": partial(_persona_fit, spec, rows, seed, 1),
        }
        if not cfg.quick:
            models["persona_kmeans_default"] = partial(_persona_fit, spec, rows, seed, None)
        models["sklearn_kmeans"]()  # warm-up: imports, thread pools
        timings: dict[str, list[int]] = {name: [] for name in models}
        fitted: dict[str, Any] = {}
        for _ in range(repeats):  # interleaved, one fit each per round
            for name, fit in models.items():
                took, fitted[name] = _timed(fit)
                timings[name].append(took)
        iterations = fitted["sklearn_kmeans"].n_iter_
        for name, samples in timings.items():
            summary = result.add(f"fit.{name}.{users}", samples, f"{name} fit, {users:,} users x 16")
            series.append({"model": name, "users": users, "median_s": round(summary.median_us / 1e6, 4),
                           "repeats": repeats})
        ratio = result.ratio(f"fit.persona_kmeans_n1.{users}", f"fit.sklearn_kmeans.{users}")
        result.figures[f"ratio_median.persona_n1_over_sklearn.{users}"] = round(ratio, 3)
        if "persona_kmeans_default" in models:
            result.figures[f"ratio_median.persona_default_over_sklearn.{users}"] = round(
                result.ratio(f"fit.persona_kmeans_default.{users}", f"fit.sklearn_kmeans.{users}"), 3)
        result.figures[f"sklearn_iterations.{users}"] = int(iterations)
        result.target(f"fit {users:,} users <= 2x sklearn KMeans(n_init=1)", ratio, "<=", 2.0, "x",
                      f"persona_kmeans_n1 / sklearn_kmeans medians at {users:,} users")
        del rows
    result.series["fit_seconds"] = series
    result.figures["persona_kmeans_default_n_init"] = default_n_init
    params = fitted["persona_kmeans_n1"].params_
    result.add("export.build_onnx", time_calls(
        lambda: build_onnx(params, model_id="bench", version=1), cfg.pick(5, 50), warmup=2),
        "build_onnx (graph + onnx.checker full_check), k=8 d=16")
    result.notes.append("Fit samples are whole fits (one per repeat); sklearn uses its default threads.")
    return result
