"""Dynamic personas under a known behaviour shift: refit rounds vs a full refit on the raw events.

    python -m benchmarks --only dynamic_shift
    python -m benchmarks.dynamic_shift [--chart docs/dynamic_shift.png] [--json OUT.json]

Two real logs: the bundled retail log and a second one of 1,500 other
customers of the same shop (``benchmarks/second_log.py``). v1 (k = 4) is
trained on the features at the shift date, 2011-06-01. From then on 40 % of
the largest persona's members take on the behaviour of another persona's
members: each mover's events after the shift are replaced by those of a
randomly drawn member of the persona farthest from theirs (real events,
re-labelled). In every round a random 30 % of the customers' devices
(``--participation``) fold their events (the batch features equal the device
fold), assign with the version they hold and contribute once; the refit
reads the cells of every version so far, weighed by the variant's kernel, and
proposes the next version unless nothing moved beyond 1 % (converged).

Two experiments, one round a week each:

* **tracking**: 26 weekly rounds from the shift to the end of the log, the
  full refit moving with the data (it moves 2-6 % a week on its own: recency
  and decayed spend change every week);
* **settling**: behaviour frozen 12 weeks after the shift, 12 weekly rounds
  on the same features (fresh samples): do the rounds converge to the full
  refit, and how fast?

Per round and variant: the distance of each persona to a full, non-private
k-means refit on the raw events of the same period (all customers, started
from the previous full refit, run to convergence, personas matched one to
one), relative to the median distance between the full refit's personas (the
drift gate's unit); the share error per persona (absolute, percentage
points); the first round within 5 % and 5 points. The simulated reviewer
approves every version except one where a persona vanished (fewer than
k-min = 10 contributions), which keeps the current version. Variants: the
refit of old (the previous version's cells only, all days equal), all rounds
equal, a 7-day and a 14-day half-life, a 60 % 7-day / 40 % 90-day blend; each without
and with ε = 1 per round (δ = 1e-6; each round is a separate release, so the
rounds compose).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans

from edgepersona.sdk import FeatureSpec, InputError, Manifest, load_spec_json
from edgepersona.sdk.protocol.assign import model_space, numpy_assign
from edgepersona.sdk.protocol.spec import Window
from edgepersona.trainer.collector import DailyAggregate, PersonaAggregate
from edgepersona.trainer.data.events import EventLog, read_event_log
from edgepersona.trainer.data.features import compute_features
from edgepersona.trainer.release.refit import RefitPrivacy, plan_refit, sign_refit
from edgepersona.trainer.release.refit_cells import CellWeighting, VersionCells, stack_cells, weigh_cells
from edgepersona.trainer.release.train import TrainOptions, train_bundle

from ._measure import RunConfig, SuiteResult
from .second_log import BUNDLED, SECOND_LOG

__all__ = ["VARIANTS", "run", "shift_log", "simulate"]

F64 = npt.NDArray[np.float64]
DAY = 86_400.0
SHIFT = datetime(2011, 6, 1, tzinfo=UTC).timestamp()
MOVERS = 0.4
WITHIN = 0.05
SETTLE_WEEKS = 12
SPEC = BUNDLED.parent / "retail_spec.json"
# name -> (kernel, earlier versions whose cells count)
VARIANTS: dict[str, tuple[Window, int]] = {
    "previous version only (old refit)": (Window(), 0),
    "all rounds equal": (Window(), 10_000),
    "half-life 7 d": (Window.half_life(7), 10_000),
    "half-life 14 d": (Window.half_life(14), 10_000),
    "blend 60% 7 d + 40% 90 d": (Window.blend((0.6, 7), (0.4, 90)), 10_000),
}


@dataclass
class Shifted:
    """A log whose movers took on another persona's behaviour after the shift date."""

    log: EventLog
    source: int
    target: int
    movers: int


def _standardised(manifest: Manifest, rows: F64) -> F64:
    """Rows in the model's standardised space (where centroids live)."""
    params = manifest.assigner
    return (model_space(params, rows) - np.asarray(params.center)) * np.asarray(params.scale)


