"""The six ways to release the same people again (issue 13 §1), each refused or detected.

Setup, as an operator would run it: a table of 480 users with declared
bounds, a budget of ε=1 (δ=1e-5) given on the first release, and private
releases at ε=1 (δ=1e-6): the first fits, a second on the same people does not.
Then the same people are released again six ways, through the CLI:

===============================  =========================================================
attack                           outcome
===============================  =========================================================
renamed copy with --budget       refused at spend time (the sketch matches the budget)
--source other-name              refused at spend time
shuffled copy, another name      refused at spend time
--ledger new.ledger              released, then ``audit FOLDER --ledger`` fails (exit 3)
ledger deleted                   released, then the audit fails: ledger went backwards
older copy of the ledger         released, then the audit fails: release 1 is not in it
last line dropped                the audit fails (behind); a later release fails it too
private refit of the same line   refused at check time (the source its lineage names)
refit, another budgeted source   refused: the line's people are charged too
refit against a new ledger       refused: the line was spent from another ledger
===============================  =========================================================

A refit spends before it is signed, so nothing is written when it is refused.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from edgepersona.sdk import FeatureSpec, PersonaRuntime
from edgepersona.sdk.protocol.assign import model_space, numpy_assign
from edgepersona.trainer.cli import main
from edgepersona.trainer.collector import Increment, open_store

F64 = npt.NDArray[np.float64]
IDS = [f"person-{i:04d}" for i in range(480)]


def write_table(path: Path, spec: FeatureSpec, rows: F64, ids: list[str]) -> Path:
    """A per-user table with the spec's columns and a user_id column."""
    lines = [",".join(["user_id", *spec.names])]
    lines += [",".join([user, *(f"{v:.6g}" for v in row)]) for user, row in zip(ids, rows, strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def world(tmp_path: Path, bundle_training_rows: F64, bundle_spec: FeatureSpec,
          signing_keys: Any) -> dict[str, Any]:
    """A table, a spec, the released folder and the first private release (ε=1 of 1)."""
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(bundle_spec.to_json(), encoding="utf-8")
    table = write_table(tmp_path / "customers.csv", bundle_spec, bundle_training_rows, IDS)
    world = {"tmp": tmp_path, "spec": spec_path, "table": table, "keys": signing_keys,
             "released": tmp_path / "released", "ledger": tmp_path / "budget.ledger",
             "rows": bundle_training_rows, "bundle_spec": bundle_spec}
    assert release(world, 1, budget="1,1e-5") == 0
    return world


def release(world: dict[str, Any], version: int, *, table: Path | None = None,
            ledger: Path | None = None, extra: tuple[str, ...] = (), budget: str | None = None
            ) -> int:
    """One private release at ε=1 through the CLI; the bundle lands in the released folder."""
    args = ["train", "--table", str(table or world["table"]), "--spec", str(world["spec"]),
            "--key", str(world["keys"].private_path), "--out",
            str(world["released"] / f"v{version}"), "--k", "3", "--k-min", "5", "--seed",
            str(version), "--model-id", "customers", "--version", str(version), "--epsilon", "1",
            "--ledger", str(ledger or world["ledger"]), *extra]
    return main(args + (["--budget", budget] if budget else []))


def audit(world: dict[str, Any], capsys: pytest.CaptureFixture[str],
          ledger: Path | None = None) -> tuple[int, dict[str, Any]]:
    """``audit RELEASED --ledger L --json``: exit code and report."""
    capsys.readouterr()
    code = main(["audit", str(world["released"]), "--ledger", str(ledger or world["ledger"]),
                 "--trusted-key", str(world["keys"].public_path), "--json"])
    return code, json.loads(capsys.readouterr().out)


def failed(report: dict[str, Any]) -> set[str]:
    """Names of the failing checks, folder-level and per bundle."""
    names = {c["check"] for c in report["checks"] if not c["passed"]}
    return names | {c["check"] for b in report["bundles"] for c in b["checks"] if not c["passed"]}


def test_the_honest_history_passes_the_audit(world: dict[str, Any],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, report = audit(world, capsys)
    assert code == 0 and report["passed"], report
    assert [b["ledger_seq"] for b in report["bundles"]] == [1]


def test_a_second_release_of_the_same_file_is_refused(world: dict[str, Any],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert release(world, 2) != 0
    assert "would be exceeded" in capsys.readouterr().err
    assert not (world["released"] / "v2").exists()


def test_a_renamed_copy_with_a_fresh_budget_is_refused(world: dict[str, Any],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    renamed = shutil.copy(world["table"], world["tmp"] / "totally_new_data.csv")
    assert release(world, 2, table=Path(renamed), budget="1,1e-5") != 0
    assert "would be exceeded" in capsys.readouterr().err
    assert not (world["released"] / "v2").exists()


def test_another_source_name_is_refused(world: dict[str, Any],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert release(world, 2, extra=("--source", "other-name"), budget="5,1e-5") != 0
    assert "would be exceeded" in capsys.readouterr().err
    assert not (world["released"] / "v2").exists()


def test_a_shuffled_subset_under_another_name_is_refused(world: dict[str, Any],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    order = np.random.default_rng(3).permutation(len(IDS))[:300]
    shuffled = write_table(world["tmp"] / "sample.csv", world["bundle_spec"],
                           world["rows"][order], [IDS[i] for i in order])
    assert release(world, 2, table=shuffled, budget="1,1e-5") != 0
    assert "would be exceeded" in capsys.readouterr().err


def test_a_new_ledger_is_detected_by_the_folder_audit(world: dict[str, Any],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    other = world["tmp"] / "new.ledger"
    assert release(world, 2, ledger=other, budget="1,1e-5") == 0  # a new ledger knows nothing
    code, report = audit(world, capsys)
    assert code == 3 and "release recorded in the ledger" in failed(report)
    code, report = audit(world, capsys, ledger=other)  # nor does the new ledger pass
    assert code == 3 and "release recorded in the ledger" in failed(report)


def test_a_deleted_ledger_is_detected(world: dict[str, Any],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    world["ledger"].unlink()
    assert release(world, 2, budget="1,1e-5") == 0
    code, report = audit(world, capsys)
    assert code == 3 and "release recorded in the ledger" in failed(report)


def test_an_older_copy_of_the_ledger_is_detected(world: dict[str, Any],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    lines = world["ledger"].read_bytes().splitlines(keepends=True)
    world["ledger"].write_bytes(lines[0])  # the copy taken when only the budget was set
    code, report = audit(world, capsys)
    assert code == 3 and {"ledger not behind the release", "release recorded in the ledger"} <= failed(report)
    assert release(world, 2) == 0  # the restored ledger believes nothing was spent ...
    code, report = audit(world, capsys)
    assert code == 3 and "release recorded in the ledger" in failed(report)  # ... and is caught


def test_a_dropped_last_line_is_detected(world: dict[str, Any],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    data = world["ledger"].read_bytes()
    world["ledger"].write_bytes(data[:data.rstrip(b"\n").rfind(b"\n") + 1])
    code, report = audit(world, capsys)
    assert code == 3 and "ledger not behind the release" in failed(report)


def test_a_disjoint_table_has_its_own_budget(world: dict[str, Any], bundle_spec: FeatureSpec,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    others = write_table(world["tmp"] / "other_people.csv", bundle_spec, world["rows"],
                         [f"stranger-{i}" for i in range(len(IDS))])
    assert release(world, 2, table=others, budget="1,1e-5") == 0
    code, report = audit(world, capsys)
    assert code == 0, report
    assert len(report["ledger"]["sources"]) == 2
    labels = {b["source"] for b in report["bundles"]}
    assert len(labels) == 2 and all(label.startswith("source-") for label in labels)


def refit(world: dict[str, Any], *extra: str) -> int:
    """``edgepersona refit --epsilon 1`` of v1 from a collector database holding every user's cell."""
    v1 = world["released"] / "v1"
    manifest = PersonaRuntime.open(v1, trusted_keys=[world["keys"].public_path.read_bytes()]).manifest
    labels = numpy_assign(manifest.assigner, world["rows"])[0]
    t = model_space(manifest.assigner, world["rows"])
    db = world["tmp"] / "collector.db"
    if not db.exists():
        store = open_store(f"sqlite:///{db}")
        try:
            store.add_increments([Increment(f"{i}".encode().ljust(32, b"."), 20_000, 1, int(p),
                                            tuple(map(float, x)))
                                  for i, (p, x) in enumerate(zip(labels, t, strict=True))],
                                 purge_before_day=0)
        finally:
            store.close()
    return main(["refit", "--db", f"sqlite:///{db}", "--previous", str(v1), "--k-min", "5",
                 "--key", str(world["keys"].private_path), "--out", str(world["released"] / "v2"),
                 "--trusted-key", str(world["keys"].public_path), "--epsilon", "1",
                 "--ledger", str(world["ledger"]), *extra])


def test_a_private_refit_of_the_spent_line_is_refused(world: dict[str, Any],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    before = world["ledger"].read_bytes()
    assert refit(world) != 0
    assert "would be exceeded" in capsys.readouterr().err
    assert world["ledger"].read_bytes() == before and not (world["released"] / "v2").exists()


def test_a_refit_from_another_budgeted_source_is_refused(world: dict[str, Any],
                                                         bundle_spec: FeatureSpec,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    others = write_table(world["tmp"] / "other_people.csv", bundle_spec, world["rows"],
                         [f"stranger-{i}" for i in range(len(IDS))])
    assert release(world, 5, table=others, budget="9,1e-5") == 0  # strangers: a roomy budget
    _, report = audit(world, capsys)
    roomy = next(b["source"] for b in report["bundles"] if b["version"] == 5)
    assert refit(world, "--source", roomy) != 0  # it could pay; v1's people cannot
    assert "would be exceeded" in capsys.readouterr().err
    assert not (world["released"] / "v2").exists()


def test_a_refit_against_a_new_ledger_is_refused(world: dict[str, Any],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    world["ledger"] = world["tmp"] / "new.ledger"
    assert release(world, 5, budget="9,1e-5") == 0  # the same people, budgeted afresh there
    assert refit(world) != 0
    assert "refit against that ledger" in capsys.readouterr().err
    assert not (world["released"] / "v2").exists()
