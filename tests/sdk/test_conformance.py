"""The Python SDK reproduces the published conformance vectors in models/."""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgepersona.sdk import ModelIntegrityError, PersonaRuntime, Pseudonymizer
from edgepersona.sdk.protocol.fold import FoldPlan, check_event

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="module")
def vectors() -> dict[str, Any]:
    data = json.loads((MODELS / "vectors.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def runtime(vectors: dict[str, Any]) -> PersonaRuntime:
    return PersonaRuntime.open(MODELS / vectors["bundle"],
                               trusted_keys=[(MODELS / "test_signing_key.pub.pem").read_bytes()],
                               now=datetime.fromisoformat(vectors["trusted_at"]))


def test_reference_folder_and_zip_hold_the_same_verified_bundle(runtime: PersonaRuntime,
                                                                vectors: dict[str, Any]) -> None:
    folder = PersonaRuntime.open(MODELS / "reference",
                                 trusted_keys=[(MODELS / "test_signing_key.pub.pem").read_bytes()],
                                 now=datetime.fromisoformat(vectors["trusted_at"]))
    assert folder.manifest == runtime.manifest


def test_flipping_any_byte_of_the_reference_bundle_fails(vectors: dict[str, Any]) -> None:
    files = {p.name: p.read_bytes() for p in (MODELS / "reference").iterdir()}
    key = (MODELS / "test_signing_key.pub.pem").read_bytes()
    for name, data in files.items():
        for position in (0, len(data) // 2, len(data) - 1):
            broken = bytearray(data)
            broken[position] ^= 0x01
            with pytest.raises(ModelIntegrityError):
                PersonaRuntime.open({**files, name: bytes(broken)}, trusted_keys=[key],
                                    now=datetime.fromisoformat(vectors["trusted_at"]))


def test_fold_vectors(runtime: PersonaRuntime, vectors: dict[str, Any]) -> None:
    plan = FoldPlan.from_spec(runtime.spec)
    assert len(vectors["fold"]) >= 20
    for case in vectors["fold"]:
        state = plan.new_state()
        for e in case["events"]:
            state.fold(e["event"], e["at"], check_event(e["event"], e["value"], e["at"],
                                                        e["properties"]))
        got = state.evaluate(case["at"])
        for g, want in zip(got, case["features"], strict=True):
            assert math.isclose(g, want, rel_tol=1e-9, abs_tol=1e-9)


def test_pseudonym_vectors(vectors: dict[str, Any]) -> None:
    secret = bytes.fromhex(vectors["pseudonym_secret_hex"])
    assert vectors["pseudonyms"]
    for case in vectors["pseudonyms"]:
        maker = Pseudonymizer(secret, period_s=case["period_seconds"])
        p = maker.pseudonym(case["raw_id"], domain=case["domain"], at=case["at"])
        assert (p.value, p.key_id, p.epoch) == (case["value"], case["key_id"], case["epoch"])


@pytest.mark.parametrize("backend", ["onnxruntime", "numpy"])
def test_assign_vectors(vectors: dict[str, Any], backend: str) -> None:
    runtime = PersonaRuntime.open(MODELS / vectors["bundle"],
                                  trusted_keys=[(MODELS / "test_signing_key.pub.pem").read_bytes()],
                                  now=datetime.fromisoformat(vectors["trusted_at"]), backend=backend)
    for case in vectors["assign"]:
        result = runtime.assign(case["features"])
        assert result.index == case["index"]
        assert result.persona_id == case["persona_id"]
        assert result.confidence == pytest.approx(case["confidence"], rel=1e-4, abs=1e-5)
        np.testing.assert_allclose(result.distances, case["distances"], rtol=1e-4, atol=1e-5)
