"""The Dask engine: same seed and data give the local engine's model; the CLI on partitioned files.

One 2-worker ``LocalCluster`` (threads, not processes, for speed) serves the module.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("distributed")

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from edgepersona.sdk import Feature, FeatureSpec, InputError, PersonaRuntime
from edgepersona.trainer.cli import main
from edgepersona.trainer.data.dask_features import read_event_rows, read_table_rows
from edgepersona.trainer.data.events import read_event_log, read_feature_table
from edgepersona.trainer.data.features import compute_features
from edgepersona.trainer.engines.dask_engine import DaskBlocks, dask_client
from edgepersona.trainer.engines.kmeans import PersonaKMeans, preprocess
from edgepersona.trainer.engines.lloyd import nearest, partial_stats
from edgepersona.trainer.engines.local import LocalBlocks

SEED = 11


def bundled_dataset(name: str) -> Path:
    return Path(str(resources.files("edgepersona.trainer.datasets").joinpath(name)))


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with dask_client(workers=2, processes=False) as running:
        yield running


def spec6() -> FeatureSpec:
    return FeatureSpec(features=tuple(
        Feature(name=f"f{j}", event="e", property="value", aggregate="sum", bounds=(-1e3, 1e3),
                weight=1.0 + j, transform="none") for j in range(6)))


def blob_rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-50, 50, size=(5, 6))
    return centres[rng.integers(0, 5, size=n)] + rng.normal(0, 4.0, size=(n, 6))


def test_map_reduce_on_dask_blocks_equals_local(client: Any) -> None:
    rows = blob_rows(10_000, seed=1)
    centroids = rows[:5].copy()
    local = LocalBlocks(rows).map_reduce(partial(partial_stats, centroids=centroids))
    remote = DaskBlocks(rows, chunk_rows=999).map_reduce(partial(partial_stats, centroids=centroids))
    np.testing.assert_array_equal(remote.counts, local.counts)
    np.testing.assert_allclose(remote.sums, local.sums, rtol=1e-13)
    assert remote.cost == pytest.approx(local.cost, rel=1e-13)
    index = np.array([9_999, 0, 4_321])
    np.testing.assert_array_equal(DaskBlocks(rows, chunk_rows=999).take(index), rows[index])


def test_same_seed_and_data_give_the_local_model(client: Any) -> None:
    """Centroids agree to 1e-12 and every training row gets the same label.

    Which rows: all 20,000 training rows (``labels_`` of both fits). Why this is
    no accident: each row's two nearest centroids are more than ``min_gap`` apart
    in squared distance, far more than the engines' centroids differ, so no row
    can change sides; the test checks both facts along with the labels.
    """
    rows = blob_rows(20_000, seed=2)

    def fit(data: Any) -> PersonaKMeans:
        return PersonaKMeans(spec=spec6(), k_range=(3, 6), stability_rounds=2, random_state=SEED).fit(data)

    local, remote = fit(rows), fit(DaskBlocks(rows, chunk_rows=3_001))
    ours, theirs = np.asarray(local.params_.centroids), np.asarray(remote.params_.centroids)
    assert local.k_ == remote.k_ and local.merged_ == remote.merged_
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-12)
    np.testing.assert_allclose(remote.params_.center, local.params_.center, rtol=1e-13)
    np.testing.assert_allclose(remote.params_.scale, local.params_.scale, rtol=1e-13)
    np.testing.assert_array_equal(remote.labels_, local.labels_)
    np.testing.assert_array_equal(remote.sizes_, local.sizes_)
    assert remote.metrics_.silhouette == pytest.approx(local.metrics_.silhouette, abs=1e-9)
    assert remote.metrics_.stability_ari == pytest.approx(local.metrics_.stability_ari, abs=1e-9)
    transformed, mean, _ = preprocess(local.spec, rows)
    z = (transformed - mean) * np.asarray(local.params_.scale)
    min_gap = nearest(z, ours)[2].min()
    assert min_gap > 1e6 * np.abs(theirs - ours).max()
    np.testing.assert_array_equal(local.predict(rows), remote.labels_)


def test_k_min_merges_the_same_persona_on_dask(client: Any) -> None:
    rng = np.random.default_rng(3)
    rows = np.vstack([rng.normal(0, 1, (300, 6)), rng.normal(20, 1, (300, 6)),
                      rng.normal(-40, 1, (4, 6))])
    local = PersonaKMeans(spec=spec6(), n_clusters=3, k_min=10, stability_rounds=0, random_state=4).fit(rows)
    remote = PersonaKMeans(spec=spec6(), n_clusters=3, k_min=10, stability_rounds=0,
                           random_state=4).fit(DaskBlocks(rows, chunk_rows=101))
    assert local.k_ == remote.k_ == 2 and len(remote.merged_) == 1
    np.testing.assert_array_equal(remote.labels_, local.labels_)


def test_bad_cells_are_refused_on_dask(client: Any) -> None:
    rows = blob_rows(100, seed=5)
    rows[17, 2] = np.inf
    with pytest.raises(InputError, match="finite"):
        PersonaKMeans(spec=spec6(), n_clusters=2, k_min=1,
                      random_state=0).fit(DaskBlocks(rows, chunk_rows=30))


# --- partitioned files and the CLI -----------------------------------------------------

@pytest.fixture(scope="module")
def partitioned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 400 retail customers' events, plus bad rows, cut into 3 Parquet files by row
    (so most customers' events are spread over several files), and the same as one file."""
    table = pacsv.read_csv(bundled_dataset("retail_events.csv.gz"))
    users = np.unique(table.column("user_id").to_numpy())[:400]
    keep = np.isin(table.column("user_id").to_numpy(), users)
    events = table.filter(pa.array(keep)).to_pandas()
    broken = events.iloc[:3].copy()
    broken["event"] = ["", "", ""]  # missing event names: counted, not fitted
    events = events.sample(frac=1.0, random_state=0)  # shuffle rows across files
    root = tmp_path_factory.mktemp("partitioned")
    (root / "events").mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(events)), 3)):
        frame = events.iloc[part] if i else pd.concat([events.iloc[part], broken])
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False),
                       root / "events" / f"part-{i}.parquet")
    whole = pa.concat_tables([pq.read_table(p) for p in sorted((root / "events").iterdir())])
    pq.write_table(whole, root / "whole.parquet")
    (root / "csv").mkdir()
    for i, part in enumerate(np.array_split(np.arange(whole.num_rows), 2)):
        pacsv.write_csv(whole.take(pa.array(part)), root / "csv" / f"part-{i}.csv")
    spec_text = bundled_dataset("retail_spec.json").read_text(encoding="utf-8")
    (root / "spec.json").write_text(spec_text, encoding="utf-8")
    return root


