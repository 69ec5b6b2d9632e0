"""The privacy ledger in SQLite and PostgreSQL: same chain, append-only, monotonic.

PostgreSQL runs when ``EDGEPERSONA_TEST_POSTGRES_URL`` is set (each test in a
fresh schema); otherwise those cases skip (and fail in CI).
"""

from __future__ import annotations

import sqlite3
import sys
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgepersona.sdk import FeatureSpec, ModelIntegrityError
from edgepersona.trainer.errors import BudgetExceededError
from edgepersona.trainer.privacy.audit import build_audit
from edgepersona.trainer.privacy.ledger import PrivacyLedger, read_ledger
from edgepersona.trainer.privacy.ledger_audit import audit_releases
from edgepersona.trainer.release.export import write_bundle
from edgepersona.trainer.release.train import TrainOptions, train_bundle

sys.path.append(str(Path(__file__).resolve().parents[1] / "collector"))
from postgres_testkit import fresh_schema, run_sql

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
DELTA = 1e-6



def raw_sql(where: str, statement: str) -> None:
    """Run one statement directly against the database, as someone with its password could."""
    if where.startswith("sqlite:///"):
        with sqlite3.connect(where[len("sqlite:///"):]) as conn:
            conn.execute(statement)
    else:
        run_sql(where, statement)


def open_ledger(where: str, tmp_path: Path) -> PrivacyLedger:
    return PrivacyLedger(where, KEY, secret=tmp_path / "source.key")


def test_every_form_keeps_the_same_signed_chain_and_budget(where: str, tmp_path: Path) -> None:
    ledger = open_ledger(where, tmp_path)
    assert ledger.head[0] == -1 and ledger.ledger_id is None
    people = ledger.sketch([f"u{i}" for i in range(300)])
    ledger.set_budget("crm", epsilon=1.5, delta=1e-5, sketch=people)
    head = ledger.spend("crm", epsilon=1.0, delta=DELTA, note="v1", sketch=people)
    assert head == ledger.head and head[0] == 1
    ledger.verify_head(*head)
    reopened = open_ledger(where, tmp_path)
    assert reopened.ledger_id == ledger.ledger_id and reopened.status("crm").releases == 1
    entries, statuses = read_ledger(where, KEY.public_key())
    assert [e["seq"] for e in entries] == [0, 1] and statuses["crm"].releases == 1
    ledger.spend("crm", epsilon=1.0, delta=DELTA, note="v2", sketch=people)
    with pytest.raises(BudgetExceededError):
        ledger.spend("crm", epsilon=1.0, delta=DELTA, note="v3", sketch=people)
    assert ledger.head[0] == 2


@pytest.mark.parametrize("statement", [
    "UPDATE privacy_ledger SET line = 'x' WHERE seq = 0",
    "DELETE FROM privacy_ledger WHERE seq = 1",
    "INSERT INTO privacy_ledger (seq, line) VALUES (5, 'x')",
    "INSERT INTO privacy_ledger (seq, line) VALUES (1, 'x')",
])
def test_sqlite_refuses_anything_but_the_next_append(statement: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'budget.db'}"
    ledger = open_ledger(url, tmp_path)
    ledger.set_budget("crm", epsilon=2.0, delta=1e-5)
    ledger.spend("crm", epsilon=1.0, delta=DELTA)
    with pytest.raises(sqlite3.DatabaseError):
        raw_sql(url, statement)
    assert open_ledger(url, tmp_path).head == ledger.head


@pytest.mark.parametrize("statement", [
    "UPDATE privacy_ledger SET line = 'x' WHERE seq = 0",
    "DELETE FROM privacy_ledger WHERE seq = 1",
    "TRUNCATE privacy_ledger",
    "INSERT INTO privacy_ledger (seq, line) VALUES (5, 'x')",
])
def test_postgres_refuses_anything_but_the_next_append(statement: str, tmp_path: Path) -> None:
    with fresh_schema() as url:
        ledger = open_ledger(url, tmp_path)
        ledger.set_budget("crm", epsilon=2.0, delta=1e-5)
        ledger.spend("crm", epsilon=1.0, delta=DELTA)
        with pytest.raises(psycopg.Error):
            raw_sql(url, statement)
        assert open_ledger(url, tmp_path).head == ledger.head


def test_a_row_rewritten_behind_the_triggers_breaks_the_chain(tmp_path: Path) -> None:
    where = f"sqlite:///{tmp_path / 'budget.db'}"  # the chain check is shared by every form
    ledger = open_ledger(where, tmp_path)
    ledger.set_budget("crm", epsilon=2.0, delta=1e-5)
    ledger.spend("crm", epsilon=1.0, delta=DELTA)
    raw_sql(where, "DROP TRIGGER privacy_ledger_no_update")
    raw_sql(where, "UPDATE privacy_ledger SET line = replace(line, '\"epsilon\":2.0',"
                   " '\"epsilon\":20.0') WHERE seq = 0")
    with pytest.raises(ModelIntegrityError, match="entry 0"):
        open_ledger(where, tmp_path)


def test_concurrent_spends_never_overspend(where: str, tmp_path: Path) -> None:
    ledger = open_ledger(where, tmp_path)
    ledger.set_budget("crm", epsilon=1.5, delta=1e-5)  # room for exactly two ε=1 releases
    outcomes: list[str] = []

    def spend() -> None:
        try:
            open_ledger(where, tmp_path).spend("crm", epsilon=1.0, delta=DELTA)
            outcomes.append("spent")
        except BudgetExceededError:
            outcomes.append("refused")

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    status = open_ledger(where, tmp_path).status("crm")
    assert status.releases == outcomes.count("spent") and status.fits()
    assert outcomes.count("spent") == 2 and outcomes.count("refused") == 6
    assert [e["seq"] for e in read_ledger(where, KEY.public_key())[0]] == list(range(status.releases + 1))


def test_a_release_spent_from_a_database_ledger_passes_its_audit_and_no_other(
        where: str, tmp_path: Path, bundle_training_rows: npt.NDArray[np.float64],
        bundle_spec: FeatureSpec, signing_key: Ed25519PrivateKey, public_key: bytes) -> None:
    ids = [f"user-{i}" for i in range(len(bundle_training_rows))]
    secret = tmp_path / "source.key"
    ledger = PrivacyLedger(where, signing_key, secret=secret)
    ledger.set_budget("crm", epsilon=2.0, delta=1e-5, sketch=ledger.sketch(ids))
    options = TrainOptions(model_id="private", k=3, k_min=5, seed=2, epsilon=1.0, ledger=where,
                           ledger_secret=secret)
    result = train_bundle(bundle_training_rows, bundle_spec, signing_key, options, lineage={},
                          user_ids=ids)
    write_bundle(tmp_path / "released" / "v1", result.files)
    report = audit_releases(tmp_path / "released", ledger=where, trusted_keys=[public_key])
    assert report["passed"], report
    single = build_audit(tmp_path / "released" / "v1", trusted_keys=[public_key], ledger=where)
    assert single["passed"] and single["privacy"]["ledger"]["entries"] == 2
    other = PrivacyLedger(tmp_path / "other.ledger", signing_key)
    other.set_budget("crm", epsilon=2.0, delta=1e-5)
    other.spend("crm", epsilon=1.0, delta=1e-6, note="private v1")
    swapped = audit_releases(tmp_path / "released", ledger=tmp_path / "other.ledger",
                             trusted_keys=[public_key])
    assert not swapped["passed"]
    assert not swapped["bundles"][0]["checks"][0]["passed"]
