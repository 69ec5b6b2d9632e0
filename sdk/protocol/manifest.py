"""The bundle manifest: what a signed model bundle declares about itself.

These pydantic models are the reference reading, used by the trainer that
writes manifests and by apps that ask for the full manifest; the device's
open → verify → assign path reads the same bytes without pydantic
(:mod:`edgepersona.sdk.protocol.manifest_read`), with the same acceptance.

The manifest is signed byte for byte (see :mod:`edgepersona.sdk.protocol.bundle`); its
JSON is written canonically (sorted keys, no spaces) so the same content
always gives the same bytes.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from edgepersona.sdk.errors import SchemaError
from edgepersona.sdk.protocol.manifest_view import canonical_json
from edgepersona.sdk.protocol.spec import FeatureSpec, describe_validation_error, omit_empty

__all__ = [
    "MANIFEST_SCHEMA_VERSION",
    "AssignerParams",
    "FileEntry",
    "Lifecycle",
    "Manifest",
    "Metrics",
    "OutcomeRate",
    "PersonaCard",
    "Privacy",
    "Trait",
    "canonical_json",
    "parse_manifest",
]

MANIFEST_SCHEMA_VERSION = 1
_FROZEN = ConfigDict(frozen=True, extra="forbid", defer_build=True)
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
FileName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class FileEntry(BaseModel):
    """The digest and exact size of one file of the bundle."""

    model_config = _FROZEN

    sha256: Sha256Hex
    size: int = Field(ge=0, le=64 * 1024 * 1024)


class Trait(BaseModel):
    """One distinguishing trait of a persona, in raw units and as a sentence.

    ``value`` and ``population`` are the exact model features (means of the
    clipped raw features); ``display_value`` and ``display_population`` are
    what the sentence shows, in ``display_unit`` (e.g. "purchases in the last
    90 days"), when the trainer had the raw events or table to compute them.
    """

    model_config = _FROZEN

    feature: str
    direction: Literal["high", "low"]
    value: float
    population: float
    z: float
    sentence: str
    display_value: float | None = None
    display_population: float | None = None
    display_unit: str | None = None

    @model_serializer(mode="wrap")
    def _serialise(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        """Serialise, leaving out the display fields while unset (earlier readers see no change)."""
        return omit_empty(handler(self), ("display_value", "display_population", "display_unit"))


class Lifecycle(BaseModel):
    """Where a persona's members stand: shares that are new, active, at risk and lapsed.

    New: first seen within ``short_days``; active: last seen within
    ``short_days``; at risk: last seen within ``period_days`` but not lately;
    lapsed: not seen for ``period_days``.
    """

    model_config = _FROZEN

    new: float = Field(ge=0.0, le=1.0)
    active: float = Field(ge=0.0, le=1.0)
    at_risk: float = Field(ge=0.0, le=1.0)
    lapsed: float = Field(ge=0.0, le=1.0)
    short_days: float = Field(gt=0)
    period_days: float = Field(gt=0)


class OutcomeRate(BaseModel):
    """How often a persona's members reach an outcome, against the population."""

    model_config = _FROZEN

    name: str = Field(min_length=1, max_length=128)
    rate: float = Field(ge=0.0, le=1.0)
    population: float = Field(ge=0.0, le=1.0)
    noised: bool = False


class PersonaCard(BaseModel):
    """A readable persona: stable id, name, share, traits and description."""

    model_config = _FROZEN

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")
    index: int = Field(ge=0)
    name: str
    share: float = Field(ge=0.0, le=1.0)
    traits: tuple[Trait, ...]
    description: str
    lifecycle: Lifecycle | None = None
    outcome: OutcomeRate | None = None

    @model_serializer(mode="wrap")
    def _serialise(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        """Serialise, leaving out lifecycle and outcome while unset (earlier readers see no change)."""
        return omit_empty(handler(self), ("lifecycle", "outcome"))


class AssignerParams(BaseModel):
    """Everything needed to assign without the ONNX graph (the numpy fallback).

    ``z = (log1p?(clip(x, lower, upper)) - center) * scale`` and the persona is
    the centroid nearest to ``z`` in Euclidean distance. ``scale`` already
    folds in the clustering weights (``sqrt(weight) / std``).
    """

    model_config = _FROZEN

    lower: tuple[float, ...]
    upper: tuple[float, ...]
    log1p: tuple[bool, ...]
    center: tuple[float, ...]
    scale: tuple[float, ...]
    centroids: tuple[tuple[float, ...], ...] = Field(min_length=2)

    @model_validator(mode="after")
    def _same_width(self) -> AssignerParams:
        """All vectors and every centroid have one entry per feature."""
        width = len(self.lower)
        lengths = {len(self.upper), len(self.log1p), len(self.center), len(self.scale)}
        lengths |= {len(c) for c in self.centroids}
        if lengths != {width}:
            raise ValueError(f"assigner vectors must all have {width} entries")
        numbers = [*self.lower, *self.upper, *self.center, *self.scale,
                   *(v for c in self.centroids for v in c)]
        if not all(math.isfinite(v) for v in numbers):
            raise ValueError("assigner parameters must be finite")
        if any(lo >= hi for lo, hi in zip(self.lower, self.upper, strict=True)):
            raise ValueError("assigner lower bounds must be below upper bounds")
        if any(log and lo <= -1.0 for log, lo in zip(self.log1p, self.lower, strict=True)):
            raise ValueError("log1p features need lower bounds above -1")
        return self


class Privacy(BaseModel):
    """The privacy parameters of this release."""

    model_config = _FROZEN

    epsilon: float | None = Field(default=None, gt=0)
    delta: float | None = Field(default=None, ge=0, lt=1)
    mechanism: str | None = None
    k_min: int = Field(ge=1)
    bounds_source: Literal["declared", "coarse", "data", "mixed"]
    suppressed: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


class Metrics(BaseModel):
    """Training metrics recorded for audit and for the drift gate."""

    model_config = _FROZEN

    n_users: int = Field(ge=0)
    k: int = Field(ge=2)
    k_selection: str
    silhouette: float | None
    davies_bouldin: float | None
    stability_ari: float | None
    inertia: float | None
    bad_rows: dict[str, int] = Field(default_factory=dict)


class Manifest(BaseModel):
    """The signed description of a model bundle.

    Attributes:
        schema_version: manifest format version.
        model_id: the model's name; versions of one model share it.
        version: strictly increasing per model; devices refuse lower versions.
        created_at: when the bundle was built (timezone-aware).
        expires_at: after this, devices refuse the bundle (freeze attacks).
        spec: the feature spec the graph expects, in input order.
        personas: one card per persona, in graph index order.
        assigner: the parameters baked into the graph, for the numpy fallback.
        privacy: ε, δ, k-min, how bounds were chosen, suppressed personas.
        metrics: training metrics.
        lineage: the data source description (no identifiers).
        files: name → digest and size of every other file in the bundle.
        id_map: previous version's persona ids → this version's ids.
    """

    model_config = _FROZEN

    schema_version: Literal[1] = 1
    model_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    version: int = Field(ge=1)
    created_at: AwareDatetime
    expires_at: AwareDatetime
    spec: FeatureSpec
    personas: tuple[PersonaCard, ...] = Field(min_length=2)
    assigner: AssignerParams
    privacy: Privacy
    metrics: Metrics
    lineage: dict[str, str | int | float | None] = Field(default_factory=dict)
    files: dict[FileName, FileEntry]
    id_map: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        """Cards, centroids and spec must describe the same model."""
        if len(self.assigner.lower) != len(self.spec.features):
            raise ValueError("assigner width differs from the number of spec features")
        if len(self.personas) != len(self.assigner.centroids):
            raise ValueError("one persona card per centroid is required")
        if [p.index for p in self.personas] != list(range(len(self.personas))):
            raise ValueError("persona cards must be in index order 0..k-1")
        if self.expires_at <= self.created_at:
            raise ValueError("expires_at must be after created_at")
        return self

    def card_for(self, index: int) -> PersonaCard:
        """The card of a persona index.

        Args:
            index: persona index as returned by the graph.

        Returns:
            The persona card.
        """
        return self.personas[index]


def parse_manifest(raw: bytes) -> Manifest:
    """Parse manifest bytes (call only after the signature verified).

    Args:
        raw: the manifest file's bytes.

    Returns:
        The manifest.

    Raises:
        SchemaError: the bytes are not a valid manifest.
    """
    try:
        return Manifest.model_validate_json(raw)
    except ValidationError as exc:
        raise SchemaError(f"invalid bundle manifest: {describe_validation_error(exc)}") from None

