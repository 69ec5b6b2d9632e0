"""Coverage-guided fuzzing of everything that decides whether a bundle is trusted.

Targets, starting from the reference bundle in ``models/reference``:
signature files, manifests re-signed with a trusted key (so mutations get past
the signature to the parser, the freshness and file-set checks, and the numpy
assigner), zip archives, the ONNX external-data walk, and key rotation
statements (as sent, and with re-signed payloads). Any exception that is not a PersonaError is a
crash, except the known bugs in ``KNOWN_ARCHIVE_BUGS`` (counted and reported as they are hit; pass
``--strict`` first to make them crash too).

Run: ``python fuzz/fuzz_bundle.py -atheris_runs=100000`` (or ``-max_total_time=120``).
"""

from __future__ import annotations

import base64
import io
import json
import sys
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import atheris
import numpy as np
from _harness import mutated, tolerate_known_bug

with atheris.instrument_imports(include=["edgepersona"]):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edgepersona.sdk import PersonaError
    from edgepersona.sdk.protocol.assign import load_assigner, refuse_external_data
    from edgepersona.sdk.protocol.bundle import bundle_source, verify_bundle
    from edgepersona.sdk.protocol.rotation import ROTATION_CONTEXT, build_rotation_statement
    from edgepersona.sdk.protocol.signing import MANIFEST_CONTEXT, SignatureFile, sign
    from edgepersona.sdk.protocol.trust import TrustedKeys

REFERENCE = Path(__file__).resolve().parent.parent / "models" / "reference"
FILES = {path.name: path.read_bytes() for path in REFERENCE.iterdir() if path.is_file()}
MANIFEST = json.loads(FILES["manifest.json"])
NOW = datetime.fromisoformat(MANIFEST["created_at"]) + timedelta(seconds=1)
KEY, NEW_KEY = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
TRUSTED = TrustedKeys([KEY.public_key()])
STATEMENT = build_rotation_statement(KEY, NEW_KEY, counter=1, now=NOW, valid_for=timedelta(days=30))
PAYLOAD = base64.b64decode(json.loads(STATEMENT)["payload"])


def _zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted(files.items()):
            archive.writestr(name, data)
    return buffer.getvalue()


def _statement(payload: bytes, *, with_new_key: bool) -> bytes:
    """A statement whose (mutated) payload the trusted key signs, so the checks behind it run."""
    signatures = [sign(key, ROTATION_CONTEXT, payload) for key in (KEY, NEW_KEY)[:1 + with_new_key]]
    return json.dumps({"payload": base64.b64encode(payload).decode(),
                       "signatures": [{"key_id": s.key_id,
                                       "signature": base64.b64encode(s.signature).decode()}
                                      for s in signatures]}).encode()


def _signed(manifest: bytes) -> dict[str, bytes]:
    return {**FILES, "manifest.json": manifest,
            "signature": sign(KEY, MANIFEST_CONTEXT, manifest).to_bytes()}


ARCHIVE = _zipped(_signed(FILES["manifest.json"]))
STRICT = "--strict" in sys.argv
# zipfile errors bundle_source lets out instead of ModelIntegrityError (sdk/_bundle.py).
KNOWN_ARCHIVE_BUGS: tuple[type[BaseException], ...] = (
    () if STRICT else (NotImplementedError, UnicodeDecodeError))


def test_one_input(data: bytes) -> None:
    """One fuzz case; PersonaError is the declared way to refuse."""
    fdp = atheris.FuzzedDataProvider(data)
    target = fdp.ConsumeIntInRange(0, 5)
    try:
        if target == 0:
            SignatureFile.from_bytes(mutated(fdp, FILES["signature"]))
        elif target == 1:
            manifest = mutated(fdp, FILES["manifest.json"], document=MANIFEST)
            verified = verify_bundle(bundle_source(_signed(manifest)), TRUSTED,
                                     now=NOW + timedelta(days=fdp.ConsumeIntInRange(-1, 40_000)),
                                     min_version=fdp.ConsumeIntInRange(0, 3))
            assigner = load_assigner(verified, backend="numpy")
            width = len(verified.manifest.spec.features)
            assigner.assign_one(np.full(width, fdp.ConsumeRegularFloat()))
        elif target == 2:
            try:
                verify_bundle(bundle_source(mutated(fdp, ARCHIVE)), TRUSTED, now=NOW)
            except KNOWN_ARCHIVE_BUGS as exc:
                tolerate_known_bug(f"{type(exc).__name__} from bundle_source(zip bytes)")
        elif target == 3:
            refuse_external_data(mutated(fdp, FILES["model.onnx"]))
        elif target == 4:
            statement = mutated(fdp, STATEMENT, document=json.loads(STATEMENT))
            TRUSTED.rotate(statement, now=datetime.now(UTC) if fdp.ConsumeBool() else NOW)
        else:
            payload = mutated(fdp, PAYLOAD, document=json.loads(PAYLOAD))
            TRUSTED.rotate(_statement(payload, with_new_key=fdp.ConsumeBool()), now=NOW)
    except PersonaError:
        return


if __name__ == "__main__":
    atheris.Setup([arg for arg in sys.argv if arg != "--strict"], test_one_input)
    atheris.Fuzz()
