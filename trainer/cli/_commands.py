"""The handlers behind each ``edgepersona`` command (quickstart lives beside them)."""

from __future__ import annotations

import argparse
import math
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from edgepersona.sdk import Assignment, FeatureSpec, InputError, PersonaRuntime, load_spec_json

if TYPE_CHECKING:
    from edgepersona.trainer.data.events import FeatureTable
    from edgepersona.trainer.data.facts import UserFacts
    from edgepersona.trainer.engines.row_blocks import RowBlocks
    from edgepersona.trainer.release.train import TrainOptions

from edgepersona.trainer.cli._render import (
    console,
    print_assignments,
    print_cards,
    print_json,
    progress_steps,
)

__all__ = ["assign", "inspect", "keys_generate", "spec_suggest", "train", "verify"]


def _open(args: argparse.Namespace) -> PersonaRuntime:
    """Open and verify the bundle named on the command line."""
    keys = [Path(k).read_bytes() for k in args.trusted_key]
    return PersonaRuntime.open(args.bundle, trusted_keys=keys,
                               backend=getattr(args, "backend", "auto"))


def _time(text: str | None) -> float | None:
    """Parse --at (ISO 8601 or unix seconds)."""
    if text is None:
        return None
    from edgepersona.trainer.data.events import parse_time

    value = parse_time(text)
    if not math.isfinite(value):
        raise InputError(f"--at must be ISO 8601 or unix seconds, got {text!r}")
    return value


def _columns(args: argparse.Namespace) -> object:
    """The event log column names from the --*-col options."""
    from edgepersona.trainer.data.events import Columns

    return Columns(args.user_col, args.time_col, args.event_col, args.value_col)


def keys_generate(args: argparse.Namespace) -> int:
    """``edgepersona keys generate``: a signing or collector key pair."""
    out = Path(args.out)
    if args.kind == "collector":
        from edgepersona.trainer.release.keys import generate_collector_key

        private, public = generate_collector_key(out, hybrid=args.hybrid)
        console.print(f"collector key: {private} (keep it on the collector)\npublic: {public}"
                      " (configure devices with it)")
        return 0
    from edgepersona.trainer.release.keys import generate_signing_key

    private, public, kid = generate_signing_key(out)
    console.print(f"signing key {kid}\n  private: {private} (mode 0600, never ship it)\n"
                  f"  public:  {public} (give it to devices as --trusted-key)")
    return 0


def spec_suggest(args: argparse.Namespace) -> int:
    """``edgepersona spec suggest``: propose a spec from data."""
    spec = _suggest(Path(args.data), args, table=args.table)
    text = spec.to_json()
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
        console.print(f"wrote {len(spec.features)} features to {args.out}; review them:")
        for note in spec.notes:
            console.print(f"  - {note}")
    else:
        print(text)
    return 0


def _suggest(path: Path, args: argparse.Namespace, *, table: bool) -> FeatureSpec:
    """Suggest a spec for an event log or an aggregated table."""
    if table:
        from edgepersona.trainer.data.events import parse_number, read_table
        from edgepersona.trainer.data.suggest import suggest_table_spec

        raw = read_table(path)
        numeric = {}
        for name, cells in raw.items():
            values = np.array([parse_number(c) for c in cells])
            if name != args.user_col and np.isfinite(values).all():
                numeric[name] = values
        return suggest_table_spec(numeric, seed=args.seed, exclude=_outcome(args))
    from edgepersona.trainer.data.events import read_event_log
    from edgepersona.trainer.data.suggest import suggest_spec

    return suggest_spec(read_event_log(path, _columns(args)),  # type: ignore[arg-type]
                        seed=args.seed, exclude_events=_outcome(args))


def _outcome(args: argparse.Namespace) -> tuple[str, ...]:
    """The --outcome event or column, which never becomes a feature."""
    outcome = getattr(args, "outcome", None)
    return (outcome,) if outcome else ()


