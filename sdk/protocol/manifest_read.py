"""The device's parse of a verified manifest: ``json`` only, no pydantic.

The pydantic models of :mod:`edgepersona.sdk.protocol.manifest` are the
reference; building them costs a device about 16 MiB and 100 ms at cold start.
:func:`parse_manifest_view` reads the same bytes with ``json`` and vouches only
for input it fully checks: a manifest written the way the trainer writes it
(exact JSON types, no duplicate keys, RFC 3339 times, finite numbers) that
passes every type, range, pattern, length, unknown-field, schema-version and
cross-field rule of the models. Anything else, every refusal included, goes to
the models, so what is refused, the error class and the message are theirs.
``tests/sdk/test_manifest_read.py`` checks that both readings agree on accept
and refuse and, value for value, on what they read.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, NoReturn

from edgepersona.sdk.protocol.manifest_view import (
    AssignerView,
    CardView,
    FeatureView,
    FileView,
    ManifestView,
    SpecView,
    WindowView,
)

if TYPE_CHECKING:
    from edgepersona.sdk.protocol.manifest import Manifest

__all__ = ["parse_manifest_view", "read_manifest_view", "read_spec_view"]

Check = Callable[[Any], Any]
_REQUIRED: Final = object()
_MAX_EXACT_INT: Final = 2**53  # larger ints are left to the models (float rounding, big ints)
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_RFC3339: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})")


class _UnsureError(Exception):
    """The light reading cannot vouch for this input; the pydantic models decide."""


def _unsure() -> NoReturn:
    raise _UnsureError


def parse_manifest_view(raw: bytes) -> ManifestView:
    """Read manifest bytes (call only after the signature verified).

    Args:
        raw: the manifest file's bytes.

    Returns:
        The view; :meth:`ManifestView.model` builds the full manifest on first use.

    Raises:
        SchemaError: the bytes are not a valid manifest (the pydantic models decide
            and word the message).
    """
    view = read_manifest_view(raw)
    if view is not None:
        return view
    model = _full_manifest(raw)  # refuses with the models' message, or accepts an unusual form
    view = _view_of(model, raw)
    view.model_cache.append(model)
    return view


def read_manifest_view(raw: bytes) -> ManifestView | None:
    """The light reading alone: the view, or None where only the models can decide.

    Args:
        raw: the manifest bytes.

    Returns:
        The view when the bytes are a manifest the light reading fully checked, else None.
    """
    try:
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
        return _manifest(data, raw)
    except (_UnsureError, ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError too
        return None


def read_spec_view(data: object) -> SpecView | None:
    """The light reading of a feature spec (parsed JSON), or None where only the models decide.

    Args:
        data: the spec as ``json.loads`` gives it.

    Returns:
        The view when the light reading fully checked it, else None.
    """
    try:
        return _spec_view(_SPEC(data))
    except _UnsureError:
        return None


def _full_manifest(raw: bytes) -> Manifest:
    """The pydantic reading (imported only when needed)."""
    from edgepersona.sdk.protocol.manifest import parse_manifest

    return parse_manifest(raw)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object; repeated keys are left to the models."""
    out = dict(pairs)
    if len(out) != len(pairs):
        _unsure()
    return out


# --- scalar checks: each returns the value the models would hold, or gives up ---

def _int(lo: int | None = None, hi: int | None = None) -> Check:
    def check(v: Any) -> int:
        if type(v) is not int or abs(v) > _MAX_EXACT_INT or (lo is not None and v < lo) \
                or (hi is not None and v > hi):
            _unsure()
        return v
    return check


def _float(*, gt: float | None = None, ge: float | None = None, lt: float | None = None,
           le: float | None = None) -> Check:
    def check(v: Any) -> float:
        if type(v) is int and abs(v) <= _MAX_EXACT_INT:
            v = float(v)
        if type(v) is not float or not math.isfinite(v) or (gt is not None and not v > gt) \
                or (ge is not None and not v >= ge) or (lt is not None and not v < lt) \
                or (le is not None and not v <= le):
            _unsure()
        return v
    return check


