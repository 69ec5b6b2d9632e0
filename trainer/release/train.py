"""From feature rows to a signed bundle: fit, cards, ONNX, manifest, signature."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgepersona.sdk import FeatureSpec, InputError, Manifest, PersonaCard
from edgepersona.sdk.protocol.assign import numpy_assign
from edgepersona.sdk.protocol.bundle import MANIFEST_NAME, MODEL_NAME
from edgepersona.sdk.protocol.manifest import AssignerParams, parse_manifest
from edgepersona.trainer.data.facts import UserFacts
from edgepersona.trainer.engines.kmeans import PersonaKMeans
from edgepersona.trainer.engines.row_blocks import RowBlocks
from edgepersona.trainer.release.cards import cards_from_stats, cards_markdown, summarise_facts
from edgepersona.trainer.release.export import sign_manifest
from edgepersona.trainer.release.export_onnx import build_onnx

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
        epsilon: with a value, fit with differential privacy (see ``train_private``).
        delta: the DP δ.
        iterations: DP-Lloyd rounds.
        ledger: the privacy budget ledger file or database URL (required with ``epsilon``).
        source: an operator-chosen label for new people (default: an opaque label from
            the keyed sketch of the user ids); known people keep their own source.
        ledger_secret: the source secret's file (default: beside a file ledger).
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
    epsilon: float | None = None  # differential privacy off when None
    delta: float = 1e-6
    iterations: int = 3  # DP-Lloyd rounds
    ledger: Path | str | None = None  # the privacy budget ledger (required with epsilon)
    source: str | None = None  # label for new people (default: opaque, from the id sketch)
    ledger_secret: Path | None = None  # source secret (default: <ledger>.source-key)


@dataclass(frozen=True)
class TrainResult:
    """The signed bundle files plus what the trainer learned on the way."""

    files: Mapping[str, bytes]
    manifest: Manifest
    labels: npt.NDArray[np.int64]
    merged: tuple[str, ...]


def _bounds_source(spec: FeatureSpec) -> Literal["declared", "coarse", "data", "mixed"]:
    """Summarise how the spec's bounds were chosen (coarse noisy bounds reveal no one)."""
    sources = {f.bounds_source for f in spec.features}
    if sources == {"declared"}:
        return "declared"
    if "data" not in sources:
        return "coarse"
    return "data" if sources == {"data"} else "mixed"


def train_bundle(rows: npt.NDArray[np.float64] | RowBlocks, spec: FeatureSpec, key: Ed25519PrivateKey,
                 options: TrainOptions, *, lineage: Mapping[str, str | int | float | None],
                 bad_rows: Mapping[str, int] | None = None, now: datetime | None = None,
                 progress: Callable[[str], None] | None = None,
                 user_ids: Sequence[str] | None = None,
                 facts: UserFacts | None = None) -> TrainResult:
    """Fit personas on feature rows and produce a signed bundle.

    Args:
        rows: raw features, one row per user, in spec order: an array, or rows
            held by an engine (e.g. :mod:`edgepersona.trainer.engines.dask_engine`).
        spec: the feature spec.
        key: the bundle signing key.
        options: fitting and release options.
        lineage: the data source description (no identifiers).
        bad_rows: rejected input rows per reason, recorded in the metrics.
        now: the creation time (default: the system clock).
        progress: called with a short message after each step.
        user_ids: each row's user id; required for a private release (only a keyed
            sketch is kept, so the budget follows the people, not a name).
        facts: per-user facts in people's units, one per row (display values,
            lifecycle, outcome), for the cards; under ``epsilon`` only the
            outcome is used, noised and spent from the ledger.

    Returns:
        The bundle files and the manifest.

    Raises:
        InputError: the rows cannot be fitted (shape, NaN, too few users), or a private
            release without user ids.
    """
    note = progress or (lambda _msg: None)
    created = now or datetime.now(UTC)
    if options.epsilon is not None:
        if not isinstance(rows, np.ndarray):
            raise InputError("differential privacy runs on the local engine only; drop --engine dask")
        if user_ids is None:
            raise InputError("a private release needs the user ids (user_ids=...): the budget"
                             " is found from who is in the data, not from a name")
        return _train_private(rows, spec, key, options, user_ids, created, note, facts)
    model = PersonaKMeans(spec=spec, n_clusters=options.k, k_range=options.k_range,
                          k_min=options.k_min, min_share=options.min_share,
                          random_state=options.seed,
                          stability_rounds=options.stability_rounds).fit(rows, progress=note)
    summary = summarise_facts(facts, model.labels_, model.k_) if facts is not None else None
    cards = cards_from_stats(spec, *model.profile_, None, summary)
    note("persona cards written")
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
    files = _sign(fields, model.params_, cards, options, key)
    note("bundle exported and signed")
    return TrainResult(files, parse_manifest(files[MANIFEST_NAME]), model.labels_,
                       tuple(model.merged_))


