"""Build the conformance kit in ``models/``: a reference bundle and ``vectors.json``.

Ports of the SDK to other languages (Kotlin, Swift, JavaScript) prove they
match by reproducing these vectors; ``models/CONFORMANCE.md`` states every
algorithm they exercise. Run::

    python -m edgepersona.trainer.release.conformance models
    python -m edgepersona.trainer.release.conformance models --retrain   # a new reference bundle

The reference bundle is a fixture: it is trained once and then kept (training
is not bit-for-bit reproducible across library versions); every vector is
derived from it and from fixed inputs through the SDK's public names.
Regenerating is a deliberate, versioned act: when the derived vectors differ
from the committed ones (beyond the tolerances of ``CONFORMANCE.md``) and
:data:`KIT_VERSION` was not bumped, the generator refuses to write.

The signing keys, the pseudonym secret and the collector keys are TEST KEYS,
published on purpose in ``models/``: never trust them in production.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgepersona.sdk import InputError, PersonaRuntime, Pseudonymizer, load_spec_json
from edgepersona.sdk.protocol import Contribution, SealSuite, model_space
from edgepersona.trainer.release.conformance_cases import (
    canonical_zip,
    rotation_cases,
    verification_cases,
)
from edgepersona.trainer.release.conformance_fold import fold_section
from edgepersona.trainer.release.conformance_wire import (
    collector_key_file,
    day_bucket_cases,
    envelope_cases,
    framing_cases,
)

__all__ = ["KIT_VERSION", "build_kit", "kit_differences"]

KIT_VERSION = 2
"""The kit's version. Bump it whenever a committed vector would change: see CONFORMANCE.md."""

SIGNING_SEED = bytes(range(32))  # test keys: never use in production
NEW_SIGNING_SEED = bytes(range(32, 64))
STRANGER_SEED = bytes(range(64, 96))
PSEUDONYM_SECRET = bytes(range(100, 132))
COLLECTOR_X25519 = bytes(range(140, 172))
COLLECTOR_MLKEM768_X25519 = bytes(range(150, 246))  # 64-byte ML-KEM seed, then X25519
CREATED = datetime(2026, 1, 1, tzinfo=UTC)
REFERENCE = "reference"
FLOAT32_SECTIONS = ("assign",)  # outputs of the float32 graph: compared to 1e-5


def _dataset(name: str) -> Path:
    """A file bundled with the trainer."""
    return Path(__file__).parents[1] / "datasets" / name


def _train_reference(folder: Path, key: Ed25519PrivateKey) -> None:
    """Train the reference bundle (only with ``--retrain`` or when there is none)."""
    from edgepersona.trainer.data.events import read_event_log
    from edgepersona.trainer.data.features import compute_features
    from edgepersona.trainer.release.export import write_bundle
    from edgepersona.trainer.release.train import TrainOptions, train_bundle

    spec = load_spec_json(_dataset("retail_spec.json").read_text(encoding="utf-8"))
    log = read_event_log(_dataset("retail_events.csv.gz"))
    options = TrainOptions(model_id="reference", k=4, seed=11, expires_days=3650,
                           stability_rounds=2)
    result = train_bundle(compute_features(log, spec), spec, key, options,
                          lineage={"source": "reference"}, bad_rows=log.bad_rows, now=CREATED)
    write_bundle(folder, result.files, overwrite=True)


def _pseudonym_vectors() -> list[dict[str, Any]]:
    """Pseudonyms of a few ids under the published test secret."""
    out = []
    for period in (30 * 86_400, 7 * 86_400, 1):
        maker = Pseudonymizer(PSEUDONYM_SECRET, period_s=period)
        for raw_id in ("user-1", "user-2", "ünïcödé", "a" * 300):
            for domain in ("local", "sync"):
                for at in (0.0, 1_700_000_000.0, 1_700_000_000.0 + period, 1_700_000_000.5):
                    p = maker.pseudonym(raw_id, domain=domain, at=at)
                    out.append({"period_seconds": period, "raw_id": raw_id, "domain": domain,
                                "at": at, "value": p.value, "key_id": p.key_id, "epoch": p.epoch})
    return out


