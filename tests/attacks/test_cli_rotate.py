"""``edgepersona keys rotate``: the trainer writes a statement a device accepts.

The handler is tested directly; the command-line test runs once the parser
registers ``keys rotate`` (it is skipped, saying so, until then).
"""

from __future__ import annotations

import argparse
import contextlib
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edgepersona.sdk import InputError
from edgepersona.sdk.protocol.trust import TrustedKeys
from edgepersona.trainer.cli import main
from edgepersona.trainer.cli._parser import build_parser
from edgepersona.trainer.cli._rotate import keys_rotate
from edgepersona.trainer.release.keys import generate_signing_key, load_signing_key


@pytest.fixture
def key_dirs(tmp_path: Path) -> tuple[Path, Path]:
    old, new = tmp_path / "old", tmp_path / "new"
    generate_signing_key(old)
    generate_signing_key(new)
    return old, new


def rotate_args(old: Path, new: Path, out: Path, counter: int = 1,
                expires_days: float = 365.0) -> argparse.Namespace:
    return argparse.Namespace(old=str(old), new=str(new), out=str(out), counter=counter,
                              expires_days=expires_days)


def test_statement_written_by_the_cli_moves_a_device_to_the_new_key(
        key_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    old, new = key_dirs
    out = tmp_path / "rotation-1.json"
    assert keys_rotate(rotate_args(old, new, out)) == 0
    old_key, new_key = load_signing_key(old), load_signing_key(new)
    rotated = TrustedKeys([old_key.public_key()]).rotate(out.read_bytes(), now=datetime.now(UTC))
    assert rotated.ids == TrustedKeys([new_key.public_key()]).ids
    assert rotated.revoked == set(TrustedKeys([old_key.public_key()]).ids)
    assert rotated.rotation == 1


def test_the_cli_never_overwrites_a_statement(key_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    old, new = key_dirs
    out = tmp_path / "rotation.json"
    out.write_bytes(b"keep me")
    with pytest.raises(InputError, match="already exists"):
        keys_rotate(rotate_args(old, new, out))
    assert out.read_bytes() == b"keep me"


@pytest.mark.parametrize(("counter", "days", "message"), [
    (0, 365.0, "counter"), (1, 0.0, "expires-days"), (1, 1e12, "expires-days")])
def test_the_cli_refuses_bad_numbers(counter: int, days: float, message: str,
                                     key_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    old, new = key_dirs
    with pytest.raises(InputError, match=message):
        keys_rotate(rotate_args(old, new, tmp_path / "s.json", counter, days))
    assert not (tmp_path / "s.json").exists()


def test_the_cli_refuses_rotating_a_key_to_itself(key_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    old, _ = key_dirs
    with pytest.raises(InputError, match="the old one"):
        keys_rotate(rotate_args(old, old, tmp_path / "s.json"))


def _parser_has_rotate() -> bool:
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            build_parser().parse_args(["keys", "rotate", "--old", "a", "--new", "b", "--out", "c",
                                       "--counter", "1"])
    except SystemExit:
        return False
    return True


@pytest.mark.skipif(not _parser_has_rotate(), reason="`keys rotate` is not registered in _parser.py yet")
def test_keys_rotate_on_the_command_line(key_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    old, new = key_dirs
    out = tmp_path / "statement.json"
    assert main(["keys", "rotate", "--old", str(old), "--new", str(new), "--out", str(out),
                 "--counter", "1"]) == 0
    assert out.exists()
    assert main(["keys", "rotate", "--old", str(old), "--new", str(new), "--out", str(out),
                 "--counter", "2"]) == 1  # never overwritten