def _sign(fields: dict[str, object], params: AssignerParams, cards: tuple[PersonaCard, ...],
          options: TrainOptions, key: Ed25519PrivateKey) -> Mapping[str, bytes]:
    """Export the graph and the cards, then sign everything."""
    onnx_bytes = build_onnx(params, model_id=options.model_id, version=options.version)
    markdown = cards_markdown(cards, f"{options.model_id} v{options.version} personas")
    cards_json = ("[" + ",".join(c.model_dump_json() for c in cards) + "]").encode()
    return sign_manifest(fields, {MODEL_NAME: onnx_bytes, "cards.md": markdown.encode(),
                                  "cards.json": cards_json}, key)


def _train_private(rows: npt.NDArray[np.float64], spec: FeatureSpec, key: Ed25519PrivateKey,
                   options: TrainOptions, user_ids: Sequence[str], created: datetime,
                   note: Callable[[str], None], facts: UserFacts | None = None) -> TrainResult:
    """The differentially private path: ledger check, DP k-means, ledger spend, sign."""
    from edgepersona.trainer.release.train_private import fit_private

    if options.k == "auto":
        raise InputError("--epsilon needs a fixed --k: choosing k from the data would spend"
                         " budget too (see --epsilon-sweep for a preview)")
    if options.ledger is None:
        raise InputError("--epsilon needs --ledger PATH: every private release is spent from a"
                         " privacy budget ledger")
    release = fit_private(rows, spec, key, k=int(options.k), epsilon=options.epsilon or 0.0,
                          delta=options.delta, iterations=options.iterations,
                          k_min=options.k_min, seed=options.seed, ledger=options.ledger,
                          source=options.source, user_ids=user_ids,
                          note=f"{options.model_id} v{options.version}", now=created,
                          progress=note, secret=options.ledger_secret)
    fields = {
        "model_id": options.model_id, "version": options.version, "created_at": created,
        "expires_at": created + timedelta(days=options.expires_days), "spec": spec,
        "personas": release.cards, "assigner": release.params,
        "privacy": {**release.privacy, "bounds_source": _bounds_source(spec)},
        "metrics": {"n_users": release.n_users, "k": len(release.cards),
                    "k_selection": f"fixed k={options.k} (DP: quality metrics are not released)",
                    "silhouette": None, "davies_bouldin": None, "stability_ari": None,
                    "inertia": None},
        "lineage": {"source": release.source, "users": release.n_users,
                    "users_note": "noisy count", "ledger_id": release.ledger_id,
                    "ledger_seq": release.head[0], "ledger_head": release.head[1]},
    }
    labels = numpy_assign(release.params, rows)[0]
    if facts is not None and facts.outcome is not None:
        from edgepersona.trainer.release.train_private import private_outcomes

        fields["personas"] = private_outcomes(release, facts, labels, options.ledger, key,
                                              user_ids=user_ids, secret=options.ledger_secret,
                                              epsilon=options.epsilon or 0.0,
                                              seed=options.seed, now=created,
                                              note=f"{options.model_id} v{options.version}")
        note("outcome rates noised and spent from the ledger")
    files = _sign(fields, release.params, fields["personas"], options, key)  # type: ignore[arg-type]
    note("private bundle exported and signed")
    return TrainResult(files, parse_manifest(files[MANIFEST_NAME]), labels, release.suppressed)