def _str(pattern: str | None = None, min_len: int = 0, max_len: int | None = None) -> Check:
    compiled = re.compile(pattern) if pattern else None

    def check(v: Any) -> str:
        if type(v) is not str or len(v) < min_len or (max_len is not None and len(v) > max_len) \
                or _SURROGATE.search(v) or (compiled is not None and not compiled.fullmatch(v)):
            _unsure()
        return v
    return check


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        _unsure()
    return bool(v)


def _literal(*allowed: object) -> Check:
    def check(v: Any) -> Any:
        if type(v) not in (str, int) or type(v) is bool or v not in allowed:
            _unsure()
        return v
    return check


def _optional(inner: Check) -> Check:
    def check(v: Any) -> Any:
        return None if v is None else inner(v)
    return check


def _tuple(item: Check, min_len: int = 0, max_len: int | None = None) -> Check:
    def check(v: Any) -> tuple[Any, ...]:
        if type(v) is not list or len(v) < min_len or (max_len is not None and len(v) > max_len):
            _unsure()
        return tuple(item(x) for x in v)
    return check


def _dict(key: Check, value: Check, max_len: int | None = None) -> Check:
    def check(v: Any) -> dict[Any, Any]:
        if type(v) is not dict or (max_len is not None and len(v) > max_len):
            _unsure()
        return {key(k): value(x) for k, x in v.items()}
    return check


def _datetime(v: Any) -> datetime:
    if type(v) is not str or not _RFC3339.fullmatch(v):
        _unsure()
    try:
        return datetime.fromisoformat(v)
    except ValueError:
        _unsure()


def _lineage_value(v: Any) -> Any:
    if v is None or type(v) is str:
        return _str()(v) if v is not None else None
    if type(v) is float:
        return _float()(v)
    return _int()(v)


def _object(fields: dict[str, tuple[Check, Any]], after: Callable[[dict[str, Any]], bool] | None
            = None) -> Check:
    """A model with ``extra="forbid"``: known keys only, required ones present, defaults filled."""
    def check(v: Any) -> dict[str, Any]:
        if type(v) is not dict or not v.keys() <= fields.keys():
            _unsure()
        out = {}
        for name, (inner, default) in fields.items():
            if name in v:
                out[name] = inner(v[name])
            elif default is _REQUIRED:
                _unsure()
            else:
                out[name] = default
        if after is not None and not after(out):
            _unsure()
        return out
    return check


# --- the models' cross-field rules, as predicates ---

def _window_ok(w: dict[str, Any]) -> bool:
    halves, mix, kind = w["half_lives_days"], w["mix"], w["kind"]
    if any(not h > 0 for h in halves):
        return False
    if kind == "all_time":
        return not halves and not mix
    if kind == "half_life":
        return len(halves) == 1 and not mix
    return (len(halves) >= 2 and len(mix) == len(halves) and all(c > 0 for c in mix)
            and not abs(sum(mix) - 1.0) > 1e-9)


def _feature_ok(f: dict[str, Any]) -> bool:
    agg, prop = f["aggregate"], f["property"]
    low, high = f["bounds"]
    return (low < high
            and not (agg in ("sum", "mean", "distinct") and prop is None)
            and not (agg in ("count", "recency_days", "active_days") and prop is not None)
            and not (agg == "recency_days" and f["window"]["kind"] != "all_time")
            and not (f["transform"] == "log1p" and low <= -1.0))


def _spec_ok(s: dict[str, Any]) -> bool:
    names = [f["name"] for f in s["features"]]
    return len(set(names)) == len(names)


def _assigner_ok(a: dict[str, Any]) -> bool:
    width = len(a["lower"])
    lengths = {len(a["upper"]), len(a["log1p"]), len(a["center"]), len(a["scale"])}
    lengths |= {len(c) for c in a["centroids"]}
    return (lengths == {width}
            and all(lo < hi for lo, hi in zip(a["lower"], a["upper"], strict=True))
            and not any(log and lo <= -1.0 for log, lo in zip(a["log1p"], a["lower"], strict=True)))


def _manifest_ok(m: dict[str, Any]) -> bool:
    k = len(m["personas"])
    return (len(m["assigner"]["lower"]) == len(m["spec"]["features"])
            and k == len(m["assigner"]["centroids"])
            and [p["index"] for p in m["personas"]] == list(range(k))
            and m["expires_at"] > m["created_at"])