def _assign_vectors(runtime: PersonaRuntime) -> list[dict[str, Any]]:
    """Raw rows (centroid pre-images, midpoints, random, out of bounds) and their personas."""
    a = runtime.manifest.assigner
    low, high = np.array(a.lower), np.array(a.upper)
    log1p, centroids = np.array(a.log1p), np.array(a.centroids)
    model = centroids / np.array(a.scale) + np.array(a.center)
    images = np.where(log1p, np.expm1(model), model)
    mids = [(images[i] + images[j]) / 2 for i in range(len(images)) for j in range(i + 1, len(images))]
    rng = np.random.default_rng(5)
    rows = np.vstack([images, *mids, rng.uniform(low, high, (20, len(low))),
                      rng.uniform(low - 0.5 * (high - low), high * 2, (10, len(low))), low, high])
    results, synced = runtime.assign_many(rows), model_space(a, rows)
    return [{"features": r.tolist(), "index": x.index, "persona_id": x.persona_id,
             "confidence": x.confidence, "distances": list(x.distances), "model_space": m.tolist()}
            for r, x, m in zip(rows, results, synced, strict=True)]


def _contributions(version: int) -> list[Contribution]:
    """Two contributions: a typical one and one at every field's limit."""
    sync = Pseudonymizer(PSEUDONYM_SECRET).pseudonym("user-1", domain="sync", at=1_767_225_600.0)
    return [
        Contribution(pseudonym=sync.value, pseudonym_epoch=sync.epoch, sequence=1,
                     day_bucket=20_454, model_version=version, persona_index=2,
                     features=(1.0986122886681098, 6.5, 0.0, 4.25, 0.6931471805599453, 12.5)),
        Contribution(pseudonym="0123456789abcdef", pseudonym_epoch=2**32 - 1, sequence=2**64 - 1,
                     day_bucket=0, model_version=version, persona_index=2**16 - 1,
                     features=(-0.0, 5e-324, 1.7976931348623157e308, -1.5)),
    ]


def _previous(path: Path) -> dict[str, Any]:
    """The committed vectors, or an empty kit."""
    if not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def derive_vectors(models: Path, previous: dict[str, Any]) -> dict[str, Any]:
    """Derive every vector from the reference bundle in ``models`` through the SDK.

    Args:
        models: the kit folder (``reference/`` must exist).
        previous: the committed vectors (envelopes are reused from them).

    Returns:
        The vectors document.
    """
    key = Ed25519PrivateKey.from_private_bytes(SIGNING_SEED)
    new_key = Ed25519PrivateKey.from_private_bytes(NEW_SIGNING_SEED)
    stranger = Ed25519PrivateKey.from_private_bytes(STRANGER_SEED)
    files = {p.name: p.read_bytes() for p in sorted((models / REFERENCE).iterdir())}
    runtime = PersonaRuntime.open(files, trusted_keys=[key.public_key()], now=CREATED)
    version = runtime.version
    collector = {"x25519": (SealSuite.X25519, COLLECTOR_X25519),
                 "mlkem768_x25519": (SealSuite.MLKEM768_X25519, COLLECTOR_MLKEM768_X25519)}
    old_envelopes = {c["name"]: c["envelope_hex"] for c in previous.get("envelopes", [])}
    envelopes = envelope_cases(collector, _contributions(version), old_envelopes)
    good = [bytes.fromhex(c["envelope_hex"]) for c in envelopes if c["outcome"] == "ok"][:3]
    return {
        "kit_version": KIT_VERSION,
        "note": "TEST KEYS ONLY. See models/CONFORMANCE.md.",
        "keys": {
            "signing_seed_hex": SIGNING_SEED.hex(), "new_signing_seed_hex": NEW_SIGNING_SEED.hex(),
            "stranger_seed_hex": STRANGER_SEED.hex(), "pseudonym_secret_hex": PSEUDONYM_SECRET.hex(),
            "collector": {name: {"suite": suite.value,
                                 "private_key_file": collector_key_file("PRIVATE", suite, raw).decode()}
                          for name, (suite, raw) in collector.items()},
        },
        "bundle": f"{REFERENCE}.zip", "trusted_at": CREATED.isoformat(),
        "fold": fold_section(runtime.spec, files, key),
        "pseudonyms": _pseudonym_vectors(),
        "assign": _assign_vectors(runtime),
        "verify": verification_cases(files, key, stranger, CREATED),
        "rotation": rotation_cases(key, new_key, stranger, CREATED),
        "envelopes": envelopes,
        "day_buckets": day_bucket_cases(),
        "framing": framing_cases(good),
    }


