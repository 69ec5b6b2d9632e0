"""Zero-config spec suggestions and the persona cards people read."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from edgepersona.sdk import FeatureSpec, InputError, PersonaCard, load_spec_json
from edgepersona.trainer.data.bounds import GRID
from edgepersona.trainer.data.events import EventLog, read_event_log
from edgepersona.trainer.data.facts import UserFacts, log_facts
from edgepersona.trainer.data.features import compute_features
from edgepersona.trainer.data.suggest import suggest_spec, suggest_table_spec
from edgepersona.trainer.engines.kmeans import PersonaKMeans
from edgepersona.trainer.release.cards import (
    MIN_TRAIT_Z,
    TOP_TRAITS,
    build_cards,
    cards_markdown,
    human_number,
)

# --- spec suggestions ------------------------------------------------------------------


@pytest.fixture(scope="module")
def suggested(retail_log: EventLog) -> FeatureSpec:
    return suggest_spec(retail_log, seed=11)


def test_suggested_spec_is_valid_and_round_trips(suggested: FeatureSpec) -> None:
    assert load_spec_json(suggested.to_json()) == suggested
    assert len(set(suggested.names)) == len(suggested.names)


def test_suggested_bounds_are_finite_increasing_round_and_flagged_coarse(
        suggested: FeatureSpec) -> None:
    for feature in suggested.features:
        low, high = feature.bounds
        assert math.isfinite(low) and math.isfinite(high) and low < high, feature.name
        assert feature.bounds_source == "coarse", feature.name
        assert low in GRID and high in GRID, feature.name
        if feature.transform == "log1p":
            assert low >= 0.0, feature.name


def test_suggested_bounds_clip_only_the_tails(suggested: FeatureSpec,
                                              retail_log: EventLog) -> None:
    rows = compute_features(retail_log, suggested)
    for j, feature in enumerate(suggested.features):
        low, high = feature.bounds
        assert (rows[:, j] > high).mean() <= 0.03, feature.name
        assert (rows[:, j] < low).mean() <= 0.02, feature.name


def test_suggested_spec_counts_every_frequent_event_plus_recency_and_active_days(
        suggested: FeatureSpec, retail_log: EventLog) -> None:
    frequent = {event for event, n in Counter(retail_log.event.tolist()).items()
                if n >= 0.01 * len(retail_log.event)}
    assert frequent == {"purchase", "return"}
    counted = {f.event for f in suggested.features if f.aggregate == "count"}
    assert counted == frequent
    by_aggregate = Counter(f.aggregate for f in suggested.features)
    assert by_aggregate["recency_days"] == 1 and by_aggregate["active_days"] == 1
    recency = next(f for f in suggested.features if f.aggregate == "recency_days")
    assert recency.event == "*" and recency.window.kind == "all_time"
    # values are summed and averaged for events that carry them
    assert {(f.event, f.aggregate) for f in suggested.features if f.property == "value"} == {
        ("purchase", "sum"), ("purchase", "mean"), ("return", "sum"), ("return", "mean")}
    # extra property columns get a distinct count, the identifier column never does; the
    # distinct products move with the purchase count (one line per product), so they go
    assert {f.property for f in suggested.features if f.aggregate == "distinct"} == {"invoice"}
    assert any(n.startswith("dropped distinct_product: it moves with purchase_count")
               for n in suggested.notes)


def test_suggested_windows_blend_a_short_and_a_long_half_life(suggested: FeatureSpec,
                                                             retail_log: EventLog) -> None:
    span_days = float(retail_log.time.max() - retail_log.time.min()) / 86_400
    decayed = [f for f in suggested.features if f.window.kind != "all_time"]
    assert decayed
    for feature in decayed:
        assert feature.window.kind == "blend" and feature.window.mix == (0.6, 0.4)
        short, long = feature.window.half_lives_days
        assert short == pytest.approx(span_days / 12, abs=1) and long >= 2 * short


def test_suggesting_from_an_empty_log_is_an_input_error(retail_log: EventLog) -> None:
    empty = retail_log.subset(np.array([], dtype=np.int64))
    with pytest.raises(InputError):
        suggest_spec(empty)


def test_table_suggestion_log_transforms_skewed_columns() -> None:
    rng = np.random.default_rng(0)
    columns = {"spend": rng.lognormal(3, 2, 500), "score": rng.normal(50, 5, 500)}
    spec = suggest_table_spec(columns)
    assert spec.names == ("spend", "score")
    transforms = {f.name: f.transform for f in spec.features}
    assert transforms == {"spend": "log1p", "score": "none"}
    assert {f.bounds_source for f in spec.features} == {"coarse"}
    with pytest.raises(InputError):
        suggest_table_spec({})


@pytest.mark.parametrize(("events", "extra"), [
    (["1click", "view"], ""),                      # starts with a digit
    (["add-to-cart", "add_to_cart"], ""),          # two names, one slug
    (["café", "view"], ""),                        # non-ASCII letters
    (["view", "buy"], "product id"),               # a property column with a space
], ids=["leading-digit", "slug-collision", "non-ascii", "spaced-column"])
def test_suggestion_works_for_any_event_and_column_names(tmp_path: Path, events: list[str],
                                                         extra: str) -> None:
    header = "user_id,timestamp,event,value" + (f",{extra}" if extra else "")
    lines = [f"u{i % 7},{1_600_000_000 + 3600 * i},{events[i % 2]},{i % 5}"
             + (f",p{i % 3}" if extra else "") for i in range(40)]
    path = tmp_path / "log.csv"
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    spec = suggest_spec(read_event_log(path))
    assert load_spec_json(spec.to_json()) == spec
    assert {f.event for f in spec.features if f.aggregate == "count"} == set(events)


# --- persona cards ---------------------------------------------------------------------

CardsFixture = tuple[tuple[PersonaCard, ...], np.ndarray, np.ndarray]

@pytest.fixture(scope="module")
def retail_facts(retail_log: EventLog, retail_spec: FeatureSpec) -> UserFacts:
    return log_facts(retail_log, retail_spec)


@pytest.fixture(scope="module")
def retail_cards(retail_log: EventLog, retail_spec: FeatureSpec, retail_facts: UserFacts
                 ) -> CardsFixture:
    rows = compute_features(retail_log, retail_spec)
    model = PersonaKMeans(spec=retail_spec, n_clusters=4, stability_rounds=0, random_state=0).fit(rows)
    cards = build_cards(retail_spec, rows, model.labels_, model.k_, facts=retail_facts)
    return cards, rows, model.labels_


def test_cards_are_in_index_order_with_unique_names_and_ids(retail_cards: CardsFixture) -> None:
    cards, _, _ = retail_cards
    assert [c.index for c in cards] == [0, 1, 2, 3]
    assert [c.id for c in cards] == ["P1", "P2", "P3", "P4"]
    assert len({c.name for c in cards}) == len(cards)


def test_card_shares_are_the_persona_sizes_and_sum_to_one(retail_cards: CardsFixture) -> None:
    cards, _, labels = retail_cards
    assert sum(c.share for c in cards) == pytest.approx(1.0, abs=1e-12)
    sizes = np.bincount(labels, minlength=len(cards)) / len(labels)
    assert [c.share for c in cards] == pytest.approx(sizes.tolist())


def test_traits_are_the_strongest_deviations_and_their_sentences_quote_the_values(
        retail_cards: CardsFixture, retail_spec: FeatureSpec, retail_facts: UserFacts) -> None:
    cards, rows, labels = retail_cards
    lower = np.array([f.bounds[0] for f in retail_spec.features])
    upper = np.array([f.bounds[1] for f in retail_spec.features])
    clipped = np.clip(rows, lower, upper)
    assert any(card.traits for card in cards)
    for card in cards:
        assert len(card.traits) <= TOP_TRAITS
        strengths = [abs(t.z) for t in card.traits]
        assert strengths == sorted(strengths, reverse=True)
        for trait in card.traits:
            j = retail_spec.names.index(trait.feature)
            assert abs(trait.z) >= MIN_TRAIT_Z
            assert trait.direction == ("high" if trait.z > 0 else "low")
            assert trait.value == pytest.approx(clipped[labels == card.index, j].mean())
            assert trait.population == pytest.approx(clipped[:, j].mean())
            # the model feature stays exact in the JSON; the sentence shows people's units
            members = retail_facts.display[labels == card.index, j]
            assert trait.display_value == pytest.approx(np.nanmean(members))
            assert trait.display_population == pytest.approx(np.nanmean(retail_facts.display[:, j]))
            assert trait.display_value is not None and trait.display_population is not None
            assert human_number(trait.display_value) in trait.sentence
            assert human_number(trait.display_population) in trait.sentence
            assert retail_spec.features[j].display_label().lower() in trait.sentence.lower()
            assert "'" not in trait.sentence and "e-" not in trait.sentence
        assert f"{card.share:.0%} of users" in card.description


def test_cards_markdown_contains_every_card(retail_cards: CardsFixture) -> None:
    cards, _, _ = retail_cards
    text = cards_markdown(cards, "retail v1 personas")
    assert text.startswith("# retail v1 personas")
    for card in cards:
        assert f"## {card.id}: {card.name} ({card.share:.1%})" in text
        assert card.description in text
        for trait in card.traits:
            assert f"- {trait.sentence}" in text
    assert text.count("\n## ") == len(cards)


def test_personas_that_look_alike_still_get_unique_names() -> None:
    spec = FeatureSpec(features=(
        load_spec_json('{"features": [{"name": "orders", "event": "buy", "aggregate": "count",'
                       ' "bounds": [0, 100], "high_name": "Frequent buyers",'
                       ' "low_name": "Rare buyers"}]}').features[0],))
    rows = np.array([[0.0]] * 10 + [[50.0]] * 5 + [[51.0]] * 5 + [[49.0]] * 5)
    labels = np.array([0] * 10 + [1] * 5 + [2] * 5 + [3] * 5)
    cards = build_cards(spec, rows, labels, 4)
    names = [c.name for c in cards]
    assert names[0] == "Rare buyers"
    # the most distinctive persona (51 orders) takes the plain name first
    assert names[1:] == ["Frequent buyers (2)", "Frequent buyers", "Frequent buyers (3)"]


def test_a_persona_without_distinguishing_traits_is_called_typical() -> None:
    spec = load_spec_json('{"features": [{"name": "orders", "event": "buy",'
                          ' "aggregate": "count", "bounds": [0, 100]}]}')
    rows = np.array([[1.0], [3.0], [1.0], [3.0]])
    cards = build_cards(spec, rows, np.array([0, 0, 1, 1]), 2)
    assert [c.name for c in cards] == ["Typical users", "Typical users (2)"]
    assert all(c.traits == () for c in cards)
    assert "close to the average on every feature" in cards[0].description


def test_cards_from_model_features_alone_say_they_are_recency_weighted() -> None:
    spec = load_spec_json('{"features": [{"name": "orders", "event": "buy", "aggregate": "count",'
                          ' "window": {"kind": "half_life", "half_lives_days": [30]},'
                          ' "bounds": [0, 100], "label": "orders"}]}')
    rows = np.array([[0.0]] * 10 + [[50.0]] * 10)
    cards = build_cards(spec, rows, np.array([0] * 10 + [1] * 10), 2)
    assert cards[1].traits[0].sentence == ("Orders: 50 (recency-weighted) vs 25 across all users"
                                           " (2.0x).")
    assert cards[1].traits[0].display_value is None
