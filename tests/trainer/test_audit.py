"""The privacy officer's audit: stable schema, real evidence, checks that can fail."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgepersona.sdk import FeatureSpec, ModelIntegrityError, PersonaRuntime
from edgepersona.trainer.cli import main
from edgepersona.trainer.privacy.audit import build_audit, fairness_table
from edgepersona.trainer.privacy.ledger import PrivacyLedger
from edgepersona.trainer.release.export import write_bundle
from edgepersona.trainer.release.train import TrainOptions, train_bundle

SECTIONS = {"schema_version", "audited_at", "integrity", "lineage", "privacy", "egress",
            "pseudonymisation", "storage", "personas", "fairness", "checks", "passed"}


def test_audit_has_the_documented_sections_and_passes_on_a_good_bundle(
        bundle_dir: Path, public_key: bytes) -> None:
    report = build_audit(bundle_dir, trusted_keys=[public_key])
    assert set(report) == SECTIONS
    assert report["passed"] is True
    assert report["egress"]["envelope_bytes"] <= 1024
    assert report["egress"]["sample_opened"]["model_version"] == report["integrity"]["version"]
    assert report["egress"]["raw_id_in_envelope"] is False
    json.dumps(report)  # JSON-ready


def test_a_tampered_bundle_is_not_audited(bundle_files: Mapping[str, bytes], public_key: bytes,
                                          tmp_path: Path) -> None:
    files = dict(bundle_files)
    files["model.onnx"] = files["model.onnx"][:-1] + b"\x00"
    with pytest.raises(ModelIntegrityError):
        build_audit(write_bundle(tmp_path / "b", files), trusted_keys=[public_key])


def test_ledger_totals_and_a_tampered_ledger_fails_the_check(
        bundle_dir: Path, public_key: bytes, signing_key: Ed25519PrivateKey, tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    ledger = PrivacyLedger(path, signing_key)
    ledger.set_budget("users.csv", epsilon=2.0, delta=1e-5)
    ledger.spend("users.csv", epsilon=1.0, delta=1e-6, note="v1")
    report = build_audit(bundle_dir, trusted_keys=[public_key], ledger=path)
    source = report["privacy"]["ledger"]["sources"]["users.csv"]
    assert source["releases"] == 1 and 0 < source["spent_epsilon"] <= 1.0
    lines = path.read_bytes().split(b"\n")
    lines[0] = lines[0].replace(b'"epsilon":2.0', b'"epsilon":20.0')  # raise the budget
    path.write_bytes(b"\n".join(lines))
    tampered = build_audit(bundle_dir, trusted_keys=[public_key], ledger=path)
    assert tampered["passed"] is False
    assert any(not c["passed"] and "ledger" in c["check"] for c in tampered["checks"])


def test_fairness_flags_an_absorbed_minority(bundle_dir: Path, public_key: bytes,
                                             bundle_training_rows: npt.NDArray[np.float64]) -> None:
    manifest = PersonaRuntime.open(bundle_dir, trusted_keys=[public_key]).manifest
    rural = bundle_training_rows[:30] * np.array([0.05, 20.0, 0.05, 3.0, 0.2, 0.1])
    rows = np.vstack([bundle_training_rows, rural])
    groups = ["urban"] * len(bundle_training_rows) + ["rural"] * len(rural)
    table = fairness_table(manifest, rows, groups)
    assert table["majority"] == "urban" and table["flagged"] == ["rural"]
    assert abs(sum(table["shares"]["rural"].values()) - 1.0) < 1e-9
    fair = fairness_table(manifest, bundle_training_rows, ["a", "b"] * (len(bundle_training_rows) // 2))
    assert fair["flagged"] == []


def test_cli_audit_json_and_exit_code(bundle_dir: Path, signing_keys: object,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    public = str(signing_keys.public_path)  # type: ignore[attr-defined]
    assert main(["audit", str(bundle_dir), "--trusted-key", public, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == SECTIONS


def test_a_private_bundle_is_held_to_the_ledger_head_it_recorded(
        bundle_training_rows: npt.NDArray[np.float64], bundle_spec: FeatureSpec,
        signing_key: Ed25519PrivateKey, public_key: bytes, tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    ids = [f"user-{i}" for i in range(len(bundle_training_rows))]
    options = TrainOptions(model_id="private", k=3, k_min=5, seed=1, epsilon=1.0, ledger=path)
    ledger = PrivacyLedger(path, signing_key)
    ledger.set_budget("crm", epsilon=3.0, delta=1e-5, sketch=ledger.sketch(ids))
    result = train_bundle(bundle_training_rows, bundle_spec, signing_key, options,
                          lineage={}, user_ids=ids)
    lineage = result.manifest.lineage
    assert (lineage["source"], lineage["ledger_seq"]) == ("crm", 1)
    assert lineage["ledger_id"] == ledger.ledger_id and lineage["ledger_head"] == ledger.head[1]
    bundle = write_bundle(tmp_path / "bundle", result.files)
    names = {"release recorded in the ledger", "ledger not behind the release"}

    def failing() -> set[str]:
        report = build_audit(bundle, trusted_keys=[public_key], ledger=path)
        return {c["check"] for c in report["checks"] if not c["passed"]} & names

    assert failing() == set()
    kept = path.read_bytes()
    path.write_bytes(kept[:kept.rstrip(b"\n").rfind(b"\n") + 1])  # the last line dropped
    assert failing() == names
    path.unlink()  # a new ledger: another id, the same length
    fresh = PrivacyLedger(path, signing_key)
    fresh.set_budget("crm", epsilon=3.0, delta=1e-5)
    fresh.spend("crm", epsilon=1.0, delta=1e-6, note="private v1")
    assert failing() == {"release recorded in the ledger"}


def test_the_folder_audit_matches_a_private_refit_to_its_spend(
        bundle_training_rows: npt.NDArray[np.float64], bundle_spec: FeatureSpec,
        signing_key: Ed25519PrivateKey, public_key: bytes, tmp_path: Path) -> None:
    # A private refit signed without a recorded spend (the library path without
    # spend_refit, or a refit made before refits recorded their head) is matched to a
    # spend by model, version, ε and δ; `edgepersona refit` records its head.
    from edgepersona.sdk.protocol.assign import model_space, numpy_assign
    from edgepersona.trainer.privacy.ledger_audit import audit_releases
    from edgepersona.trainer.release.refit import PersonaAggregates, RefitPrivacy, refit_bundle

    path, ids = tmp_path / "ledger.jsonl", [f"user-{i}" for i in range(len(bundle_training_rows))]
    ledger = PrivacyLedger(path, signing_key)
    ledger.set_budget("crm", epsilon=3.0, delta=1e-5, sketch=ledger.sketch(ids))
    options = TrainOptions(model_id="private", k=3, k_min=5, seed=1, epsilon=1.0, ledger=path)
    v1 = train_bundle(bundle_training_rows, bundle_spec, signing_key, options, lineage={},
                      user_ids=ids)
    params = v1.manifest.assigner
    labels, t = numpy_assign(params, bundle_training_rows)[0], model_space(params, bundle_training_rows)
    aggregates = PersonaAggregates(np.bincount(labels, minlength=3).astype(float),
                                   np.vstack([t[labels == p].sum(axis=0) for p in range(3)]),
                                   np.vstack([(t[labels == p] ** 2).sum(axis=0) for p in range(3)]))
    v2 = refit_bundle(v1.manifest, aggregates, signing_key, k_min=5,
                      privacy=RefitPrivacy(epsilon=0.5, seed=2))
    before_refit = path.read_bytes()
    ledger.spend("crm", epsilon=0.5, delta=1e-6, note="private v2")  # as `edgepersona refit` does
    for result, name in ((v1, "v1"), (v2, "v2")):
        write_bundle(tmp_path / "released" / name, result.files)
    report = audit_releases(tmp_path / "released", ledger=path, trusted_keys=[public_key])
    assert report["passed"], report
    assert [b["ledger_seq"] for b in report["bundles"]] == [1, 2]
    path.write_bytes(before_refit)  # the refit's spend is lost
    report = audit_releases(tmp_path / "released", ledger=path, trusted_keys=[public_key])
    assert not report["passed"]
    assert [all(c["passed"] for c in b["checks"]) for b in report["bundles"]] == [True, False]
