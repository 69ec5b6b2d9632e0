"""The clean-room implementation passes every vector of the kit, and imports nothing of ours."""

from __future__ import annotations

import ast
import base64
import json
import math
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import assign, bundle, fold, rotation, wire
from .errors import KitError

HERE = Path(__file__).resolve().parent
MODELS = HERE.parents[1] / "models"
ALLOWED = {"numpy", "onnxruntime", "cryptography"}


@pytest.fixture(scope="module")
def vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((MODELS / "vectors.json").read_text(encoding="utf-8"))
    return data


def outcome(action: Any) -> tuple[str, Any]:
    try:
        return "ok", action()
    except KitError as exc:
        return type(exc).__name__, None


def test_the_clean_room_imports_only_the_standard_library_numpy_onnxruntime_and_cryptography() -> None:
    for path in sorted(HERE.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                roots = [] if node.level else [(node.module or "").split(".")[0]]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) \
                    in ("__import__", "import_module"):
                raise AssertionError(f"{path.name}:{node.lineno}: dynamic import")
            else:
                continue
            for root in roots:
                allowed = root in ALLOWED or root in sys.stdlib_module_names or (
                    root == "pytest" and path.name.startswith("test_"))
                assert allowed, f"{path.name}:{node.lineno} imports {root}"
        assert re.search(r"\bedgepersona\.(sdk|trainer)\b", path.read_text(encoding="utf-8")) is None


def _trusted(hex_keys: list[str]) -> dict[str, bytes]:
    return {bundle.key_id(bytes.fromhex(k)): bytes.fromhex(k) for k in hex_keys}


def _open_bundle(data: bytes, trusted: dict[str, bytes], now: datetime, min_version: int) -> Any:
    verified = bundle.verify(bundle.read_archive(data), trusted, now=now, min_version=min_version)
    bundle.load_graph(verified)
    return verified


def test_verification_vectors(vectors: dict[str, Any]) -> None:
    for case in vectors["verify"]:
        got = outcome(lambda c=case: _open_bundle(
            base64.b64decode(c["zip_base64"]), _trusted(c["trusted_keys"]),
            datetime.fromisoformat(c["now"]), c["min_version"]))
        assert got[0] == case["outcome"], case["name"]
        if got[1] is not None:
            assert (got[1].manifest["model_id"], got[1].manifest["version"]) == \
                (case["model_id"], case["version"])


@pytest.fixture(scope="module")
def reference(vectors: dict[str, Any]) -> Any:
    public = serialization.load_pem_public_key((MODELS / "test_signing_key.pub.pem").read_bytes())
    assert isinstance(public, Ed25519PublicKey)
    raw = public.public_bytes_raw()
    return _open_bundle((MODELS / vectors["bundle"]).read_bytes(), {bundle.key_id(raw): raw},
                        datetime.fromisoformat(vectors["trusted_at"]), 0)


def test_rotation_vectors(vectors: dict[str, Any]) -> None:
    for case in vectors["rotation"]:
        t = case["trusted"]
        trust = rotation.Trust(_trusted(t["keys"]), frozenset(t["revoked"]), t["rotation"])
        got = outcome(lambda c=case, s=trust: rotation.rotate(s, c["statement"].encode(),
                                                              datetime.fromisoformat(c["now"])))
        assert got[0] == case["outcome"], case["name"]
        if got[1] is not None:
            assert {"key_ids": sorted(got[1].keys), "revoked": sorted(got[1].revoked),
                    "rotation": got[1].rotation} == case["result"]


def test_fold_vectors(vectors: dict[str, Any]) -> None:
    for group in vectors["fold"]["groups"]:
        for case in group["cases"]:
            state = fold.State(group["spec"])
            for e in case["events"]:
                state.fold(e["event"], e["at"], fold.check_event(e["event"], e["value"], e["at"],
                                                                 e["properties"]))
            assert (state.folded, state.ignored, state.latest) == \
                (case["folded"], case["ignored"], case["latest"])
            for got, want in zip(state.evaluate(case["at"]), case["features"], strict=True):
                assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9), group["name"]


