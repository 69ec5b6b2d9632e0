"""Persona cards: names, traits and descriptions people can read.

A persona's traits are the features where its members differ most from the
whole population, measured as the mean z-score of its members (transformed,
standardised, before weighting). Only traits with ``|z| >= 0.25`` count.

What a card *shows* is in units people use, computed from the raw events or
table (:mod:`edgepersona.trainer.data.facts`): "Purchases: 14 in the last 180
days vs 6.1 across all users"; the exact model features stay in each trait's
``value`` and ``population``. Without raw data (refits from aggregates, private
releases) the sentence shows the model feature, marked recency-weighted.

Names join the plain-word phrases (the spec's ``high_name`` / ``low_name``) of
the strongest traits: "Frequent buyers & big spenders"; phrases about the same
people merge ("Occasional small-ticket buyers"), and a name already taken in
the set is replaced by the next combination of traits, so names are distinct.
Cards also say where members stand (new / active / at risk / lapsed) and, with
an outcome, how often they reach it against everyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import numpy.typing as npt

from edgepersona.sdk import Feature, FeatureSpec, PersonaCard
from edgepersona.sdk.protocol.manifest import Lifecycle, OutcomeRate, Trait
from edgepersona.trainer.data.facts import Measure, UserFacts, feature_label, measures
from edgepersona.trainer.data.vocabulary import humanise
from edgepersona.trainer.engines.kmeans import preprocess

__all__ = ["CardFacts", "build_cards", "cards_from_stats", "cards_markdown", "human_number",
           "summarise_facts"]

F64 = npt.NDArray[np.float64]
MIN_TRAIT_Z = 0.25
TOP_TRAITS = 3
_COUNT_LIKE = ("count", "distinct", "active_days")


@dataclass(frozen=True)
class CardFacts:
    """Per-persona facts in units people use (see :func:`summarise_facts`).

    Attributes:
        display: each persona's mean display value per feature, shape (k, d).
        population: everyone's mean display value per feature, shape (d,).
        lifecycle: each persona's shares of new, active, at-risk and lapsed members (k, 4).
        outcome: each persona's outcome rate, shape (k,).
        outcome_population: everyone's outcome rate.
        outcome_name: the outcome event or column.
        outcome_noised: whether the outcome rates carry DP noise.
        short_days: the lifecycle's short horizon; period_days: its period.
    """

    display: F64 | None = None
    population: F64 | None = None
    lifecycle: F64 | None = None
    outcome: F64 | None = None
    outcome_population: float = 0.0
    outcome_name: str | None = None
    outcome_noised: bool = False
    short_days: float = 30.0
    period_days: float = 90.0


def summarise_facts(facts: UserFacts, labels: npt.NDArray[np.int64], k: int) -> CardFacts:
    """Per-persona means of per-user facts.

    Args:
        facts: per-user facts (display values, lifecycle stages, outcomes).
        labels: each user's persona index.
        k: the number of personas.

    Returns:
        The per-persona facts (NaN where no member has a value).
    """
    d = facts.display.shape[1]
    display = np.full((k, d), np.nan)
    lifecycle = np.zeros((k, 4)) if facts.stage is not None else None
    outcome = np.zeros(k) if facts.outcome is not None else None
    for index in range(k):
        members = labels == index
        if not members.any():
            continue
        display[index] = _nanmean(facts.display[members])
        if lifecycle is not None and facts.stage is not None:
            stages = facts.stage[members]
            lifecycle[index] = np.bincount(stages[stages >= 0], minlength=4)[:4] / max(
                1, int((stages >= 0).sum()))
        if outcome is not None and facts.outcome is not None:
            outcome[index] = float(facts.outcome[members].mean())
    population = float(facts.outcome.mean()) if facts.outcome is not None else 0.0
    return CardFacts(display, _nanmean(facts.display), lifecycle, outcome, population,
                     facts.outcome_name, False, facts.short_days or 30.0,
                     facts.period_days or 90.0)


def _nanmean(block: F64) -> F64:
    """Column means ignoring NaN (NaN where a column has no value at all)."""
    present = np.isfinite(block)
    totals = np.where(present, block, 0.0).sum(axis=0)
    counts = present.sum(axis=0)
    means: F64 = np.divide(totals, counts, out=np.full(block.shape[1], np.nan), where=counts > 0)
    return means


def human_number(value: float, unit: str | None = None) -> str:
    """A number as a person writes it: rounded, tiny values as 0, with its unit.

    Args:
        value: the number.
        unit: a symbol written before it (up to three non-letters, e.g. "£") or
            a word written after it ("items").

    Returns:
        E.g. "1,240", "14", "1.4", "0.35", "0", "£23", "12 items".
    """
    magnitude = abs(value)
    if not np.isfinite(value):
        text = "n/a"
    elif magnitude < 0.005:
        text = "0"
    elif magnitude < 1:
        text = f"{value:.2g}"
    elif magnitude < 10:
        text = f"{value:.1f}".removesuffix(".0")
    else:
        text = f"{value:,.0f}"
    if not unit or text == "n/a":
        return text
    if len(unit) <= 3 and not any(c.isalpha() for c in unit):
        return f"-{unit}{text[1:]}" if text.startswith("-") else f"{unit}{text}"
    return f"{text} {unit}"


def _ratio(value: float, population: float) -> str:
    """" (2.3x)" against the population; "(<0.1x)" rather than a misleading 0.0x."""
    if not (population > 0 and value >= 0 and np.isfinite(value / population)):
        return ""
    ratio = value / population
    return f" ({ratio:.1f}x)" if ratio >= 0.05 else " (<0.1x)"


def _sentence(measure: Measure, value: float, population: float) -> str:
    """One trait as a sentence in the measure's units."""
    ratio = _ratio(value, population)
    label = measure.label[:1].upper() + measure.label[1:]
    return (f"{label}: {human_number(value, measure.unit)}{measure.period} vs"
            f" {human_number(population, measure.unit)} across all users{ratio}.")


