"""Personas a product manager can use, proven on the shipped real data of three shapes.

* the UCI Online Retail event log (one row per invoice line),
* the UCI Online Shoppers sessions table (one row per session, ``Revenue`` outcome),
* the UCI Wholesale customers table (one row per customer, annual spend).

Zero configuration each time: the suggested spec, then cards whose names are
plain, unique and quote-free, whose shown values are recomputed here from the
raw file with the standard library alone, and a bundle that passes ``audit``.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import re
from collections import defaultdict
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgepersona.sdk import Manifest, PersonaCard
from edgepersona.sdk.protocol.manifest import parse_manifest
from edgepersona.trainer.cli import main
from edgepersona.trainer.data.events import EventLog, read_event_log
from edgepersona.trainer.data.facts import horizons
from edgepersona.trainer.data.suggest import suggest_spec


def bundled_dataset(name: str) -> Path:
    """Path of a file shipped in ``edgepersona.trainer.datasets`` (no shared folder needed)."""
    return Path(str(resources.files("edgepersona.trainer.datasets").joinpath(name)))


DAY = 86_400.0
TABLES = {"shoppers": ("online_shoppers.csv.gz", "Revenue"),
          "wholesale": ("wholesale_customers.csv", None)}


def _open(path: Path) -> Any:
    return gzip.open(path, "rt", newline="") if path.suffix == ".gz" else path.open(newline="")


def _train(tmp: Path, *data: str) -> tuple[Manifest, Path, Path]:
    keys, bundle = tmp / "keys", tmp / "bundle"
    assert main(["keys", "generate", "--out", str(keys)]) == 0
    assert main(["train", *data, "--key", str(keys), "--out", str(bundle), "--k", "3",
                 "--seed", "5"]) == 0
    manifest = parse_manifest((bundle / "manifest.json").read_bytes())
    return manifest, bundle, keys / "signing_key.pub.pem"


def _assert_readable(cards: tuple[PersonaCard, ...]) -> None:
    names = [c.name for c in cards]
    assert len({n.lower() for n in names}) == len(names), names
    for card in cards:
        texts = [card.name, card.description, *(t.sentence for t in card.traits)]
        for text in texts:
            assert "'" not in text and '"' not in text and "_" not in text, text
            assert not re.search(r"\d[eE][-+]?\d", text), text  # no 1.4e-14
        words = card.name.lower().replace("&", " ").split()
        assert len(words) == len(set(words)), card.name  # no trait named twice


def _labels(bundle: Path, public: Path, capsys: pytest.CaptureFixture[str], *data: str
            ) -> dict[str, int]:
    capsys.readouterr()
    assert main(["assign", str(bundle), *data, "--trusted-key", str(public), "--json"]) == 0
    return {row["user"]: row["index"] for row in json.loads(capsys.readouterr().out)}


# --- the event log ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def retail(tmp_path_factory: pytest.TempPathFactory) -> tuple[Manifest, Path, Path]:
    events = bundled_dataset("retail_events.csv.gz")
    return _train(tmp_path_factory.mktemp("retail"), "--events", str(events))


def _raw_retail() -> dict[str, list[tuple[float, str, float, str]]]:
    """Per user: (unix time, event, value, invoice), read with csv and datetime only."""
    users: dict[str, list[tuple[float, str, float, str]]] = defaultdict(list)
    with _open(bundled_dataset("retail_events.csv.gz")) as handle:
        for row in csv.DictReader(handle):
            moment = datetime.fromisoformat(row["timestamp"]).replace(tzinfo=UTC).timestamp()
            users[row["user_id"]].append((moment, row["event"], float(row["value"]),
                                          row["invoice"]))
    return users


def _shown(feature: Any, events: list[tuple[float, str, float, str]], end: float,
           period: float) -> float:
    """One feature as the card shows it, recomputed from one user's raw rows."""
    recent = [e for e in events if end - period * DAY < e[0] <= end]
    mine = [e for e in recent if feature.event in ("*", e[1])]
    if feature.aggregate == "recency_days":
        times = [e[0] for e in events if feature.event in ("*", e[1])]
        return (end - max(times)) / DAY if times else math.nan
    if feature.aggregate == "count":
        return float(len(mine))
    if feature.aggregate == "sum":
        return sum(e[2] for e in mine)
    if feature.aggregate == "mean":
        return sum(e[2] for e in mine) / len(mine) if mine else math.nan
    if feature.aggregate == "active_days":
        return float(len({math.floor(e[0] / DAY) for e in mine}))
    assert feature.property == "invoice"
    return float(len({e[3] for e in mine}))


