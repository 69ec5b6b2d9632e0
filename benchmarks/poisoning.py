"""Poisoning a refit: forged contributions that pass the collector's checks vs the honest refit.

    python -m benchmarks --only poisoning
    python -m benchmarks.poisoning

The bundled retail log; v1 (k = 4) trained on the features of 2011-09-01, an
honest first refit two weeks later gives v2 (which records each persona's
spread). Two weeks after that every customer contributes once under v2,
spread over seven days: the honest round. An attacker adds forged
contributions, ``x`` % of the honest count, all aimed at one persona, each
from its own pseudonym (one per day: within any per-pseudonym quota; only an
admission check stops minting pseudonyms). A forged contribution passes the
collector's checks: its features are within the bounds and **the persona it
claims is the nearest one** to them under v2 (the consistency check), so the
attacker sends the point farthest from the persona's centroid that is still
nearest to it (searched over the box's corners and 4,000 random points, each
pulled towards the centroid until it is claimable). ``without check`` sends
the farthest corner of the bounds box instead (a collector without the
consistency check). Placement: ``spread`` evenly over the seven days, or
``burst`` on one day.

Figure: the displacement of the attacked persona's centroid from the honest
refit's, relative to the median distance between v2's personas (the drift
gate's unit), for the most vulnerable persona; per refit weighting: plain
mean, the default day cap (a day counts at most 3x the median day), and the
cap with 20 % trimmed daily means. "flagged" says whether the drift report
calls the attacked persona's move concentrated (few contributions moved a
lot), i.e. whether the review gate tells it from drift.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgepersona.sdk import Manifest, load_spec_json
from edgepersona.sdk.protocol.assign import model_space, numpy_assign
from edgepersona.trainer.collector import DailyAggregate, PersonaAggregate
from edgepersona.trainer.data.events import read_event_log
from edgepersona.trainer.data.features import compute_features
from edgepersona.trainer.release.refit import RefitPlan, plan_refit, sign_refit
from edgepersona.trainer.release.refit_cells import CellWeighting, VersionCells, stack_cells, weigh_cells
from edgepersona.trainer.release.train import TrainOptions, train_bundle

from ._measure import RunConfig, SuiteResult
from .second_log import BUNDLED

__all__ = ["claimable_point", "run", "run_all"]

F64 = npt.NDArray[np.float64]
DAY = 86_400.0
START = datetime(2011, 9, 1, tzinfo=UTC).timestamp()
DAYS = 7
SHARES = (0.01, 0.05, 0.10)
WEIGHTINGS = {"plain mean": CellWeighting(day_cap=None), "day cap 3x": CellWeighting(),
              "day cap + 20 % trim": CellWeighting(trim=0.2)}


@dataclass(frozen=True)
class Setting:
    """v2 and the honest round's contributions (model space) with their days."""

    v2: Manifest
    t: F64
    labels: npt.NDArray[np.int64]
    days: npt.NDArray[np.int64]


def _cells(manifest: Manifest, t: F64, labels: npt.NDArray[np.int64], days: npt.NDArray[np.int64]
           ) -> tuple[DailyAggregate, ...]:
    """The collector's cells of these contributions."""
    out = []
    for day in np.unique(days):
        for p in range(len(manifest.personas)):
            mask = (days == day) & (labels == p)
            if mask.any():
                out.append(DailyAggregate(int(day), p, PersonaAggregate(
                    int(mask.sum()), t[mask].sum(axis=0), (t[mask] ** 2).sum(axis=0))))
    return tuple(out)


def _plan(manifest: Manifest, cells: tuple[DailyAggregate, ...], weighting: CellWeighting) -> RefitPlan:
    """The refit of one version's cells."""
    ids = tuple(p.id for p in manifest.personas)
    stacked = stack_cells([VersionCells(manifest.version, ids, cells)], list(ids),
                          len(manifest.spec.features))
    return plan_refit(manifest, weigh_cells(stacked, weighting), k_min=10,
                      weighting=weighting.describe())


