"""One scheduled refit round: refit → drift gate → publish or hold, safe to run twice.

``edgepersona schedule`` runs this from cron or a systemd timer. Each run:

1. takes an exclusive lock on the bundles folder (a second run at the same
   time says so and does nothing);
2. finds the newest version on the shelf; if it waits for review or was
   rejected, it stops (the collector keeps serving the last approved one);
3. otherwise it reads the daily cells of that version and of up to
   ``history_versions`` earlier ones through :class:`AggregateStore`, weighs
   them (decay, day cap, trim), and measures the refit;
4. stops if too few contributions arrived under the newest version (waiting)
   or nothing moved beyond ``min_move`` (converged: no version is proposed);
5. otherwise signs ``v+1`` and writes it beside the others: published when
   the gate passes, held with a ``NEEDS_REVIEW`` marker (written before the
   bundle appears) when it does not.

Running it again is safe: a held version stops the next run at step 2, a
published one needs its own contributions first (step 4), and a converged
round writes nothing. Every run ends in one :class:`ScheduleOutcome` whose
``line`` is the log line.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgepersona.sdk import InputError, Manifest, PersonaRuntime
from edgepersona.sdk.protocol.manifest import parse_manifest
from edgepersona.sdk.protocol.spec import Window
from edgepersona.trainer.collector import HOLD_MARKERS, AggregateStore, BundleShelf
from edgepersona.trainer.release.refit import plan_refit, sign_refit, write_refit
from edgepersona.trainer.release.refit_cells import (
    CellWeighting,
    VersionCells,
    stack_cells,
    weigh_cells,
)
from edgepersona.trainer.release.refit_drift import DriftReport

__all__ = ["ScheduleOptions", "ScheduleOutcome", "read_history", "run_schedule"]

_NAME = re.compile(r"(?P<model>[A-Za-z0-9][A-Za-z0-9._-]{0,63})-v(?P<version>[1-9][0-9]{0,9})(\.zip)?")
LOCK_NAME = ".schedule.lock"
DEFAULT_WINDOW = Window.blend((0.6, 7.0), (0.4, 90.0))  # 60 % recent, 40 % long-term


@dataclass(frozen=True)
class ScheduleOptions:
    """What a scheduled round does.

    Attributes:
        weighting: how daily cells are decayed and bounded (default: 60 % of a
            7-day and 40 % of a 90-day half-life, day cap 3x).
        k_min: fewest contributions per released persona.
        threshold: the drift gate (0.15 = 15 %).
        min_move: below this largest move and share change, the round has
            converged and proposes no version.
        expires_days: validity of a new version in days.
        history_versions: earlier versions whose cells still count (decayed).
    """

    weighting: CellWeighting = field(default_factory=lambda: CellWeighting(DEFAULT_WINDOW))
    k_min: int = 10
    threshold: float = 0.15  # relative move or share change
    min_move: float = 0.01  # relative move and absolute share change
    expires_days: float = 90.0  # days
    history_versions: int = 8


@dataclass(frozen=True)
class ScheduleOutcome:
    """What a run did.

    Attributes:
        status: ``published``, ``held``, ``awaiting-review``, ``rejected``,
            ``unserved``, ``waiting``, ``converged`` or ``busy``.
        serving: the approved version the collector serves after the run.
        new_version: the version written, if any.
        line: the one log line.
        drift: the drift report, when a refit was measured.
    """

    status: str
    serving: int | None
    new_version: int | None
    line: str
    drift: DriftReport | None = None


@contextmanager
def _exclusive(shelf: Path) -> Iterator[bool]:
    """Hold the shelf's schedule lock (True) or learn that another run holds it (False)."""
    with open(shelf / LOCK_NAME, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _entries(shelf: Path) -> dict[int, tuple[str, str | None]]:
    """Version → (stem, hold marker or None) of every bundle entry on the shelf."""
    names = set(os.listdir(shelf))
    found: dict[int, tuple[str, str | None]] = {}
    for name in names:
        match = _NAME.fullmatch(name)
        if match is None:
            continue
        stem = f"{match['model']}-v{match['version']}"
        marker = next((m for m in HOLD_MARKERS for held in
                       (f"{stem}.{m}", f"{stem}.zip.{m}", f"{stem}/{m}")
                       if held in names or (shelf / held).exists()), None)
        found[int(match["version"])] = (stem, marker)
    return found


def _manifest(shelf: Path, stem: str) -> Manifest | None:
    """A shelved version's manifest, read without verification (only its persona ids are used)."""
    import zipfile

    folder, archive = shelf / stem, shelf / f"{stem}.zip"
    try:
        if folder.is_dir():
            return parse_manifest((folder / "manifest.json").read_bytes())
        with zipfile.ZipFile(archive) as bundle:
            return parse_manifest(bundle.read("manifest.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def read_history(store: AggregateStore, shelf: Path, newest: int, versions: int
                 ) -> list[VersionCells]:
    """The daily cells of version ``newest`` and of up to ``versions`` earlier ones.

    Args:
        store: the collector's aggregate store (read through its public interface).
        shelf: the bundles folder (each version's manifest maps indices to ids).
        newest: the version refitted.
        versions: how many earlier versions to include.

    Returns:
        One entry per version that has cells and a manifest on the shelf.
    """
    entries = _entries(shelf)
    out = []
    for version in store.model_versions():
        if not newest - versions <= version <= newest or version not in entries:
            continue
        manifest = _manifest(shelf, entries[version][0])
        if manifest is not None:
            out.append(VersionCells(version, tuple(p.id for p in manifest.personas),
                                    tuple(store.daily_aggregates(version))))
    return out


def run_schedule(shelf: Path, store: AggregateStore, key: Ed25519PrivateKey,
                 trusted_keys: Sequence[bytes], options: ScheduleOptions = ScheduleOptions(), *,
                 now: datetime | None = None) -> ScheduleOutcome:
    """Run one scheduled round (see the module docstring).

    Args:
        shelf: the bundles folder the collector serves.
        store: the collector's aggregate store.
        key: the bundle signing key.
        trusted_keys: public keys the newest approved bundle must verify with.
        options: the round's parameters.
        now: the signing time (default: the system clock).

    Returns:
        What happened, with its log line.

    Raises:
        InputError: the shelf holds no approved bundle.
    """
    if not shelf.is_dir():
        raise InputError(f"bundles folder {shelf} does not exist")
    with _exclusive(shelf) as mine:
        if not mine:
            return ScheduleOutcome("busy", None, None, "schedule: another run holds the lock on"
                                   f" {shelf.name}; nothing done")
        return _round(shelf, store, key, trusted_keys, options, now)


def _round(shelf: Path, store: AggregateStore, key: Ed25519PrivateKey,
           trusted_keys: Sequence[bytes], options: ScheduleOptions,
           now: datetime | None) -> ScheduleOutcome:
    """Steps 2 to 5, under the lock."""
    latest = BundleShelf(shelf).latest()
    if latest is None:
        raise InputError(f"{shelf} holds no approved bundle; train and place v1 there first")
    serving = latest.version
    newest = max(_entries(shelf))
    if newest > serving:
        stem, marker = _entries(shelf)[newest]
        status = {"REJECTED": "rejected", None: "unserved"}.get(marker, "awaiting-review")
        what = {"rejected": "was rejected; remove it or train afresh",
                "unserved": "is on the shelf but not served (see the collector's log)",
                }.get(status, f"awaits review (edgepersona approve {stem})")
        return ScheduleOutcome(status, serving, None, f"schedule {latest.model_id}: v{newest} {what};"
                               f" serving v{serving}, nothing done")
    previous = PersonaRuntime.open(latest.path, trusted_keys=list(trusted_keys), now=now).manifest
    history = read_history(store, shelf, serving, options.history_versions)
    own = sum(c.aggregate.count for part in history if part.version == serving for c in part.cells)
    head = f"schedule {previous.model_id}: v{serving}"
    if own < options.k_min:
        return ScheduleOutcome("waiting", serving, None, f"{head} has {own} contribution(s), fewer"
                               f" than k-min {options.k_min}; serving v{serving}, nothing done")
    cells = stack_cells(history, [p.id for p in previous.personas], len(previous.spec.features))
    plan = plan_refit(previous, weigh_cells(cells, options.weighting), k_min=options.k_min,
                      threshold=options.threshold, weighting=options.weighting.describe())
    drift = plan.drift
    summary = (f"largest move {drift.max_move:.1%}, {drift.contributions:,} contributions"
               f" over {len(cells.days)} day(s)")
    if plan.converged(options.min_move):
        return ScheduleOutcome("converged", serving, None, f"{head} converged ({summary} <"
                               f" {options.min_move:.0%}); serving v{serving}, no new version",
                               drift)
    result = sign_refit(plan, key, expires_days=options.expires_days, now=now)
    version = result.manifest.version
    out = write_refit(result, shelf / f"{previous.model_id}-v{version}")
    if drift.needs_review:
        return ScheduleOutcome("held", serving, version, f"{head} → v{version} held:"
                               f" {drift.reason()} ({summary}; report {out.name}.drift.md);"
                               f" serving v{serving}", drift)
    return ScheduleOutcome("published", version, version, f"{head} → v{version} published"
                           f" ({summary}); serving v{version}", drift)
