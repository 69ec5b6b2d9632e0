"""The ``edgepersona`` command line against a catalogue of bad inputs.

Every case must end the same way: one line on stderr, no traceback, the exit
code from the table in ``--help`` (1 error, 2 usage), nothing written, and no
cell value of the input echoed (the inputs plant an id in their bad rows).
Option values are checked before any data is read, so a bad flag wins over a
bad file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from edgepersona.trainer.cli import main

PLANTED = "zq-planted-7f3a91"
HEADER = "user_id,timestamp,event,value"

# name -> file contents; every row that holds data holds the planted id
FILES: dict[str, bytes] = {
    "empty.csv": b"",
    "header-only.csv": f"{HEADER}\n".encode(),
    "table-header-only.csv": b"user_id,buys,spend,views,recency\n",
    "nan.csv": f"{HEADER}\n{PLANTED},1700000000,buy,nan\n{PLANTED}-2,1700000001,buy,NaN\n".encode(),
    "inf.csv": f"{HEADER}\n{PLANTED},1700000000,buy,inf\n{PLANTED}-2,1700000001,buy,-inf\n".encode(),
    "wrong-types.csv": f"{HEADER}\n{PLANTED},yesterday,buy,lots\n{PLANTED}-2,,buy,1\n".encode(),
    "binary.csv": b"\x00\x01\xff" + PLANTED.encode() + b"\x00,\x00\n\x00\x00",
    "malformed.csv": f"{HEADER}\nok-user,1700000000,buy,1\n{PLANTED},1700000001,buy,2,extra\n".encode(),
    "gzip-malformed.csv.gz": b"",  # filled in by the fixture
}


class Keys(Protocol):
    folder: Path
    private: Path
    public: Path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import gzip

    folder = tmp_path_factory.mktemp("bad-inputs")
    for name, data in FILES.items():
        (folder / name).write_bytes(data)
    (folder / "gzip-malformed.csv.gz").write_bytes(gzip.compress(FILES["malformed.csv"]))
    (folder / "a-folder").mkdir()
    return folder


def run(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(code: int, out: str, err: str, expected_code: int) -> str:
    """One line on stderr, the right code, no traceback, no planted cell value anywhere."""
    assert code == expected_code, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("edgepersona"), err
    assert "Traceback" not in err
    assert PLANTED not in err and PLANTED not in out
    return lines[0]


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


DATA_COMMANDS: dict[str, Callable[[Path, Keys, Path, Path], list[str]]] = {
    "train --events": lambda data, keys, bundle, out: [
        "train", "--events", str(data), "--key", str(keys.folder), "--out", str(out), "--k", "3"],
    "train --table": lambda data, keys, bundle, out: [
        "train", "--table", str(data), "--key", str(keys.folder), "--out", str(out), "--k", "3"],
    "spec suggest": lambda data, keys, bundle, out: ["spec", "suggest", str(data), "--out", str(out)],
    "spec suggest --table": lambda data, keys, bundle, out: [
        "spec", "suggest", str(data), "--table", "--out", str(out)],
    "assign --events": lambda data, keys, bundle, out: [
        "assign", str(bundle), "--trusted-key", str(keys.public), "--events", str(data)],
    "assign --features": lambda data, keys, bundle, out: [
        "assign", str(bundle), "--trusted-key", str(keys.folder), "--features", str(data)],
}

BAD_DATA = [*FILES, "missing.csv", "a-folder"]


@pytest.mark.parametrize("data", BAD_DATA)
@pytest.mark.parametrize("command", sorted(DATA_COMMANDS))
def test_bad_data_gives_one_line_exit_1_and_writes_nothing(
        capsys: pytest.CaptureFixture[str], command: str, data: str, inputs: Path, keys: Keys,
        bundle: Path, tmp_path: Path) -> None:
    if command == "spec suggest --table" and data in ("nan.csv", "inf.csv"):
        pytest.skip("read as a table, the finite timestamp column is a valid feature column")
    out = tmp_path / "out"
    before = listing(inputs)
    args = DATA_COMMANDS[command](inputs / data, keys, bundle, out)
    line = assert_refused(*run(capsys, args), expected_code=1)
    assert not out.exists()
    assert listing(inputs) == before
    if data == "missing.csv":
        assert "no such file" in line
    elif data == "a-folder":
        assert "is a folder; expected a file" in line
    elif data in ("malformed.csv", "gzip-malformed.csv.gz"):
        assert "row 2 has 5 fields where the header has 4" in line
    elif data == "binary.csv":
        assert "binary data" in line
    elif data == "empty.csv":
        assert "the file is empty" in line


@pytest.mark.parametrize("data", ["header-only.csv", "nan.csv", "inf.csv", "wrong-types.csv"])
@pytest.mark.parametrize("command", ["train --events", "assign --events", "spec suggest"])
def test_no_usable_user_is_named_as_the_cause(capsys: pytest.CaptureFixture[str], command: str,
                                              data: str, inputs: Path, keys: Keys, bundle: Path,
                                              spec_file: Path, tmp_path: Path) -> None:
    args = DATA_COMMANDS[command](inputs / data, keys, bundle, tmp_path / "out")
    if command.startswith("train"):
        args += ["--spec", str(spec_file)]  # without it, the spec suggestion says "empty log"
    line = assert_refused(*run(capsys, args), expected_code=1)
    assert f"{data} has no users" in line
    if data != "header-only.csv":
        assert "rows were dropped as bad" in line


@pytest.mark.parametrize("command", ["train --table", "spec suggest --table", "assign --features"])
def test_a_table_with_no_user_is_named_as_the_cause(
        capsys: pytest.CaptureFixture[str], command: str, inputs: Path, keys: Keys, bundle: Path,
        tmp_path: Path) -> None:
    args = DATA_COMMANDS[command](inputs / "table-header-only.csv", keys, bundle, tmp_path / "out")
    line = assert_refused(*run(capsys, args), expected_code=1)
    assert "table-header-only.csv has no users" in line


def test_assign_reports_dropped_rows_per_reason_on_stderr(
        capsys: pytest.CaptureFixture[str], bundle: Path, keys: Keys, event_log: Path,
        tmp_path: Path) -> None:
    mixed = tmp_path / "mixed.csv"
    lines = event_log.read_text(encoding="utf-8").splitlines()
    mixed.write_text("\n".join([*lines, f"{PLANTED},1700000000,buy,nan,sku1",
                                f"{PLANTED},1700000000,buy,inf,sku1",
                                f"{PLANTED},not-a-time,buy,1,sku1"]) + "\n", encoding="utf-8")
    code, out, err = run(capsys, ["assign", str(bundle), "--trusted-key", str(keys.public),
                                  "--events", str(mixed), "--json"])
    assert code == 0
    assert err.splitlines() == ["edgepersona: skipped 3 bad row(s) of mixed.csv:"
                                " 2 non-numeric or non-finite value, 1 unparseable timestamp"]
    assert len(json.loads(out)) == 90 and PLANTED not in out


BAD_FLAGS: list[tuple[list[str], str]] = [
    (["train", "--events", "E", "--key", "K", "--out", "O", "--k", "abc"], "--k"),
    (["train", "--events", "E", "--key", "K", "--out", "O", "--k", "1"], "--k"),
    (["train", "--events", "E", "--key", "K", "--out", "O", "--k-range", "5,3"], "--k-range"),
    (["train", "--events", "E", "--key", "K", "--out", "O", "--k-min", "0"], "--k-min"),
    (["train", "--events", "E", "--key", "K", "--out", "O", "--min-share", "1.5"], "--min-share"),
    (["train", "--events", "E", "--key", "K", "--out", "O", "--expires-days", "0"], "--expires-days"),
    (["train", "--events", "E", "--key", "K", "--out", "O", "--expires-days", "nan"], "--expires-days"),
    (["train", "--events", "E", "--key", "K", "--out", "O", "--version", "0"], "--version"),
    (["train", "--events", "E", "--key", "K", "--out", "O", "--seed", "-1"], "--seed"),
    (["train", "--events", "E", "--key", "K", "--out", "O", "--at", "yesterday"], "--at"),
    (["train", "--events", "E", "--key", "K", "--out", "O", "--epsilon", "-1"], "--epsilon"),
    (["train", "--events", "E", "--key", "K", "--out", "O", "--delta", "2"], "--delta"),
    (["train", "--events", "E", "--key", "K", "--out", "O", "--budget", "x"], "--budget"),
    (["train", "--events", "E", "--epsilon-sweep", "a,b"], "--epsilon-sweep"),
    (["train", "--events", "E", "--key", "K", "--out", "O", "--model-id", "no spaces"], "--model-id"),
    (["train", "--key", "K", "--out", "O"], "--events"),
    (["assign", "B", "--trusted-key", "K", "--events", "E", "--backend", "gpu"], "--backend"),
    (["assign", "B", "--events", "E"], "--trusted-key"),
    (["keys", "generate", "--out", "O", "--kind", "rsa"], "--kind"),
    (["keys", "rotate", "--old", "A", "--new", "B", "--out", "O", "--counter", "0"], "--counter"),
    (["refit", "--db", "D", "--previous", "P", "--key", "K", "--trusted-key", "T", "--days", "0"],
     "--days"),
    (["quickstart", "--k", "many"], "--k"),
    (["serve", "--db", "D", "--collector-key", "K", "--bundles", "B", "--port", "70000"], "--port"),
    (["frobnicate"], "invalid choice"),
    (["keys"], "ACTION"),
    (["spec"], "ACTION"),
]


@pytest.mark.parametrize(("args", "named"), BAD_FLAGS,
                         ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_bad_flag_values_are_usage_errors_before_any_work(
        capsys: pytest.CaptureFixture[str], args: list[str], named: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the placeholder paths do not exist: a usage error must come first
    line = assert_refused(*run(capsys, args), expected_code=2)
    assert named in line and "--help" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "expected"), [
    (["keys", "generate", "--out", "afile"], "--out afile is a file"),
    (["quickstart", "--dir", "afile"], "--dir afile is a file"),
    (["serve", "--db", "sqlite:///c.db", "--collector-key", "nokey", "--bundles", "."],
     "no collector key at nokey"),
    (["spec", "suggest", "afile", "--out", "missing-folder/spec.json"], "cannot use"),
])
def test_files_for_folders_and_missing_paths_are_named(
        capsys: pytest.CaptureFixture[str], args: list[str], expected: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text(f"{HEADER}\n{PLANTED},1700000000,buy,1\n", encoding="utf-8")
    line = assert_refused(*run(capsys, args), expected_code=1)
    assert expected in line and "Errno" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_an_existing_out_is_refused_before_the_data_is_read(
        capsys: pytest.CaptureFixture[str], inputs: Path, keys: Keys, tmp_path: Path) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    line = assert_refused(*run(capsys, ["train", "--events", str(inputs / "malformed.csv"),
                                        "--key", str(keys.folder), "--out", str(out)]),
                          expected_code=1)
    assert "already exists; choose another --out or pass --force" in line


@pytest.mark.parametrize("form", ["file", "folder"])
@pytest.mark.parametrize("command", ["verify", "inspect", "assign", "report", "audit"])
def test_trusted_key_accepts_a_file_or_a_folder_everywhere(
        capsys: pytest.CaptureFixture[str], command: str, form: str, bundle: Path, keys: Keys,
        event_log: Path, tmp_path: Path) -> None:
    key = keys.public if form == "file" else keys.folder
    extra = {"assign": ["--events", str(event_log), "--json"],
             "report": ["--html", str(tmp_path / "r.html")], "audit": ["--json"]}.get(command, [])
    code, _, err = run(capsys, [command, str(bundle), "--trusted-key", str(key), *extra])
    assert code == 0, err


@pytest.mark.parametrize(("key", "expected"), [
    ("missing.pem", "no public key file or key folder at"),
    ("a-folder", "no Ed25519 public key (*.pub.pem) in the folder"),
    ("malformed.csv", "expected an Ed25519 public key"),
])
def test_an_unusable_trusted_key_says_what_to_pass(capsys: pytest.CaptureFixture[str], key: str,
                                                   expected: str, bundle: Path,
                                                   inputs: Path) -> None:
    line = assert_refused(*run(capsys, ["verify", str(bundle), "--trusted-key", str(inputs / key)]),
                          expected_code=1)
    assert expected in line and "Errno" not in line


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.binary(max_size=300), after=st.binary(max_size=300),
       command=st.sampled_from(["train --events", "spec suggest", "assign --events", "assign --features"]))
def test_random_bytes_never_give_a_traceback_or_echo_a_cell(
        capsys: pytest.CaptureFixture[str], before: bytes, after: bytes, command: str,
        keys: Keys, bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("random")
    data = folder / "random.csv"
    data.write_bytes(f"{HEADER}\n".encode() + before + f"\n{PLANTED},".encode() + after)
    out = folder / "out"
    code, _, err = run(capsys, DATA_COMMANDS[command](data, keys, bundle, out))
    assert "Traceback" not in err and PLANTED not in err
    if code != 0:
        assert code == 1 and len(err.splitlines()) == 1, err
        assert not out.exists()


# --- in a real process ------------------------------------------------------------------

def module_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgepersona.trainer.cli", *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback_before_or_after_the_command(where: str, keys: Keys,
                                                               tmp_path: Path) -> None:
    args = ["verify", str(tmp_path / "nope"), "--trusted-key", str(keys.public)]
    done = module_cli(*(["--debug", *args] if where == "before" else [*args, "--debug"]))
    assert done.returncode != 0
    assert "Traceback (most recent call last)" in done.stderr and "no bundle at" in done.stderr


def test_a_closed_pipe_ends_the_command_quietly(bundle: Path, keys: Keys, event_log: Path,
                                                tmp_path: Path) -> None:
    many = tmp_path / "many.csv"
    lines = event_log.read_text(encoding="utf-8").splitlines()
    body = [f"{n}{line}" for n in range(30) for line in lines[1:]]  # 2,700 users
    many.write_text("\n".join([lines[0], *body]) + "\n", encoding="utf-8")
    with subprocess.Popen([sys.executable, "-m", "edgepersona.trainer.cli", "assign", str(bundle),
                           "--trusted-key", str(keys.public), "--events", str(many), "--json"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline().strip() == b"["
        process.stdout.close()  # like `| head -1`
        err = process.stderr.read().decode()
        code = process.wait(timeout=120)
    assert err == ""
    assert code == 0


def test_no_spinner_line_is_left_above_an_error(keys: Keys, tmp_path: Path) -> None:
    one = tmp_path / "one.csv"
    one.write_text(f"{HEADER}\nu1,1700000000,buy,1\n", encoding="utf-8")
    env = {**os.environ, "FORCE_COLOR": "1", "COLUMNS": "100"}  # rich draws its live spinner
    done = module_cli("train", "--events", str(one), "--key", str(keys.folder), "--out",
                      str(tmp_path / "out"), "--k", "3", env=env)
    assert done.returncode == 1 and "edgepersona: error:" in done.stderr
    assert "training" in done.stdout  # the spinner was drawn...
    assert done.stdout.endswith("\x1b[1A\x1b[2K")  # ...and its line erased before the error


def every_command() -> list[list[str]]:
    """Every command path (``[]`` for the root, ``["keys", "rotate"]``...), from the parser."""
    import argparse

    from edgepersona.trainer.cli._parser import build_parser

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> list[list[str]]:
        found = [path]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    found += walk(child, [*path, name])
        return found

    return walk(build_parser(), [])


def test_help_ends_with_the_exit_code_table(capsys: pytest.CaptureFixture[str]) -> None:
    commands = every_command()
    assert len(commands) >= 15  # root, keys, keys generate, keys rotate, spec, ...
    for command in commands:
        args = [*command, "--help"]
        code, out, _ = run(capsys, args)
        assert code == 0, args
        table = out[out.index("exit codes:"):].splitlines()[1:5]
        assert [row.split()[0] for row in table] == ["0", "1", "2", "3"], args
        assert "--debug" in out, args


def test_the_readme_states_the_same_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    _, out, _ = run(capsys, ["--help"])
    for row in out[out.index("exit codes:"):].splitlines()[1:5]:
        code, meaning = row.split(maxsplit=1)
        first_words = " ".join(meaning.split()[:2]).rstrip(":")
        assert f"| {code} | {first_words}" in readme, (code, first_words)


@pytest.mark.parametrize(("module", "extra"), [
    ("fastapi", "server"), ("uvicorn", "server"), ("psycopg", "server"), ("dask.distributed", "dask"),
    ("sklearn", "trainer"), ("skl2onnx", "trainer")])
def test_a_missing_module_names_the_extra_that_brings_it(module: str, extra: str) -> None:
    from edgepersona.trainer.cli._errors import one_line

    line = one_line(ModuleNotFoundError(f"No module named '{module}'", name=module))
    assert line.endswith(f"needs the {extra} extra: pip install 'edgepersona[{extra}]'")


def test_a_validation_error_names_fields_and_never_values() -> None:
    from pydantic import BaseModel, ValidationError

    from edgepersona.trainer.cli._errors import one_line

    class Options(BaseModel):
        expires_days: float
        k: int

    with pytest.raises(ValidationError) as refused:
        Options(expires_days=PLANTED, k=PLANTED)  # type: ignore[arg-type]
    line = one_line(refused.value)
    assert line.startswith("invalid Options: expires_days: ") and "; k: " in line
    assert PLANTED not in line and "Traceback" not in line
