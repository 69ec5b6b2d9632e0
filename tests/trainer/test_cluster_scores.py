"""The fit's own silhouette and Davies-Bouldin scores agree with scikit-learn's."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import davies_bouldin_score, silhouette_score

from edgepersona.trainer.engines.cluster_scores import davies_bouldin, silhouette


def labelled(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, size=n)
    return rng.normal(size=(n, 5)) + labels[:, None] * 0.7, labels


@pytest.mark.parametrize(("n", "k"), [(6, 2), (37, 3), (600, 4), (2000, 8)])
def test_scores_match_scikit_learn(n: int, k: int) -> None:
    z, labels = labelled(n, k, seed=n)
    labels[0] = k  # a cluster of one row: its silhouette is 0 by convention
    assert silhouette(z, labels) == pytest.approx(silhouette_score(z, labels), abs=1e-12)
    # scikit-learn's member-to-centroid distances use |a|^2 - 2ab + |b|^2 (ours subtract first)
    assert davies_bouldin(z, labels) == pytest.approx(davies_bouldin_score(z, labels), rel=1e-7)


def test_scores_of_a_single_cluster_are_undefined() -> None:
    z, _ = labelled(10, 2, seed=1)
    assert silhouette(z, np.zeros(10, dtype=np.int64)) == -1.0
    assert davies_bouldin(z, np.zeros(10, dtype=np.int64)) is None


def test_duplicate_rows_score_like_scikit_learn() -> None:
    z = np.repeat(np.array([[0.0, 0.0], [3.0, 4.0], [3.0, 4.0]]), 4, axis=0)
    labels = np.repeat(np.array([0, 1, 1]), 4)
    assert silhouette(z, labels) == pytest.approx(silhouette_score(z, labels), abs=1e-12)
