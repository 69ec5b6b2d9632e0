"""Plain words and round numbers: how cards speak, coarse bounds, private outcome rates."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, strategies as st

from edgepersona.sdk import Feature, FeatureSpec, Window
from edgepersona.trainer.data.bounds import GRID, coarse_bounds
from edgepersona.trainer.data.events import read_event_log
from edgepersona.trainer.data.facts import table_facts
from edgepersona.trainer.data.suggest import suggest_spec
from edgepersona.trainer.data.vocabulary import humanise, plural
from edgepersona.trainer.privacy.ledger import PrivacyLedger
from edgepersona.trainer.release.cards import build_cards, human_number
from edgepersona.trainer.release.train import TrainOptions, train_bundle


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15))
def test_numbers_never_show_exponents_and_float_dust_is_zero(value: float) -> None:
    text = human_number(value)
    assert not re.search(r"[eE][-+]?\d", text), text
    if abs(value) < 0.005:
        assert text == "0"


def test_numbers_take_their_unit_before_or_after() -> None:
    assert human_number(-1.42e-14) == "0"
    assert human_number(1.44) == "1.4" and human_number(2.0) == "2"
    assert human_number(1240.4, "£") == "£1,240" and human_number(-3.0, "£") == "-£3"
    assert human_number(12.0, "items") == "12 items"


@pytest.mark.parametrize(("raw", "words"), [
    ("page_view", "page views"), ("ProductRelated_Duration", "product related durations"),
    ("add-to-cart", "add to carts"), ("category", "categories"), ("search", "searches"),
    ("cds", "cds")])
def test_event_and_column_names_become_plain_plural_words(raw: str, words: str) -> None:
    assert plural(humanise(raw)) == words


@given(st.lists(st.floats(min_value=-1e6, max_value=1e9, allow_nan=False), min_size=1,
                max_size=200),
       st.sampled_from(["count", "sum", "mean"]), st.booleans(), st.integers(0, 2**31))
def test_coarse_bounds_are_round_increasing_and_safe_for_log1p(
        values: list[float], aggregate: str, log1p: bool, seed: int) -> None:
    column = np.abs(values) if log1p or aggregate == "count" else np.array(values)
    low, high = coarse_bounds(np.asarray(column, dtype=np.float64), aggregate, log1p=log1p,
                              seed=seed)
    assert low < high and low in GRID and high in GRID
    if log1p or aggregate == "count":
        assert low == 0.0


def test_coarse_bounds_land_near_the_tails_on_plenty_of_users() -> None:
    values = np.random.default_rng(1).lognormal(5, 1, 5_000)
    low, high = coarse_bounds(values, "sum", log1p=False, seed=2)
    assert low == 0.0
    assert np.quantile(values, 0.95) <= high <= 10 * np.quantile(values, 0.995)


def test_private_outcome_rates_are_noised_and_spent_from_the_ledger(
        bundle_training_rows: npt.NDArray[np.float64], bundle_spec: FeatureSpec,
        signing_key: Ed25519PrivateKey, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    PrivacyLedger(ledger, signing_key).set_budget("synthetic", epsilon=5.0, delta=1e-5)
    flags = np.arange(len(bundle_training_rows)) % 3 == 0
    facts = table_facts(bundle_training_rows, flags, "converted")
    options = TrainOptions(model_id="private", k=3, seed=5, k_min=5, epsilon=2.0, delta=1e-6,
                           ledger=ledger, source="synthetic")
    result = train_bundle(bundle_training_rows, bundle_spec, signing_key, options,
                          lineage={"source": "synthetic"}, facts=facts,
                          user_ids=[f"user-{i}" for i in range(len(bundle_training_rows))])
    status = PrivacyLedger(ledger, signing_key).status("synthetic")
    assert status.releases == 2  # the fit and the outcome rates
    for card in result.manifest.personas:
        assert card.outcome is not None and card.outcome.noised
        assert 0.0 <= card.outcome.rate <= 1.0
        assert "with privacy noise" in card.description


def test_the_specs_vocabulary_names_events_and_units_in_cards() -> None:
    window = Window.half_life(30)
    spec = FeatureSpec(features=(
        Feature(name="buys", event="purchase", aggregate="count", window=window, bounds=(0, 100)),
        Feature(name="spend", event="purchase", property="value", aggregate="sum", window=window,
                bounds=(0, 10_000), unit="£")),
        event_labels={"purchase": "order lines"}, period_days=30)
    rows = np.array([[1.0, 20.0]] * 10 + [[30.0, 2_000.0]] * 10)
    cards = build_cards(spec, rows, np.array([0] * 10 + [1] * 10), 2, facts=table_facts(rows))
    sentences = [t.sentence for c in cards for t in c.traits]
    assert "Order lines: 30 in the last 30 days vs 16 across all users (1.9x)." in sentences
    assert "Order line value: £2,000 in the last 30 days vs £1,010 across all users (2.0x)." in (
        sentences)
    assert all("_" not in c.name for c in cards)


def test_a_one_user_sample_still_gets_a_spec_with_nothing_dropped(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text("user_id,timestamp,event,value\nu1,1700000000,buy,1\nu1,1700086400,buy,2\n",
                    encoding="utf-8")
    spec = suggest_spec(read_event_log(path), seed=1)
    assert {f.event for f in spec.features if f.aggregate == "count"} == {"buy"}
    assert any("none was dropped" in note for note in spec.notes)
    assert spec.min_confidence == 0.05
