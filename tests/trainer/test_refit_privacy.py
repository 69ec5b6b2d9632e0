"""Refits that tell the truth about privacy: no borrowed ε, spent before signing, the line's people.

Everything runs through ``edgepersona refit`` and ``edgepersona audit`` on a real
collector database and real ledgers (a file, SQLite, and PostgreSQL when
``EDGEPERSONA_TEST_POSTGRES_URL`` is set).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgepersona.sdk import FeatureSpec, Manifest, PersonaRuntime
from edgepersona.sdk.protocol.assign import model_space, numpy_assign
from edgepersona.trainer.cli import main
from edgepersona.trainer.collector import Increment, open_store
from edgepersona.trainer.privacy.ledger import PrivacyLedger
from edgepersona.trainer.release.export import write_bundle
from edgepersona.trainer.release.train import TrainOptions, TrainResult, train_bundle

F64 = npt.NDArray[np.float64]
DAY = 20_000
DELTA = 1e-6



class Line:
    """A private v1 on a shelf, its ledger, a collector database holding v1's cells."""

    def __init__(self, where: str, tmp_path: Path, rows: F64, spec: FeatureSpec,
                 key: Ed25519PrivateKey, budget: float = 3.0) -> None:
        self.where, self.secret = where, tmp_path / "source.key"
        self.ids = [f"user-{i}" for i in range(len(rows))]
        self.ledger = PrivacyLedger(where, key, secret=self.secret)
        self.ledger.set_budget("crm", epsilon=budget, delta=1e-5, sketch=self.ledger.sketch(self.ids))
        options = TrainOptions(model_id="private", k=3, k_min=5, seed=1, epsilon=1.0, ledger=where,
                               ledger_secret=self.secret)
        self.v1: TrainResult = train_bundle(rows, spec, key, options, lineage={}, user_ids=self.ids)
        self.shelf = tmp_path / "bundles"
        write_bundle(self.shelf / "private-v1", self.v1.files)
        self.db = f"sqlite:///{tmp_path / 'collector.db'}"
        add_cells(self.db, self.v1.manifest, rows)


def add_cells(url: str, manifest: Manifest, rows: F64) -> None:
    """Every row contributes once, assigned with ``manifest`` (as devices would sync)."""
    labels = numpy_assign(manifest.assigner, rows)[0]
    t = model_space(manifest.assigner, rows)
    store = open_store(url)
    try:
        store.add_increments([Increment(f"{i}".encode().ljust(32, b"."), DAY, manifest.version,
                                        int(p), tuple(map(float, x)))
                              for i, (p, x) in enumerate(zip(labels, t, strict=True))],
                             purge_before_day=0)
    finally:
        store.close()


def refit_argv(line: Line, keys: object, *extra: str) -> list[str]:
    return ["refit", "--db", line.db, "--previous", str(line.shelf / "private-v1"), "--k-min", "5",
            "--key", str(keys.private_path),  # type: ignore[attr-defined]
            "--trusted-key", str(keys.public_path), *extra]  # type: ignore[attr-defined]


def audit_folder(line: Line, keys: object, capsys: pytest.CaptureFixture[str]
                 ) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = main(["audit", str(line.shelf), "--ledger", line.where, "--json",
                 "--trusted-key", str(keys.public_path)])  # type: ignore[attr-defined]
    return code, json.loads(capsys.readouterr().out)


def v2_of(line: Line, public_key: bytes) -> Manifest:
    return PersonaRuntime.open(line.shelf / "private-v2", trusted_keys=[public_key]).manifest


