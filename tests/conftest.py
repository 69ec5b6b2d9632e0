"""Shared fixtures: a signing key pair, a small spec, trained and signed bundles.

Everything here is session-scoped and deterministic (fixed seeds, a fixed
creation time), so the expensive parts (fitting, ONNX export) run once per
test session. The bundles are built with the real trainer, so a test that uses
them exercises the same files a device downloads.

The creation time is fixed in the past and the bundles expire far in the
future, so ``PersonaRuntime.open(bundle)`` works with the system clock as well
as with an explicit ``now=BUNDLE_NOW``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import settings

from edgepersona.sdk import Feature, FeatureSpec, Window
from edgepersona.sdk.protocol.bundle import MANIFEST_NAME, SIGNATURE_NAME
from edgepersona.sdk.protocol.manifest import canonical_json
from edgepersona.sdk.protocol.signing import MANIFEST_CONTEXT, sign
from edgepersona.trainer.release.export import sign_manifest, write_bundle, zip_bundle
from edgepersona.trainer.release.keys import generate_signing_key, load_signing_key
from edgepersona.trainer.release.train import TrainOptions, TrainResult, train_bundle

# Deterministic property tests: the same examples on every run and machine, no
# wall-clock deadline (the first onnxruntime call is slow), no example database.
# Set HYPOTHESIS_PROFILE=explore for fresh random examples while hunting bugs.
settings.register_profile("deterministic", derandomize=True, deadline=None, database=None,
                          print_blob=True)
settings.register_profile("explore", deadline=None, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

BUNDLE_CREATED = datetime(2025, 1, 1, tzinfo=UTC)
BUNDLE_EXPIRES_DAYS = 365.0 * 60  # days: far beyond any test run
BUNDLE_NOW = BUNDLE_CREATED + timedelta(days=1)  # a "now" at which the bundles are valid
MODEL_ID = "test-personas"
K = 4
USERS_PER_CLUSTER = 120

# Raw-unit centres of the synthetic clusters, one row per cluster, in spec order:
# sessions, spend, basket, categories, recency, active_days.
CLUSTER_CENTRES = np.array([
    [60.0, 2500.0, 120.0, 30.0, 2.0, 40.0],   # engaged big spenders
    [3.0, 40.0, 15.0, 3.0, 200.0, 2.0],       # lapsed light users
    [40.0, 150.0, 8.0, 25.0, 5.0, 30.0],      # frequent browsers, small baskets
    [8.0, 900.0, 300.0, 5.0, 60.0, 6.0],      # occasional bulk buyers
])


def small_spec() -> FeatureSpec:
    """A six-feature spec covering every aggregate, window kind and transform."""
    return FeatureSpec(features=(
        Feature(name="sessions", event="session", aggregate="count",
                window=Window.half_life(7.0), transform="log1p", bounds=(0.0, 200.0),
                weight=0.25),
        Feature(name="spend", event="purchase", property="value", aggregate="sum",
                window=Window.blend((0.6, 7.0), (0.4, 90.0)), transform="log1p",
                bounds=(0.0, 5000.0), weight=0.25),
        Feature(name="basket", event="purchase", property="value", aggregate="mean",
                transform="log1p", bounds=(0.0, 500.0), weight=0.15),
        Feature(name="categories", event="view", property="category", aggregate="distinct",
                window=Window.half_life(30.0), bounds=(0.0, 50.0), weight=0.1),
        Feature(name="recency", event="*", aggregate="recency_days", bounds=(0.0, 365.0),
                weight=0.15),
        Feature(name="active_days", event="*", aggregate="active_days",
                window=Window.half_life(30.0), bounds=(0.0, 90.0), weight=0.1),
    ))


def cluster_rows(centres: npt.NDArray[np.float64], per_cluster: int, seed: int
                 ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Well-separated raw rows: each centre times a small multiplicative jitter."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(len(centres)), per_cluster)
    jitter = rng.lognormal(mean=0.0, sigma=0.08, size=(len(truth), centres.shape[1]))
    rows = centres[truth] * jitter
    order = rng.permutation(len(truth))
    return rows[order], truth[order]


@dataclass(frozen=True)
class SigningKeys:
    """A generated key pair on disk and in memory."""

    private_path: Path
    public_path: Path
    key_id: str
    private: Ed25519PrivateKey
    public_pem: bytes


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory: pytest.TempPathFactory) -> SigningKeys:
    """The trainer's signing key pair (0600 private PEM, public PEM)."""
    private_path, public_path, kid = generate_signing_key(tmp_path_factory.mktemp("keys"))
    return SigningKeys(private_path, public_path, kid, load_signing_key(private_path),
                       public_path.read_bytes())


@pytest.fixture(scope="session")
def signing_key(signing_keys: SigningKeys) -> Ed25519PrivateKey:
    """The private signing key."""
    return signing_keys.private


@pytest.fixture(scope="session")
def public_key(signing_keys: SigningKeys) -> bytes:
    """The public key as PEM bytes, as a device would ship it."""
    return signing_keys.public_pem


@pytest.fixture(scope="session")
def other_signing_key() -> Ed25519PrivateKey:
    """A valid key the device does not trust."""
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="session")
def bundle_spec() -> FeatureSpec:
    """The small spec the test bundles are trained on."""
    return small_spec()


@pytest.fixture(scope="session")
def bundle_training_data() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """(raw rows, true cluster of each row): four well-separated clusters."""
    return cluster_rows(CLUSTER_CENTRES, USERS_PER_CLUSTER, seed=7)


