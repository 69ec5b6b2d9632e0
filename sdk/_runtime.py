"""The persona runtime: a verified bundle, ready to assign, safely updatable."""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from edgepersona.sdk._explain import Reason, explain_margin
from edgepersona.sdk.errors import InputError, ModelIntegrityError
from edgepersona.sdk.protocol.assign import Assigner, load_assigner
from edgepersona.sdk.protocol.bundle import bundle_source, verify_bundle
from edgepersona.sdk.protocol.fold import FoldPlan
from edgepersona.sdk.protocol.manifest_view import ManifestView
from edgepersona.sdk.protocol.trust import TrustedKeys

if TYPE_CHECKING:
    from edgepersona.sdk.protocol.manifest import Manifest, PersonaCard
    from edgepersona.sdk.protocol.spec import FeatureSpec

__all__ = ["Assignment", "PersonaRuntime"]

BundleInput = str | os.PathLike[str] | bytes | Mapping[str, bytes]
KeyInput = bytes | str | object


@dataclass(frozen=True, slots=True)
class Assignment:
    """The persona of one feature vector.

    Attributes:
        persona_id: the persona's stable id (stable across model versions).
        name: the persona's readable name.
        index: the persona's index in this model version.
        confidence: ``1 - d1/d2`` for the nearest and runner-up distances, in [0, 1].
        distances: Euclidean distance to every centroid, in index order.
        model_version: the version of the bundle that produced the result.
        determined: False when there is too little evidence (confidence below
            the spec's ``min_confidence``, or fewer folded events than its
            ``min_events``); the other fields still name the nearest persona.
        reasons: with ``explain=True``, the features that most favour this
            persona over the runner-up, in plain words.
    """

    persona_id: str
    name: str
    index: int
    confidence: float
    distances: tuple[float, ...]
    model_version: int
    determined: bool = True
    reasons: tuple[Reason, ...] = ()


@dataclass(frozen=True)
class _Loaded:
    """One verified bundle and its assigner; swapped as a whole on update.

    The trailing fields are read from the manifest once, so an assignment does
    not walk the model objects on every call. ``view`` is the light reading of
    the verified manifest; the pydantic :class:`Manifest` is built from it only
    when the app asks for it (``runtime.manifest``, ``spec``, ``personas``, explain).
    """

    view: ManifestView
    assigner: Assigner
    plan: FoldPlan
    key_id: str
    cards: tuple[tuple[str, str], ...] = ()  # (persona id, name) per index
    version: int = 0
    min_confidence: float = 0.0
    min_events: int = 0
    names: tuple[str, ...] = ()

    @classmethod
    def of(cls, manifest: ManifestView, assigner: Assigner, key_id: str) -> _Loaded:
        """Bundle a verified manifest and its assigner with the per-call facts."""
        spec = manifest.spec
        return cls(manifest, assigner, FoldPlan.from_spec(spec), key_id,
                   tuple((p.id, p.name) for p in manifest.personas), manifest.version,
                   spec.min_confidence, spec.min_events, spec.names)


