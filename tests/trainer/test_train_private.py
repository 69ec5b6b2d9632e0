"""Private releases through the trainer: ledger first, DP fit, nothing data-derived released."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgepersona.sdk import FeatureSpec, InputError, PersonaRuntime
from edgepersona.trainer.errors import BudgetExceededError
from edgepersona.trainer.privacy.dp_kmeans import PrivacyLeakWarning
from edgepersona.trainer.privacy.ledger import PrivacyLedger
from edgepersona.trainer.release.train import TrainOptions, train_bundle


def user_ids(rows: npt.NDArray[np.float64]) -> list[str]:
    return [f"user-{i}" for i in range(len(rows))]


def options(ledger_file: Path | None, **changes: object) -> TrainOptions:
    base: dict[str, object] = {"model_id": "private", "k": 4, "seed": 5, "k_min": 5,
                               "epsilon": 1.0, "delta": 1e-6, "ledger": ledger_file,
                               "source": "synthetic"}
    base.update(changes)
    return TrainOptions(**base)  # type: ignore[arg-type]


def test_private_release_spends_the_ledger_and_releases_only_post_processing(
        bundle_training_rows: npt.NDArray[np.float64], bundle_spec: FeatureSpec,
        signing_key: Ed25519PrivateKey, public_key: bytes, tmp_path: Path) -> None:
    ledger_path = tmp_path / "ledger.jsonl"
    PrivacyLedger(ledger_path, signing_key).set_budget("synthetic", epsilon=2.5, delta=1e-5)
    result = train_bundle(bundle_training_rows, bundle_spec, signing_key, options(ledger_path),
                          lineage={"source": "synthetic"},
                          user_ids=user_ids(bundle_training_rows))
    manifest = result.manifest
    assert (manifest.privacy.epsilon, manifest.privacy.delta) == (1.0, 1e-6)
    assert manifest.privacy.mechanism and "gaussian" in manifest.privacy.mechanism
    assert manifest.metrics.silhouette is None and manifest.metrics.inertia is None
    assert any("ledger 'synthetic' head 1:" in note for note in manifest.privacy.notes)
    status = PrivacyLedger(ledger_path, signing_key).status("synthetic")
    # Stated at the budget's δ (1e-5), the ε=1 release at δ=1e-6 costs a little less than 1.
    assert status.releases == 1 and 0.5 < status.spent_epsilon <= 1.0
    runtime = PersonaRuntime.open(dict(result.files), trusted_keys=[public_key])
    labels = [a.index for a in runtime.assign_many(bundle_training_rows)]
    assert np.array_equal(labels, result.labels)
    # Preprocessing comes from declared bounds only: the centre is the middle of each interval.
    params = manifest.assigner
    t_low = np.where(params.log1p, np.log1p(params.lower), params.lower)
    t_high = np.where(params.log1p, np.log1p(params.upper), params.upper)
    np.testing.assert_allclose(params.center, (t_low + t_high) / 2)


def test_a_release_beyond_the_budget_is_refused_before_any_noise(
        bundle_training_rows: npt.NDArray[np.float64], bundle_spec: FeatureSpec,
        signing_key: Ed25519PrivateKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger_path = tmp_path / "ledger.jsonl"
    PrivacyLedger(ledger_path, signing_key).set_budget("synthetic", epsilon=1.0, delta=1e-5)
    train_bundle(bundle_training_rows, bundle_spec, signing_key, options(ledger_path),
                 lineage={"source": "synthetic"},
                          user_ids=user_ids(bundle_training_rows))
    import edgepersona.trainer.release.train_private as private

    def no_fit(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("noise must not be drawn when the budget is exhausted")

    monkeypatch.setattr(private.DPKMeans, "fit", no_fit)
    with pytest.raises(BudgetExceededError):
        train_bundle(bundle_training_rows, bundle_spec, signing_key, options(ledger_path),
                     lineage={"source": "synthetic"},
                          user_ids=user_ids(bundle_training_rows))
    assert PrivacyLedger(ledger_path, signing_key).status("synthetic").releases == 1


def test_data_derived_bounds_warn_and_are_recorded(
        bundle_training_rows: npt.NDArray[np.float64], bundle_spec: FeatureSpec,
        signing_key: Ed25519PrivateKey, tmp_path: Path) -> None:
    leaky = bundle_spec.model_copy(update={"features": tuple(
        f.model_copy(update={"bounds_source": "data"}) if i == 0 else f
        for i, f in enumerate(bundle_spec.features))})
    ledger_path = tmp_path / "ledger.jsonl"
    PrivacyLedger(ledger_path, signing_key).set_budget("synthetic", epsilon=5, delta=1e-5)
    with pytest.warns(PrivacyLeakWarning):
        result = train_bundle(bundle_training_rows, leaky, signing_key, options(ledger_path),
                              lineage={"source": "synthetic"},
                          user_ids=user_ids(bundle_training_rows))
    assert any("PrivacyLeakWarning" in note and "sessions" in note
               for note in result.manifest.privacy.notes)
    assert result.manifest.privacy.bounds_source == "mixed"


def test_private_release_needs_a_fixed_k_and_a_ledger(
        bundle_training_rows: npt.NDArray[np.float64], bundle_spec: FeatureSpec,
        signing_key: Ed25519PrivateKey, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match="fixed --k"):
            train_bundle(bundle_training_rows, bundle_spec, signing_key,
                         options(tmp_path / "l.jsonl", k="auto"), lineage={"source": "s"},
                         user_ids=user_ids(bundle_training_rows))
        with pytest.raises(InputError, match="--ledger"):
            train_bundle(bundle_training_rows, bundle_spec, signing_key,
                         options(None), lineage={"source": "s"},
                         user_ids=user_ids(bundle_training_rows))