# --- the models, field for field (defaults as the models declare them) ---

_ANY_FLOAT, _ANY_STR = _float(), _str()
_SHARE = _float(ge=0.0, le=1.0)
_OPT_FLOAT = _optional(_ANY_FLOAT)
_WINDOW = _object({"kind": (_literal("all_time", "half_life", "blend"), "all_time"),
                   "half_lives_days": (_tuple(_ANY_FLOAT), ()), "mix": (_tuple(_ANY_FLOAT), ())},
                  _window_ok)
_DEFAULT_WINDOW = {"kind": "all_time", "half_lives_days": (), "mix": ()}
_FEATURE = _object({
    "name": (_str(r"[A-Za-z_][A-Za-z0-9_]{0,63}"), _REQUIRED),
    "event": (_str(min_len=1, max_len=128), _REQUIRED),
    "property": (_optional(_str(min_len=1, max_len=64)), None),
    "aggregate": (_literal("count", "sum", "mean", "distinct", "recency_days", "active_days"),
                  _REQUIRED),
    "window": (_WINDOW, _DEFAULT_WINDOW),
    "transform": (_literal("none", "log1p"), "none"),
    "bounds": (_tuple(_ANY_FLOAT, 2, 2), _REQUIRED),
    "bounds_source": (_literal("declared", "coarse", "data"), "declared"),
    "weight": (_float(gt=0), 1.0),
    "label": (_optional(_str(max_len=80)), None),
    "high_name": (_optional(_str(max_len=60)), None),
    "low_name": (_optional(_str(max_len=60)), None),
    "unit": (_optional(_str(min_len=1, max_len=24)), None)}, _feature_ok)
_SPEC = _object({
    "schema_version": (_literal(1), 1),
    "features": (_tuple(_FEATURE, 1, 256), _REQUIRED),
    "distinct_cap": (_int(1, 10_000), 256),
    "min_events": (_int(0), 1),
    "min_confidence": (_SHARE, 0.0),
    "period_days": (_optional(_float(gt=0)), None),
    "event_labels": (_dict(_ANY_STR, _str(min_len=1, max_len=60), 256), {}),
    "notes": (_tuple(_str(max_len=400), 0, 64), ())}, _spec_ok)
_TRAIT = _object({
    "feature": (_ANY_STR, _REQUIRED), "direction": (_literal("high", "low"), _REQUIRED),
    "value": (_ANY_FLOAT, _REQUIRED), "population": (_ANY_FLOAT, _REQUIRED),
    "z": (_ANY_FLOAT, _REQUIRED), "sentence": (_ANY_STR, _REQUIRED),
    "display_value": (_OPT_FLOAT, None), "display_population": (_OPT_FLOAT, None),
    "display_unit": (_optional(_ANY_STR), None)})
_LIFECYCLE = _object({
    **{name: (_SHARE, _REQUIRED) for name in ("new", "active", "at_risk", "lapsed")},
    "short_days": (_float(gt=0), _REQUIRED), "period_days": (_float(gt=0), _REQUIRED)})
_OUTCOME = _object({
    "name": (_str(min_len=1, max_len=128), _REQUIRED), "rate": (_SHARE, _REQUIRED),
    "population": (_SHARE, _REQUIRED), "noised": (_bool, False)})
_CARD = _object({
    "id": (_str(r"[A-Za-z0-9_-]{1,32}"), _REQUIRED), "index": (_int(0), _REQUIRED),
    "name": (_ANY_STR, _REQUIRED), "share": (_SHARE, _REQUIRED),
    "traits": (_tuple(_TRAIT), _REQUIRED), "description": (_ANY_STR, _REQUIRED),
    "lifecycle": (_optional(_LIFECYCLE), None), "outcome": (_optional(_OUTCOME), None)})
_ASSIGNER = _object({
    **{name: (_tuple(_ANY_FLOAT), _REQUIRED) for name in ("lower", "upper", "center", "scale")},
    "log1p": (_tuple(_bool), _REQUIRED),
    "centroids": (_tuple(_tuple(_ANY_FLOAT), 2), _REQUIRED)}, _assigner_ok)
