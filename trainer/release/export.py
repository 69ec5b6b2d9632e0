"""Writing a signed bundle: model.onnx + cards + manifest.json + signature.

The bundle is built in a temporary sibling folder and moved into place with
one rename, so a crash never leaves a half-written bundle behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgepersona.sdk import InputError, Manifest
from edgepersona.sdk.protocol.bundle import MANIFEST_NAME, SIGNATURE_NAME
from edgepersona.sdk.protocol.manifest import FileEntry, canonical_json
from edgepersona.sdk.protocol.signing import MANIFEST_CONTEXT, sign

__all__ = ["sign_manifest", "write_bundle", "zip_bundle"]


def sign_manifest(fields: Mapping[str, Any], files: Mapping[str, bytes],
                  key: Ed25519PrivateKey) -> dict[str, bytes]:
    """Complete a manifest with file digests, validate it and sign it.

    Args:
        fields: every manifest field except ``files``.
        files: bundle file name → content (``model.onnx`` and any extras).
        key: the signing key.

    Returns:
        All bundle files by name, manifest and signature included.

    Raises:
        SchemaError: the fields do not form a valid manifest.
    """
    entries = {name: FileEntry(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
               for name, data in files.items()}
    manifest = Manifest.model_validate({**fields, "files": entries})
    raw = canonical_json(manifest.model_dump(mode="json"))
    return {**files, MANIFEST_NAME: raw,
            SIGNATURE_NAME: sign(key, MANIFEST_CONTEXT, raw).to_bytes()}


def write_bundle(out: Path, files: Mapping[str, bytes], *, overwrite: bool = False) -> Path:
    """Write bundle files into a folder atomically.

    Args:
        out: the bundle folder to create.
        files: name → content, from :func:`sign_manifest`.
        overwrite: replace an existing folder.

    Returns:
        The bundle folder.

    Raises:
        InputError: the folder exists and ``overwrite`` is False.
    """
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists; choose another --out or pass --force")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes 0700; a bundle is public
    for name, data in files.items():
        with open(staging / name, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
    return out


def zip_bundle(files: Mapping[str, bytes], out: Path) -> Path:
    """Write bundle files as a single archive (the form apps download).

    Args:
        files: name → content, from :func:`sign_manifest`.
        out: the ``.zip`` path.

    Returns:
        The archive path.
    """
    tmp = out.with_name(f".{out.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            archive.writestr(name, files[name])
    os.replace(tmp, out)
    return out
