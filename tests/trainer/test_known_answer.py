"""Known answer: two personas on wholesale customers' log spend recover their sales channel.

The UCI Wholesale customers table (440 clients, annual spend in six product
categories, a ``Channel`` label: Horeca or Retail) is the usual check that a
clustering pipeline finds real structure: k=2 on log spend separates the
channels with an adjusted Rand index around 0.5, while raw spend does not.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from edgepersona.sdk import Feature, FeatureSpec
from edgepersona.trainer.data.events import read_feature_table
from edgepersona.trainer.engines.kmeans import PersonaKMeans

SPEND = ("Fresh", "Milk", "Grocery", "Frozen", "Detergents_Paper", "Delicassen")
MIN_ARI = 0.4
MIN_PURITY = 0.8


def spend_spec(bounds: list[tuple[float, float]], source: Literal["declared", "data"]
               ) -> FeatureSpec:
    return FeatureSpec(features=tuple(
        Feature(name=name, event="order", property="value", aggregate="sum",
                transform="log1p", bounds=bound, bounds_source=source)
        for name, bound in zip(SPEND, bounds, strict=True)))


def channels(path: Path) -> np.ndarray:
    with path.open(newline="", encoding="utf-8") as handle:
        return np.array([int(row["Channel"]) for row in csv.DictReader(handle)])


def purity(truth: np.ndarray, labels: np.ndarray) -> float:
    """Share of users whose persona's majority channel is their own."""
    hits = sum(np.bincount(truth[labels == persona]).max() for persona in np.unique(labels))
    return float(hits / len(truth))


@pytest.fixture(scope="module")
def table(wholesale_csv: Path) -> tuple[np.ndarray, np.ndarray]:
    spec = spend_spec([(0.0, 1e6)] * len(SPEND), "declared")
    features = read_feature_table(wholesale_csv, spec)
    assert features.values.shape == (440, 6) and not features.bad_rows
    truth = channels(wholesale_csv)
    assert np.bincount(truth).tolist() == [0, 298, 142]
    return features.values, truth


@pytest.mark.parametrize("bounds", ["declared-wide", "from-data"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_personas_on_log_spend_recover_the_channel(
        table: tuple[np.ndarray, np.ndarray], bounds: str, seed: int) -> None:
    rows, truth = table
    if bounds == "declared-wide":
        spec = spend_spec([(0.0, 1e6)] * len(SPEND), "declared")
    else:
        spec = spend_spec([(float(c.min()), float(c.max())) for c in rows.T], "data")
    model = PersonaKMeans(spec=spec, n_clusters=2, stability_rounds=0, random_state=seed).fit(rows)
    ari = adjusted_rand_score(truth, model.labels_)
    share = purity(truth, model.labels_)
    print(f"[known answer] wholesale k=2 log1p, bounds {bounds}, seed {seed}:"
          f" ARI {ari:.3f}, purity {share:.3f}, sizes {model.sizes_.tolist()}")
    assert ari >= MIN_ARI
    assert share >= MIN_PURITY


def test_the_log_transform_is_what_makes_the_channels_separable(
        table: tuple[np.ndarray, np.ndarray]) -> None:
    rows, truth = table
    raw = FeatureSpec(features=tuple(
        Feature(name=name, event="order", property="value", aggregate="sum", bounds=(0, 1e6))
        for name in SPEND))
    logged = spend_spec([(0.0, 1e6)] * len(SPEND), "declared")
    ari = {name: adjusted_rand_score(truth, PersonaKMeans(
        spec=spec, n_clusters=2, stability_rounds=0, random_state=0).fit(rows).labels_)
        for name, spec in (("raw", raw), ("log1p", logged))}
    print(f"[known answer] wholesale k=2: ARI raw spend {ari['raw']:.3f},"
          f" log spend {ari['log1p']:.3f}")
    assert ari["log1p"] > ari["raw"] + 0.1
