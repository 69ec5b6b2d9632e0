"""Refits from collector aggregates: stable ids, k-min, the drift gate, approval."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgepersona.sdk import InputError, PersonaRuntime
from edgepersona.sdk.protocol.assign import model_space, numpy_assign
from edgepersona.trainer.release.refit import (
    REVIEW_MARKER,
    PersonaAggregates,
    RefitPrivacy,
    approve_bundle,
    noisy_aggregates,
    refit_bundle,
    write_refit,
)
from edgepersona.trainer.release.train import TrainResult


def aggregate(result: TrainResult, rows: npt.NDArray[np.float64]) -> PersonaAggregates:
    """What the collector would hold if every user synced once with this version."""
    params = result.manifest.assigner
    labels = numpy_assign(params, rows)[0]
    t = model_space(params, rows)
    k = len(params.centroids)
    counts = np.bincount(labels, minlength=k).astype(float)
    sums = np.vstack([t[labels == p].sum(axis=0) for p in range(k)])
    sumsq = np.vstack([(t[labels == p] ** 2).sum(axis=0) for p in range(k)])
    return PersonaAggregates(counts, sums, sumsq)


def test_refit_of_unchanged_behaviour_keeps_ids_and_publishes(
        trained: TrainResult, bundle_training_rows: npt.NDArray[np.float64],
        signing_key: Ed25519PrivateKey, public_key: bytes) -> None:
    refit = refit_bundle(trained.manifest, aggregate(trained, bundle_training_rows), signing_key,
                         k_min=5)
    assert refit.manifest.version == trained.manifest.version + 1
    assert not refit.drift.needs_review
    assert max(refit.drift.moves) < 0.01  # a converged k-means barely moves in one Lloyd step
    old_ids = [p.id for p in trained.manifest.personas]
    assert [p.id for p in refit.manifest.personas] == old_ids
    assert refit.manifest.id_map == {pid: pid for pid in old_ids}
    runtime = PersonaRuntime.open(dict(refit.files), trusted_keys=[public_key])
    same = [a.persona_id for a in runtime.assign_many(bundle_training_rows)]
    before = [trained.manifest.personas[i].id for i in trained.labels]
    assert np.mean(np.array(same) == np.array(before)) > 0.99


def test_new_centroid_is_the_mean_of_member_contributions(
        trained: TrainResult, bundle_training_rows: npt.NDArray[np.float64],
        signing_key: Ed25519PrivateKey) -> None:
    aggregates = aggregate(trained, bundle_training_rows)
    refit = refit_bundle(trained.manifest, aggregates, signing_key, k_min=5)
    params = trained.manifest.assigner
    expected = (aggregates.sums / aggregates.counts[:, None] - np.asarray(params.center)) \
        * np.asarray(params.scale)
    np.testing.assert_allclose(np.asarray(refit.manifest.assigner.centroids), expected, rtol=1e-12)


def test_drift_beyond_the_threshold_needs_review_and_approval(
        trained: TrainResult, bundle_training_rows: npt.NDArray[np.float64],
        signing_key: Ed25519PrivateKey, tmp_path: Path) -> None:
    aggregates = aggregate(trained, bundle_training_rows)
    shifted = PersonaAggregates(aggregates.counts * np.array([3.0, 1.0, 1.0, 1.0]),
                                aggregates.sums * np.array([3.0, 1.0, 1.0, 1.0])[:, None],
                                aggregates.sumsq * np.array([3.0, 1.0, 1.0, 1.0])[:, None])
    refit = refit_bundle(trained.manifest, shifted, signing_key, k_min=5)
    assert refit.drift.needs_review
    out = write_refit(refit, tmp_path / "v2")
    marker = tmp_path / f"v2.{REVIEW_MARKER}"
    assert marker.exists() and "NEEDS REVIEW" in marker.read_text()
    assert approve_bundle(out) is True
    assert not marker.exists()
    assert approve_bundle(out) is False


def test_personas_under_k_min_vanish_and_are_reported(
        trained: TrainResult, bundle_training_rows: npt.NDArray[np.float64],
        signing_key: Ed25519PrivateKey) -> None:
    aggregates = aggregate(trained, bundle_training_rows)
    counts = aggregates.counts.copy()
    counts[2] = 3
    thin = PersonaAggregates(counts, aggregates.sums * np.where(np.arange(4) == 2, 3 / aggregates.counts[2],
                                                                 1.0)[:, None], aggregates.sumsq)
    refit = refit_bundle(trained.manifest, thin, signing_key, k_min=5)
    vanished = trained.manifest.personas[2].id
    assert refit.drift.vanished == (vanished,)
    assert refit.drift.needs_review
    assert vanished not in [p.id for p in refit.manifest.personas]
    assert any(vanished in s for s in refit.manifest.privacy.suppressed)


def test_refit_refuses_wrong_shapes_and_too_few_contributions(
        trained: TrainResult, signing_key: Ed25519PrivateKey) -> None:
    d = len(trained.manifest.spec.features)
    with pytest.raises(InputError, match="aggregates must cover"):
        refit_bundle(trained.manifest, PersonaAggregates(np.ones(3), np.ones((3, d)),
                                                         np.ones((3, d))), signing_key)
    with pytest.raises(InputError, match="wait for more devices"):
        refit_bundle(trained.manifest, PersonaAggregates(np.array([50.0, 1, 1, 1]),
                                                         np.ones((4, d)), np.ones((4, d))),
                     signing_key, k_min=5)


def test_private_refit_noises_counts_and_sums_and_releases_no_squares(
        trained: TrainResult, bundle_training_rows: npt.NDArray[np.float64],
        signing_key: Ed25519PrivateKey) -> None:
    aggregates = aggregate(trained, bundle_training_rows)
    exact = refit_bundle(trained.manifest, aggregates, signing_key, k_min=5)
    private = refit_bundle(trained.manifest, aggregates, signing_key, k_min=5,
                           privacy=RefitPrivacy(epsilon=2.0, seed=3))
    assert private.manifest.privacy.epsilon == 2.0 and private.manifest.metrics.inertia is None
    def moved(result: object) -> float:
        centroids = np.asarray(result.manifest.assigner.centroids)  # type: ignore[attr-defined]
        return float(np.abs(centroids - np.asarray(exact.manifest.assigner.centroids)).max())

    assert moved(private) > 0
    assert [p.id for p in private.manifest.personas] == [p.id for p in exact.manifest.personas]
    # The noise does not grow with the population, so 1,000x the contributions move far less.
    many = PersonaAggregates(aggregates.counts * 1000, aggregates.sums * 1000, aggregates.sumsq * 1000)
    crowd = refit_bundle(trained.manifest, many, signing_key, k_min=5,
                         privacy=RefitPrivacy(epsilon=2.0, seed=3))
    assert moved(crowd) < moved(private) / 100


def test_noise_scale_matches_the_sensitivity_analysis(trained: TrainResult) -> None:
    d = len(trained.manifest.spec.features)
    zero = PersonaAggregates(np.full(4, 1e6), np.zeros((4, d)), np.zeros((4, d)))
    draws = np.array([noisy_aggregates(trained.manifest, zero, RefitPrivacy(epsilon=1.0, seed=s)
                                       ).counts - 1e6 for s in range(400)]).ravel()
    from edgepersona.trainer.privacy.accounting import gaussian_mu

    expected = np.sqrt(2.0) / gaussian_mu(1.0, 1e-6)
    assert abs(draws.std() / expected - 1.0) < 0.1
