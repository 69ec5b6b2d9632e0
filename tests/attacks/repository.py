"""An in-memory bundle repository that serves whatever an attacker could serve.

:class:`BundleRepository` publishes releases of one or more trained models
with any version, creation and expiry time, signing key, manifest edit and
file set. Honest releases go through the trainer's own ``sign_manifest``;
the module-level functions then damage a release the ways an attacker on the
path (or holding a stale copy) could: flip a byte, add, drop or rename a file,
swap in a file or the manifest of another release, or make a file endless.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgepersona.sdk.protocol.bundle import MANIFEST_NAME, SIGNATURE_NAME
from edgepersona.trainer.release.export import sign_manifest

Files = dict[str, bytes]
Edit = Callable[[dict[str, Any]], None]


class BundleRepository:
    """Publishes releases of the models it holds, signed with any key.

    Args:
        models: model name -> a bundle of that model (its manifest is the template).
        key: the key honest releases are signed with.
    """

    def __init__(self, models: Mapping[str, Mapping[str, bytes]], key: Ed25519PrivateKey) -> None:
        self.models = {name: dict(files) for name, files in models.items()}
        self.key = key

    def release(self, version: int, *, model: str = "A", key: Ed25519PrivateKey | None = None,
                created_at: datetime | None = None, expires_at: datetime | None = None,
                edit: Edit | None = None, replace: Mapping[str, bytes] | None = None) -> Files:
        """A well-formed, correctly signed release saying whatever the arguments say."""
        template = self.models[model]
        fields = json.loads(template[MANIFEST_NAME])
        fields.pop("files")
        fields["version"] = version
        if created_at is not None:
            fields["created_at"] = created_at.isoformat()
        if expires_at is not None:
            fields["expires_at"] = expires_at.isoformat()
        if edit is not None:
            edit(fields)
        payload = {n: d for n, d in template.items() if n not in (MANIFEST_NAME, SIGNATURE_NAME)}
        payload.update(replace or {})
        return sign_manifest(fields, payload, key or self.key)


def flip_byte(files: Mapping[str, bytes], name: str) -> Files:
    """Flip one bit in the middle of one file."""
    data = bytearray(files[name])
    data[len(data) // 2] ^= 0x01
    return {**files, name: bytes(data)}


def drop_file(files: Mapping[str, bytes], name: str) -> Files:
    """Serve the release without one file."""
    return {n: d for n, d in files.items() if n != name}


def rename_file(files: Mapping[str, bytes], name: str, new_name: str) -> Files:
    """Serve one file under another name."""
    return {(new_name if n == name else n): d for n, d in files.items()}


def mix(files: Mapping[str, bytes], other: Mapping[str, bytes], *names: str) -> Files:
    """Serve ``files`` with some of its files taken from another release."""
    return {**files, **{n: other[n] for n in names}}


class EndlessFile:
    """A file that never ends: any prefix is served, the furthest byte asked for is kept.

    Stands in for ``bytes`` in a name -> bytes bundle (the SDK only slices it).

    Args:
        start: the first bytes; zeros follow forever.
    """

    def __init__(self, start: bytes) -> None:
        self.start = start
        self.furthest = 0

    def __getitem__(self, index: slice) -> bytes:
        if not isinstance(index, slice) or index.start not in (None, 0) or index.stop is None:
            raise AssertionError(f"an endless file can only be read from its start, got {index}")
        self.furthest = max(self.furthest, index.stop)
        return (self.start + bytes(max(0, index.stop - len(self.start))))[: index.stop]
