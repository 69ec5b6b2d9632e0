"""The audit page as HTML text: every section, failures in words, escaping, structure, no network.

The audits are real ones (``build_audit`` on the signed test bundle, a signed
ledger with spends, a fairness table, a collector database); only the escaping
test edits the resulting dict, to plant text no honest pipeline produces.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_report_html import Page

from edgepersona.sdk import InputError, PersonaRuntime
from edgepersona.trainer.cli import main
from edgepersona.trainer.collector import SqliteAggregateStore
from edgepersona.trainer.privacy.audit import build_audit, fairness_table
from edgepersona.trainer.privacy.ledger import PrivacyLedger
from edgepersona.trainer.report import render_audit_report

AUDITED = datetime(2025, 3, 1, tzinfo=UTC)
SECTION_IDS = ("checks", "integrity", "lineage", "budget", "kmin", "egress", "pseudonyms",
               "storage", "fairness", "personas")
SPENDS = (("users.csv", 0.5, "v1"), ("events", 0.4, "v1 events"), ("users.csv", 0.8, "v2"),
          ("users.csv", 0.5, "v3"))


def write_ledger(path: Path, key: Ed25519PrivateKey) -> Path:
    """Two sources with budgets and four dated spends."""
    ledger = PrivacyLedger(path, key)
    ledger.set_budget("users.csv", epsilon=3.0, delta=1e-5)
    ledger.set_budget("events", epsilon=2.0, delta=1e-5)
    for i, (source, epsilon, note) in enumerate(SPENDS):
        ledger.spend(source, epsilon=epsilon, delta=1e-7, note=note,
                     now=datetime(2025, 1, 4, tzinfo=UTC) + timedelta(days=10 * i))
    return path


def write_collector_db(path: Path, *, per_user: bool) -> str:
    """A real (empty) collector database; ``per_user`` adds a column the storage check must refuse."""
    SqliteAggregateStore(path).close()
    if per_user:
        with sqlite3.connect(path) as conn:
            conn.execute("ALTER TABLE dedupe_ledger ADD COLUMN pseudonym TEXT")
    return f"sqlite:///{path}"


@pytest.fixture(scope="module")
def ledger_path(signing_key: Ed25519PrivateKey, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ledger(tmp_path_factory.mktemp("ledger") / "ledger.jsonl", signing_key)


@pytest.fixture(scope="module")
def passing(bundle_dir: Path, public_key: bytes, ledger_path: Path,
            bundle_training_rows: npt.NDArray[np.float64],
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A full audit that passes: ledger, collector database and fairness table."""
    manifest = PersonaRuntime.open(bundle_dir, trusted_keys=[public_key]).manifest
    groups = ["north", "south"] * (len(bundle_training_rows) // 2)
    db = write_collector_db(tmp_path_factory.mktemp("db") / "collector.db", per_user=False)
    return build_audit(bundle_dir, trusted_keys=[public_key], ledger=ledger_path, db=db,
                       fairness=fairness_table(manifest, bundle_training_rows, groups), now=AUDITED)


@pytest.fixture(scope="module")
def failing(bundle_dir: Path, public_key: bytes, ledger_path: Path,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An audit with two real failures: a tampered ledger and a per-user column."""
    folder = tmp_path_factory.mktemp("failing")
    tampered = folder / "ledger.jsonl"
    tampered.write_bytes(ledger_path.read_bytes().replace(b'"epsilon":3.0', b'"epsilon":30.0'))
    db = write_collector_db(folder / "collector.db", per_user=True)
    return build_audit(bundle_dir, trusted_keys=[public_key], ledger=tampered, db=db, now=AUDITED)


def text_of(page: str) -> str:
    return re.sub(r"\s+", " ", " ".join(Page(page).text))


def test_every_section_is_present_with_its_evidence(passing: dict[str, Any]) -> None:
    page = render_audit_report(passing)
    parsed = Page(page)
    assert not parsed.errors
    assert [i for i in parsed.ids if i in SECTION_IDS] == list(SECTION_IDS)
    text = text_of(page)
    integrity, egress = passing["integrity"], passing["egress"]
    assert "PASS" in text and f"All {len(passing['checks'])} automated checks passed" in text
    assert integrity["key_id"] in text and integrity["expires_at"] in text
    assert all(e["sha256"] in text for e in integrity["files"].values())
    assert "synthetic clusters" in text and "480 (exact count)" in text
    assert all(b["feature"] in text for b in passing["lineage"]["bounds"])
    assert "declared by a person" in text
    assert all(note in text for _, _, note in SPENDS)
    assert "users.csv" in text and "events" in text and "within budget" in text
    assert f"at least {passing['privacy']['k_min']} users" in text
    assert all(f["field"] in text for f in egress["fields"])
    assert f"{egress['envelope_bytes']:,} B" in text and egress["sample_opened"]["pseudonym"] in text
    assert "every 30 days" in text and passing["storage"]["retention"] in text
    assert "model_version, persona_index, day_bucket, count, sums, sumsq" in text  # the actual tables
    assert "north" in text and "south" in text and "No group is flagged." in text
    assert all(p["name"] in text for p in passing["personas"])


def test_budget_charts_add_the_releases_of_each_source(passing: dict[str, Any]) -> None:
    page = render_audit_report(passing)
    assert page.count('<svg class="chart" id="budget-') == 2  # one chart per source
    text = text_of(page)
    assert "2025-01-04: +0.5, sum 0.5; 2025-01-24: +0.8, sum 1.3; 2025-02-03: +0.5, sum 1.8" in text
    spent = passing["privacy"]["ledger"]["sources"]["users.csv"]["spent_epsilon"]
    assert 0 < spent < 1.8 and f"ledger total {spent:.3g}" in text  # exact composition is tighter
    assert "budget ε = 3" in text and "budget ε = 2" in text


def test_failed_checks_read_fail_without_colour(failing: dict[str, Any]) -> None:
    assert failing["passed"] is False
    failed = [c for c in failing["checks"] if not c["passed"]]
    assert {c["check"] for c in failed} == {
        "privacy budget not exceeded; ledger chain and signatures verify",
        "collector stores no per-user column"}
    page = render_audit_report(failing)
    rows = re.findall(r'<tr class="(passed|failed)"><th scope="row">(.*?)</th><td>(.*?)</td>', page)
    assert len(rows) == len(failing["checks"])
    for kind, check, result in rows:
        assert (kind == "failed") == (check in {c["check"] for c in failed})
        assert ("FAIL" in result and "\u2718" in result) == (kind == "failed")
    text = text_of(page)
    assert f"FAIL {len(failed)} of {len(failing['checks'])} automated checks failed" in text
    assert 'class="verdict fail"' in page and "<title>Privacy audit: test-personas v1 (FAIL)" in page
    assert "FAIL: the ledger does not verify" in text and "dedupe_ledger.pseudonym" in text


def test_without_a_ledger_or_groups_the_page_says_so(bundle_dir: Path, public_key: bytes) -> None:
    report = build_audit(bundle_dir, trusted_keys=[public_key], now=AUDITED)
    text = text_of(render_audit_report(report))
    assert "No ledger: No budget ledger was given" in text
    assert "No fairness table: Not run" in text
    assert "database was not inspected" in text


def test_hostile_text_is_escaped(passing: dict[str, Any]) -> None:
    hostile = copy.deepcopy(passing)
    attack = '"><img src=x onerror=alert(1)><script>alert(2)</script>'
    hostile["privacy"]["notes"] = [f"note {attack}"]
    hostile["lineage"]["source"] = {"source": f"src {attack}"}
    ledger = hostile["privacy"]["ledger"]
    ledger["sources"][f"evil {attack}"] = ledger["sources"].pop("events")
    for release in ledger["releases"]:
        release["note"] = f"release {attack}"
        release["source"] = f"evil {attack}" if release["source"] == "events" else release["source"]
    hostile["personas"][0]["name"] = f"persona {attack}"
    fair = hostile["fairness"]
    for key in ("groups", "shares", "mean_distance"):
        fair[key][f"group {attack}"] = fair[key].pop("south")
    page = render_audit_report(hostile)
    assert "<img" not in page and "<script" not in page and "onerror=alert(1)>" not in page
    escaped = "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;alert(2)&lt;/script&gt;"
    assert page.count(escaped) >= 6
    assert not Page(page).errors


def test_the_page_loads_nothing(passing: dict[str, Any], failing: dict[str, Any]) -> None:
    for report in (passing, failing):
        page = render_audit_report(report)
        assert "<script" not in page.lower()
        assert not re.search(r"https?://", page)
        parsed = Page(page)
        for _tag, attrs in parsed.starts:
            assert "src" not in attrs and "style" not in attrs
            assert attrs.get("href", "#").startswith("#")
            assert not any(name.startswith("on") for name in attrs)
        (policy,) = [m["content"] for m in parsed.tags("meta") if m.get("http-equiv")]
        digest = base64.b64encode(hashlib.sha256(parsed.style.encode()).digest()).decode()
        assert policy.startswith("default-src 'none'; style-src 'sha256-" + digest + "'")


def test_the_page_is_well_formed_accessible_and_deterministic(passing: dict[str, Any]) -> None:
    page = render_audit_report(passing)
    assert page == render_audit_report(copy.deepcopy(passing))
    parsed = Page(page)
    assert parsed.headings[0] == 1 and parsed.headings.count(1) == 1
    assert all(b - a <= 1 for a, b in zip(parsed.headings, parsed.headings[1:], strict=False))
    assert len(parsed.ids) == len(set(parsed.ids))
    assert parsed.tags("html")[0]["lang"] == "en"
    tables = page.count("<table>")
    assert tables == page.count("<caption>") >= 12
    assert all(th.get("scope") in ("col", "row") for th in parsed.tags("th"))
    svgs = parsed.tags("svg")
    assert len(svgs) == 4  # envelope sizes, two budget sources, fairness
    for svg in svgs:
        assert svg["role"] == "img"
        assert all(ref in parsed.ids for ref in svg["aria-labelledby"].split())
    assert len(parsed.tags("title")) == 1 + len(svgs) and len(parsed.tags("desc")) == len(svgs)


def test_data_of_another_schema_is_refused(passing: dict[str, Any]) -> None:
    with pytest.raises(InputError, match="schema 1"):
        render_audit_report({**passing, "schema_version": 2})
    incomplete = {k: v for k, v in passing.items() if k != "egress"}
    with pytest.raises(InputError, match="egress"):
        render_audit_report(incomplete)


def test_the_audit_command_writes_the_page(bundle_dir: Path, signing_keys: Any, ledger_path: Path,
                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "audit.html"
    code = main(["audit", str(bundle_dir), "--trusted-key", str(signing_keys.public_path),
                 "--ledger", str(ledger_path), "--html", str(out)])
    assert code == 0 and "PASS" in capsys.readouterr().out
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and 'class="verdict pass"' in page
    assert page.count('<svg class="chart" id="budget-') == 2 and "release" in page
    bad = tmp_path / "tampered.jsonl"
    bad.write_bytes(ledger_path.read_bytes().replace(b'"epsilon":2.0', b'"epsilon":20.0'))
    code = main(["audit", str(bundle_dir), "--trusted-key", str(signing_keys.public_path),
                 "--ledger", str(bad), "--html", str(out), "--json"])
    assert code == 3 and 'class="verdict fail"' in out.read_text(encoding="utf-8")