def shift_log(log: EventLog, v1: Manifest, rows: F64, active: npt.NDArray[np.int64],
              rng: np.random.Generator) -> Shifted:
    """Give 40 % of the largest persona's members the later events of the farthest persona's.

    Args:
        log: the original log.
        v1: the version trained at the shift date.
        rows: the features of ``active`` users at the shift date.
        active: the users v1 was trained on.
        rng: the random source.

    Returns:
        The shifted log and who moved where.
    """
    labels = numpy_assign(v1.assigner, rows)[0]
    source = int(np.bincount(labels, minlength=len(v1.personas)).argmax())
    centroids = np.asarray(v1.assigner.centroids)
    target = int(np.linalg.norm(centroids - centroids[source], axis=1).argmax())
    members, donors = active[labels == source], active[labels == target]
    movers = rng.choice(members, size=int(MOVERS * len(members)), replace=False)
    donor_of = dict(zip(movers.tolist(), rng.choice(donors, size=len(movers)).tolist(), strict=True))
    later = log.time > SHIFT
    keep = ~(later & np.isin(log.user, movers))
    parts = [np.flatnonzero(keep)]
    owners = [log.user[keep]]
    for mover, donor in donor_of.items():
        taken = np.flatnonzero(later & (log.user == donor))
        parts.append(taken)
        owners.append(np.full(len(taken), mover, dtype=log.user.dtype))
    index = np.concatenate(parts)
    shifted = EventLog(np.concatenate(owners), log.time[index], log.event[index],
                       {k: v[index] for k, v in log.properties.items()}, log.user_keys,
                       source=log.source)
    return Shifted(shifted, source, target, len(movers))


def _reference(z: F64, start: F64, seed: int) -> tuple[F64, F64]:
    """The full refit: k-means to convergence from ``start``; centroids and shares."""
    fit = KMeans(n_clusters=len(start), init=start, n_init=1, max_iter=300, random_state=seed).fit(z)
    shares = np.bincount(fit.labels_, minlength=len(start)) / len(z)
    return np.asarray(fit.cluster_centers_), shares


def _compare(ours: Manifest, ref: F64, ref_shares: F64) -> tuple[float, float]:
    """Largest relative centroid distance and share error, personas matched one to one."""
    mine = np.asarray(ours.assigner.centroids)
    cost = np.linalg.norm(mine[:, None, :] - ref[None, :, :], axis=2)
    rows, cols = linear_sum_assignment(cost)
    gaps = np.linalg.norm(ref[:, None, :] - ref[None, :, :], axis=2)
    unit = float(np.median(gaps[np.triu_indices(len(ref), 1)]))
    distance = float(cost[rows, cols].max() / unit) if len(mine) == len(ref) else float("inf")
    shares = np.array([p.share for p in ours.personas])
    error = float(np.abs(shares[rows] - ref_shares[cols]).max())
    return distance, error


@dataclass
class Rounds:
    """What each round sees: its day, the raw features, who contributes, the full refit."""

    days: list[int]
    features: list[F64]
    samples: list[npt.NDArray[np.bool_]]
    references: list[tuple[F64, F64]]


def simulate(rounds: Rounds, spec: FeatureSpec, v1: Manifest, key: Ed25519PrivateKey,
             variant: str, epsilon: float | None, seed: int) -> list[dict[str, Any]]:
    """Run the rounds of one variant, starting from v1.

    Args:
        rounds: the rounds.
        spec: the feature spec.
        v1: the version trained at the shift date.
        key: a signing key.
        variant: a key of :data:`VARIANTS`.
        epsilon: ε per round, or None.
        seed: the noise seed.

    Returns:
        One row per round: version, distance, share error, published or held, verdict.
    """
    window, earlier = VARIANTS[variant]
    weighting = CellWeighting(window, day_cap=None if epsilon else 3.0)
    current, history, out = v1, [], []
    for r, day in enumerate(rounds.days):
        rows = rounds.features[r][rounds.samples[r]]
        labels = numpy_assign(current.assigner, rows)[0]
        t = model_space(current.assigner, rows)
        own = tuple(p.id for p in current.personas)
        cells = tuple(DailyAggregate(day, p, PersonaAggregate(int((labels == p).sum()),
                                                              t[labels == p].sum(axis=0),
                                                              (t[labels == p] ** 2).sum(axis=0)))
                      for p in range(len(own)) if (labels == p).any())
        history.append(VersionCells(current.version, own, cells))
        usable = [h for h in history if h.version >= current.version - earlier]
        stacked = stack_cells(usable, [p.id for p in current.personas], len(spec.features))
        privacy = RefitPrivacy(epsilon, seed=seed * 1000 + r) if epsilon else None
        try:
            plan = plan_refit(current, weigh_cells(stacked, weighting), k_min=10, privacy=privacy,
                              weighting=weighting.describe())
        except InputError:  # fewer than two personas kept k-min (noise): keep the version
            plan = None
        proposed = plan is not None and not plan.converged(0.01)
        held = plan is not None and bool(plan.drift.vanished)  # the reviewer keeps every persona
        if plan is not None and proposed and not held:
            current = sign_refit(plan, key, now=datetime.fromtimestamp(day * DAY, UTC)).manifest
        distance, error = _compare(current, *rounds.references[r])
        out.append({"round": r + 1, "version": current.version, "distance": distance,
                    "share_error": error, "proposed": proposed, "held": held,
                    "verdict": "refused (k-min)" if plan is None else plan.drift.reason() or "published",
                    "suspect": plan is not None and plan.drift.suspect})
    return out


