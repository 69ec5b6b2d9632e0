"""Explanations computed on the device: why this persona and not the runner-up.

With ``z`` the weighted, standardised features and ``a``/``b`` the chosen and
runner-up centroids, the squared-distance margin splits exactly by feature::

    d_b² - d_a² = Σ_j [(z_j - b_j)² - (z_j - a_j)²]

Features with the largest positive terms are what put the user in persona
``a`` rather than ``b``; each is described in plain words with the user's value
and the two personas' typical values (centroids mapped back to raw units).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from edgepersona.sdk.protocol.manifest import Manifest

__all__ = ["Reason", "explain_margin"]


@dataclass(frozen=True, slots=True)
class Reason:
    """One feature's part in the choice between two personas.

    Attributes:
        feature: the feature name.
        share: this feature's share of the squared-distance margin (0..1).
        value: the user's value (clipped to bounds, raw units).
        chosen_typical: the chosen persona's typical value (raw units).
        runner_up_typical: the runner-up persona's typical value (raw units).
        sentence: the reason in plain words.
    """

    feature: str
    share: float
    value: float
    chosen_typical: float
    runner_up_typical: float
    sentence: str


def _typical(manifest: Manifest, index: int) -> npt.NDArray[np.float64]:
    """A centroid mapped back to raw feature units."""
    params = manifest.assigner
    raw: npt.NDArray[np.float64] = (np.asarray(params.centroids[index], dtype=np.float64)
                                    / np.asarray(params.scale) + np.asarray(params.center))
    mask = np.asarray(params.log1p, dtype=bool)
    raw[mask] = np.expm1(raw[mask])
    return raw


def _fmt(value: float) -> str:
    """A number as a person writes it: float dust (-1.42e-14) is 0, no exponents."""
    magnitude = abs(value)
    if not math.isfinite(value):
        return "n/a"
    if magnitude < 0.005:
        return "0"
    if magnitude < 1:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    if magnitude < 10:
        return f"{value:.1f}".removesuffix(".0")
    return f"{value:,.0f}"


def explain_margin(manifest: Manifest, row: npt.NDArray[np.float64], chosen: int, runner_up: int,
                   top: int = 3) -> tuple[Reason, ...]:
    """The features that most favour ``chosen`` over ``runner_up`` for one row.

    Args:
        manifest: the active model's manifest.
        row: the raw feature vector (finite).
        chosen: the assigned persona index.
        runner_up: the second-nearest persona index.
        top: how many reasons to return at most.

    Returns:
        Up to ``top`` reasons, strongest first; only features favouring ``chosen``.
    """
    params = manifest.assigner
    clipped = np.clip(row, params.lower, params.upper)
    z = clipped.copy()
    mask = np.asarray(params.log1p, dtype=bool)
    z[mask] = np.log1p(z[mask])
    z = (z - np.asarray(params.center)) * np.asarray(params.scale)
    a, b = np.asarray(params.centroids[chosen]), np.asarray(params.centroids[runner_up])
    terms = (z - b) ** 2 - (z - a) ** 2
    margin = float(terms.sum())
    typical_a, typical_b = _typical(manifest, chosen), _typical(manifest, runner_up)
    names = (manifest.personas[chosen].name, manifest.personas[runner_up].name)
    reasons = []
    for j in np.argsort(-terms, kind="stable")[:top]:
        if terms[j] <= 0:
            break
        feature = manifest.spec.features[j]
        share = float(terms[j] / margin) if margin > 0 and math.isfinite(margin) else 0.0
        label = feature.display_label()
        sentence = (f"{label[:1].upper()}{label[1:]} of {_fmt(clipped[j])} is closer to"
                    f" {names[0]} (typically {_fmt(typical_a[j])}) than to"
                    f" {names[1]} (typically {_fmt(typical_b[j])})")
        reasons.append(Reason(feature.name, share, float(clipped[j]), float(typical_a[j]),
                              float(typical_b[j]), sentence))
    return tuple(reasons)