def train(args: argparse.Namespace) -> int:
    """``edgepersona train``: fit, sign and export a bundle."""
    from edgepersona.trainer.data.events import read_event_log, read_feature_table
    from edgepersona.trainer.data.features import compute_features
    from edgepersona.trainer.release.export import write_bundle, zip_bundle
    from edgepersona.trainer.release.keys import load_signing_key
    from edgepersona.trainer.release.train import TrainOptions, train_bundle

    if not args.epsilon_sweep and not (args.key and args.out):
        raise InputError("train needs --key KEYS/ and --out BUNDLE/ (only --epsilon-sweep writes nothing)")
    key = load_signing_key(Path(args.key)) if args.key else None
    data = Path(args.events or args.table)
    if args.engine == "dask" and not args.spec:
        raise InputError("--engine dask needs --spec: make one with `edgepersona spec suggest` on one file")
    if args.engine == "dask" and args.outcome:
        raise InputError("--outcome runs on the local engine only; drop --engine dask")
    with progress_steps("training") as step, _engine(args):
        if args.spec:
            spec = load_spec_json(Path(args.spec).read_text(encoding="utf-8"))
        else:
            spec = _suggest(data, args, table=bool(args.table))
            step(f"no --spec given: using the suggested spec ({len(spec.features)} features,"
                 " coarse noisy bounds; see `edgepersona spec suggest`)")
        facts = None
        if args.engine == "dask":
            rows, bad, users = _dask_rows(spec, args, step)
        elif args.events:
            from edgepersona.trainer.data.facts import log_facts

            log = read_event_log(data, _columns(args))  # type: ignore[arg-type]
            rows, bad, users = compute_features(log, spec, _time(args.at)), log.bad_rows, log.n_users
            facts = log_facts(log, spec, _time(args.at), args.outcome)
        else:
            table = read_feature_table(data, spec)
            rows, bad, users = table.values, table.bad_rows, len(table.values)
            facts = _table_facts(data, table, args.outcome)
        step(f"{users:,} users, {sum(bad.values()):,} bad rows skipped"
             + (f" ({dict(bad)})" if bad else ""))
        if args.epsilon_sweep:
            return _sweep(spec, users, args)
        k_low, k_high = (int(x) for x in args.k_range.split(","))
        options = TrainOptions(model_id=args.model_id, version=args.version,
                               k="auto" if args.k == "auto" else int(args.k),
                               k_range=(k_low, k_high), k_min=args.k_min,
                               min_share=args.min_share, seed=args.seed,
                               expires_days=args.expires_days)
        options = _with_privacy(options, args, data)
        assert key is not None
        result = train_bundle(rows, spec, key, options, lineage={"source": data.name,
                              "users": users}, bad_rows=bad, progress=step, facts=facts)
    out = write_bundle(Path(args.out), result.files, overwrite=args.force)
    if args.zip:
        zip_bundle(result.files, out.with_suffix(".zip"))
    print_cards(result.manifest)
    console.print(f"bundle written to {out}")
    return 0


def _table_facts(path: Path, table: FeatureTable, outcome: str | None) -> UserFacts:
    """Display facts of a table: its own values, and the --outcome column as yes/no."""
    from edgepersona.trainer.data.events import read_table
    from edgepersona.trainer.data.facts import table_facts

    if outcome is None:
        return table_facts(table.values)
    cells = read_table(path).get(outcome)
    if cells is None:
        raise InputError(f"--outcome {outcome!r} is not a column of {path.name}")
    kept = [cells[int(position)] for position in table.user_keys]  # keys are row positions here
    flags = np.array([str(c).strip().lower() in ("true", "yes", "y", "1", "1.0") for c in kept])
    return table_facts(table.values, flags, outcome)


def _engine(args: argparse.Namespace) -> AbstractContextManager[object]:
    """The Dask client for --engine dask (to --scheduler, or a local cluster); else nothing."""
    if args.engine != "dask":
        return nullcontext()
    from edgepersona.trainer.engines.dask_engine import dask_client

    return dask_client(args.scheduler)


def _dask_rows(spec: FeatureSpec, args: argparse.Namespace, step: Callable[[str], None]
               ) -> tuple[npt.NDArray[np.float64] | RowBlocks, Counter[str], int]:
    """Feature rows computed on the Dask cluster from partitioned --events or --table."""
    from edgepersona.trainer.data.dask_features import read_event_rows, read_table_rows
    from edgepersona.trainer.engines.dask_engine import worker_count

    step(f"dask engine: {worker_count()} worker(s)")
    if args.events:
        read = read_event_rows(args.events, spec, _columns(args), _time(args.at))  # type: ignore[arg-type]
    else:
        read = read_table_rows(args.table, spec)
    return read.rows, read.bad_rows, read.users


