"""The ``edgepersona`` command line, end to end: keys, spec, train, verify, inspect, assign.

Most commands run in-process through ``edgepersona.trainer.cli.main`` (fast,
output captured by pytest); a few run as real subprocesses with
``python -m edgepersona.trainer.cli`` to check exit codes, tracebacks and what
the quickstart writes on disk.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
from cryptography.hazmat.primitives import serialization

from edgepersona.sdk import load_spec_json
from edgepersona.trainer.cli import main
from edgepersona.trainer.data.events import read_event_log
from edgepersona.trainer.data.features import compute_features

BUNDLE_FILES = {"model.onnx", "manifest.json", "signature", "cards.md", "cards.json"}


class Keys(Protocol):
    """A key pair made by ``keys generate`` (the ``keys`` fixture in conftest.py)."""

    folder: Path
    private: Path
    public: Path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def flat(text: str) -> str:
    """Output with rich's line wrapping and box drawing removed."""
    return " ".join(re.sub(r"[│╭╮╰╯─┃┏┓┗┛━┡┩╇┳┻╋┼┠┨]", " ", text).split())


def assert_one_line_error(code: int, err: str) -> str:
    assert code != 0
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("edgepersona: error: ")
    assert "Traceback" not in err
    return lines[0]


def module_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a real process, the way a shell would."""
    return subprocess.run([sys.executable, "-m", "edgepersona.trainer.cli", *args],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout,
                          check=False)


def private_key_bytes(keys: Keys) -> bytes:
    key = serialization.load_pem_private_key(keys.private.read_bytes(), password=None)
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


def assert_no_private_key_inside(files: dict[str, bytes], keys: Keys) -> None:
    secret = private_key_bytes(keys)
    pem = keys.private.read_bytes()
    for name, data in files.items():
        assert b"PRIVATE KEY" not in data, name
        assert secret not in data and secret.hex().encode() not in data, name
        assert pem.strip() not in data, name


def read_bundle_folder(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


# --- keys ------------------------------------------------------------------------------

def test_keys_generate_writes_a_private_key_only_its_owner_can_read(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = cli(capsys, "keys", "generate", "--out", str(tmp_path / "k"))
    assert code == 0 and err == ""
    private, public = tmp_path / "k" / "signing_key.pem", tmp_path / "k" / "signing_key.pub.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert "never ship" in flat(out) and "--trusted-key" in flat(out)
    # an existing key is never overwritten
    before = private.read_bytes()
    code, _, err = cli(capsys, "keys", "generate", "--out", str(tmp_path / "k"))
    assert "already holds a signing key" in assert_one_line_error(code, err)
    assert private.read_bytes() == before


# --- spec suggest ----------------------------------------------------------------------

def test_spec_suggest_prints_a_valid_spec(capsys: pytest.CaptureFixture[str],
                                          event_log: Path) -> None:
    code, out, _ = cli(capsys, "spec", "suggest", str(event_log))
    assert code == 0
    spec = load_spec_json(out)
    assert {f.event for f in spec.features if f.aggregate == "count"} == {"buy", "view"}
    assert {f.bounds_source for f in spec.features} == {"coarse"}


def test_spec_suggest_out_writes_the_file_and_explains_its_choices(
        capsys: pytest.CaptureFixture[str], event_log: Path, tmp_path: Path) -> None:
    target = tmp_path / "suggested.json"
    code, out, _ = cli(capsys, "spec", "suggest", str(event_log), "--out", str(target))
    assert code == 0
    assert load_spec_json(target.read_text(encoding="utf-8")).features
    assert "min_events =" in flat(out) and "exponential mechanism" in flat(out)


# --- train -----------------------------------------------------------------------------

def test_train_with_a_spec_writes_a_signed_bundle_without_the_private_key(
        bundle: Path, keys: Keys, spec_dict: dict[str, Any]) -> None:
    assert {p.name for p in bundle.iterdir()} == BUNDLE_FILES
    files = read_bundle_folder(bundle)
    manifest = json.loads(files["manifest.json"])
    assert manifest["model_id"] == "shop" and len(manifest["personas"]) == 3
    assert [f["name"] for f in manifest["spec"]["features"]] == [f["name"] for f in spec_dict["features"]]
    assert_no_private_key_inside(files, keys)
    with zipfile.ZipFile(bundle.with_suffix(".zip")) as archive:
        assert set(archive.namelist()) == BUNDLE_FILES
        assert_no_private_key_inside({n: archive.read(n) for n in archive.namelist()}, keys)
    assert not list(bundle.parent.glob(".*")), "staging folders left behind"


def test_train_without_a_spec_says_it_used_the_suggestion(
        capsys: pytest.CaptureFixture[str], event_log: Path, keys: Keys, tmp_path: Path) -> None:
    out_dir = tmp_path / "suggested-bundle"
    code, out, err = cli(capsys, "train", "--events", str(event_log), "--key", str(keys.private),
                         "--out", str(out_dir), "--k", "3", "--seed", "2")
    assert code == 0, err
    text = flat(out)
    assert "no --spec given: using the suggested spec" in text
    assert f"bundle written to {out_dir}" in text
    manifest = json.loads((out_dir / "manifest.json").read_bytes())
    assert manifest["privacy"]["bounds_source"] == "coarse"
    assert manifest["metrics"]["n_users"] == 90


def test_train_refuses_to_overwrite_without_force(
        capsys: pytest.CaptureFixture[str], event_log: Path, spec_file: Path, keys: Keys,
        bundle: Path, tmp_path: Path) -> None:
    target = tmp_path / "copy"
    shutil.copytree(bundle, target)
    args = ["train", "--events", str(event_log), "--spec", str(spec_file), "--key",
            str(keys.folder), "--out", str(target), "--k", "3", "--seed", "1"]
    code, _, err = cli(capsys, *args)
    assert "already exists" in assert_one_line_error(code, err)
    code, _, err = cli(capsys, *args, "--force")
    assert code == 0, err


# --- verify / inspect ------------------------------------------------------------------

@pytest.mark.parametrize("form", ["folder", "zip"])
def test_verify_accepts_the_bundle_signed_by_the_trusted_key(
        capsys: pytest.CaptureFixture[str], bundle: Path, keys: Keys, form: str) -> None:
    target = bundle if form == "folder" else bundle.with_suffix(".zip")
    code, out, err = cli(capsys, "verify", str(target), "--trusted-key", str(keys.public))
    assert code == 0 and err == ""
    assert flat(out).startswith("OK: shop v1, signed by a trusted key")


def test_inspect_json_parses_and_describes_every_persona(
        capsys: pytest.CaptureFixture[str], bundle: Path, keys: Keys) -> None:
    code, out, _ = cli(capsys, "inspect", str(bundle), "--trusted-key", str(keys.public),
                       "--json")
    assert code == 0
    report = json.loads(out)
    assert report["model_id"] == "shop" and report["version"] == 1
    assert report["metrics"]["n_users"] == 90 and report["metrics"]["k"] == 3
    assert [p["id"] for p in report["personas"]] == ["P1", "P2", "P3"]
    assert sum(p["share"] for p in report["personas"]) == pytest.approx(1.0)


def test_inspect_prints_the_persona_cards(capsys: pytest.CaptureFixture[str], bundle: Path,
                                          keys: Keys) -> None:
    code, out, _ = cli(capsys, "inspect", str(bundle), "--trusted-key", str(keys.public))
    assert code == 0
    manifest = json.loads((bundle / "manifest.json").read_bytes())
    text = flat(out)
    for card in manifest["personas"]:
        assert f"{card['id']} · {card['name']}" in text


# --- assign ----------------------------------------------------------------------------

def features_table(event_log: Path, spec_file: Path, path: Path) -> list[str]:
    """Batch features of the log as a table with a user column; return the users."""
    log = read_event_log(event_log)
    spec = load_spec_json(spec_file.read_text(encoding="utf-8"))
    rows = compute_features(log, spec)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", *spec.names])
        for user, row in zip(log.user_keys, rows, strict=True):
            writer.writerow([user, *(repr(float(v)) for v in row)])
    return list(log.user_keys)


def test_assign_features_and_events_give_one_result_per_user_and_agree(
        capsys: pytest.CaptureFixture[str], bundle: Path, keys: Keys, event_log: Path,
        spec_file: Path, user_ids: list[str], tmp_path: Path) -> None:
    table = tmp_path / "features.csv"
    table_users = features_table(event_log, spec_file, table)
    code, out, err = cli(capsys, "assign", str(bundle), "--trusted-key", str(keys.public),
                         "--features", str(table), "--json")
    assert code == 0, err
    from_features = json.loads(out)
    code, out, err = cli(capsys, "assign", str(bundle), "--trusted-key", str(keys.public),
                         "--events", str(event_log), "--json")
    assert code == 0, err
    from_events = json.loads(out)

    assert [r["user"] for r in from_features] == table_users
    assert sorted(r["user"] for r in from_events) == sorted(user_ids)
    for result in from_features + from_events:
        assert result["persona_id"] in {"P1", "P2", "P3"}
        assert 0.0 <= result["confidence"] <= 1.0 and len(result["distances"]) == 3
        assert result["model_version"] == 1
    by_user = {r["user"]: r["persona_id"] for r in from_features}
    assert {r["user"]: r["persona_id"] for r in from_events} == by_user
    # the three planted behaviour groups land in three different personas
    groups = {g: {p for u, p in by_user.items() if u.startswith(g)}
              for g in ("spender", "browser", "lapsed")}
    assert all(len(p) == 1 for p in groups.values()) and len(set.union(*groups.values())) == 3


def test_assign_numpy_backend_agrees_with_onnxruntime(
        capsys: pytest.CaptureFixture[str], bundle: Path, keys: Keys, event_log: Path) -> None:
    results = {}
    for backend in ("onnxruntime", "numpy"):
        code, out, err = cli(capsys, "assign", str(bundle), "--trusted-key", str(keys.public),
                             "--events", str(event_log), "--backend", backend, "--json")
        assert code == 0, err
        results[backend] = [(r["user"], r["persona_id"]) for r in json.loads(out)]
    assert results["numpy"] == results["onnxruntime"]


def test_assign_table_prints_one_row_per_user(capsys: pytest.CaptureFixture[str], bundle: Path,
                                              keys: Keys, event_log: Path,
                                              user_ids: list[str]) -> None:
    code, out, _ = cli(capsys, "assign", str(bundle), "--trusted-key", str(keys.public),
                       "--events", str(event_log))
    assert code == 0
    for user in user_ids:
        assert user in out


# --- error paths -----------------------------------------------------------------------

def tampered_copy(bundle: Path, tmp_path: Path, name: str) -> Path:
    target = tmp_path / f"tampered-{name}"
    shutil.copytree(bundle, target)
    data = bytearray((target / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (target / name).write_bytes(bytes(data))
    return target


@pytest.mark.parametrize("case", ["missing-bundle", "missing-key-file", "missing-events",
                                  "tampered-model", "tampered-manifest", "wrong-key",
                                  "bad-spec", "missing-column"])
def test_errors_print_one_line_and_exit_non_zero(
        capsys: pytest.CaptureFixture[str], case: str, bundle: Path, keys: Keys,
        other_keys: Keys, event_log: Path, tmp_path: Path) -> None:
    trusted = ["--trusted-key", str(keys.public)]
    train = ["train", "--key", str(keys.folder), "--out", str(tmp_path / "out"), "--k", "3"]
    if case == "missing-bundle":
        args = ["verify", str(tmp_path / "nope"), *trusted]
        expect = "no bundle at"
    elif case == "missing-key-file":
        args = ["verify", str(bundle), "--trusted-key", str(tmp_path / "nope.pem")]
        expect = "nope.pem"
    elif case == "missing-events":
        args = [*train, "--events", str(tmp_path / "nope.csv")]
        expect = "nope.csv"
    elif case == "tampered-model":
        args = ["verify", str(tampered_copy(bundle, tmp_path, "model.onnx")), *trusted]
        expect = "model.onnx"
    elif case == "tampered-manifest":
        args = ["verify", str(tampered_copy(bundle, tmp_path, "manifest.json")), *trusted]
        expect = "signature"
    elif case == "wrong-key":
        args = ["verify", str(bundle), "--trusted-key", str(other_keys.public)]
        expect = "key"
    elif case == "bad-spec":
        bad = tmp_path / "spec.json"
        bad.write_text('{"features": [{"name": "x", "event": "e", "aggregate": "median"}]}',
                       encoding="utf-8")
        args = [*train, "--events", str(event_log), "--spec", str(bad)]
        expect = "invalid feature spec"
    else:
        log = tmp_path / "log.csv"
        log.write_text("who,timestamp,event\na,1,x\n", encoding="utf-8")
        args = ["spec", "suggest", str(log)]
        expect = "--user-col"
    code, _, err = cli(capsys, *args)
    line = assert_one_line_error(code, err)
    assert expect.lower() in line.lower()
    assert not (tmp_path / "out").exists()


def test_errors_in_a_real_process_one_line_and_debug_shows_the_traceback(
        tmp_path: Path, keys: Keys) -> None:
    args = ["verify", str(tmp_path / "nope"), "--trusted-key", str(keys.public)]
    plain = module_cli(*args)
    assert plain.returncode == 1
    assert_one_line_error(plain.returncode, plain.stderr)
    debug = module_cli("--debug", *args)
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr
    assert "InputError" in debug.stderr and "no bundle at" in debug.stderr


def test_no_command_prints_help_and_exits_with_usage_code(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys)
    assert code == 2 and "usage: edgepersona" in out


# --- quickstart ------------------------------------------------------------------------

def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@dataclass(frozen=True)
class QuickstartRun:
    """One real ``edgepersona quickstart --dir WORK`` process and what changed around it."""

    result: subprocess.CompletedProcess[str]
    seconds: float
    work: Path
    before: dict[str, set[str]]
    after: dict[str, set[str]]


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> QuickstartRun:
    root = tmp_path_factory.mktemp("quickstart")
    places = {name: root / name for name in ("home", "cwd", "tmp")}
    for folder in places.values():
        folder.mkdir()
    (places["home"] / ".profile").write_text("# existing\n", encoding="utf-8")
    before = {name: listing(folder) for name, folder in places.items()}
    env = {**os.environ, "HOME": str(places["home"]), "TMPDIR": str(places["tmp"]),
           "PYTHONDONTWRITEBYTECODE": "1"}
    work = root / "work"
    started = time.perf_counter()
    result = module_cli("quickstart", "--dir", str(work), env=env, cwd=places["cwd"])
    seconds = time.perf_counter() - started
    print(f"[quickstart] exit {result.returncode} in {seconds:.1f} s")
    after = {name: listing(folder) for name, folder in places.items()}
    return QuickstartRun(result, seconds, work, before, after)


def test_quickstart_runs_end_to_end_well_under_a_minute(quickstart: QuickstartRun) -> None:
    assert quickstart.result.returncode == 0, quickstart.result.stderr[-2000:]
    assert quickstart.seconds < 60
    assert "Traceback" not in quickstart.result.stderr


def test_quickstart_prints_cards_and_held_back_assignments(quickstart: QuickstartRun) -> None:
    text = flat(quickstart.result.stdout)
    assert f"writing only in {quickstart.work}" in text
    assert re.search(r"P1 · .+ \(\d+\.\d%\)", text), "no persona card printed"
    assert "Held-back customers (first 12)" in text
    assert len(re.findall(r"#\d+ \(\d+ ev\.\)", text)) == 12
    assert "held-back users per persona:" in text
    gap = re.search(r"max relative difference (\S+)", text)
    assert gap and float(gap.group(1)) <= 1e-9


def test_quickstart_writes_its_keys_and_bundle_inside_its_folder(
        quickstart: QuickstartRun) -> None:
    work = quickstart.work
    assert {p.name for p in work.iterdir()} == {"keys", "bundle", "bundle.zip"}
    assert stat.S_IMODE((work / "keys" / "signing_key.pem").stat().st_mode) == 0o600
    assert {p.name for p in (work / "bundle").iterdir()} == BUNDLE_FILES
    with zipfile.ZipFile(work / "bundle.zip") as archive:
        assert set(archive.namelist()) == BUNDLE_FILES


def test_quickstart_writes_nothing_outside_its_folder(quickstart: QuickstartRun) -> None:
    new = {name: sorted(quickstart.after[name] - quickstart.before[name])
           for name in quickstart.before}
    assert new == {"home": [], "cwd": [], "tmp": []}
    assert quickstart.after == quickstart.before


def test_quickstart_refuses_a_folder_that_is_not_empty(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine", encoding="utf-8")
    code, _, err = cli(capsys, "quickstart", "--dir", str(tmp_path))
    assert "not empty" in assert_one_line_error(code, err)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
