"""Build the reference bundle and conformance vectors in ``models/``.

Ports of the SDK to other languages (Kotlin, Swift, JavaScript) prove they
match by reproducing these vectors: feature folds of event sequences,
pseudonyms under a published test key, persona assignments, and bundle
verification outcomes. Run ``python -m edgepersona.trainer.release.conformance models/``.

The signing key and pseudonym secret used here are TEST KEYS, published on
purpose in ``models/``: never trust them in production.
"""

from __future__ import annotations

import json
import random
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgepersona.sdk import FeatureSpec, PersonaRuntime, Pseudonymizer, load_spec_json
from edgepersona.sdk.protocol.fold import FoldPlan, check_event
from edgepersona.trainer.data.events import read_event_log
from edgepersona.trainer.data.features import compute_features
from edgepersona.trainer.release.export import write_bundle, zip_bundle
from edgepersona.trainer.release.train import TrainOptions, train_bundle

__all__ = ["build_reference"]

TEST_SIGNING_SEED = bytes(range(32))  # deterministic test key: never use in production
TEST_PSEUDONYM_SECRET = bytes(range(100, 132))
CREATED = datetime(2026, 1, 1, tzinfo=UTC)
EVENT_NAMES = ("purchase", "return", "page_view")


def _dataset(name: str) -> Path:
    """A file bundled with the trainer."""
    return Path(__file__).parents[1] / "datasets" / name


def _random_events(rng: random.Random, start: float) -> list[dict[str, Any]]:
    """One event sequence: out of order, duplicates, bursts and long gaps."""
    events: list[dict[str, Any]] = []
    at = start
    for _ in range(rng.randint(1, 25)):
        at += rng.choice([0.0, 1.0, 3600.0, 86_400.0 * rng.random() * 40, 86_400.0 * 400])
        when = at - rng.choice([0.0, 0.0, 0.0, 86_400.0 * 3])  # some arrive late
        props: dict[str, Any] = {"invoice": f"inv{rng.randint(1, 6)}",
                                 "product": f"sku{rng.randint(1, 300)}"}
        value = round(rng.uniform(0.5, 400.0), 2) if rng.random() < 0.9 else None
        events.append({"event": rng.choice(EVENT_NAMES), "value": value, "at": when,
                       "properties": props})
        if rng.random() < 0.1:
            events.append(dict(events[-1]))  # a duplicate
    return events


def _fold_vectors(spec: FeatureSpec, count: int) -> list[dict[str, Any]]:
    """Event sequences and the feature vectors the fold must produce."""
    plan, rng = FoldPlan.from_spec(spec), random.Random(1234)  # noqa: S311 - reproducible vectors
    vectors = []
    for _ in range(count):
        events = _random_events(rng, 1_300_000_000.0)
        state = plan.new_state()
        for e in events:
            state.fold(e["event"], e["at"], check_event(e["event"], e["value"], e["at"],
                                                        e["properties"]))
        at = max(e["at"] for e in events) + rng.choice([0.0, 86_400.0, 86_400.0 * 90])
        vectors.append({"events": events, "at": at, "features": state.evaluate(at).tolist()})
    return vectors


def _pseudonym_vectors() -> list[dict[str, Any]]:
    """Pseudonyms of a few ids under the published test secret."""
    out = []
    for period_days in (30, 7):
        maker = Pseudonymizer(TEST_PSEUDONYM_SECRET, period_s=period_days * 86_400)
        for raw_id in ("user-1", "user-2", "ünïcödé", ""):
            if not raw_id:
                continue
            for domain in ("local", "sync"):
                for at in (0.0, 1_700_000_000.0, 1_700_000_000.0 + period_days * 86_400):
                    p = maker.pseudonym(raw_id, domain=domain, at=at)
                    out.append({"period_seconds": period_days * 86_400, "raw_id": raw_id,
                                "domain": domain, "at": at, "value": p.value,
                                "key_id": p.key_id, "epoch": p.epoch})
    return out


def build_reference(out: Path) -> Path:
    """Write ``out/reference/`` (bundle folder + zip), the test keys and ``vectors.json``.

    Args:
        out: the models folder.

    Returns:
        The vectors file.
    """
    key = Ed25519PrivateKey.from_private_bytes(TEST_SIGNING_SEED)
    spec = load_spec_json(_dataset("retail_spec.json").read_text(encoding="utf-8"))
    log = read_event_log(_dataset("retail_events.csv.gz"))
    rows = compute_features(log, spec)
    options = TrainOptions(model_id="reference", k=4, seed=11, expires_days=3650,
                           stability_rounds=2)
    result = train_bundle(rows, spec, key, options, lineage={"source": log.source},
                          bad_rows=log.bad_rows, now=CREATED)
    out.mkdir(parents=True, exist_ok=True)
    write_bundle(out / "reference", result.files, overwrite=True)
    zip_bundle(result.files, out / "reference.zip")
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    (out / "test_signing_key.pub.pem").write_bytes(public_pem)
    runtime = PersonaRuntime.open(result.files, trusted_keys=[public_pem], now=CREATED)
    probe = np.random.default_rng(5)
    low, high = np.array(result.manifest.assigner.lower), np.array(result.manifest.assigner.upper)
    samples = np.vstack([rows[:20], probe.uniform(low - 0.2 * (high - low), high * 1.5, (20, len(low)))])
    assignments = [{"features": r.tolist(), "index": a.index, "persona_id": a.persona_id,
                    "confidence": a.confidence, "distances": list(a.distances)}
                   for r, a in zip(samples, runtime.assign_many(samples), strict=True)]
    vectors = {
        "format": 1,
        "note": "TEST KEYS ONLY. See models/CONFORMANCE.md.",
        "signing_key_seed_hex": TEST_SIGNING_SEED.hex(),
        "pseudonym_secret_hex": TEST_PSEUDONYM_SECRET.hex(),
        "bundle": "reference.zip", "trusted_at": CREATED.isoformat(),
        "fold": _fold_vectors(spec, 40),
        "pseudonyms": _pseudonym_vectors(),
        "assign": assignments,
    }
    path = out / "vectors.json"
    path.write_text(json.dumps(vectors, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":
    print(build_reference(Path(sys.argv[1] if len(sys.argv) > 1 else "models")))