def test_retail_cards_show_values_recomputed_from_the_raw_events(
        retail: tuple[Manifest, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    manifest, bundle, public = retail
    events = str(bundled_dataset("retail_events.csv.gz"))
    labels = _labels(bundle, public, capsys, "--events", events)
    raw = _raw_retail()
    end = max(t for rows in raw.values() for t, *_ in rows)
    _, period = horizons(manifest.spec)
    by_name = {f.name: f for f in manifest.spec.features}
    checked = 0
    for card in manifest.personas:
        members = [u for u, index in labels.items() if index == card.index]
        for trait in card.traits:
            feature = by_name[trait.feature]
            mine = [_shown(feature, raw[u], end, period) for u in members]
            everyone = [_shown(feature, rows, end, period) for rows in raw.values()]
            assert trait.display_value == pytest.approx(np.nanmean(mine), rel=1e-9), trait.feature
            assert trait.display_population == pytest.approx(np.nanmean(everyone), rel=1e-9)
            checked += 1
    assert checked >= 3


def test_retail_lifecycle_shares_match_first_and_last_activity(
        retail: tuple[Manifest, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    manifest, bundle, public = retail
    labels = _labels(bundle, public, capsys, "--events",
                     str(bundled_dataset("retail_events.csv.gz")))
    raw = _raw_retail()
    end = max(t for rows in raw.values() for t, *_ in rows)
    short, period = horizons(manifest.spec)
    for card in manifest.personas:
        assert card.lifecycle is not None
        stages = []
        for user, index in labels.items():
            if index != card.index:
                continue
            first = min(t for t, *_ in raw[user])
            since = (end - max(t for t, *_ in raw[user])) / DAY
            stages.append("new" if (end - first) / DAY <= short else "active" if since <= short
                          else "at risk" if since <= period else "lapsed")
        shares = [stages.count(s) / len(stages) for s in ("new", "active", "at risk", "lapsed")]
        got = [card.lifecycle.new, card.lifecycle.active, card.lifecycle.at_risk,
               card.lifecycle.lapsed]
        assert got == pytest.approx(shares, abs=1e-12)
        assert sum(got) == pytest.approx(1.0)


def test_retail_zero_config_names_are_plain_and_duplicates_were_dropped(
        retail: tuple[Manifest, Path, Path]) -> None:
    manifest, _, _ = retail
    _assert_readable(manifest.personas)
    assert "distinct_product" not in manifest.spec.names
    assert any(n.startswith("dropped distinct_product") for n in manifest.spec.notes)
    assert manifest.spec.min_events >= 2 and manifest.spec.min_confidence > 0


def test_retail_inspect_shows_the_cards_in_plain_words(
        retail: tuple[Manifest, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    manifest, bundle, public = retail
    capsys.readouterr()
    assert main(["inspect", str(bundle), "--trusted-key", str(public)]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    for card in manifest.personas:
        assert card.name in shown
        assert "Where they stand:" in shown and "in the last 180 days" in shown


def test_retail_zero_config_bundle_passes_its_own_audit(retail: tuple[Manifest, Path, Path]
                                                        ) -> None:
    manifest, bundle, public = retail
    assert manifest.privacy.bounds_source == "coarse"
    assert main(["audit", str(bundle), "--trusted-key", str(public), "--json"]) == 0


def test_an_event_sent_twice_per_purchase_is_counted_once(retail_log: EventLog,
                                                          tmp_path: Path) -> None:
    # the shape: every purchase also logs "cds" with the number of items
    lines = ["user_id,timestamp,event,value"]
    for user, stamp, event, value in zip(retail_log.user, retail_log.time, retail_log.event,
                                         retail_log.properties["value"], strict=True):
        if event == "purchase":
            key = retail_log.user_keys[user]
            lines += [f"{key},{stamp},purchase,{value}", f"{key},{stamp},cds,{1 + int(value) % 3}"]
    path = tmp_path / "twice.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    spec = suggest_spec(read_event_log(path), seed=3)
    counts = [f.event for f in spec.features if f.aggregate == "count"]
    assert len(counts) == 1
    assert any("moves with" in n and "count" in n for n in spec.notes)


# --- the tables -------------------------------------------------------------------------

@pytest.fixture(scope="module", params=sorted(TABLES))
def table(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[str, Manifest, Path, Path]:
    name, outcome = TABLES[request.param]
    path = bundled_dataset(name)
    extra = ["--outcome", outcome] if outcome else []
    manifest, bundle, public = _train(tmp_path_factory.mktemp(request.param), "--table",
                                      str(path), *extra)
    return request.param, manifest, bundle, public


def _raw_table(name: str) -> list[dict[str, str]]:
    with _open(bundled_dataset(TABLES[name][0])) as handle:
        return list(csv.DictReader(handle))


def test_table_cards_are_plain_and_show_the_tables_own_values(
        table: tuple[str, Manifest, Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    name, manifest, bundle, public = table
    _assert_readable(manifest.personas)
    rows = _raw_table(name)
    features = tmp_path / "features.csv"
    with features.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", *manifest.spec.names])
        for i, row in enumerate(rows):
            writer.writerow([f"{i:05d}", *(row[n] for n in manifest.spec.names)])
    labels = _labels(bundle, public, capsys, "--features", str(features))
    assert sorted(labels)[:2] == ["00000", "00001"]  # ids come back as written
    for card in manifest.personas:
        members = [rows[int(u)] for u, index in labels.items() if index == card.index]
        for trait in card.traits:
            mine = [float(r[trait.feature]) for r in members]
            assert trait.display_value == pytest.approx(np.mean(mine), rel=1e-9)
            assert str(trait.display_unit or "") not in ("", "None")
            assert "in the last" not in trait.sentence  # a table has no time window


def test_table_zero_config_drops_category_codes_and_passes_the_audit(
        table: tuple[str, Manifest, Path, Path]) -> None:
    _, manifest, bundle, public = table
    assert "Region" not in manifest.spec.names
    assert any("category codes" in n for n in manifest.spec.notes)
    assert manifest.privacy.bounds_source == "coarse"
    assert main(["audit", str(bundle), "--trusted-key", str(public)]) == 0


def test_shoppers_outcome_rates_are_the_revenue_share_of_each_persona(
        table: tuple[str, Manifest, Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    name, manifest, bundle, public = table
    if name != "shoppers":
        pytest.skip("only the sessions table has an outcome")
    assert "Revenue" not in manifest.spec.names  # an outcome is never a feature
    rows = _raw_table(name)
    revenue = [r["Revenue"].strip().upper() == "TRUE" for r in rows]
    features = tmp_path / "features.csv"
    with features.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", *manifest.spec.names])
        for i, row in enumerate(rows):
            writer.writerow([str(i), *(row[n] for n in manifest.spec.names)])
    labels = _labels(bundle, public, capsys, "--features", str(features))
    for card in manifest.personas:
        assert card.outcome is not None and card.outcome.name == "Revenue"
        members = [revenue[int(u)] for u, index in labels.items() if index == card.index]
        assert card.outcome.rate == pytest.approx(sum(members) / len(members), abs=1e-9)
        assert card.outcome.population == pytest.approx(sum(revenue) / len(revenue))
        assert "Outcome, revenue:" in card.description
    page = tmp_path / "personas.html"
    assert main(["report", str(bundle), "--trusted-key", str(public), "--html", str(page)]) == 0
    assert page.read_text(encoding="utf-8").count("Outcome, revenue:") >= len(manifest.personas)
