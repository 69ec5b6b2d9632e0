"""Fixtures of the fault campaigns: the test bundles as files, collector keys, a bundles folder.

Run them short (the default, part of the suite) or long::

    python -m pytest tests/campaigns                                # short, < 90 s on 2 cores
    EDGEPERSONA_CAMPAIGN=long python -m pytest tests/campaigns -s   # long (see each module)

``-s`` shows the ``[campaign]`` lines with the figures of each campaign.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from campaign_testkit import BundleFiles, CollectorFiles

from edgepersona.trainer.release.export import zip_bundle
from edgepersona.trainer.release.keys import generate_collector_key
from edgepersona.trainer.release.train import TrainResult

ROOT = Path(__file__).resolve().parents[2]
for shared in (ROOT, ROOT / "tests" / "collector"):  # benchmarks.load, postgres_testkit
    if str(shared) not in sys.path:
        sys.path.append(str(shared))


@pytest.fixture(scope="session")
def bundle_archives(tmp_path_factory: pytest.TempPathFactory, trained: TrainResult,
                    trained_v2: TrainResult, public_key: bytes) -> BundleFiles:
    folder = tmp_path_factory.mktemp("campaign-bundles")
    (folder / "trusted.pub.pem").write_bytes(public_key)
    return BundleFiles(zip_bundle(trained.files, folder / "v1.zip"),
                       zip_bundle(trained_v2.files, folder / "v2.zip"), folder / "trusted.pub.pem",
                       trained.manifest.model_id,
                       {1: len(trained.manifest.personas), 2: len(trained_v2.manifest.personas)})


@pytest.fixture(scope="session")
def collector_files(tmp_path_factory: pytest.TempPathFactory, bundle_archives: BundleFiles,
                    trained: TrainResult, trained_v2: TrainResult) -> CollectorFiles:
    root = tmp_path_factory.mktemp("campaign-collector")
    private, public = generate_collector_key(root / "keys")
    bundles = root / "bundles"
    bundles.mkdir()
    for result in (trained, trained_v2):
        zip_bundle(result.files, bundles / f"{result.manifest.model_id}-v{result.manifest.version}.zip")
    return CollectorFiles(root / "keys", private.read_bytes(), public, bundles)