def kit_differences(old: Any, new: Any, path: str = "") -> list[str]:
    """Where two vector documents differ beyond the kit's tolerances.

    Floats compare to a relative 1e-9 (1e-5 for the outputs of the float32 graph in
    ``assign``); everything else exactly.

    Args:
        old: the committed document (or a part of it).
        new: the derived document (or the same part).
        path: where in the document the parts sit.

    Returns:
        The paths that differ (empty when the kit is unchanged).
    """
    if isinstance(old, dict) and isinstance(new, dict):
        if set(old) != set(new):
            return [f"{path}: keys {sorted(set(old) ^ set(new))}"]
        return [d for k in sorted(old) for d in kit_differences(old[k], new[k], f"{path}/{k}")]
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return [f"{path}: {len(old)} entries, now {len(new)}"]
        return [d for i, (a, b) in enumerate(zip(old, new, strict=True))
                for d in kit_differences(a, b, f"{path}[{i}]")]
    numbers = (int, float)
    if (isinstance(old, float) or isinstance(new, float)) and isinstance(old, numbers) \
            and isinstance(new, numbers) and not isinstance(old, bool) and not isinstance(new, bool):
        float32 = path.startswith(tuple(f"/{s}" for s in FLOAT32_SECTIONS)) and "/model_space" not in path
        tolerance = 1e-5 if float32 else 1e-9
        close = math.isclose(old, new, rel_tol=tolerance, abs_tol=tolerance)
        return [] if close else [f"{path}: {old!r} -> {new!r}"]
    return [] if old == new and type(old) is type(new) else [f"{path}: {old!r} -> {new!r}"]


def build_kit(models: Path, *, retrain: bool = False) -> list[str]:
    """Write (or check) the kit in ``models``.

    Args:
        models: the kit folder.
        retrain: train a new reference bundle (needs a new :data:`KIT_VERSION`).

    Returns:
        What was written; empty when the committed kit is already what the SDK derives.

    Raises:
        InputError: the vectors would change but :data:`KIT_VERSION` was not bumped.
    """
    key = Ed25519PrivateKey.from_private_bytes(SIGNING_SEED)
    previous = _previous(models / "vectors.json")
    same_version = previous.get("kit_version") == KIT_VERSION
    if retrain and same_version:
        raise InputError(f"a new reference bundle changes every vector: bump KIT_VERSION"
                         f" (now {KIT_VERSION}) first")
    models.mkdir(parents=True, exist_ok=True)
    written = []
    if retrain or not (models / REFERENCE).is_dir():
        _train_reference(models / REFERENCE, key)
        written.append(REFERENCE)
    vectors = derive_vectors(models, previous)
    differences = kit_differences(previous, vectors) if same_version else ["kit_version"]
    if same_version and differences:
        raise InputError(f"the SDK no longer derives the committed kit v{KIT_VERSION}"
                         f" ({len(differences)} differences, first: {differences[0]}); if the change"
                         " is intended, bump KIT_VERSION and say why in CONFORMANCE.md")
    files = {p.name: p.read_bytes() for p in sorted((models / REFERENCE).iterdir())}
    extras = {f"{REFERENCE}.zip": canonical_zip(sorted(files.items())),
              "test_signing_key.pub.pem": key.public_key().public_bytes(
                  serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)}
    if differences:
        extras["vectors.json"] = (json.dumps(vectors, indent=1, sort_keys=True) + "\n").encode()
    for name, data in extras.items():
        target = models / name
        if not target.exists() or target.read_bytes() != data:
            target.write_bytes(data)
            written.append(name)
    return written


def main(argv: list[str] | None = None) -> int:
    """The command line: ``python -m edgepersona.trainer.release.conformance [models] [--retrain]``.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(prog="python -m edgepersona.trainer.release.conformance")
    parser.add_argument("models", nargs="?", default="models", type=Path)
    parser.add_argument("--retrain", action="store_true", help="train a new reference bundle")
    args = parser.parse_args(argv)
    try:
        written = build_kit(args.models, retrain=args.retrain)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"kit v{KIT_VERSION}: " + (f"wrote {', '.join(written)}" if written else "unchanged"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
