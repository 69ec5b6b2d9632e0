"""Trusted keys as paths: a key file or a key folder, as ``str`` or ``Path``, like bytes.

httpx takes certificate paths; so do ``PersonaRuntime.open`` and
``PersonaClient.open``: a folder written by ``edgepersona keys generate`` works
as it is, and a missing path or a folder without a key says what to pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edgepersona.sdk import InputError, PersonaClient, PersonaRuntime, UntrustedKeyError
from edgepersona.sdk.protocol.signing import read_public_keys
from edgepersona.sdk.protocol.trust import TrustedKeys


def key_folder(tmp_path: Path, signing_keys: Any) -> Path:
    """A folder like ``keys generate`` writes, plus a collector key that is not Ed25519."""
    folder = tmp_path / "keys"
    folder.mkdir()
    (folder / "signing_key.pub.pem").write_bytes(signing_keys.public_pem)
    (folder / "signing_key.pem").write_bytes(signing_keys.private_path.read_bytes())
    collector = X25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (folder / "collector_key.pub.pem").write_bytes(collector)
    return folder


@pytest.mark.parametrize("form", ["str file", "Path file", "str folder", "Path folder", "one path",
                                  "bytes", "PEM text"])
def test_every_form_of_the_trusted_key_opens_the_bundle(
        form: str, bundle_files: Mapping[str, bytes], bundle_now: datetime, signing_keys: Any,
        tmp_path: Path) -> None:
    folder = key_folder(tmp_path, signing_keys)
    keys: Any = {"str file": [str(folder / "signing_key.pub.pem")],
                 "Path file": [folder / "signing_key.pub.pem"],
                 "str folder": [str(folder)], "Path folder": [folder], "one path": folder,
                 "bytes": [signing_keys.public_pem],
                 "PEM text": [signing_keys.public_pem.decode()]}[form]
    runtime = PersonaRuntime.open(bundle_files, trusted_keys=keys, now=bundle_now)
    assert runtime.manifest.version == 1


def test_a_folder_trusts_its_ed25519_keys_only(signing_keys: Any, tmp_path: Path) -> None:
    keys = read_public_keys(key_folder(tmp_path, signing_keys))
    assert TrustedKeys(keys).ids == (signing_keys.key_id,)


def test_a_folder_of_another_key_is_still_untrusted(bundle_files: Mapping[str, bytes],
                                                    bundle_now: datetime, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other = tmp_path / "other"
    other.mkdir()
    (other / "signing_key.pub.pem").write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(UntrustedKeyError):
        PersonaRuntime.open(bundle_files, trusted_keys=[other], now=bundle_now)


@pytest.mark.parametrize(("make", "message"), [
    (lambda folder: folder / "missing.pem", "no public key file or key folder at"),
    (lambda folder: folder, "no Ed25519 public key (*.pub.pem) in the folder"),
    (lambda folder: folder / "notes.txt", "expected an Ed25519 public key"),
    (lambda folder: folder / "big.pem", "larger than any public key file"),
])
def test_an_unusable_path_says_what_to_pass(make: Any, message: str, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    (tmp_path / "big.pem").write_bytes(b"-" * 100_000)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)").replace(
            "*", r"\*")):
        TrustedKeys([make(tmp_path)])


def test_the_client_takes_a_key_folder(bundle_zip: Path, signing_keys: Any, tmp_path: Path) -> None:
    from edgepersona.sdk import FileKeyProvider

    folder = key_folder(tmp_path, signing_keys)
    client = PersonaClient.open(bundle_zip, trusted_keys=[folder], store=tmp_path / "s.db",
                                key_provider=FileKeyProvider(tmp_path / "s.key"))
    try:
        assert client.assign().model_version == 1
    finally:
        client.close()