def test_a_refit_without_epsilon_claims_none_and_its_folder_audit_passes(
        bundle_training_rows: F64, bundle_spec: FeatureSpec, signing_key: Ed25519PrivateKey,
        signing_keys: object, public_key: bytes, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    line = Line(str(tmp_path / "budget.ledger"), tmp_path, bundle_training_rows, bundle_spec,
                signing_key)
    assert main(refit_argv(line, signing_keys)) == 0
    v2 = v2_of(line, public_key)
    assert (v2.privacy.epsilon, v2.privacy.delta, v2.privacy.mechanism) == (None, None, None)
    assert len(v2.privacy.notes) == 1 and v2.privacy.notes[0].startswith("non-private release")
    assert "ledger_seq" not in v2.lineage and v2.lineage["source"] == "crm"  # the line's label
    code, report = audit_folder(line, signing_keys, capsys)
    assert code == 0, report
    assert [b["private"] for b in report["bundles"]] == [True, False, False]  # v2: folder and zip
    assert "1 private, 2 non-private" in report["checks"][0]["figure"]


def test_a_private_refit_is_spent_before_signing_and_records_its_head(
        where: str, bundle_training_rows: F64, bundle_spec: FeatureSpec,
        signing_key: Ed25519PrivateKey, signing_keys: object, public_key: bytes, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    line = Line(where, tmp_path, bundle_training_rows, bundle_spec, signing_key)
    assert main(refit_argv(line, signing_keys, "--epsilon", "0.5", "--ledger", where)) == 0
    v2 = v2_of(line, public_key)
    seq, head = line.ledger.head
    assert v2.privacy.epsilon == 0.5 and v2.lineage["source"] == "crm"
    assert (v2.lineage["ledger_id"], v2.lineage["ledger_seq"], v2.lineage["ledger_head"]) == (
        line.ledger.ledger_id, seq, head)
    assert line.ledger.status("crm").releases == 2
    code, report = audit_folder(line, signing_keys, capsys)
    assert code == 0, report
    assert [b["ledger_seq"] for b in report["bundles"]] == [1, seq, seq]  # v2: folder and zip
    if where.endswith(".ledger"):  # the file form can be rolled back by hand: the audit sees it
        kept = Path(where).read_bytes()
        Path(where).write_bytes(kept[:kept.rstrip(b"\n").rfind(b"\n") + 1])
        assert main(["audit", str(line.shelf / "private-v2"), "--ledger", where, "--json",
                     "--trusted-key", str(signing_keys.public_path)]) == 3  # type: ignore[attr-defined]
        failed = {c["check"] for c in json.loads(capsys.readouterr().out)["checks"] if not c["passed"]}
        assert "ledger not behind the release" in failed


def test_a_refit_is_charged_to_the_people_of_its_model_line(
        bundle_training_rows: F64, bundle_spec: FeatureSpec, signing_key: Ed25519PrivateKey,
        signing_keys: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = Line(str(tmp_path / "budget.ledger"), tmp_path, bundle_training_rows, bundle_spec,
                signing_key, budget=1.2)
    others = [f"someone-else-{i}" for i in range(50)]  # another budget, other people
    line.ledger.set_budget("other", epsilon=10.0, delta=1e-5, sketch=line.ledger.sketch(others))
    before = line.ledger.head
    argv = refit_argv(line, signing_keys, "--epsilon", "1", "--ledger", line.where)
    assert main([*argv, "--source", "other"]) == 1  # "other" could pay; crm's people cannot
    assert "'crm' would be exceeded" in capsys.readouterr().err
    assert line.ledger.head == before and not (line.shelf / "private-v2").exists()
    assert main([*argv[:-4], "--epsilon", "0.3", "--ledger", line.where]) == 0


def test_a_refit_must_use_the_ledger_its_line_was_spent_from(
        bundle_training_rows: F64, bundle_spec: FeatureSpec, signing_key: Ed25519PrivateKey,
        signing_keys: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = Line(str(tmp_path / "budget.ledger"), tmp_path, bundle_training_rows, bundle_spec,
                signing_key)
    fresh = PrivacyLedger(tmp_path / "fresh.ledger", signing_key)
    fresh.set_budget("crm", epsilon=100.0, delta=1e-5)  # the same name, a new budget
    assert main(refit_argv(line, signing_keys, "--epsilon", "1", "--ledger",
                           str(tmp_path / "fresh.ledger"))) == 1
    assert "refit against that ledger" in capsys.readouterr().err
    assert fresh.status("crm").releases == 0


def test_a_spend_stands_when_the_refit_cannot_be_written(
        bundle_training_rows: F64, bundle_spec: FeatureSpec, signing_key: Ed25519PrivateKey,
        signing_keys: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = Line(str(tmp_path / "budget.ledger"), tmp_path, bundle_training_rows, bundle_spec,
                signing_key)
    taken = tmp_path / "taken"
    (taken / "something").mkdir(parents=True)
    argv = refit_argv(line, signing_keys, "--epsilon", "0.5", "--ledger", line.where,
                      "--out", str(taken))
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "v2 was not written" in err and "stays spent" in err and "'crm'" in err
    assert line.ledger.status("crm").releases == 2  # v1 and the refit that never shipped
    argv = refit_argv(line, signing_keys, "--epsilon", "0.5", "--ledger", line.where)
    assert main([*argv, "--k-min", "100000"]) == 1  # noise drawn, then too few personas
    err = capsys.readouterr().err
    assert "only 0 persona(s)" in err and "stays spent" in err
    assert line.ledger.status("crm").releases == 3


@pytest.mark.parametrize("command", ["refit", "schedule"])
def test_reading_commands_never_create_a_collector_database(
        command: str, bundle_dir: Path, signing_keys: object, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    keys = ["--key", str(signing_keys.private_path),  # type: ignore[attr-defined]
            "--trusted-key", str(signing_keys.public_path)]  # type: ignore[attr-defined]
    target = ["--previous", str(bundle_dir)] if command == "refit" else ["--bundles", str(bundle_dir.parent)]
    assert main([command, "--db", "sqlite:///missing.db", *target, *keys]) == 1
    assert "no collector database at missing.db" in capsys.readouterr().err
    assert not (tmp_path / "missing.db").exists()
