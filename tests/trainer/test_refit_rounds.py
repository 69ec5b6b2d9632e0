"""Refit rounds: decayed and bounded daily cells, the drift report's evidence, the schedule."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings, strategies as st

from edgepersona.sdk import InputError, Manifest
from edgepersona.sdk.protocol.assign import model_space, numpy_assign
from edgepersona.sdk.protocol.manifest import parse_manifest
from edgepersona.sdk.protocol.spec import Window
from edgepersona.trainer.collector import (
    BundleShelf,
    DailyAggregate,
    Increment,
    PersonaAggregate,
    open_store,
)
from edgepersona.trainer.release.export import write_bundle
from edgepersona.trainer.release.refit import REVIEW_MARKER, approve_bundle, plan_refit, sign_refit
from edgepersona.trainer.release.refit_cells import (
    CellWeighting,
    DayCells,
    VersionCells,
    parse_window,
    stack_cells,
    weigh_cells,
)
from edgepersona.trainer.release.schedule import ScheduleOptions, run_schedule
from edgepersona.trainer.release.train import TrainResult

DAY0 = 20_000  # a day bucket
F64 = npt.NDArray[np.float64]


def cell(day: int, persona: int, rows: F64) -> DailyAggregate:
    return DailyAggregate(day, persona, PersonaAggregate(len(rows), rows.sum(axis=0),
                                                         (rows**2).sum(axis=0)))


def cells_of(manifest: Manifest, rows: F64, days: int, first: int = DAY0) -> list[DailyAggregate]:
    """Every user contributes on one of ``days`` days, assigned with ``manifest``."""
    labels = numpy_assign(manifest.assigner, rows)[0]
    t = model_space(manifest.assigner, rows)
    day = np.arange(len(rows)) % days
    return [cell(first + d, p, t[(labels == p) & (day == d)]) for d in range(days)
            for p in range(len(manifest.personas)) if ((labels == p) & (day == d)).any()]


def test_half_life_weighs_a_day_h_days_older_half() -> None:
    one = np.array([[1.0, 0.0]])
    cells = [cell(DAY0, 0, one * 4), cell(DAY0 + 7, 0, one * 2), cell(DAY0, 1, one), cell(DAY0 + 7, 1, one)]
    stacked = stack_cells([VersionCells(1, ("P1", "P2"), tuple(cells))], ["P1", "P2"], 2)
    out = weigh_cells(stacked, CellWeighting(Window.half_life(7), day_cap=None))
    assert out.counts[0] == pytest.approx(1.5)
    assert out.sums[0, 0] / out.counts[0] == pytest.approx((0.5 * 4 + 2) / 1.5)
    assert out.contributions.tolist() == [2.0, 2.0]


def test_blend_window_reads_like_the_feature_spec() -> None:
    window = parse_window("blend:0.6@7,0.4@90")
    assert window == Window.blend((0.6, 7), (0.4, 90))
    assert CellWeighting(window).describe() == "blend 60% 7 d + 40% 90 d, day cap 3x median"
    with pytest.raises(InputError, match="unknown decay window"):
        parse_window("weekly")
    with pytest.raises(InputError, match="day_cap"):
        CellWeighting(day_cap=0.5)


def test_a_burst_day_is_capped_and_keeps_its_mean() -> None:
    calm = [cell(DAY0 + d, 0, np.zeros((10, 1))) for d in range(5)]
    burst = cell(DAY0 + 5, 0, np.ones((200, 1)))
    stacked = stack_cells([VersionCells(1, ("P1",), (*calm, burst))], ["P1"], 1)
    capped = weigh_cells(stacked, CellWeighting(day_cap=3.0))
    plain = weigh_cells(stacked, CellWeighting(day_cap=None))
    assert plain.sums[0, 0] / plain.counts[0] == pytest.approx(200 / 250)
    assert capped.counts[0] == pytest.approx(50 + 30)  # the burst counts as 3x the median day
    assert capped.sums[0, 0] / capped.counts[0] == pytest.approx(30 / 80)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 2), st.integers(1, 50),
                          st.floats(-5, 5)), min_size=1, max_size=30),
       st.sampled_from([Window(), Window.half_life(3), Window.blend((0.6, 7), (0.4, 90))]),
       st.sampled_from([None, 1.0, 3.0]))
def test_no_contribution_weighs_more_than_one(entries: list[tuple[int, int, int, float]],
                                              window: Window, cap: float | None) -> None:
    cells = [cell(DAY0 + d, p, np.full((n, 2), v)) for d, p, n, v in entries]
    stacked = stack_cells([VersionCells(1, ("A", "B", "C"), tuple(cells))], ["A", "B", "C"], 2)
    out = weigh_cells(stacked, CellWeighting(window, day_cap=cap))
    assert (out.day_weight <= stacked.counts + 1e-9).all() and (out.day_weight >= 0).all()
    assert (out.counts <= out.contributions + 1e-9).all()
    if window.kind == "all_time" and cap is None:
        for p in range(3):
            mine = [c.aggregate for c in cells if c.persona_index == p]
            assert out.counts[p] == sum(a.count for a in mine)
            np.testing.assert_allclose(out.sums[p], sum((a.sums for a in mine), np.zeros(2)),
                                       atol=1e-9)


def test_cells_of_older_versions_follow_persona_ids_not_indices() -> None:
    v1 = VersionCells(1, ("P1", "P2", "P3"), (cell(DAY0, 2, np.ones((3, 1))),
                                              cell(DAY0, 1, np.ones((5, 1)))))
    v2 = VersionCells(2, ("P1", "P3"), (cell(DAY0 + 1, 1, np.ones((4, 1))),))
    stacked = stack_cells([v1, v2], ["P1", "P3"], 1)
    assert stacked.counts.sum(axis=0).tolist() == [0.0, 7.0]  # P2 is gone; P3 kept its cells


def honest_v2(trained: TrainResult, rows: F64, key: Ed25519PrivateKey) -> Manifest:
    stacked = stack_cells([VersionCells(1, tuple(p.id for p in trained.manifest.personas),
                                        tuple(cells_of(trained.manifest, rows, 7)))],
                          [p.id for p in trained.manifest.personas], rows.shape[1])
    plan = plan_refit(trained.manifest, weigh_cells(stacked, CellWeighting()), k_min=5,
                      weighting="test")
    return sign_refit(plan, key).manifest


def refit_with(manifest: Manifest, cells: list[DailyAggregate], width: int) -> object:
    ids = [p.id for p in manifest.personas]
    stacked = stack_cells([VersionCells(manifest.version, tuple(ids), tuple(cells))], ids, width)
    return plan_refit(manifest, weigh_cells(stacked, CellWeighting()), k_min=5, weighting="test")


def test_the_drift_report_tells_a_broad_shift_from_a_few_forged_contributions(
        trained: TrainResult, bundle_training_rows: F64, signing_key: Ed25519PrivateKey) -> None:
    v2 = honest_v2(trained, bundle_training_rows, signing_key)
    assert set(json.loads(str(v2.lineage["spread"]))) == {p.id for p in v2.personas}
    d = bundle_training_rows.shape[1]
    labels = numpy_assign(v2.assigner, bundle_training_rows)[0]
    target = int(np.bincount(labels).argmax())
    members = bundle_training_rows[labels == target]
    others = bundle_training_rows[labels != target]
    # Concentrated: 6% of the members' count are forged at the farthest point still assigned to it.
    lower, upper = np.asarray(v2.assigner.lower), np.asarray(v2.assigner.upper)
    corner = np.where(members.mean(axis=0) > (lower + upper) / 2, lower, upper)
    far = members.mean(axis=0) + np.linspace(0, 1, 200)[:, None] * (corner - members.mean(axis=0))
    claimable = far[numpy_assign(v2.assigner, far)[0] == target][-1]
    # Broad: every member drifts a fifth of the way towards that point.
    broad = np.vstack([others, members + 0.2 * (claimable - members)])
    forged = np.vstack([bundle_training_rows, np.tile(claimable, (int(0.06 * len(members)), 1))])
    reports = {}
    for name, rows in (("broad", broad), ("forged", forged)):
        plan = refit_with(v2, cells_of(v2, rows, 7), d)
        reports[name] = plan.drift  # type: ignore[attr-defined]
    kinds = {name: {p.id: p.kind for p in r.personas} for name, r in reports.items()}
    pid = v2.personas[target].id
    assert kinds["forged"][pid] == "concentrated" and reports["forged"].suspect
    assert reports["forged"].needs_review and "possible poisoning" in reports["forged"].reason()
    assert kinds["broad"][pid] == "broad" and not reports["broad"].suspect
    text = reports["forged"].to_markdown(2, 3)
    assert "## What moved and why" in text and "check for forged contributions" in text
    assert "contributions over 7 day(s)" in text and "Traits:" in text


def add_cells(url: str, manifest: Manifest, rows: F64, day: int) -> None:
    labels = numpy_assign(manifest.assigner, rows)[0]
    t = model_space(manifest.assigner, rows)
    store = open_store(url)
    try:
        store.add_increments([Increment(f"{manifest.version}-{day}-{i}".encode().ljust(32, b"."), day,
                                        manifest.version, int(p), tuple(map(float, x)))
                              for i, (p, x) in enumerate(zip(labels, t, strict=True))],
                             purge_before_day=0)
    finally:
        store.close()


def schedule(shelf: Path, url: str, key: Ed25519PrivateKey, public_key: bytes,
             **options: object) -> object:
    store = open_store(url)
    try:
        return run_schedule(shelf, store, key, [public_key], ScheduleOptions(k_min=5, **options))  # type: ignore[arg-type]
    finally:
        store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A collector database on each backend (PostgreSQL: a fresh schema, dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'collector.db'}"
        return
    url = os.environ.get("EDGEPERSONA_TEST_POSTGRES_URL", "")
    if not url:
        pytest.skip("EDGEPERSONA_TEST_POSTGRES_URL is not set")
    import psycopg
    from psycopg import sql

    schema = f"test_{secrets.token_hex(6)}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    parts = urllib.parse.urlsplit(url)
    query = [*urllib.parse.parse_qsl(parts.query), ("options", f"-csearch_path={schema}")]
    try:
        yield urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def test_the_schedule_publishes_waits_holds_and_is_safe_to_run_twice(
        trained: TrainResult, bundle_training_rows: F64, signing_key: Ed25519PrivateKey,
        public_key: bytes, tmp_path: Path, store_url: str) -> None:
    shelf, url = tmp_path / "bundles", store_url
    model = trained.manifest.model_id
    write_bundle(shelf / f"{model}-v1", trained.files)
    first = schedule(shelf, url, signing_key, public_key)
    assert first.status == "waiting" and first.serving == 1  # type: ignore[attr-defined]
    add_cells(url, trained.manifest, bundle_training_rows, DAY0)
    published = schedule(shelf, url, signing_key, public_key, min_move=0.0)
    assert published.status == "published" and published.new_version == 2  # type: ignore[attr-defined]
    assert "published" in published.line and "\n" not in published.line  # type: ignore[attr-defined]
    again = schedule(shelf, url, signing_key, public_key)
    assert again.status == "waiting" and again.serving == 2  # type: ignore[attr-defined]
    # Behaviour moves: everyone doubles; the round is held and the collector keeps serving v2.
    v2 = parse_manifest((shelf / f"{model}-v2" / "manifest.json").read_bytes())
    add_cells(url, v2, bundle_training_rows * 2.0, DAY0 + 1)
    held = schedule(shelf, url, signing_key, public_key)
    assert held.status == "held" and held.new_version == 3 and held.serving == 2  # type: ignore[attr-defined]
    assert (shelf / f"{model}-v3.{REVIEW_MARKER}").exists()
    assert BundleShelf(shelf).latest().version == 2  # type: ignore[union-attr]  # what the collector serves
    twice = schedule(shelf, url, signing_key, public_key)
    assert twice.status == "awaiting-review" and twice.new_version is None  # type: ignore[attr-defined]
    assert sorted(p.name for p in shelf.iterdir() if p.name.endswith(".zip")) == \
        [f"{model}-v2.zip", f"{model}-v3.zip"]
    assert approve_bundle(shelf / f"{model}-v3")


def test_a_round_that_moved_nothing_proposes_no_version(
        trained: TrainResult, bundle_training_rows: F64, signing_key: Ed25519PrivateKey,
        public_key: bytes, tmp_path: Path) -> None:
    shelf, url = tmp_path / "bundles", f"sqlite:///{tmp_path / 'collector.db'}"
    write_bundle(shelf / f"{trained.manifest.model_id}-v1", trained.files)
    add_cells(url, trained.manifest, bundle_training_rows, DAY0)
    outcome = schedule(shelf, url, signing_key, public_key, min_move=0.05)
    assert outcome.status == "converged" and outcome.new_version is None  # type: ignore[attr-defined]
    assert sorted(p.name for p in shelf.iterdir() if not p.name.startswith(".")) == \
        [f"{trained.manifest.model_id}-v1"]


def test_a_second_run_while_one_holds_the_lock_does_nothing(
        trained: TrainResult, signing_key: Ed25519PrivateKey, public_key: bytes,
        tmp_path: Path) -> None:
    shelf = tmp_path / "bundles"
    write_bundle(shelf / f"{trained.manifest.model_id}-v1", trained.files)
    with open(shelf / ".schedule.lock", "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        outcome = schedule(shelf, f"sqlite:///{tmp_path / 'c.db'}", signing_key, public_key)
    assert outcome.status == "busy" and outcome.new_version is None  # type: ignore[attr-defined]
    assert "another run holds the lock" in outcome.line  # type: ignore[attr-defined]


def test_day_cells_shape_is_checked() -> None:
    with pytest.raises(InputError, match="features"):
        stack_cells([VersionCells(1, ("P1",), (cell(DAY0, 0, np.ones((2, 3))),))], ["P1"], 2)
    assert isinstance(stack_cells([], ["P1"], 2), DayCells)


def test_the_persona_report_shows_each_persona_across_versions(
        trained: TrainResult, bundle_training_rows: F64, signing_key: Ed25519PrivateKey) -> None:
    from edgepersona.trainer.report import render_persona_report

    v2 = honest_v2(trained, bundle_training_rows, signing_key)
    plan = refit_with(v2, cells_of(v2, bundle_training_rows * 1.1, 3), bundle_training_rows.shape[1])
    v3 = sign_refit(plan, signing_key).manifest  # type: ignore[arg-type]
    history = json.loads(str(v3.lineage["history"]))
    assert [entry["v"] for entry in history] == [2, 3]
    assert history[-1]["moves"] == pytest.approx(dict(zip(plan.drift.ids, plan.drift.moves,  # type: ignore[attr-defined]
                                                          strict=True)), abs=1e-6)
    page = render_persona_report(v3, previous=v2, drift_markdown=None)
    assert 'id="history"' in page and "History across versions" in page
    for pid, share in history[-1]["shares"].items():
        assert f"{share:.1%}" in page, pid
    assert 'id="history"' not in render_persona_report(trained.manifest, previous=None,
                                                          drift_markdown=None)


def test_the_schedule_command_prints_one_line_and_is_safe_to_run_twice(
        trained: TrainResult, bundle_training_rows: F64, signing_keys: object, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from edgepersona.trainer.cli import main

    shelf, url = tmp_path / "bundles", f"sqlite:///{tmp_path / 'collector.db'}"
    write_bundle(shelf / f"{trained.manifest.model_id}-v1", trained.files)
    add_cells(url, trained.manifest, bundle_training_rows * 2.0, DAY0)
    argv = ["schedule", "--db", url, "--bundles", str(shelf), "--k-min", "5",
            "--key", str(signing_keys.private_path),  # type: ignore[attr-defined]
            "--trusted-key", str(signing_keys.public_path)]  # type: ignore[attr-defined]
    lines = []
    for _ in range(2):
        assert main(argv) == 0
        lines.append(capsys.readouterr().out.strip())
    assert all("\n" not in line for line in lines)
    assert " held: " in lines[0] and "serving v1" in lines[0]
    assert "v2 awaits review" in lines[1] and "nothing done" in lines[1]
    assert main([*argv, "--window", "weekly"]) != 0
    assert "unknown decay window" in capsys.readouterr().err
