"""``edgepersona quickstart``: the whole first loop on data that ships with the package.

Trains personas on a real retail transaction log (UCI Online Retail, CC BY 4.0;
see the README), exports and signs a bundle, opens and verifies it as a device
would, then replays each held-back customer's events one at a time through the
device-side fold and assigns their persona. Writes only inside one folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np

from edgepersona.sdk import InputError, PersonaRuntime, load_spec_json
from edgepersona.trainer.cli._args import Subparsers
from edgepersona.trainer.cli._render import console, print_assignments, print_cards, progress_steps
from edgepersona.trainer.cli._types import k_or_auto, non_negative_int, positive_int

__all__ = ["add_parser", "quickstart"]

HOLDOUT_SHARE = 0.1


def add_parser(sub: Subparsers) -> None:
    """Add ``quickstart``.

    Args:
        sub: the root parser's sub-commands.
    """
    parser = sub.add_parser("quickstart", help="train, sign, verify and assign on bundled data")
    parser.add_argument("--dir", help="work folder (default: a new temporary folder)")
    parser.add_argument("--k", type=k_or_auto, default="auto", help="number of personas or 'auto'")
    parser.add_argument("--seed", type=non_negative_int, default=7, help="random seed (default 7)")
    parser.add_argument("--show", type=non_negative_int, default=12, help="held-back users to list (12)")
    parser.add_argument("--dynamic", action="store_true",
                        help="the whole sync loop: gateways, collector, refit, drift gate, update")
    parser.add_argument("--customers", type=positive_int, default=300,
                        help="with --dynamic: customers served by the simulated gateways (300)")
    parser.set_defaults(handler=quickstart)


def _dataset(name: str) -> Path:
    """Path of a file bundled in ``edgepersona.trainer.datasets``."""
    return Path(str(resources.files("edgepersona.trainer.datasets").joinpath(name)))


def _work_folder(requested: str | None) -> Path:
    """The one folder the quickstart writes in: new, or empty if given."""
    if requested is None:
        return Path(tempfile.mkdtemp(prefix="edgepersona-quickstart-"))
    work = Path(requested)
    if work.exists() and not work.is_dir():
        raise InputError(f"--dir {work} is a file; pass an empty or new folder")
    if work.exists() and any(work.iterdir()):
        raise InputError(f"{work} is not empty; pass an empty or new folder to --dir")
    work.mkdir(parents=True, exist_ok=True)
    return work


def quickstart(args: argparse.Namespace) -> int:
    """Run the quickstart (see the module docstring).

    Args:
        args: the parsed ``quickstart`` options.

    Returns:
        0 on success.
    """
    from edgepersona.trainer.data.events import read_event_log
    from edgepersona.trainer.data.facts import log_facts
    from edgepersona.trainer.data.features import compute_features
    from edgepersona.trainer.data.replay import replay_on_device
    from edgepersona.trainer.privacy.source_identity import opaque_source
    from edgepersona.trainer.release.export import write_bundle, zip_bundle
    from edgepersona.trainer.release.keys import generate_signing_key, load_signing_key
    from edgepersona.trainer.release.train import TrainOptions, train_bundle

    started = time.perf_counter()
    work = _work_folder(args.dir)
    if args.dynamic:
        return _dynamic(work, args, started)
    console.print(f"[bold]edgepersona quickstart[/] — writing only in {work}")
    private, public, kid = generate_signing_key(work / "keys")
    log = read_event_log(_dataset("retail_events.csv.gz"))
    spec = load_spec_json(_dataset("retail_spec.json").read_text(encoding="utf-8"))
    rng = np.random.default_rng(args.seed)
    users = rng.permutation(log.n_users)
    n_hold = max(1, round(HOLDOUT_SHARE * log.n_users))
    held, kept = np.sort(users[:n_hold]), np.sort(users[n_hold:])
    reference = float(log.time.max())
    console.print(f"data: UCI Online Retail (CC BY 4.0), {len(log.time):,} events of"
                  f" {log.n_users:,} customers; training on {len(kept):,}, holding back {n_hold}")
    with progress_steps("training") as step:
        train_log = log.subset(kept)
        rows = compute_features(train_log, spec, reference)
        options = TrainOptions(model_id="retail-personas", k=args.k, seed=args.seed)
        result = train_bundle(rows, spec, load_signing_key(private), options,
                              lineage={"source": opaque_source(train_log.user_keys,  # no file name
                                                               work / "keys" / "source.key"),
                                       "users": len(kept)},
                              bad_rows=log.bad_rows, progress=step,
                              facts=log_facts(train_log, spec, reference))
    bundle_dir = write_bundle(work / "bundle", result.files)
    archive = zip_bundle(result.files, work / "bundle.zip")
    print_cards(result.manifest)
    console.print(f"bundle: {bundle_dir} and {archive.name}, signed by key {kid}")

    runtime = PersonaRuntime.open(archive, trusted_keys=[public.read_bytes()])
    console.print(f"device: verified {archive.name} (signature, {len(runtime.manifest.files)}"
                  f" file digests, expiry) and loaded it with {runtime.backend}")
    held_log = log.subset(held)
    folded = replay_on_device(runtime.fold_plan, held_log, reference)
    results = runtime.assign_many(folded)
    shown = min(args.show, len(results))
    labels = [f"#{i + 1} ({int((held_log.user == i).sum())} ev.)" for i in range(shown)]
    print_assignments(labels, results[:shown], title=f"Held-back customers (first {shown})")
    batch = compute_features(held_log, spec, reference)
    gap = float(np.max(np.abs(folded - batch) / np.maximum(np.abs(batch), 1.0)))
    counts = np.bincount([r.index for r in results], minlength=len(runtime.personas))
    summary = ", ".join(f"{c.id} {n}" for c, n in zip(runtime.personas, counts, strict=True))
    console.print(f"held-back users per persona: {summary}; mean confidence"
                  f" {np.mean([r.confidence for r in results]):.2f}")
    console.print(f"device fold vs trainer batch features: max relative difference {gap:.1e}")
    console.print(f"done in {time.perf_counter() - started:.1f} s; everything is in {work}")
    return 0



def _dynamic(work: Path, args: argparse.Namespace, started: float) -> int:
    """``quickstart --dynamic``: devices, sync, refit, drift report, update."""
    from edgepersona.trainer.release.dynamic_loop import run_dynamic_loop

    console.print(f"[bold]edgepersona quickstart --dynamic[/] — writing only in {work}")
    run_dynamic_loop(work, customers=args.customers, seed=args.seed,
                     say=lambda line: console.print(line, markup=False))
    console.print(f"done in {time.perf_counter() - started:.1f} s; everything is in {work}")
    return 0
