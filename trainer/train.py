"""From feature rows to a signed bundle: fit, cards, ONNX, manifest, signature."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgepersona.sdk import FeatureSpec, Manifest
from edgepersona.sdk._bundle import MANIFEST_NAME, MODEL_NAME
from edgepersona.sdk._manifest import parse_manifest

from .cards import build_cards, cards_markdown
from .export import sign_manifest
from .export_onnx import build_onnx
from .fit import PersonaKMeans

__all__ = ["TrainOptions", "TrainResult", "train_bundle"]


@dataclass(frozen=True)
class TrainOptions:
    """What to fit and how to release it.

    Attributes:
        model_id: the model's name (versions share it).
        version: this release's version (> the previous one's).
        k: number of personas or ``"auto"``.
        k_range: candidates for ``"auto"``.
        k_min: the fewest users a released persona may hold.
        min_share: with ``"auto"``, the smallest persona share allowed.
        seed: random seed, or None for OS randomness.
        expires_days: days until devices refuse the bundle.
        stability_rounds: bootstrap refits for the stability score.
    """

    model_id: str = "personas"
    version: int = 1
    k: int | Literal["auto"] = "auto"
    k_range: tuple[int, int] = (3, 8)
    k_min: int = 10
    min_share: float = 0.02
    seed: int | None = None
    expires_days: float = 90.0  # days
    stability_rounds: int = 5


@dataclass(frozen=True)
class TrainResult:
    """The signed bundle files plus what the trainer learned on the way."""

    files: Mapping[str, bytes]
    manifest: Manifest
    labels: npt.NDArray[np.int64]
    merged: tuple[str, ...]


def _bounds_source(spec: FeatureSpec) -> Literal["declared", "data", "mixed"]:
    """Summarise how the spec's bounds were chosen."""
    sources = {f.bounds_source for f in spec.features}
    if sources == {"declared"}:
        return "declared"
    return "data" if sources == {"data"} else "mixed"


def train_bundle(rows: npt.NDArray[np.float64], spec: FeatureSpec, key: Ed25519PrivateKey,
                 options: TrainOptions, *, lineage: Mapping[str, str | int | float | None],
                 bad_rows: Mapping[str, int] | None = None, now: datetime | None = None,
                 progress: Callable[[str], None] | None = None) -> TrainResult:
    """Fit personas on feature rows and produce a signed bundle.

    Args:
        rows: raw features, one row per user, in spec order.
        spec: the feature spec.
        key: the bundle signing key.
        options: fitting and release options.
        lineage: the data source description (no identifiers).
        bad_rows: rejected input rows per reason, recorded in the metrics.
        now: the creation time (default: the system clock).
        progress: called with a short message after each step.

    Returns:
        The bundle files and the manifest.

    Raises:
        InputError: the rows cannot be fitted (shape, NaN, too few users).
    """
    note = progress or (lambda _msg: None)
    model = PersonaKMeans(spec, n_clusters=options.k, k_range=options.k_range,
                          k_min=options.k_min, min_share=options.min_share, seed=options.seed,
                          stability_rounds=options.stability_rounds).fit(rows, note)
    cards = build_cards(spec, rows, model.labels_, model.k_)
    note("persona cards written")
    created = now or datetime.now(UTC)
    metrics = model.metrics_
    fields = {
        "model_id": options.model_id, "version": options.version,
        "created_at": created, "expires_at": created + timedelta(days=options.expires_days),
        "spec": spec, "personas": cards, "assigner": model.params_,
        "privacy": {"k_min": options.k_min, "bounds_source": _bounds_source(spec),
                    "suppressed": model.merged_},
        "metrics": {"n_users": len(rows), "k": model.k_, "k_selection": metrics.k_selection,
                    "silhouette": metrics.silhouette, "davies_bouldin": metrics.davies_bouldin,
                    "stability_ari": metrics.stability_ari, "inertia": metrics.inertia,
                    "bad_rows": dict(bad_rows or {})},
        "lineage": dict(lineage),
    }
    onnx_bytes = build_onnx(model.params_, model_id=options.model_id, version=options.version)
    markdown = cards_markdown(cards, f"{options.model_id} v{options.version} personas")
    cards_json = ("[" + ",".join(c.model_dump_json() for c in cards) + "]").encode()
    files = sign_manifest(fields, {MODEL_NAME: onnx_bytes, "cards.md": markdown.encode(),
                                   "cards.json": cards_json}, key)
    note("bundle exported and signed")
    return TrainResult(files, parse_manifest(files[MANIFEST_NAME]), model.labels_,
                       tuple(model.merged_))