class PersonaRuntime:
    """Assigns personas on the device from a verified, signed bundle.

    Thread-safety: every method may be called from any thread. ``update``
    swaps the whole model at once, so a concurrent ``assign`` gets a result
    wholly from the old or wholly from the new version.
    """

    def __init__(self, loaded: _Loaded, trusted: TrustedKeys, backend: str) -> None:
        """Use :meth:`open`; this constructor takes already-verified parts."""
        self._loaded = loaded
        self._trusted = trusted
        self._backend = backend
        self._update_lock = threading.Lock()

    @classmethod
    def open(cls, bundle: BundleInput, *, trusted_keys: Iterable[KeyInput],
             now: datetime | None = None, min_version: int = 0,
             backend: str = "auto") -> PersonaRuntime:
        """Verify a bundle and get ready to assign.

        Args:
            bundle: a bundle directory, ``.zip`` path, archive bytes or name → bytes.
            trusted_keys: public keys accepted as signers (PEM, raw or hex bytes), or
                paths (``str``/``Path``) of key files or key folders.
            now: the current time for the expiry check (default: the system clock).
            min_version: refuse versions below this (the version the device trusts).
            backend: ``auto`` (onnxruntime when importable, else numpy),
                ``onnxruntime``, ``numpy`` or ``fastest`` (both built from the
                verified bundle, checked to agree, the faster one kept; see
                :func:`edgepersona.sdk.protocol.assign.load_assigner`).

        Returns:
            The runtime.

        Raises:
            ModelIntegrityError: the bundle failed verification (subclasses say why).
            SchemaError: the signed manifest is malformed.
            InputError: bad arguments.
        """
        trusted = TrustedKeys(trusted_keys)  # type: ignore[arg-type]
        loaded = _load(bundle, trusted, now, min_version, backend)
        return cls(loaded, trusted, backend)

    @property
    def manifest(self) -> Manifest:
        """The active bundle's manifest.

        The pydantic models are built from the verified bytes on first access
        (opening and assigning do not need them), then kept.
        """
        return self._loaded.view.model()

    @property
    def version(self) -> int:
        """The active bundle's version."""
        return self._loaded.view.version

    @property
    def spec(self) -> FeatureSpec:
        """The feature spec the active model expects (part of :attr:`manifest`)."""
        return self.manifest.spec

    @property
    def personas(self) -> tuple[PersonaCard, ...]:
        """The active model's persona cards, in index order (part of :attr:`manifest`)."""
        return self.manifest.personas

    @property
    def backend(self) -> str:
        """``onnxruntime`` or ``numpy``: what actually assigns."""
        return self._loaded.assigner.backend

    @property
    def key_id(self) -> str:
        """The id of the trusted key that signed the active bundle."""
        return self._loaded.key_id

    @property
    def fold_plan(self) -> FoldPlan:
        """The active spec compiled for folding events."""
        return self._loaded.plan

    def assign(self, features: Sequence[float] | npt.ArrayLike | Mapping[str, float], *,
               explain: bool = False) -> Assignment:
        """Assign the persona of one raw feature vector.

        Args:
            features: one value per spec feature, in spec order, or a mapping
                from feature name to value. Values are clipped to the spec's bounds.
            explain: also compute the reasons for the choice (a few µs more).

        Returns:
            The assignment.

        Raises:
            InputError: wrong length, a missing or unknown name (a mapping must
                name exactly the spec's features), or a NaN/inf value.
        """
        return self._assign_row(_as_row(features, self._loaded.names), explain)

    def _assign_row(self, row: npt.NDArray[np.float64], explain: bool = False) -> Assignment:
        """Assign a validated float64 row (the client's evaluated features come here directly)."""
        loaded = self._loaded
        if len(row) != len(loaded.names):  # the bundle changed since the row was evaluated
            row = _as_row(row, loaded.names)
        index, confidence, distances = loaded.assigner.assign_one(row)
        result = _result(loaded, index, confidence, distances)
        if explain:
            runner_up = int(np.argsort(distances, kind="stable")[1])
            result = replace(result, reasons=explain_margin(loaded.view.model(), row, index, runner_up))
        return result

    def assign_many(self, rows: npt.ArrayLike) -> list[Assignment]:
        """Assign many raw feature rows at once.

        Args:
            rows: shape (n, number of features).

        Returns:
            One assignment per row.

        Raises:
            InputError: wrong shape or a NaN/inf value.
        """
        loaded = self._loaded
        matrix = _as_matrix(rows, len(loaded.names))
        indices, confidences, distances = loaded.assigner.assign_many(matrix)
        return [_result(loaded, int(i), float(c), tuple(d.tolist()))
                for i, c, d in zip(indices, confidences, distances, strict=True)]

    def update(self, bundle: BundleInput, *, now: datetime | None = None) -> int:
        """Verify a newer bundle and switch to it atomically.

        Args:
            bundle: the new bundle (any form :meth:`open` takes).
            now: the current time for the expiry check.

        Returns:
            The now-active version.

        Raises:
            RollbackError: the version is not newer than the active one.
            ModelIntegrityError: the bundle failed verification.
            SchemaError: the signed manifest is malformed.

        On any error the current bundle stays active.
        """
        with self._update_lock:
            current = self._loaded.view.version
            loaded = _load(bundle, self._trusted, now, current + 1, self._backend)
            if loaded.view.model_id != self._loaded.view.model_id:
                raise ModelIntegrityError(
                    f"bundle is for model {loaded.view.model_id!r}, not the active"
                    f" {self._loaded.view.model_id!r}")
            self._loaded = loaded
            return loaded.view.version