_PRIVACY = _object({
    "epsilon": (_optional(_float(gt=0)), None), "delta": (_optional(_float(ge=0, lt=1)), None),
    "mechanism": (_optional(_ANY_STR), None), "k_min": (_int(1), _REQUIRED),
    "bounds_source": (_literal("declared", "coarse", "data", "mixed"), _REQUIRED),
    "suppressed": (_tuple(_ANY_STR), ()), "notes": (_tuple(_ANY_STR), ())})
_METRICS = _object({
    "n_users": (_int(0), _REQUIRED), "k": (_int(2), _REQUIRED),
    "k_selection": (_ANY_STR, _REQUIRED),
    **{name: (_OPT_FLOAT, _REQUIRED)
       for name in ("silhouette", "davies_bouldin", "stability_ari", "inertia")},
    "bad_rows": (_dict(_ANY_STR, _int()), {})})
_FILE = _object({"sha256": (_str(r"[0-9a-f]{64}"), _REQUIRED),
                 "size": (_int(0, 64 * 1024 * 1024), _REQUIRED)})
_MANIFEST = _object({
    "schema_version": (_literal(1), 1),
    "model_id": (_str(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"), _REQUIRED),
    "version": (_int(1), _REQUIRED),
    "created_at": (_datetime, _REQUIRED), "expires_at": (_datetime, _REQUIRED),
    "spec": (_SPEC, _REQUIRED), "personas": (_tuple(_CARD, 2), _REQUIRED),
    "assigner": (_ASSIGNER, _REQUIRED), "privacy": (_PRIVACY, _REQUIRED),
    "metrics": (_METRICS, _REQUIRED),
    "lineage": (_dict(_ANY_STR, _lineage_value), {}),
    "files": (_dict(_str(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"), _FILE), _REQUIRED),
    "id_map": (_dict(_ANY_STR, _ANY_STR), {})}, _manifest_ok)


def _manifest(data: Any, raw: bytes) -> ManifestView:
    """Check every field, then keep what the device reads."""
    m = _MANIFEST(data)
    return ManifestView(
        raw, m["schema_version"], m["model_id"], m["version"], m["created_at"], m["expires_at"],
        _spec_view(m["spec"]), tuple(CardView(p["id"], p["index"], p["name"]) for p in m["personas"]),
        AssignerView(**m["assigner"]), {n: FileView(**e) for n, e in m["files"].items()},
        loader=_full_manifest)


def _spec_view(s: dict[str, Any]) -> SpecView:
    """The spec view of checked spec fields."""
    features = tuple(FeatureView(
        f["name"], f["event"], f["property"], f["aggregate"], WindowView(**f["window"]),
        f["transform"], f["bounds"], f["bounds_source"], f["weight"], f["label"],
        f["high_name"], f["low_name"], f["unit"]) for f in s["features"])
    return SpecView(s["schema_version"], features, s["distinct_cap"], s["min_events"],
                    s["min_confidence"], s["period_days"], s["event_labels"], s["notes"])


def _view_of(model: Manifest, raw: bytes) -> ManifestView:
    """The view of a manifest only the models could read."""
    spec, a = model.spec, model.assigner
    features = tuple(FeatureView(
        f.name, f.event, f.property, f.aggregate,
        WindowView(f.window.kind, f.window.half_lives_days, f.window.mix), f.transform,
        f.bounds, f.bounds_source, f.weight, f.label, f.high_name, f.low_name, f.unit)
        for f in spec.features)
    return ManifestView(
        raw, model.schema_version, model.model_id, model.version, model.created_at,
        model.expires_at,
        SpecView(spec.schema_version, features, spec.distinct_cap, spec.min_events,
                 spec.min_confidence, spec.period_days, dict(spec.event_labels), spec.notes),
        tuple(CardView(p.id, p.index, p.name) for p in model.personas),
        AssignerView(a.lower, a.upper, a.log1p, a.center, a.scale, a.centroids),
        {name: FileView(e.sha256, e.size) for name, e in model.files.items()},
        loader=_full_manifest)