def _trait(feature: Feature, measure: Measure, z: float, value: float, population: float,
           shown: tuple[float, float] | None) -> Trait:
    """One trait: the exact model feature, and the sentence in people's units."""
    if shown is None or not all(np.isfinite(shown)):
        weighted = measure.period if feature.aggregate == "recency_days" or (
            feature.window.kind == "all_time") else " (recency-weighted)"
        plain = Measure(measure.label, measure.unit, weighted)
        return Trait(feature=feature.name, direction="high" if z > 0 else "low", value=value,
                     population=population, z=z, sentence=_sentence(plain, value, population))
    unit = " ".join(p for p in (measure.unit or measure.label, measure.period.strip()) if p)
    return Trait(feature=feature.name, direction="high" if z > 0 else "low", value=value,
                 population=population, z=z, sentence=_sentence(measure, *shown),
                 display_value=shown[0], display_population=shown[1], display_unit=unit)


def build_cards(spec: FeatureSpec, rows: F64, labels: npt.NDArray[np.int64], k: int,
                ids: list[str] | None = None, facts: UserFacts | None = None
                ) -> tuple[PersonaCard, ...]:
    """Cards for k personas from the training rows and their labels.

    Args:
        spec: the feature spec.
        rows: raw training features, shape (n, d).
        labels: persona index of each row.
        k: number of personas.
        ids: stable persona ids by index (default ``P1``..``Pk``).
        facts: per-user facts in people's units (display values, lifecycle, outcome).

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
    summary = summarise_facts(facts, labels, k) if facts is not None else None
    return cards_from_stats(spec, shares, z, values, population, ids, summary)


def cards_from_stats(spec: FeatureSpec, shares: F64, z: F64, values: F64, population: F64,
                     ids: list[str] | None = None, facts: CardFacts | None = None
                     ) -> tuple[PersonaCard, ...]:
    """Cards from per-persona statistics (shared by training and refits from aggregates).

    Args:
        spec: the feature spec.
        shares: each persona's share of users.
        z: each persona's mean z-score per feature, shape (k, d).
        values: each persona's typical raw value per feature, shape (k, d).
        population: the population's typical raw value per feature.
        ids: stable persona ids by index (default ``P1``..``Pk``).
        facts: per-persona facts in people's units, when the raw data was at hand.

    Returns:
        One card per persona, in index order.
    """
    k = len(shares)
    ids = ids or [f"P{i + 1}" for i in range(k)]
    shown = measures(spec)
    facts = facts or CardFacts()
    names = _names(spec, z)
    cards: list[PersonaCard] = []
    for index in range(k):
        strongest = _strongest(z[index])[:TOP_TRAITS]
        traits = tuple(_trait(spec.features[j], shown[j], float(z[index, j]),
                              float(values[index, j]), float(population[j]),
                              _shown(facts, index, j)) for j in strongest)
        share = float(shares[index])
        lifecycle = _lifecycle(facts, index)
        outcome = _outcome(facts, index)
        cards.append(PersonaCard(id=ids[index], index=index, name=names[index], share=share,
                                 traits=traits, lifecycle=lifecycle, outcome=outcome,
                                 description=_describe(spec, share, traits, lifecycle, outcome)))
    return tuple(cards)


def _shown(facts: CardFacts, index: int, j: int) -> tuple[float, float] | None:
    """A persona's and the population's display value of one feature, if known."""
    if facts.display is None or facts.population is None:
        return None
    return float(facts.display[index, j]), float(facts.population[j])


def _lifecycle(facts: CardFacts, index: int) -> Lifecycle | None:
    """The persona's lifecycle shares, if the data had time."""
    if facts.lifecycle is None:
        return None
    new, active, at_risk, lapsed = (float(np.clip(x, 0.0, 1.0)) for x in facts.lifecycle[index])
    return Lifecycle(new=new, active=active, at_risk=at_risk, lapsed=lapsed,
                     short_days=facts.short_days, period_days=facts.period_days)