def _prepare(path: Path, spec: FeatureSpec, weeks: int, settle: int, seed: int,
             key: Ed25519PrivateKey, participation: float) -> tuple[Shifted, Manifest, Rounds, Rounds]:
    """Train v1 at the shift date, shift the log; the weekly rounds and the settling rounds."""
    log = read_event_log(path)
    active = np.unique(log.user[log.time <= SHIFT])
    rows = compute_features(log, spec, SHIFT)[active]
    v1 = train_bundle(rows, spec, key, TrainOptions(model_id="shift", k=4, seed=seed,
                                                    stability_rounds=1),
                      lineage={"source": "benchmark"}, now=datetime.fromtimestamp(SHIFT, UTC)).manifest
    shifted = shift_log(log, v1, rows, active, np.random.default_rng(seed))
    draw = np.random.default_rng(seed + 1)
    weekly = Rounds([], [], [], [])
    start = np.asarray(v1.assigner.centroids)
    for r in range(weeks):
        at = SHIFT + (r + 1) * 7 * DAY
        raw = compute_features(shifted.log, spec, at)[np.unique(shifted.log.user[shifted.log.time <= at])]
        start = _round(weekly, int(at // DAY), raw, draw.random(len(raw)) < participation, v1, start, seed)
    # Settling: behaviour frozen 12 weeks after the shift; weekly rounds on the same features.
    at = SHIFT + SETTLE_WEEKS * 7 * DAY
    raw = compute_features(shifted.log, spec, at)[np.unique(shifted.log.user[shifted.log.time <= at])]
    reference = _reference(_standardised(v1, raw), np.asarray(v1.assigner.centroids), seed)
    settling = Rounds([int(at // DAY) + 7 * r for r in range(settle)], [raw] * settle,
                      [draw.random(len(raw)) < participation for _ in range(settle)],
                      [reference] * settle)
    return shifted, v1, weekly, settling


def _round(rounds: Rounds, day: int, raw: F64, sample: npt.NDArray[np.bool_], v1: Manifest,
           start: F64, seed: int) -> F64:
    """Append one weekly round and its full refit (started from the previous one); its centroids."""
    centroids, shares = _reference(_standardised(v1, raw), start, seed)
    rounds.days.append(day)
    rounds.features.append(raw)
    rounds.samples.append(sample)
    rounds.references.append((centroids, shares))
    return centroids


def run_all(weeks: int = 26, settle: int = 12, seed: int = 7, participation: float = 0.3,
            say: Callable[[str], None] = print) -> dict[str, Any]:
    """Every log x experiment x variant x ε; the figures as plain data.

    Args:
        weeks: weekly rounds after the shift (26 reach the log's end).
        settle: weekly rounds on behaviour frozen 12 weeks after the shift.
        seed: seed of the fits, the movers, the samples and the noise.
        participation: the share of devices that contribute in a round (drawn anew each round).
        say: progress lines.

    Returns:
        ``{log: {"moved": ..., "tracking": {run: [rows]}, "settling": {run: [rows]}}}``.
    """
    spec = load_spec_json(SPEC.read_text(encoding="utf-8"))
    key = Ed25519PrivateKey.generate()
    out: dict[str, Any] = {}
    for name, path in (("retail (bundled)", BUNDLED), ("retail B (other customers)", SECOND_LOG)):
        shifted, v1, weekly, settling = _prepare(path, spec, weeks, settle, seed, key, participation)
        body: dict[str, Any] = {"moved": f"{shifted.movers} customers from"
                                         f" {v1.personas[shifted.source].id} to"
                                         f" {v1.personas[shifted.target].id}'s behaviour"}
        for experiment, rounds in (("tracking", weekly), ("settling", settling)):
            runs = {}
            for variant in VARIANTS:
                for epsilon in (None, 1.0):
                    label = f"{variant} | {'ε=1' if epsilon else 'exact'}"
                    runs[label] = simulate(rounds, spec, v1, key, variant, epsilon, seed)
                    say(f"[dynamic_shift] {name}, {experiment}: {label}: last distance"
                        f" {runs[label][-1]['distance']:.1%}")
            body[experiment] = runs
        out[name] = body
    return out


def _first_within(rows: list[dict[str, Any]]) -> int | None:
    """The first round within 5 % (every persona) and 5 points (every share)."""
    return next((r["round"] for r in rows if r["distance"] <= WITHIN and r["share_error"] <= WITHIN),
                None)


def _tail(rows: list[dict[str, Any]], key: str, last: int = 8) -> float:
    """The median of a figure over the last rounds (one round is noisy)."""
    return float(np.median([r[key] for r in rows[-last:]]))


def summary_rows(results: dict[str, Any], experiment: str) -> list[tuple[str, ...]]:
    """A README table, one row per log and run.

    Args:
        results: what :func:`run_all` returned.
        experiment: ``tracking`` (weekly rounds) or ``settling`` (frozen behaviour).

    Returns:
        log, run, distance after 1 and 4 rounds, median distance and share error
        over the last 8 rounds, the first round within 5 %, versions published
        and rounds flagged concentrated.
    """
    table = []
    for log, body in results.items():
        for label, rows in body[experiment].items():
            first = _first_within(rows)
            table.append((log, *label.split(" | "), _pct(rows[0]["distance"]),
                          _pct(rows[min(3, len(rows) - 1)]["distance"]),
                          _pct(_tail(rows, "distance")), f"{100 * _tail(rows, 'share_error'):.1f}",
                          str(first) if first else "never",
                          f"{sum(r['proposed'] and not r['held'] for r in rows)}/{len(rows)}",
                          str(sum(r["suspect"] for r in rows))))
    return table


HEADER = ("| log | cells weighed by | ε | after 1 round | after 4 rounds | last 8 rounds (median)"
          " | share error, last 8 (pp) | first round within 5 % | versions published"
          " | flagged concentrated |\n| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")


def _pct(value: float) -> str:
    """A distance as a percentage, or ``persona lost`` when a persona vanished."""
    return f"{value:.1%}" if np.isfinite(value) else "persona lost"


def write_chart(results: dict[str, Any], path: Path) -> None:
    """Distance to the full refit per round: a row per log and experiment, a column per ε."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(log, experiment) for log in results for experiment in ("settling", "tracking")]
    fig, axes = plt.subplots(len(panels), 2, figsize=(11, 3.3 * len(panels)), squeeze=False)
    for i, (log, experiment) in enumerate(panels):
        for j, mode in enumerate(("exact", "ε=1")):
            ax = axes[i][j]
            for label, rows in results[log][experiment].items():
                if label.endswith(mode):
                    ax.plot([r["round"] for r in rows], [100 * min(r["distance"], 4.0) for r in rows],
                            marker=".", label=label.split(" | ")[0])
            ax.axhline(100 * WITHIN, color="grey", linestyle="--", linewidth=1)
            what = ("settling: behaviour frozen at week 12" if experiment == "settling"
                    else "tracking: weekly from the shift")
            ax.set_title(f"{log}, {mode}: {what}", fontsize=9)
            ax.set_xlabel("round")
            ax.set_ylabel("largest distance to full refit (%)")
            ax.set_yscale("log")
            ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run(cfg: RunConfig) -> SuiteResult:
    """The benchmark runner's entry: the figures, no timings."""
    result = SuiteResult("dynamic_shift")
    results = run_all(weeks=cfg.pick(6, 26), settle=cfg.pick(4, 12), say=lambda line: None)
    result.figures["participation"] = 0.3
    for experiment in ("settling", "tracking"):
        for log, variant, mode, one, four, last, share, first, published, flagged in \
                summary_rows(results, experiment):
            result.figures[f"{experiment} · {log} · {variant} · {mode}"] = {
                "distance_round1": one, "distance_round4": four, "distance_last8": last,
                "share_error_pp_last8": share, "first_round_within_5pct": first,
                "versions_published": published, "rounds_flagged_concentrated": flagged}
    result.series["dynamic_shift"] = results
    result.notes.append("distance: largest persona distance to a full non-private refit of the same"
                        " period, relative to the median gap between its personas")
    return result


def main() -> None:
    """Print the tables, write the chart and optionally the raw rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weeks", type=int, default=26)
    parser.add_argument("--settle", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--participation", type=float, default=0.3,
                        help="share of devices contributing each round (0.3)")
    parser.add_argument("--chart", type=Path, default=Path("docs/dynamic_shift.png"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = run_all(args.weeks, args.settle, args.seed, args.participation)
    for experiment in ("settling", "tracking"):
        print(f"\n{experiment}\n{HEADER}")
        for row in summary_rows(results, experiment):
            print("| " + " | ".join(row) + " |")
    for log, body in results.items():
        print(f"{log}: {body['moved']}")
    write_chart(results, args.chart)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
