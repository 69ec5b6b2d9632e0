"""Budgets follow people: keyed bottom-k sketches of user ids and the "same people" rule."""

from __future__ import annotations

import math
import secrets
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings, strategies as st

from edgepersona.sdk import InputError
from edgepersona.trainer.errors import BudgetExceededError
from edgepersona.trainer.privacy.ledger import PrivacyLedger
from edgepersona.trainer.privacy.source_identity import (
    SAME_PEOPLE,
    SKETCH_SIZE,
    SourceSketch,
    load_source_secret,
    same_people,
    sketch_ids,
)

SECRET = bytes(range(32))
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PEOPLE = [f"customer-{i:06d}" for i in range(20_000)]
ID_SETS = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=60)


@given(ID_SETS, st.randoms(use_true_random=False))
def test_order_and_repeats_do_not_change_a_sketch(ids: list[str], rng: object) -> None:
    shuffled = ids * 2
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    a, b = sketch_ids(ids, SECRET), sketch_ids(shuffled, SECRET)
    assert np.array_equal(a.hashes, b.hashes) and a.full == b.full
    decoded = SourceSketch.decode(a.encode())
    assert np.array_equal(decoded.hashes, a.hashes) and decoded.full == a.full


@settings(max_examples=30)
@given(st.integers(0, 3000), st.integers(0, 3000), st.integers(0, 3000))
def test_merging_sketches_is_the_sketch_of_the_union(start_a: int, start_b: int, size: int) -> None:
    a = PEOPLE[start_a:start_a + size + 1]
    b = PEOPLE[start_b:start_b + 2 * size + 1]
    merged = sketch_ids(a, SECRET).merge(sketch_ids(b, SECRET))
    union = sketch_ids(sorted(set(a) | set(b)), SECRET)
    assert np.array_equal(merged.hashes, union.hashes) and merged.full == union.full


@pytest.mark.parametrize(("first", "second", "same"), [
    (slice(0, 20_000), slice(0, 20_000), True),       # a renamed copy
    (slice(0, 20_000), slice(5_000, 9_000), True),    # a 20 % subset
    (slice(5_000, 9_000), slice(0, 20_000), True),    # a superset of earlier people
    (slice(0, 10_000), slice(10_000, 20_000), False), # disjoint
    (slice(0, 10_000), slice(9_700, 20_000), False),  # 3 % overlap: separate budgets
    (slice(0, 10_000), slice(8_000, 18_000), True),   # 20 % overlap
])
def test_the_same_people_rule(first: slice, second: slice, same: bool) -> None:
    a, b = sketch_ids(PEOPLE[first], SECRET), sketch_ids(PEOPLE[second], SECRET)
    assert same_people(a, b) is same
    assert same_people(b, a) is same


def test_containment_is_estimated_within_a_few_percent() -> None:
    whole = sketch_ids(PEOPLE, SECRET)
    assert whole.full and len(whole.hashes) == SKETCH_SIZE
    for share in (0.1, 0.3, 0.6):
        part = PEOPLE[:int(len(PEOPLE) * share)]
        mixed = sketch_ids(part + [f"new-{i}" for i in range(len(part))], SECRET)
        assert mixed.containment_in(whole) == pytest.approx(0.5, abs=0.06)
        assert sketch_ids(part, SECRET).containment_in(whole) == 1.0
        assert whole.containment_in(sketch_ids(part, SECRET)) == pytest.approx(share, abs=0.05)
    assert SAME_PEOPLE == 0.10


def test_another_secret_gives_unrelated_hashes_and_no_id_is_kept() -> None:
    a, b = sketch_ids(PEOPLE[:100], SECRET), sketch_ids(PEOPLE[:100], bytes(32))
    assert not np.isin(a.hashes, b.hashes).any() and not same_people(a, b)
    assert "customer" not in a.encode() and "customer" not in a.label(SECRET)
    assert a.label(SECRET).startswith("source-") and a.label(SECRET) != a.label(bytes(32))