def sorted_rows(rows: np.ndarray) -> np.ndarray:
    return rows[np.lexsort(rows.T[::-1])]


@pytest.mark.parametrize("source", ["events", "csv/*.csv"])
def test_features_from_partitions_equal_the_local_reader(client: Any, partitioned: Path, source: str,
                                                        retail_spec: FeatureSpec) -> None:
    log = read_event_log(partitioned / "whole.parquet")
    expected = compute_features(log, retail_spec)
    read = read_event_rows(str(partitioned / source), retail_spec)
    assert read.users == log.n_users == 400
    assert read.bad_rows == log.bad_rows and read.bad_rows["missing event name"] == 3
    got = read.rows.to_numpy()
    np.testing.assert_allclose(sorted_rows(got), sorted_rows(expected), rtol=1e-12, atol=1e-12)


def test_tables_from_partitions_equal_the_local_reader(client: Any, tmp_path: Path,
                                                      retail_spec: FeatureSpec) -> None:
    rows = np.abs(blob_rows(90, seed=6))[:, :len(retail_spec.features)]
    names = list(retail_spec.names)
    for i, part in enumerate(np.array_split(rows, 3)):
        pacsv.write_csv(pa.table({n: part[:, j] for j, n in enumerate(names)}), tmp_path / f"t{i}.csv")
    read = read_table_rows(tmp_path / "t*.csv", retail_spec)
    local = np.vstack([read_feature_table(tmp_path / f"t{i}.csv", retail_spec).values for i in range(3)])
    np.testing.assert_array_equal(read.rows.to_numpy(), local)


def test_cli_trains_a_verified_bundle_on_the_dask_engine(client: Any, partitioned: Path,
                                                          tmp_path: Path) -> None:
    assert main(["keys", "generate", "--out", str(tmp_path / "keys")]) == 0
    bundle = tmp_path / "bundle"
    code = main(["train", "--events", str(partitioned / "events"), "--spec",
                 str(partitioned / "spec.json"), "--key", str(tmp_path / "keys"), "--out", str(bundle),
                 "--k", "3", "--seed", "5", "--engine", "dask",
                 "--scheduler", client.scheduler.address])
    assert code == 0
    public = next((tmp_path / "keys").glob("*.pub.pem")).read_bytes()
    runtime = PersonaRuntime.open(bundle, trusted_keys=[public])
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["metrics"]["n_users"] == 400 and len(runtime.manifest.personas) == 3
    assert manifest["metrics"]["bad_rows"] == {"missing event name": 3}
    assert sum(p.share for p in runtime.manifest.personas) == pytest.approx(1.0)


def test_cli_dask_engine_needs_a_spec(partitioned: Path, tmp_path: Path) -> None:
    assert main(["keys", "generate", "--out", str(tmp_path / "keys")]) == 0
    code = main(["train", "--events", str(partitioned / "events"), "--key", str(tmp_path / "keys"),
                 "--out", str(tmp_path / "b"), "--engine", "dask"])
    assert code != 0