def test_checked_events_evaluation_and_future_vectors(vectors: dict[str, Any]) -> None:
    for case in vectors["fold"]["checked_events"]:
        got = outcome(lambda c=case: fold.check_event(c["event"], c["value"], c["at"], c["properties"]))
        assert got[0] == case["outcome"]
        if got[1] is not None:
            assert got[1] == case["folded_properties"]
    specs = {g["name"]: g["spec"] for g in vectors["fold"]["groups"]}
    for case in vectors["fold"]["evaluation"]:
        state = fold.State(specs[case["spec"]])
        for e in case["events"]:
            props = fold.check_event(e["event"], e["value"], e["at"], e["properties"])
            state.fold(e["event"], e["at"], props)
        assert outcome(lambda s=state, c=case: s.evaluate(c["at"]))[0] == case["outcome"]
    for case in vectors["fold"]["future"]:
        refused = case["at"] > case["now"] + case["max_future_seconds"]
        assert ("InputError" if refused else "ok") == case["outcome"]


def test_distinct_keys_follow_the_written_rule() -> None:
    cases = [(3, "3.0"), (3.0, "3.0"), (-0.0, "0.0"), (0, "0.0"), (1e16, "1e+16"), (1e-05, "1e-05"),
             (1.5e-07, "1.5e-07"), (0.0001, "0.0001"), (12345.678, "12345.678"), (-2.5, "-2.5"),
             (2.0**53, "9007199254740992.0"), (1e15, "1000000000000000.0"), (5e-324, "5e-324"),
             (1.7976931348623157e308, "1.7976931348623157e+308"), (-1.5e-300, "-1.5e-300"),
             (2.0**-24, "5.960464477539063e-08")]
    for value, text in cases:
        assert fold.key(value) == text
    assert [fold.number(s) for s in (" 12.5 ", "1_0", "1e3", ".5", "5.", "abc", "inf", "", "1__0", "1e400")] \
        == [12.5, 10.0, 1000.0, 0.5, 5.0, None, None, None, None, None]


def test_pseudonym_vectors(vectors: dict[str, Any]) -> None:
    secret = bytes.fromhex(vectors["keys"]["pseudonym_secret_hex"])
    for case in vectors["pseudonyms"]:
        got = assign.pseudonym(secret, case["raw_id"], case["domain"], case["at"], case["period_seconds"])
        assert got == (case["value"], case["key_id"], case["epoch"])


@pytest.mark.parametrize("engine", ["formula", "graph"])
def test_assign_vectors(vectors: dict[str, Any], reference: Any, engine: str) -> None:
    manifest = reference.manifest
    session = bundle.load_graph(reference)
    for case in vectors["assign"]:
        if engine == "formula":
            index, persona_id, confidence, distances = assign.assign(manifest, case["features"])
        else:
            a = manifest["assigner"]
            clipped = np.minimum(np.maximum(case["features"], a["lower"]), a["upper"])
            i, d, c = bundle.run_graph(session, clipped[None, :])
            index, confidence, distances = int(i[0]), float(c[0]), d[0].tolist()
            persona_id = manifest["personas"][index]["id"]
        assert (index, persona_id) == (case["index"], case["persona_id"])
        assert math.isclose(confidence, case["confidence"], rel_tol=1e-4, abs_tol=1e-5)
        np.testing.assert_allclose(distances, case["distances"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(assign.model_space(manifest["assigner"], case["features"]),
                                   case["model_space"], rtol=1e-9, atol=1e-9)


def test_envelope_vectors(vectors: dict[str, Any]) -> None:
    collectors = {name: wire.load_private_key_file(entry["private_key_file"])
                  for name, entry in vectors["keys"]["collector"].items()}
    for case in vectors["envelopes"]:
        got = outcome(lambda c=case: wire.open_envelope(
            collectors[c["suite"]], bytes.fromhex(c["envelope_hex"]), c["app_id"], c["model_versions"]))
        assert got[0] == case["outcome"], case["name"]
        if got[1] is not None:
            contribution, plaintext = got[1]
            assert contribution == case["contribution"]
            assert plaintext.hex() == case["plaintext_hex"]


def test_day_bucket_and_framing_vectors(vectors: dict[str, Any]) -> None:
    for case in vectors["day_buckets"]:
        assert outcome(lambda c=case: wire.day_bucket(c["at"])) == (case["outcome"], case.get("day"))
    for case in vectors["framing"]:
        body = bytes.fromhex(case["body_hex"])
        got = outcome(lambda b=body: wire.decode_batch(b))
        assert got[0] == case["outcome"], case["name"]
        if got[1] is not None:
            assert [e.hex() for e in got[1]] == case["envelopes_hex"]
            assert wire.encode_batch(got[1]) == body
