"""The feature spec: the one declarative contract the trainer and the device share.

A spec lists features. Each feature says where its numbers come from (an event
name and, optionally, a numeric or categorical property), how they are
aggregated (count, sum, mean, distinct count, days since last event, active
days), over which time window (all time, an exponential half-life, or a
weighted blend of half-lives), how they are transformed (none or log1p), the
clipping bounds in raw units and the feature's clustering weight.

Time windows are weight kernels. An event that happened ``Δ`` days before the
reference time contributes with weight ``w(Δ)``:

* ``all_time``: ``w(Δ) = 1``;
* ``half_life``: ``w(Δ) = 2^(-Δ / h)``;
* ``blend``: ``w(Δ) = Σ_j c_j · 2^(-Δ / h_j)`` with ``Σ_j c_j = 1``.

Aggregates at reference time ``T`` over the events ``i`` of the feature's
source (``v_i`` the property value, ``t_i`` the time):

* ``count``: ``Σ w(T - t_i)``;
* ``sum``: ``Σ v_i · w(T - t_i)``;
* ``mean``: ``sum / count``, 0 when there is no event;
* ``distinct``: ``Σ_u w(T - last_u)`` over the distinct values ``u`` of the
  property, ``last_u`` the latest time ``u`` was seen; at most
  ``distinct_cap`` values are kept, the most recent ones (ties broken by the
  larger value string), so memory stays bounded on the device;
* ``active_days``: ``distinct`` over the UTC day of each event;
* ``recency_days``: ``T - max t_i`` in days; the upper bound when there is no event.

Events after ``T`` are not part of the aggregate at ``T``; the device folds
events as they come and therefore refuses to evaluate before its latest event.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from edgepersona.sdk.errors import SchemaError

__all__ = [
    "AGGREGATES",
    "SECONDS_PER_DAY",
    "SPEC_SCHEMA_VERSION",
    "Feature",
    "FeatureSpec",
    "Window",
    "describe_validation_error",
    "load_spec_json",
    "omit_empty",
]

SPEC_SCHEMA_VERSION = 1
AGGREGATES = ("count", "sum", "mean", "distinct", "recency_days", "active_days")
SECONDS_PER_DAY = 86_400.0

Aggregate = Literal["count", "sum", "mean", "distinct", "recency_days", "active_days"]
Transform = Literal["none", "log1p"]
FeatureName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]

_FROZEN = ConfigDict(frozen=True, extra="forbid", defer_build=True)
_OPTIONAL_WHEN_EMPTY = ("unit", "period_days", "event_labels", "notes")


def omit_empty(data: dict[str, object], names: tuple[str, ...]) -> dict[str, object]:
    """Leave out optional fields added after schema version 1 while they are unset.

    Specs and manifests that do not use them serialise exactly as before, so
    earlier readers (and the committed conformance vectors) see the same bytes.

    Args:
        data: the serialised fields.
        names: the later optional fields.

    Returns:
        The fields without those that are None or empty.
    """
    return {k: v for k, v in data.items() if k not in names or v not in (None, (), [], {})}


class Window(BaseModel):
    """A time window, expressed as a weight kernel over event age in days.

    Attributes:
        kind: ``all_time``, ``half_life`` or ``blend``.
        half_lives_days: one half-life for ``half_life``; one per component for ``blend``.
        mix: blend coefficients, same length as ``half_lives_days``, summing to 1.
    """

    model_config = _FROZEN

    kind: Literal["all_time", "half_life", "blend"] = "all_time"
    half_lives_days: tuple[float, ...] = ()
    mix: tuple[float, ...] = ()

    @model_validator(mode="after")
    def _check_shape(self) -> Window:
        """Reject windows whose parts do not fit their kind."""
        if any(not (math.isfinite(h) and h > 0) for h in self.half_lives_days):
            raise ValueError("half_lives_days must be finite and > 0 days")
        if self.kind == "all_time" and (self.half_lives_days or self.mix):
            raise ValueError("an all_time window takes no half_lives_days or mix")
        if self.kind == "half_life" and (len(self.half_lives_days) != 1 or self.mix):
            raise ValueError("a half_life window takes exactly one half_lives_days value, no mix")
        if self.kind == "blend":
            if len(self.half_lives_days) < 2 or len(self.mix) != len(self.half_lives_days):
                raise ValueError("a blend window takes >= 2 half_lives_days and as many mix values")
            if any(not (math.isfinite(c) and c > 0) for c in self.mix):
                raise ValueError("mix values must be finite and > 0")
            if abs(sum(self.mix) - 1.0) > 1e-9:
                raise ValueError(f"mix must sum to 1, got {sum(self.mix)!r}")
        return self

    @classmethod
    def half_life(cls, days: float) -> Window:
        """Build an exponential window.

        Args:
            days: the half-life in days.

        Returns:
            The window.
        """
        return cls(kind="half_life", half_lives_days=(days,))

    @classmethod
    def blend(cls, *parts: tuple[float, float]) -> Window:
        """Build a blend of half-lives, e.g. ``Window.blend((0.6, 7), (0.4, 90))``.

        Args:
            *parts: ``(coefficient, half_life_days)`` pairs; coefficients sum to 1.

        Returns:
            The window.
        """
        return cls(kind="blend", mix=tuple(c for c, _ in parts),
                   half_lives_days=tuple(h for _, h in parts))

    def components(self) -> tuple[tuple[float, float], ...]:
        """The kernel as ``(coefficient, half_life_days)`` pairs; ``inf`` means no decay.

        Returns:
            One pair per exponential component.
        """
        if self.kind == "all_time":
            return ((1.0, math.inf),)
        if self.kind == "half_life":
            return ((1.0, self.half_lives_days[0]),)
        return tuple(zip(self.mix, self.half_lives_days, strict=True))


class Feature(BaseModel):
    """One feature: source, aggregate, window, transform, bounds and weight.

    Attributes:
        name: identifier, also the column name in aggregated tables.
        event: the source event name; ``"*"`` means every event.
        property: the event property aggregated (``"value"`` is the numeric
            value passed to ``track``); required by sum, mean and distinct.
        aggregate: one of ``count``, ``sum``, ``mean``, ``distinct``,
            ``recency_days``, ``active_days``.
        window: the time window; ``recency_days`` requires ``all_time``.
        transform: ``none`` or ``log1p`` (applied after clipping).
        bounds: ``(low, high)`` in raw units; values are clipped to them.
        bounds_source: ``declared`` by a person; ``coarse`` when chosen from
            noisy quantiles of the data and rounded outward to a coarse grid
            (no individual's value shows through); ``data`` when taken from the
            training data as is (a privacy leak under differential privacy).
        weight: clustering weight; weights are normalised to sum to 1.
        label: a short noun phrase for reports, e.g. ``"orders"``.
        high_name: how to call users high on this feature, e.g. ``"Frequent buyers"``.
        low_name: how to call users low on this feature, e.g. ``"Rare buyers"``.
        unit: the unit of a sum or mean for reports, e.g. ``"£"`` or ``"items"``;
            a unit of one to three symbol characters is written before the number.
    """

    model_config = _FROZEN

    name: FeatureName
    event: str = Field(min_length=1, max_length=128)
    property: str | None = Field(default=None, min_length=1, max_length=64)
    aggregate: Aggregate
    window: Window = Window()
    transform: Transform = "none"
    bounds: tuple[float, float]
    bounds_source: Literal["declared", "coarse", "data"] = "declared"
    weight: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    label: str | None = Field(default=None, max_length=80)
    high_name: str | None = Field(default=None, max_length=60)
    low_name: str | None = Field(default=None, max_length=60)
    unit: str | None = Field(default=None, min_length=1, max_length=24)

    @field_validator("bounds")
    @classmethod
    def _check_bounds(cls, bounds: tuple[float, float]) -> tuple[float, float]:
        """Bounds must be finite and increasing."""
        low, high = bounds
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"bounds must be finite with low < high, got {bounds!r}")
        return bounds

    @model_validator(mode="after")
    def _check_combination(self) -> Feature:
        """Reject combinations that have no meaning."""
        if self.aggregate in ("sum", "mean", "distinct") and self.property is None:
            raise ValueError(f"aggregate {self.aggregate!r} needs a property (e.g. 'value')")
        if self.aggregate in ("count", "recency_days", "active_days") and self.property is not None:
            raise ValueError(f"aggregate {self.aggregate!r} takes no property")
        if self.aggregate == "recency_days" and self.window.kind != "all_time":
            raise ValueError("aggregate 'recency_days' needs window kind 'all_time'")
        if self.transform == "log1p" and self.bounds[0] <= -1.0:
            raise ValueError("transform 'log1p' needs bounds low > -1")
        return self

    @model_serializer(mode="wrap")
    def _serialise(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        """Serialise, leaving out the later optional fields while unset."""
        return omit_empty(handler(self), _OPTIONAL_WHEN_EMPTY)

    def display_label(self) -> str:
        """The label for reports, falling back to the name.

        Returns:
            The label.
        """
        return self.label or self.name.replace("_", " ")


class FeatureSpec(BaseModel):
    """An ordered list of features plus the device-side evidence thresholds.

    Attributes:
        schema_version: the spec format version.
        features: the features, in model input order.
        distinct_cap: the most distinct values a distinct-count feature keeps.
        min_events: a subject with fewer folded events is "not yet determined".
        min_confidence: an assignment below this confidence is "not yet determined".
        period_days: the window reports count events in ("1.4 purchases in the
            last 90 days"); None lets reports pick the longest half-life.
        event_labels: the vocabulary for event names in reports, e.g.
            ``{"page_view": "page views"}`` (a plural noun phrase).
        notes: why the spec looks as it does (what a suggestion dropped or derived).
    """

    model_config = _FROZEN

    schema_version: Literal[1] = 1
    features: tuple[Feature, ...] = Field(min_length=1, max_length=256)
    distinct_cap: int = Field(default=256, ge=1, le=10_000)
    min_events: int = Field(default=1, ge=0)
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0)
    period_days: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    event_labels: dict[str, Annotated[str, Field(min_length=1, max_length=60)]] = Field(
        default_factory=dict, max_length=256)
    notes: tuple[Annotated[str, Field(max_length=400)], ...] = Field(default=(), max_length=64)

    @model_validator(mode="after")
    def _unique_names(self) -> FeatureSpec:
        """Feature names are column names, so they must be unique."""
        names = [f.name for f in self.features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"feature names must be unique; repeated: {duplicates}")
        return self

    @model_serializer(mode="wrap")
    def _serialise(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        """Serialise, leaving out the later optional fields while unset."""
        return omit_empty(handler(self), _OPTIONAL_WHEN_EMPTY)

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

    def to_json(self) -> str:
        """Serialise to the JSON stored in manifests and spec files.

        Returns:
            Indented JSON text.
        """
        return self.model_dump_json(indent=2)


def _describe(error: ValidationError) -> str:
    """Turn pydantic's report into one line naming the bad field and what is allowed."""
    parts = []
    for item in error.errors()[:3]:
        where = ".".join(str(p) for p in item["loc"]) or "spec"
        parts.append(f"{where}: {item['msg']}")
    more = error.error_count() - len(parts)
    suffix = f" (and {more} more)" if more > 0 else ""
    return "; ".join(parts) + suffix


def load_spec_json(text: str | bytes) -> FeatureSpec:
    """Parse and validate a feature spec from JSON.

    Args:
        text: the JSON document.

    Returns:
        The validated spec.

    Raises:
        SchemaError: the JSON is malformed or a field is invalid; the message
            names the field and the allowed values.
    """
    try:
        return FeatureSpec.model_validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise SchemaError(f"feature spec is not valid JSON: {exc}") from None
    except (UnicodeDecodeError, RecursionError):
        raise SchemaError("feature spec is not valid JSON: expected UTF-8 text,"
                          " nested less than a few hundred levels deep") from None
    except ValidationError as exc:
        raise SchemaError(f"invalid feature spec: {_describe(exc)}") from None


def describe_validation_error(error: ValidationError) -> str:
    """One-line summary of a pydantic validation error (shared by the contract modules).

    Args:
        error: the pydantic error.

    Returns:
        ``field.path: message; ...``.
    """
    return _describe(error)