def _load(bundle: BundleInput, trusted: TrustedKeys, now: datetime | None,
          min_version: int, backend: str) -> _Loaded:
    """Verify, then build the assigner and fold plan."""
    verified = verify_bundle(bundle_source(bundle), trusted,
                             now=now or datetime.now(UTC), min_version=min_version)
    assigner = load_assigner(verified, backend)
    return _Loaded.of(verified.view, assigner, verified.key_id)


_NOT_MAPPINGS = (np.ndarray, list, tuple)  # the usual inputs: skip the slower ABC check


def _as_row(features: object, names: tuple[str, ...]) -> npt.NDArray[np.float64]:
    """Validate one feature vector into a float64 row."""
    if type(features) not in _NOT_MAPPINGS and isinstance(features, Mapping):
        features = _from_mapping(features, names)
    try:
        row = np.asarray(features, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(
            f"features must be {len(names)} numbers, got {type(features).__name__}") from None
    if row.shape != (len(names),):
        raise InputError(f"expected {len(names)} features {list(names)}, got shape {row.shape}")
    # A float sum is finite only if every term is; it is ~3x cheaper than np.isfinite
    # on a short row. A huge but finite row can overflow the sum, so recheck exactly.
    if not math.isfinite(sum(row.tolist())) and not np.isfinite(row).all():
        bad = [names[i] for i in np.flatnonzero(~np.isfinite(row))]
        raise InputError(f"features must be finite; NaN or inf in {bad}")
    return row


def _from_mapping(features: Mapping[object, object], names: tuple[str, ...]) -> list[object]:
    """Values of a name → value mapping in spec order; unknown or missing names are errors."""
    missing = [n for n in names if n not in features]
    if missing:
        raise InputError(f"features are missing {missing}; expected all of {list(names)}")
    if len(features) != len(names):
        unknown = sorted(str(k) for k in features if k not in names)
        raise InputError(f"unknown feature names {unknown}: the model expects exactly"
                         f" {list(names)} (check the spelling or the bundle version)")
    return [features[n] for n in names]


def _as_matrix(rows: npt.ArrayLike, width: int) -> npt.NDArray[np.float64]:
    """Validate a batch of feature vectors into a float64 matrix."""
    try:
        matrix = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"rows must be numbers of shape (n, {width})") from None
    if matrix.ndim != 2 or matrix.shape[1] != width:
        raise InputError(f"rows must have shape (n, {width}), got {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise InputError(f"rows must be finite; {int((~np.isfinite(matrix)).sum())} NaN/inf values")
    return matrix


def _result(loaded: _Loaded, index: int, confidence: float,
            distances: tuple[float, ...]) -> Assignment:
    """Package one assigner output with its persona card."""
    persona_id, name = loaded.cards[index]
    result = _new_assignment(Assignment)
    _set_id(result, persona_id)
    _set_name(result, name)
    _set_index(result, index)
    _set_confidence(result, confidence)
    _set_distances(result, distances)
    _set_version(result, loaded.version)
    _set_determined(result, confidence >= loaded.min_confidence)
    _set_reasons(result, ())
    return result


# The frozen dataclass __init__ spends ~1 µs (half of _result) in object.__setattr__;
# _result fills the slots directly instead. Unpacking fails at import if a field is added.
_new_assignment = object.__new__
(_set_id, _set_name, _set_index, _set_confidence, _set_distances, _set_version, _set_determined,
 _set_reasons) = (getattr(Assignment, f.name).__set__ for f in fields(Assignment))