def _setting(seed: int, key: Ed25519PrivateKey) -> Setting:
    """Train v1, refit v2 honestly, and draw the honest round under v2."""
    spec = load_spec_json((BUNDLED.parent / "retail_spec.json").read_text(encoding="utf-8"))
    log = read_event_log(BUNDLED)
    active = np.unique(log.user[log.time <= START])
    v1 = train_bundle(compute_features(log, spec, START)[active], spec, key,
                      TrainOptions(model_id="poison", k=4, seed=seed, stability_rounds=1),
                      lineage={"source": "benchmark"}, now=datetime.fromtimestamp(START, UTC)).manifest
    rng = np.random.default_rng(seed)
    rounds = []
    for week in (2, 4):
        at = START + week * 7 * DAY
        rows = compute_features(log, spec, at)[np.unique(log.user[log.time <= at])]
        rounds.append((int(at // DAY), rows))
    day, rows = rounds[0]
    days = day + rng.integers(0, DAYS, size=len(rows))
    labels = numpy_assign(v1.assigner, rows)[0]
    v2 = sign_refit(_plan(v1, _cells(v1, model_space(v1.assigner, rows), labels, days),
                          CellWeighting()), key).manifest
    day, rows = rounds[1]
    return Setting(v2, model_space(v2.assigner, rows), numpy_assign(v2.assigner, rows)[0],
                   day + rng.integers(0, DAYS, size=len(rows)))


def claimable_point(manifest: Manifest, persona: int, rng: np.random.Generator, *,
                    check: bool = True) -> F64:
    """The model-space point farthest from a persona's centroid that a forger can claim for it.

    Args:
        manifest: the version contributions are checked against.
        persona: the attacked persona.
        rng: the random source.
        check: True: the point must be nearest to the persona (the consistency
            check); False: any point within the bounds.

    Returns:
        The point, in model space (what a contribution carries).
    """
    params = manifest.assigner
    box = model_space(params, np.array([params.lower, params.upper], dtype=np.float64))
    center, scale = np.asarray(params.center), np.asarray(params.scale)
    corners = np.array(list(itertools.product(*box.T)))
    candidates = np.vstack([corners, rng.uniform(box[0], box[1], size=(4000, box.shape[1]))])
    own = np.asarray(params.centroids)[persona]
    z = (candidates - center) * scale
    steps = np.linspace(0.0, 1.0, 101)[:, None, None]
    path = own + steps * (z - own)  # (steps, candidates, d)
    gaps = np.linalg.norm(path[..., None, :] - np.asarray(params.centroids), axis=-1)
    ok = (gaps.argmin(axis=-1) == persona) if check else np.ones(gaps.shape[:2], dtype=bool)
    reach = np.where(ok, np.linalg.norm(path - own, axis=-1), -1.0)
    step, which = np.unravel_index(int(reach.argmax()), reach.shape)
    return np.asarray(path[step, which] / scale + center, dtype=np.float64)


def _verdict(plan: RefitPlan, pid: str) -> str:
    """What the gate does with the poisoned refit, and how it reads the attacked persona."""
    drift = plan.drift
    kind = next((p.kind for p in drift.personas if p.id == pid), "vanished")
    return f"held, {kind}" if drift.needs_review else f"published, {kind}"


def _displacement(honest: RefitPlan, poisoned: RefitPlan, persona: int, unit: float) -> float:
    """How far the attacked persona's centroid moved from the honest refit's (gate units)."""
    row = int(np.flatnonzero(honest.keep)[:persona + 1].size) - 1
    return float(np.linalg.norm(poisoned.centroids[row] - honest.centroids[row]) / unit)


def run_all(seed: int = 7) -> dict[str, Any]:
    """Every share x placement x check x weighting, worst persona each; plain data.

    Args:
        seed: seed of the fits, the days and the search.

    Returns:
        ``{"rows": [...], "honest_flagged": bool, "v2_contributions": int}``.
    """
    setting = _setting(seed, Ed25519PrivateKey.generate())
    v2, rng = setting.v2, np.random.default_rng(seed + 1)
    old = np.asarray(v2.assigner.centroids)
    gaps = np.linalg.norm(old[:, None] - old[None], axis=2)
    unit = float(np.median(gaps[np.triu_indices(len(old), 1)]))
    honest_cells = _cells(v2, setting.t, setting.labels, setting.days)
    honest = {name: _plan(v2, honest_cells, w) for name, w in WEIGHTINGS.items()}
    rows: list[dict[str, Any]] = []
    for share, placement, check in itertools.product(SHARES, ("spread", "burst"), (True, False)):
        forged_n = max(1, round(share * len(setting.t)))
        worst: dict[str, tuple[float, str, str]] = {}
        for persona in range(len(v2.personas)):
            point = claimable_point(v2, persona, rng, check=check)
            days = (setting.days.min() + np.arange(forged_n) % DAYS if placement == "spread"
                    else np.full(forged_n, setting.days.min()))
            cells = _cells(v2, np.vstack([setting.t, np.tile(point, (forged_n, 1))]),
                           np.r_[setting.labels, np.full(forged_n, persona)], np.r_[setting.days, days])
            for name, weighting in WEIGHTINGS.items():
                plan = _plan(v2, cells, weighting)
                moved = _displacement(honest[name], plan, persona, unit)
                pid = v2.personas[persona].id
                flagged = _verdict(plan, pid)
                if moved > worst.get(name, (-1.0, "", ""))[0]:
                    worst[name] = (moved, pid, flagged)
        rows.append({"share": share, "placement": placement, "check": check,
                     **{name: {"displacement": m, "persona": pid, "flagged": f}
                        for name, (m, pid, f) in worst.items()}})
    members = np.bincount(setting.labels, minlength=len(v2.personas))
    return {"rows": rows, "honest_flagged": {n: p.drift.suspect for n, p in honest.items()},
            "contributions": len(setting.t),
            "members": {p.id: int(m) for p, m in zip(v2.personas, members, strict=True)}}


def table(results: dict[str, Any]) -> list[str]:
    """The README table (Markdown lines)."""
    lines = ["| forged | placement | collector | plain mean | day cap 3x (default) | cap + 20 % trim"
             " | drift gate (default weighting) |", "| ---: | --- | --- | ---: | ---: | ---: | --- |"]
    for row in results["rows"]:
        cells = [f"{row[name]['displacement']:.1%} ({row[name]['persona']})" for name in WEIGHTINGS]
        flag = row["day cap 3x"]["flagged"]
        lines.append(f"| {row['share']:.0%} | {row['placement']} |"
                     f" {'consistency check' if row['check'] else 'no check'} | {' | '.join(cells)}"
                     f" | {flag} |")
    return lines


def run(cfg: RunConfig) -> SuiteResult:
    """The benchmark runner's entry: the figures, no timings."""
    result = SuiteResult("poisoning")
    results = run_all(seed=cfg.seed % 1000)
    for row in results["rows"]:
        name = f"{row['share']:.0%} {row['placement']} {'check' if row['check'] else 'no check'}"
        result.figures[name] = {w: round(row[w]["displacement"], 4) for w in WEIGHTINGS}
        result.figures[name]["flagged"] = row["day cap 3x"]["flagged"]
    result.figures["honest refit flagged concentrated"] = results["honest_flagged"]
    result.notes.append("displacement of the attacked persona vs the honest refit, in units of the"
                        " median distance between personas; worst persona of four")
    return result


def main() -> None:
    """Print the table."""
    results = run_all()
    print("\n".join(table(results)))
    print(f"honest round: {results['contributions']:,} contributions, per persona"
          f" {results['members']}; the honest refit flagged concentrated: {results['honest_flagged']}")


if __name__ == "__main__":
    main()
