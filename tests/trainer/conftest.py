"""Fixtures for the trainer tests: bundled datasets, one thread for scikit-learn.

scikit-learn's KMeans runs OpenMP threads; on small CI machines their start-up
cost dominates (a 600-row fit takes ~0.5 s with the default pool, ~20 ms with
one thread). Results do not depend on the thread count beyond float rounding,
so the trainer tests run with one thread to stay fast.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
from threadpoolctl import threadpool_limits

from edgepersona.sdk import FeatureSpec, load_spec_json
from edgepersona.trainer.data.events import EventLog, read_event_log

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def bundled_dataset(name: str) -> Path:
    """Path of a file shipped in ``edgepersona.trainer.datasets``."""
    return Path(str(resources.files("edgepersona.trainer.datasets").joinpath(name)))


@pytest.fixture(autouse=True, scope="session")
def _one_blas_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="session")
def retail_log() -> EventLog:
    """The bundled UCI Online Retail event log (1,500 customers)."""
    return read_event_log(bundled_dataset("retail_events.csv.gz"))


@pytest.fixture(scope="session")
def retail_spec() -> FeatureSpec:
    """The hand-written spec that ships beside the retail log."""
    return load_spec_json(bundled_dataset("retail_spec.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def wholesale_csv() -> Path:
    """The wholesale customers table: the packaged copy, else the shared data folder."""
    packaged = bundled_dataset("wholesale_customers.csv")
    if packaged.is_file():
        return packaged
    fallback = SHARED_DATA / "wholesale_customers_data.csv"
    if not fallback.is_file():
        pytest.fail("wholesale customers data is neither packaged nor in shared/data")
    return fallback


@pytest.fixture(params=["file", "sqlite", "postgres"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A budget ledger location of each kind: a file, SQLite, PostgreSQL (skips without a server)."""
    if request.param == "file":
        yield str(tmp_path / "budget.ledger")
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'budget.db'}"
    else:
        sys.path.append(str(Path(__file__).resolve().parents[1] / "collector"))
        from postgres_testkit import fresh_schema

        with fresh_schema() as url:
            yield url
