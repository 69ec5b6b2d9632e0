"""The verified manifest as the device reads it: frozen classes, no pydantic.

:class:`ManifestView` holds what verification, folding and assignment read
(the light parse that builds it is :mod:`edgepersona.sdk.protocol.manifest_read`)
and builds the full pydantic :class:`~edgepersona.sdk.protocol.manifest.Manifest`
only when asked (:meth:`ManifestView.model`). The view classes carry the same
attribute names as the models they stand for, so the fold plan and the
assigners take either.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from edgepersona.sdk.protocol.manifest import Manifest

__all__ = [
    "AssignerView",
    "CardView",
    "FeatureView",
    "FileView",
    "ManifestView",
    "SpecView",
    "WindowView",
    "canonical_json",
    "json_float",
]

_NO_DECAY: Final = float("inf")


def canonical_json(data: object) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace, ASCII only.

    Args:
        data: JSON-serialisable data.

    Returns:
        The bytes that get signed.
    """
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


@dataclass(frozen=True, slots=True)
class WindowView:
    """A feature's time window (see :class:`~edgepersona.sdk.protocol.spec.Window`)."""

    kind: str
    half_lives_days: tuple[float, ...]
    mix: tuple[float, ...]

    def components(self) -> tuple[tuple[float, float], ...]:
        """The kernel as ``(coefficient, half_life_days)`` pairs; ``inf`` means no decay.

        Returns:
            One pair per exponential component.
        """
        if self.kind == "all_time":
            return ((1.0, _NO_DECAY),)
        if self.kind == "half_life":
            return ((1.0, self.half_lives_days[0]),)
        return tuple(zip(self.mix, self.half_lives_days, strict=True))


@dataclass(frozen=True, slots=True)
class FeatureView:
    """One feature (see :class:`~edgepersona.sdk.protocol.spec.Feature`)."""

    name: str
    event: str
    property: str | None
    aggregate: str
    window: WindowView
    transform: str
    bounds: tuple[float, float]
    bounds_source: str
    weight: float
    label: str | None
    high_name: str | None
    low_name: str | None
    unit: str | None

    def display_label(self) -> str:
        """The label for reports, falling back to the name.

        Returns:
            The label.
        """
        return self.label or self.name.replace("_", " ")


