"""The Lloyd core: hand-computed statistics, exact map-reduce over any block split."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from edgepersona.trainer.engines.lloyd import (
    ClusterStats,
    Moments,
    batch_stats,
    column_moments,
    kmeans_plusplus_init,
    lloyd,
    lloyd_batch,
    nearest,
    partial_stats,
    sample_index,
)
from edgepersona.trainer.engines.local import LocalBlocks

# A=(0,0), B=(0,1), C=(10,0), D=(10,1). With centroids (0,0.5) and (10,0.5) every point
# is 0.5 from its centroid: counts (2,2), sums (0,1) and (20,1), cost 4 * 0.25 = 1.
SQUARE = np.array([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0]])
MIDS = np.array([[0.0, 0.5], [10.0, 0.5]])


def blob_rows(n: int, seed: int, d: int = 5, k: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 4.0, size=(k, d))
    return centres[rng.integers(0, k, size=n)] + rng.normal(size=(n, d))


def brute_force(z: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """All squared distances the slow way, (n, k, d) and all: only for small tests."""
    return np.asarray(((z[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2))


def test_partial_stats_by_hand() -> None:
    stats = partial_stats(SQUARE, MIDS)
    assert stats.counts.tolist() == [2.0, 2.0]
    assert stats.sums.tolist() == [[0.0, 1.0], [20.0, 1.0]]
    assert stats.cost == pytest.approx(1.0, abs=1e-12)


def test_stats_add_up_across_any_split() -> None:
    whole = partial_stats(SQUARE, MIDS)
    for cut in range(5):
        parts = partial_stats(SQUARE[:cut], MIDS) + partial_stats(SQUARE[cut:], MIDS)
        np.testing.assert_array_equal(parts.counts, whole.counts)
        np.testing.assert_allclose(parts.sums, whole.sums, atol=1e-12)
        assert parts.cost == pytest.approx(whole.cost, abs=1e-12)


def test_a_tie_goes_to_the_lowest_index() -> None:
    point = np.array([[5.0, 0.5]])  # exactly 5 from both centroids
    assert nearest(point, MIDS)[0].tolist() == [0]
    assert nearest(point, MIDS[::-1].copy())[0].tolist() == [0]
    stats = partial_stats(np.vstack([point, point]), MIDS)
    assert stats.counts.tolist() == [2.0, 0.0]


def test_nearest_matches_brute_force_and_never_goes_negative() -> None:
    z = blob_rows(5000, seed=1)
    centroids = z[:6] + 1e-3
    labels, squared, gap = nearest(z, centroids)
    full = brute_force(z, centroids)
    ordered = np.sort(full, axis=1)
    np.testing.assert_array_equal(labels, np.argmin(full, axis=1))
    np.testing.assert_allclose(squared, ordered[:, 0], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(gap, ordered[:, 1] - ordered[:, 0], rtol=1e-9, atol=1e-9)
    assert (squared >= 0).all()
    # a row sitting on a centroid: rounding of |z|^2 - 2 z.c + |c|^2 is clamped at 0
    on_top = nearest(centroids[:1] * 1e4, centroids * 1e4)[1]
    assert on_top[0] >= 0.0


def test_lloyd_by_hand_converges_to_the_x_split() -> None:
    result = lloyd(partial(map_over, SQUARE), np.array([[0.0, 0.0], [10.0, 1.0]]))
    np.testing.assert_allclose(result.centroids, MIDS, atol=1e-12)
    assert result.converged and result.n_iter == 2  # one move, then no move
    assert result.counts.tolist() == [2.0, 2.0]
    assert result.cost == pytest.approx(1.0, abs=1e-12)


def map_over(rows: np.ndarray, fn):  # type: ignore[no-untyped-def]
    """The simplest map-reduce: one block."""
    return fn(rows)


def test_returned_cost_is_exact_for_the_returned_centroids() -> None:
    z = blob_rows(3000, seed=2)
    init = z[:4].copy()
    for iterations in (1, 2, 3):
        result = lloyd(LocalBlocks(z).map_reduce, init, max_iter=iterations)
        previous = lloyd(LocalBlocks(z).map_reduce, init, max_iter=iterations - 1).centroids \
            if iterations > 1 else init
        labels = nearest(z, previous)[0]
        direct = ((z - result.centroids[labels]) ** 2).sum()
        assert result.cost == pytest.approx(direct, rel=1e-10)


@pytest.mark.parametrize("block_rows", [1, 7, 1000, 4097, 9000])
@pytest.mark.parametrize("threads", [1, 3])
def test_any_block_split_gives_the_same_centroids(block_rows: int, threads: int) -> None:
    z = blob_rows(9000 if block_rows > 1 else 1500, seed=3)  # one-row blocks: fewer rows, same point
    init = kmeans_plusplus_init(z[:1000], 4, seed=5)
    reference = lloyd(partial(map_over, z), init, tol=0.0)
    blocks = LocalBlocks(z, block_rows=block_rows, threads=threads)
    result = lloyd(blocks.map_reduce, init, tol=0.0)
    np.testing.assert_allclose(result.centroids, reference.centroids, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(result.counts, reference.counts)
    assert result.n_iter == reference.n_iter
    np.testing.assert_array_equal(nearest(z, result.centroids)[0], nearest(z, reference.centroids)[0])


def test_results_do_not_depend_on_the_thread_count() -> None:
    z = blob_rows(50_000, seed=4)
    init = z[:5].copy()
    one = lloyd(LocalBlocks(z, block_rows=5000, threads=1).map_reduce, init)
    many = lloyd(LocalBlocks(z, block_rows=5000, threads=4).map_reduce, init)
    np.testing.assert_array_equal(one.centroids, many.centroids)  # bit for bit: same block order
    assert one.cost == many.cost


def test_runs_in_lockstep_equal_separate_runs() -> None:
    z = blob_rows(8000, seed=5)
    inits = [z[:3].copy(), z[10:15].copy(), z[100:104].copy()]
    together = lloyd_batch(LocalBlocks(z).map_reduce, inits)
    for init, result in zip(inits, together, strict=True):
        alone = lloyd(LocalBlocks(z).map_reduce, init)
        np.testing.assert_array_equal(result.centroids, alone.centroids)
        assert (result.n_iter, result.cost) == (alone.n_iter, alone.cost)
    stats = batch_stats(z, inits)
    for init, item in zip(inits, stats.items, strict=True):
        alone_stats = partial_stats(z, init)
        np.testing.assert_array_equal(item.counts, alone_stats.counts)
        np.testing.assert_array_equal(item.sums, alone_stats.sums)
        assert item.cost == alone_stats.cost


def test_an_emptied_centroid_stays_put() -> None:
    far = np.array([[0.0, 0.5], [10.0, 0.5], [500.0, 500.0]])
    result = lloyd(partial(map_over, SQUARE), far)
    np.testing.assert_array_equal(result.centroids[2], far[2])
    assert result.counts.tolist() == [2.0, 2.0, 0.0]


def test_lloyd_rejects_zero_iterations() -> None:
    with pytest.raises(ValueError, match="max_iter"):
        lloyd(partial(map_over, SQUARE), MIDS, max_iter=0)


@pytest.mark.parametrize("cuts", [[], [1], [3, 4, 999], [500, 501, 502]])
def test_moments_merge_like_one_pass(cuts: list[int]) -> None:
    rows = blob_rows(1000, seed=6) * 1e3 + 5e4  # a large offset: naive sums of squares would cancel
    parts = np.split(rows, cuts)
    merged = Moments(0, np.zeros(5), np.zeros(5))
    for part in parts:
        merged = merged + column_moments(part)
    assert merged.n == 1000
    np.testing.assert_allclose(merged.mean, rows.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(merged.std, rows.std(axis=0), rtol=1e-10)


def test_cluster_stats_add_fieldwise() -> None:
    a = ClusterStats(np.array([1.0, 2.0]), np.ones((2, 3)), 1.5)
    b = ClusterStats(np.array([3.0, 0.0]), np.full((2, 3), 2.0), 0.5)
    total = a + b
    assert total.counts.tolist() == [4.0, 2.0] and total.sums.tolist() == [[3.0] * 3] * 2
    assert total.cost == 2.0


def test_samples_and_seeding_are_reproducible() -> None:
    first = sample_index(10_000, 50, np.random.default_rng(9))
    again = sample_index(10_000, 50, np.random.default_rng(9))
    np.testing.assert_array_equal(first, again)
    assert (np.diff(first) > 0).all() and len(first) == 50
    np.testing.assert_array_equal(sample_index(7, 50, np.random.default_rng(9)), np.arange(7))
    z = blob_rows(500, seed=7)
    np.testing.assert_array_equal(kmeans_plusplus_init(z, 4, 3), kmeans_plusplus_init(z, 4, 3))


def test_local_blocks_keep_row_order() -> None:
    rows = np.arange(30.0).reshape(15, 2)
    blocks = LocalBlocks(rows, block_rows=4, threads=2)
    assert blocks.shape == (15, 2) and len(blocks) == 15
    np.testing.assert_array_equal(blocks.map_blocks(lambda b: b * 2).rows, rows * 2)
    labels, total = blocks.map_collect(lambda b: (b[:, 0].astype(np.int64), partial_stats(b, MIDS)))
    np.testing.assert_array_equal(labels, rows[:, 0].astype(np.int64))
    assert total.counts.sum() == 15
    np.testing.assert_array_equal(blocks.take(np.array([14, 0, 5])), rows[[14, 0, 5]])