def _outcome(facts: CardFacts, index: int) -> OutcomeRate | None:
    """The persona's outcome rate against everyone's, if an outcome was named."""
    if facts.outcome is None or facts.outcome_name is None:
        return None
    return OutcomeRate(name=facts.outcome_name, rate=float(np.clip(facts.outcome[index], 0, 1)),
                       population=float(np.clip(facts.outcome_population, 0, 1)),
                       noised=facts.outcome_noised)


def _strongest(z: F64) -> list[int]:
    """Features by strength of deviation, strongest first, above the trait threshold."""
    return [int(j) for j in np.argsort(-np.abs(z), kind="stable") if abs(z[j]) >= MIN_TRAIT_Z]


def _phrase(spec: FeatureSpec, feature: Feature, high: bool) -> str:
    """How to call users who are high (or low) on a feature, in plain words."""
    label = feature_label(spec, feature)
    text = (feature.high_name or f"High {label}") if high else (feature.low_name or f"Low {label}")
    return text.replace("'", "").replace('"', "").strip()


def _lower_first(text: str) -> str:
    """Lower-case the first letter unless the first word is an acronym."""
    first = text.split(" ", 1)[0]
    return text if first.isupper() and len(first) > 1 else text[:1].lower() + text[1:]


def _join(phrases: list[str]) -> str:
    """One name from phrases: merged when they share a word at either end, else joined with &."""
    name = phrases[0]
    for phrase in phrases[1:]:
        if phrase.lower() == name.lower():
            continue
        words, other = name.split(" "), phrase.split(" ")
        same_start = len(words) > 1 and len(other) > 1 and words[0].lower() == other[0].lower()
        same_end = len(words) > 1 and len(other) > 1 and words[-1].lower() == other[-1].lower()
        if same_start and same_end and len(words) > 2 and len(other) > 2:
            name = " ".join([*words[:-1], "&", *other[1:]])     # High bounce & exit rates
        elif same_end:
            name = " ".join([*words[:-1], _lower_first(" ".join(other[:-1])), words[-1]])
        elif same_start:
            name = " ".join([*words, "&", *other[1:]])          # High fresh & delicassen
        else:
            name = f"{name} & {_lower_first(phrase)}"
    return name