def test_the_secret_is_created_once_private_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "ledger.source-key"
    first = load_source_secret(path)
    assert load_source_secret(path) == first and len(first) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_bytes(secrets.token_bytes(5))
    with pytest.raises(InputError, match="32 bytes"):
        load_source_secret(path)
    with pytest.raises(InputError):
        sketch_ids([], SECRET)
    with pytest.raises(InputError, match="malformed"):
        SourceSketch.decode("x:AAAA")


def test_the_ledger_charges_every_budget_the_people_have(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "budget.ledger", KEY)
    everyone = ledger.sketch(PEOPLE)
    ledger.set_budget("crm", epsilon=1.0, delta=1e-5, sketch=everyone)
    with pytest.raises(InputError, match="already have a budget under source 'crm'"):
        ledger.set_budget("crm-copy", epsilon=9.0, delta=1e-5, sketch=ledger.sketch(PEOPLE[::-1]))
    subset = ledger.sketch(PEOPLE[:4_000])
    assert ledger.resolve(subset, "any-name") == "crm"
    ledger.spend("crm", epsilon=1.0, delta=1e-6, sketch=subset)
    with pytest.raises(BudgetExceededError, match="'crm'"):
        ledger.check("crm", epsilon=1.0, delta=1e-6, sketch=ledger.sketch(PEOPLE[2_000:]))
    strangers = ledger.sketch([f"stranger-{i}" for i in range(500)])
    label = ledger.resolve(strangers)
    assert label.startswith("source-") and label != "crm"
    ledger.set_budget(label, epsilon=1.0, delta=1e-5, sketch=strangers)
    ledger.spend(label, epsilon=1.0, delta=1e-6, sketch=strangers)
    # Data holding both groups is charged to both budgets, whatever name it is spent under.
    both = ledger.sketch(PEOPLE[:1_000] + [f"stranger-{i}" for i in range(500)])
    ledger.spend(label, epsilon=0.2, delta=1e-6, sketch=both)
    assert ledger.status("crm").releases == 2 and ledger.status(label).releases == 2
    with pytest.raises(BudgetExceededError):
        ledger.check(label, epsilon=0.9, delta=1e-6, sketch=both)


GROUPS = {name: [f"{name}-{i}" for i in range(300)] for name in ("north", "south", "east")}
RELEASE = st.tuples(
    st.sets(st.sampled_from(sorted(GROUPS)), min_size=1),  # whose data it is
    st.floats(0.3, 1.0),                                    # share of each group's users in it
    st.sampled_from(["crm.csv", "copy.csv", "other-name", None]),  # the name it arrives under
    st.floats(0.2, 1.0),                                    # its ε
    st.randoms(use_true_random=False))


@settings(max_examples=25, deadline=None)
@given(st.lists(RELEASE, min_size=1, max_size=8))
def test_no_name_lets_the_same_people_lose_more_than_their_budget(
        releases: list[tuple[set[str], float, str | None, float, object]]) -> None:
    # Every release goes the way the CLI sends it (resolve, a budget of ε=1 on first use,
    # spend); whatever names are used, each group's accepted releases compose within ε=1.
    import tempfile

    from edgepersona.trainer.privacy.accounting import gaussian_epsilon, gaussian_mu

    spent: dict[str, list[float]] = {name: [] for name in GROUPS}
    with tempfile.TemporaryDirectory() as folder:
        ledger = PrivacyLedger(Path(folder) / "budget.ledger", KEY)
        for groups, share, label, epsilon, rng in releases:
            ids = [user for g in sorted(groups) for user in GROUPS[g][:int(300 * share)]]
            rng.shuffle(ids)  # type: ignore[attr-defined]
            sketch = ledger.sketch(ids)
            source = ledger.resolve(sketch, label)
            if not ledger.status(source).has_budget:
                ledger.set_budget(source, epsilon=1.0, delta=1e-5, sketch=sketch)
            try:
                ledger.spend(source, epsilon=epsilon, delta=1e-6, sketch=sketch)
            except BudgetExceededError:
                continue
            for g in groups:
                spent[g].append(epsilon)
    for g, epsilons in spent.items():
        mu = math.sqrt(sum(gaussian_mu(e, 1e-6) ** 2 for e in epsilons))
        assert gaussian_epsilon(mu, 1e-5) <= 1.0 + 1e-9, (g, epsilons)
