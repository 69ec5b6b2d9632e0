"""Fixtures for the end-to-end CLI tests: a small event log, a spec, keys and a bundle.

The event log has three behaviour groups (big spenders, browsers, lapsed
customers) so that three personas are clearly there to be found. Keys and the
reference bundle are made through the CLI itself, once per session.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from edgepersona.trainer.cli import main

START = datetime(2024, 1, 1, tzinfo=UTC)

SPEC = {
    "features": [
        {"name": "buys", "event": "buy", "aggregate": "count", "transform": "log1p",
         "window": {"kind": "half_life", "half_lives_days": [30]}, "bounds": [0, 200],
         "high_name": "Frequent buyers", "low_name": "Rare buyers"},
        {"name": "spend", "event": "buy", "property": "value", "aggregate": "sum",
         "transform": "log1p", "bounds": [0, 50000], "label": "spend"},
        {"name": "views", "event": "view", "aggregate": "count", "transform": "log1p",
         "bounds": [0, 500], "high_name": "Browsers"},
        {"name": "recency", "event": "*", "aggregate": "recency_days", "bounds": [0, 365],
         "high_name": "Lapsed", "low_name": "Recently active"},
    ]
}


@dataclass(frozen=True)
class Keys:
    """A signing key pair written by ``edgepersona keys generate``."""

    folder: Path
    private: Path
    public: Path


@pytest.fixture(autouse=True, scope="session")
def _one_blas_thread() -> Iterator[None]:
    # KMeans' OpenMP start-up dominates small fits on small machines; see tests/trainer.
    with threadpool_limits(limits=1):
        yield


def _events(seed: int) -> tuple[list[str], list[str]]:
    """CSV lines of an event log and the user ids in it."""
    rng = np.random.default_rng(seed)
    lines, users = [], []
    for group, count in (("spender", 30), ("browser", 30), ("lapsed", 30)):
        for i in range(count):
            user = f"{group}-{i:03d}-{rng.integers(10**6):06d}"
            users.append(user)
            if group == "spender":
                plan = [("buy", 90, 110)] * int(rng.integers(12, 20)) + [("view", 80, 120)] * 3
            elif group == "browser":
                plan = [("view", 60, 120)] * int(rng.integers(25, 40)) + [("buy", 60, 120)]
            else:
                plan = [("buy", 0, 20)] * int(rng.integers(1, 4)) + [("view", 0, 20)]
            for event, first, last in plan:
                when = START + timedelta(days=float(rng.uniform(first, last)))
                value = (f"{rng.lognormal(5 if group == 'spender' else 2, 0.4):.2f}"
                         if event == "buy" else "")
                lines.append(f"{user},{when.strftime('%Y-%m-%dT%H:%M:%SZ')},{event},{value},"
                             f"sku{int(rng.integers(0, 15))}")
    order = rng.permutation(len(lines))
    return [lines[i] for i in order], users


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def event_log(data_dir: Path) -> Path:
    lines, _ = _events(seed=42)
    path = data_dir / "events.csv"
    path.write_text("\n".join(["user_id,timestamp,event,value,sku", *lines]) + "\n",
                    encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def user_ids() -> list[str]:
    return _events(seed=42)[1]


@pytest.fixture(scope="session")
def spec_dict() -> dict[str, object]:
    copy: dict[str, object] = json.loads(json.dumps(SPEC))
    return copy


@pytest.fixture(scope="session")
def spec_file(data_dir: Path) -> Path:
    path = data_dir / "spec.json"
    path.write_text(json.dumps(SPEC, indent=2), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    folder = tmp_path_factory.mktemp("keys") / "signing"
    assert main(["keys", "generate", "--out", str(folder)]) == 0
    return Keys(folder, folder / "signing_key.pem", folder / "signing_key.pub.pem")


@pytest.fixture(scope="session")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    folder = tmp_path_factory.mktemp("keys") / "other"
    assert main(["keys", "generate", "--out", str(folder)]) == 0
    return Keys(folder, folder / "signing_key.pem", folder / "signing_key.pub.pem")


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory, event_log: Path, spec_file: Path,
           keys: Keys) -> Path:
    """A bundle trained with the declared spec, k=3, plus its .zip twin."""
    out = tmp_path_factory.mktemp("bundles") / "reference"
    code = main(["train", "--events", str(event_log), "--spec", str(spec_file),
                 "--key", str(keys.folder), "--out", str(out), "--k", "3", "--seed", "1",
                 "--model-id", "shop", "--zip"])
    assert code == 0
    return out