def _with_privacy(options: TrainOptions, args: argparse.Namespace, data: Path) -> TrainOptions:
    """Add --epsilon and friends; sets the source's budget on first use (--budget)."""
    if args.epsilon is None:
        return options
    if not args.ledger:
        raise InputError("--epsilon needs --ledger PATH: private releases are spent from a ledger")
    source = args.source or data.name
    if args.budget:
        from edgepersona.trainer.privacy.ledger import PrivacyLedger
        from edgepersona.trainer.release.keys import load_signing_key

        parts = [float(x) for x in args.budget.split(",")]
        ledger = PrivacyLedger(Path(args.ledger), load_signing_key(Path(args.key)))
        if not ledger.status(source).has_budget:
            ledger.set_budget(source, epsilon=parts[0], delta=parts[1] if len(parts) > 1 else 1e-5)
    return replace(options, epsilon=args.epsilon, delta=args.delta, iterations=args.iterations,
                   ledger=Path(args.ledger), source=source)


def _sweep(spec: FeatureSpec, users: int, args: argparse.Namespace) -> int:
    """Print the ε preview table; nothing is released or spent."""
    from rich.table import Table

    from edgepersona.trainer.privacy.preview import epsilon_sweep

    if args.k == "auto":
        raise InputError("--epsilon-sweep needs a fixed --k")
    epsilons = [float(x) for x in args.epsilon_sweep.split(",")]
    points = epsilon_sweep(spec, users=users, k=int(args.k), epsilons=epsilons, delta=args.delta,
                           seed=args.seed or 0)
    table = Table(title=f"DP preview: {users:,} users, k={args.k}, δ={args.delta:g}"
                  " (synthetic data in the declared bounds; nothing spent)", title_justify="left")
    for column in ("ε", "cost vs non-private", "stability (ARI of two fits)"):
        table.add_column(column, justify="right")
    for p in points:
        table.add_row(f"{p.epsilon:g}", f"{p.cost_ratio:.3f}x", f"{p.stability_ari:.3f}")
    console.print(table)
    return 0


def verify(args: argparse.Namespace) -> int:
    """``edgepersona verify``: check signature, hashes and expiry."""
    runtime = _open(args)
    manifest = runtime.manifest
    console.print(f"OK: {manifest.model_id} v{manifest.version}, signed by a trusted key,"
                  f" {len(manifest.files)} file(s) match their digests, expires"
                  f" {manifest.expires_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC")
    return 0


def inspect(args: argparse.Namespace) -> int:
    """``edgepersona inspect``: persona cards of a verified bundle."""
    manifest = _open(args).manifest
    if args.json:
        print_json({"model_id": manifest.model_id, "version": manifest.version,
                    "metrics": manifest.metrics.model_dump(mode="json"),
                    "privacy": manifest.privacy.model_dump(mode="json"),
                    "personas": [c.model_dump(mode="json") for c in manifest.personas]})
    else:
        print_cards(manifest)
    return 0


def assign(args: argparse.Namespace) -> int:
    """``edgepersona assign``: one persona per user, from features or folded events."""
    runtime = _open(args)
    if args.features:
        from edgepersona.trainer.data.events import read_feature_table

        table = read_feature_table(Path(args.features), runtime.spec,
                                   args.user_col if _has_column(args) else None)
        labels, results = table.user_keys, runtime.assign_many(table.values)
    else:
        labels, results = _assign_events(runtime, Path(args.events), args)
    if args.json:
        print_json([{"user": u, **_as_dict(r)} for u, r in zip(labels, results, strict=True)])
    else:
        print_assignments(labels, results)
    return 0


def _has_column(args: argparse.Namespace) -> bool:
    """Whether the features table has the user column (it is optional there)."""
    from edgepersona.trainer.data.events import read_table

    return args.user_col in read_table(Path(args.features))


def _assign_events(runtime: PersonaRuntime, path: Path, args: argparse.Namespace
                   ) -> tuple[list[str], list[Assignment]]:
    """Fold each user's events one at a time, as the device does, then assign."""
    from edgepersona.trainer.data.events import read_event_log
    from edgepersona.trainer.data.replay import replay_on_device

    log = read_event_log(path, _columns(args))  # type: ignore[arg-type]
    rows = replay_on_device(runtime.fold_plan, log, _time(args.at))
    return log.user_keys, runtime.assign_many(rows)


def _as_dict(result: Assignment) -> dict[str, object]:
    """An assignment as JSON-ready data."""
    return {"persona_id": result.persona_id, "name": result.name, "index": result.index,
            "confidence": result.confidence, "distances": list(result.distances),
            "model_version": result.model_version, "determined": result.determined}
