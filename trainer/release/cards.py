"""Persona cards: names, traits and descriptions people can read.

A persona's traits are the features where its members differ most from the
whole population, measured as the mean z-score of its members (transformed,
standardised, before weighting). Only traits with ``|z| >= 0.25`` count. The
name joins the phrases of the two strongest traits (the spec's ``high_name`` /
``low_name``), e.g. "Big spenders & frequent buyers".
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edgepersona.sdk import Feature, FeatureSpec, PersonaCard
from edgepersona.sdk.protocol.manifest import Trait
from edgepersona.trainer.engines.kmeans import preprocess

__all__ = ["build_cards", "cards_from_stats", "cards_markdown"]

F64 = npt.NDArray[np.float64]
MIN_TRAIT_Z = 0.25
TOP_TRAITS = 3


def _phrase(feature: Feature, high: bool) -> str:
    """How to call users who are high (or low) on a feature."""
    if high:
        return feature.high_name or f"High {feature.display_label()}"
    return feature.low_name or f"Low {feature.display_label()}"


def _number(value: float) -> str:
    """A compact human number."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _trait(feature: Feature, z: float, value: float, population: float) -> Trait:
    """One trait with its plain-language sentence."""
    high = z > 0
    ratio = (f" ({value / population:.1f}x)" if population > 0 and value > 0 else "")
    label = feature.display_label()
    sentence = (f"{label[:1].upper()}{label[1:]}: {_number(value)} on average vs"
                f" {_number(population)} across all users{ratio}, z = {z:+.1f}.")
    return Trait(feature=feature.name, direction="high" if high else "low", value=value,
                 population=population, z=z, sentence=sentence)


def build_cards(spec: FeatureSpec, rows: F64, labels: npt.NDArray[np.int64], k: int,
                ids: list[str] | None = None) -> tuple[PersonaCard, ...]:
    """Cards for k personas from the training rows and their labels.

    Args:
        spec: the feature spec.
        rows: raw training features, shape (n, d).
        labels: persona index of each row.
        k: number of personas.
        ids: stable persona ids by index (default ``P1``..``Pk``).

    Returns:
        One card per persona, in index order.
    """
    transformed, mean, std = preprocess(spec, rows)
    z_rows = (transformed - mean) / std
    lower = np.array([f.bounds[0] for f in spec.features])
    upper = np.array([f.bounds[1] for f in spec.features])
    clipped = np.clip(rows, lower, upper)
    population = clipped.mean(axis=0)
    shares, z, values = np.zeros(k), np.zeros((k, len(spec.features))), np.tile(population, (k, 1))
    for index in range(k):
        members = labels == index
        if members.any():
            shares[index] = members.mean()
            z[index] = z_rows[members].mean(axis=0)
            values[index] = clipped[members].mean(axis=0)
    return cards_from_stats(spec, shares, z, values, population, ids)


def cards_from_stats(spec: FeatureSpec, shares: F64, z: F64, values: F64, population: F64,
                     ids: list[str] | None = None) -> tuple[PersonaCard, ...]:
    """Cards from per-persona statistics (shared by training and refits from aggregates).

    Args:
        spec: the feature spec.
        shares: each persona's share of users.
        z: each persona's mean z-score per feature, shape (k, d).
        values: each persona's typical raw value per feature, shape (k, d).
        population: the population's typical raw value per feature.
        ids: stable persona ids by index (default ``P1``..``Pk``).

    Returns:
        One card per persona, in index order.
    """
    k = len(shares)
    ids = ids or [f"P{i + 1}" for i in range(k)]
    cards: list[PersonaCard] = []
    used_names: dict[str, int] = {}
    for index in range(k):
        strongest = [j for j in np.argsort(-np.abs(z[index]), kind="stable")
                     if abs(z[index, j]) >= MIN_TRAIT_Z]
        traits = tuple(_trait(spec.features[j], float(z[index, j]), float(values[index, j]),
                              float(population[j])) for j in strongest[:TOP_TRAITS])
        share = float(shares[index])
        cards.append(PersonaCard(id=ids[index], index=index,
                                 name=_name(spec, z[index], strongest, used_names), share=share,
                                 traits=traits, description=_describe(spec, share, traits)))
    return tuple(cards)


def _name(spec: FeatureSpec, z: F64, strongest: list[int], used: dict[str, int]) -> str:
    """Name from the two strongest traits; a numeric suffix keeps names unique."""
    phrases = [_phrase(spec.features[j], bool(z[j] > 0)) for j in strongest[:2]]
    if not phrases:
        name = "Typical users"
    elif len(phrases) == 1:
        name = phrases[0]
    else:
        name = f"{phrases[0]} & {phrases[1][:1].lower()}{phrases[1][1:]}"
    used[name] = used.get(name, 0) + 1
    return name if used[name] == 1 else f"{name} ({used[name]})"


def _describe(spec: FeatureSpec, share: float, traits: tuple[Trait, ...]) -> str:
    """One paragraph: share and the traits as clauses."""
    by_name = {f.name: f for f in spec.features}
    if not traits:
        return (f"{share:.0%} of users. They sit close to the population average on every"
                " feature: no trait stands out.")
    clauses = [f"{'higher' if t.direction == 'high' else 'lower'} {by_name[t.feature].display_label()}"
               f" ({_number(t.value)} vs {_number(t.population)})" for t in traits]
    listed = clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
    return f"{share:.0%} of users. Compared with all users: {listed}."


def cards_markdown(cards: tuple[PersonaCard, ...], title: str) -> str:
    """Render cards as Markdown.

    Args:
        cards: the persona cards.
        title: the document heading.

    Returns:
        Markdown text.
    """
    lines = [f"# {title}", ""]
    for card in cards:
        lines += [f"## {card.id}: {card.name} ({card.share:.1%})", "", card.description, ""]
        lines += [f"- {t.sentence}" for t in card.traits]
        lines.append("")
    return "\n".join(lines)