def _candidates(spec: FeatureSpec, z: F64) -> list[str]:
    """Names for one persona, best first: pairs of its strongest traits, then single ones."""
    strongest = _strongest(z)[:4]
    if not strongest:
        return ["Typical users"]
    phrases = [_phrase(spec, spec.features[j], bool(z[j] > 0)) for j in strongest]
    options = [_join([phrases[a], phrases[b]]) for a, b in combinations(range(len(phrases)), 2)]
    options += phrases + ([_join(phrases[:3])] if len(phrases) >= 3 else [])
    return [o for o in dict.fromkeys(options) if _no_repeats(o)] or phrases[:1]


def _no_repeats(name: str) -> bool:
    """True when no word comes twice (two traits about the same thing read as one)."""
    words = [w for w in name.lower().split() if w != "&"]
    return len(words) == len(set(words))


def _names(spec: FeatureSpec, z: F64) -> list[str]:
    """Distinct names for every persona; the most distinctive personas choose first."""
    order = np.argsort(-np.abs(z).max(axis=1, initial=0.0), kind="stable")
    names: dict[int, str] = {}
    taken: set[str] = set()
    for index in order:
        options = _candidates(spec, z[index])
        name = next((o for o in options if o.lower() not in taken), None)
        if name is None:
            count = 2
            while f"{options[0]} ({count})".lower() in taken:
                count += 1
            name = f"{options[0]} ({count})"
        names[int(index)] = name
        taken.add(name.lower())
    return [names[i] for i in range(len(z))]


def _clause(spec: FeatureSpec, feature: Feature, trait: Trait) -> str:
    """A trait as a clause: "more purchases", "lower average purchase value"."""
    label = feature_label(spec, feature)
    high = trait.direction == "high"
    if feature.aggregate == "recency_days":
        return "a longer time since their last activity" if high else "more recent activity"
    if feature.aggregate in _COUNT_LIKE:
        return f"{'more' if high else 'fewer'} {label}"
    return f"{'higher' if high else 'lower'} {label}"


def _describe(spec: FeatureSpec, share: float, traits: tuple[Trait, ...],
              lifecycle: Lifecycle | None, outcome: OutcomeRate | None) -> str:
    """One paragraph: share, the traits as clauses, lifecycle and outcome."""
    by_name = {f.name: f for f in spec.features}
    if traits:
        clauses = [_clause(spec, by_name[t.feature], t) for t in traits]
        listed = clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
        text = f"{share:.0%} of users. Compared with all users: {listed}."
    else:
        text = f"{share:.0%} of users. They sit close to the average on every feature."
    if lifecycle is not None:
        text += (f" Where they stand: {lifecycle.new:.0%} new, {lifecycle.active:.0%} active,"
                 f" {lifecycle.at_risk:.0%} at risk, {lifecycle.lapsed:.0%} lapsed.")
    if outcome is not None:
        text += " " + outcome_sentence(outcome)
    return text


def outcome_sentence(outcome: OutcomeRate) -> str:
    """The outcome rate against everyone's, as a sentence.

    Args:
        outcome: the persona's outcome rate.

    Returns:
        E.g. "Outcome, revenue: 25% of them vs 15% of all users (1.7x)."
    """
    ratio = _ratio(outcome.rate, outcome.population)
    noise = " (with privacy noise)" if outcome.noised else ""
    return (f"Outcome, {humanise(outcome.name)}: {outcome.rate:.0%} of them vs"
            f" {outcome.population:.0%} of all users{ratio}{noise}.")


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