@pytest.fixture(scope="session")
def bundle_training_rows(
        bundle_training_data: tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]
) -> npt.NDArray[np.float64]:
    """The raw training rows (one per user, spec order)."""
    return bundle_training_data[0]


def train(rows: npt.NDArray[np.float64], spec: FeatureSpec, key: Ed25519PrivateKey, *,
          version: int = 1, k: int = K, model_id: str = MODEL_ID, seed: int = 11) -> TrainResult:
    """Train a bundle with the test defaults (fixed seed and time, fast options)."""
    options = TrainOptions(model_id=model_id, version=version, k=k, seed=seed, k_min=5,
                           stability_rounds=1, expires_days=BUNDLE_EXPIRES_DAYS)
    return train_bundle(rows, spec, key, options, lineage={"source": "synthetic clusters"},
                        now=BUNDLE_CREATED)


@pytest.fixture(scope="session")
def trained(bundle_training_rows: npt.NDArray[np.float64], bundle_spec: FeatureSpec,
            signing_key: Ed25519PrivateKey) -> TrainResult:
    """Version 1 of the test model: k=4 on the synthetic clusters."""
    return train(bundle_training_rows, bundle_spec, signing_key)


@pytest.fixture(scope="session")
def trained_v2(bundle_spec: FeatureSpec, signing_key: Ed25519PrivateKey) -> TrainResult:
    """Version 2 of the same model id, fitted on shifted data with k=3.

    Its distances have another length than version 1's, so any result tells
    which version produced it.
    """
    shifted = CLUSTER_CENTRES[:3] * np.array([1.5, 0.5, 1.2, 0.8, 1.5, 0.7])
    rows, _ = cluster_rows(shifted, USERS_PER_CLUSTER, seed=8)
    return train(rows, bundle_spec, signing_key, version=2, k=3)


@pytest.fixture(scope="session")
def bundle_files(trained: TrainResult) -> Mapping[str, bytes]:
    """Version 1's bundle as name → bytes (manifest and signature included)."""
    return dict(trained.files)


@pytest.fixture(scope="session")
def bundle_dir(bundle_files: Mapping[str, bytes], tmp_path_factory: pytest.TempPathFactory
               ) -> Path:
    """Version 1 written as a bundle directory. Do not modify: copy it first."""
    return write_bundle(tmp_path_factory.mktemp("bundle") / "v1", bundle_files)


@pytest.fixture(scope="session")
def bundle_zip(bundle_files: Mapping[str, bytes], tmp_path_factory: pytest.TempPathFactory
               ) -> Path:
    """Version 1 written as a single .zip archive."""
    return zip_bundle(bundle_files, tmp_path_factory.mktemp("bundle_zip") / "v1.zip")


def manifest_dict(files: Mapping[str, bytes]) -> dict[str, Any]:
    """The bundle's manifest as plain JSON data."""
    data = json.loads(files[MANIFEST_NAME])
    assert isinstance(data, dict)
    return data


def resign(files: Mapping[str, bytes], key: Ed25519PrivateKey,
           edit: Callable[[dict[str, Any]], None] | None = None,
           replace: Mapping[str, bytes] | None = None) -> dict[str, bytes]:
    """Re-sign a bundle after editing its manifest and/or replacing files.

    The manifest is re-validated and its file digests recomputed from the
    (replaced) files, as the trainer would: the result is a well-formed,
    correctly signed bundle that says whatever ``edit`` made it say.

    Args:
        files: the original bundle.
        key: the signing key.
        edit: mutates the manifest data (``files`` is recomputed afterwards).
        replace: file name → new content (manifest and signature excluded).

    Returns:
        The new bundle, name → bytes.
    """
    fields = manifest_dict(files)
    fields.pop("files")
    if edit is not None:
        edit(fields)
    payload = {name: data for name, data in files.items()
               if name not in (MANIFEST_NAME, SIGNATURE_NAME)}
    payload.update(replace or {})
    return sign_manifest(fields, payload, key)


def sign_raw_manifest(files: Mapping[str, bytes], manifest: Mapping[str, Any] | bytes,
                      key: Ed25519PrivateKey) -> dict[str, bytes]:
    """Sign arbitrary manifest data or bytes, unvalidated, digests left as given.

    For "signed but lying" bundles whose manifest the trainer would never emit
    (wrong digests or sizes, malformed fields).
    """
    raw = manifest if isinstance(manifest, bytes) else canonical_json(manifest)
    return {**files, MANIFEST_NAME: raw, SIGNATURE_NAME: sign(key, MANIFEST_CONTEXT, raw).to_bytes()}


@pytest.fixture(scope="session")
def resign_bundle(signing_key: Ed25519PrivateKey
                  ) -> Callable[..., dict[str, bytes]]:
    """:func:`resign` bound to the trusted signing key."""
    def bound(files: Mapping[str, bytes], edit: Callable[[dict[str, Any]], None] | None = None,
              replace: Mapping[str, bytes] | None = None) -> dict[str, bytes]:
        return resign(files, signing_key, edit, replace)

    return bound


@pytest.fixture(scope="session")
def sign_raw_bundle(signing_key: Ed25519PrivateKey) -> Callable[..., dict[str, bytes]]:
    """:func:`sign_raw_manifest` bound to the trusted signing key."""
    def bound(files: Mapping[str, bytes], manifest: Mapping[str, Any] | bytes) -> dict[str, bytes]:
        return sign_raw_manifest(files, manifest, signing_key)

    return bound


@pytest.fixture(scope="session")
def bundle_now() -> datetime:
    """A time at which every test bundle is valid (pass it as ``now``)."""
    return BUNDLE_NOW