@dataclass(frozen=True, slots=True)
class SpecView:
    """The feature spec (see :class:`~edgepersona.sdk.protocol.spec.FeatureSpec`)."""

    schema_version: int
    features: tuple[FeatureView, ...]
    distinct_cap: int
    min_events: int
    min_confidence: float
    period_days: float | None
    event_labels: Mapping[str, str]
    notes: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names in input order."""
        return tuple(f.name for f in self.features)

    def normalised_weights(self) -> tuple[float, ...]:
        """Clustering weights scaled to sum to 1.

        Returns:
            One weight per feature.
        """
        total = sum(f.weight for f in self.features)
        return tuple(f.weight / total for f in self.features)

    def model_dump_json(self) -> str:
        """The exact text ``FeatureSpec.model_dump_json()`` gives for this spec.

        Folded device state is keyed by a digest of this text
        (:attr:`~edgepersona.sdk.protocol.fold.FoldPlan.spec_id`), so it must not
        change by a byte.

        Returns:
            Compact JSON in the models' field order.
        """
        return _dump(_spec_fields(self))


@dataclass(frozen=True, slots=True)
class CardView:
    """What an assignment reports of a persona card."""

    id: str
    index: int
    name: str


@dataclass(frozen=True, slots=True)
class AssignerView:
    """The assigner parameters (see :class:`~edgepersona.sdk.protocol.manifest.AssignerParams`)."""

    lower: tuple[float, ...]
    upper: tuple[float, ...]
    log1p: tuple[bool, ...]
    center: tuple[float, ...]
    scale: tuple[float, ...]
    centroids: tuple[tuple[float, ...], ...]


@dataclass(frozen=True, slots=True)
class FileView:
    """The digest and exact size of one bundle file."""

    sha256: str
    size: int


@dataclass(frozen=True, eq=False)
class ManifestView:
    """The verified manifest as the device reads it; :meth:`model` gives the full one.

    Attributes:
        raw: the signed manifest bytes this view was read from.
        schema_version: manifest format version.
        model_id: the model's name.
        version: the bundle version.
        created_at: when the bundle was built.
        expires_at: after this, devices refuse the bundle.
        spec: the feature spec, in input order.
        personas: id, index and name of every persona, in index order.
        assigner: the assigner parameters.
        files: name → digest and size of every other bundle file.
        loader: builds the full manifest from ``raw`` (the pydantic models).
        model_cache: the full manifest once built (empty until then).
    """

    raw: bytes = field(repr=False)
    schema_version: int
    model_id: str
    version: int
    created_at: datetime
    expires_at: datetime
    spec: SpecView
    personas: tuple[CardView, ...]
    assigner: AssignerView
    files: Mapping[str, FileView]
    loader: Callable[[bytes], Manifest] = field(repr=False)
    model_cache: list[Manifest] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def model(self) -> Manifest:
        """The full pydantic manifest (built on first use, then kept).

        Returns:
            The manifest the same bytes parse to.

        Raises:
            SchemaError: never for a view from
                :func:`~edgepersona.sdk.protocol.manifest_read.parse_manifest_view`, which
                accepts only what the models accept.
        """
        with self._lock:
            if not self.model_cache:
                self.model_cache.append(self.loader(self.raw))
            return self.model_cache[0]


def json_float(value: float) -> str:
    """A finite float as pydantic's JSON writes it.

    Python's shortest round-trip digits, with pydantic's exponent style: ``1e-6``
    rather than ``1e-06``, and ``0.00001`` rather than ``1e-05``.

    Args:
        value: a finite float.

    Returns:
        The JSON number text.
    """
    text = float.__repr__(value)
    if "e-" not in text:
        return text
    mantissa, exponent = text.split("e-")
    if int(exponent) == 5:
        sign, digits = ("-", mantissa[1:]) if mantissa.startswith("-") else ("", mantissa)
        return f"{sign}0.0000{digits.replace('.', '')}"
    return f"{mantissa}e-{int(exponent)}"


def _dump(value: object) -> str:
    """Compact JSON as pydantic writes it: UTF-8 text unescaped, floats by :func:`json_float`."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{_dump(k)}:{_dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_dump(v) for v in value) + "]"
    if isinstance(value, float):
        return json_float(value)
    return json.dumps(value, ensure_ascii=False)  # str, int, bool, None


def _feature_fields(f: FeatureView) -> dict[str, object]:
    """A feature in ``Feature``'s field order; ``unit`` left out while unset."""
    out: dict[str, object] = {
        "name": f.name, "event": f.event, "property": f.property, "aggregate": f.aggregate,
        "window": {"kind": f.window.kind, "half_lives_days": f.window.half_lives_days,
                   "mix": f.window.mix},
        "transform": f.transform, "bounds": f.bounds, "bounds_source": f.bounds_source,
        "weight": f.weight, "label": f.label, "high_name": f.high_name,
        "low_name": f.low_name}
    if f.unit is not None:
        out["unit"] = f.unit
    return out


def _spec_fields(spec: SpecView) -> dict[str, object]:
    """A spec in ``FeatureSpec``'s field order; later optional fields left out while unset."""
    out: dict[str, object] = {
        "schema_version": spec.schema_version,
        "features": [_feature_fields(f) for f in spec.features],
        "distinct_cap": spec.distinct_cap, "min_events": spec.min_events,
        "min_confidence": spec.min_confidence}
    if spec.period_days is not None:
        out["period_days"] = spec.period_days
    if spec.event_labels:
        out["event_labels"] = dict(spec.event_labels)
    if spec.notes:
        out["notes"] = list(spec.notes)
    return out
