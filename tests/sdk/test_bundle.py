"""Bundle verification: tampering, missing/extra files, keys, expiry, rollback, updates.

Every refusal must happen before onnxruntime sees a single byte of the graph
(a spy on ``onnxruntime.InferenceSession`` checks that), and every refusal of
a structurally damaged bundle must be a :class:`ModelIntegrityError`, whatever
form the bundle arrives in: a directory, a zip archive (path or bytes) or an
in-memory mapping.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import os
import struct
import threading
import time
import zipfile
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgepersona.sdk import (
    BundleExpiredError,
    InputError,
    ModelIntegrityError,
    PersonaRuntime,
    RollbackError,
    SchemaError,
    UntrustedKeyError,
)
from edgepersona.sdk.protocol.bundle import (
    MAX_MANIFEST_BYTES,
    bundle_source,
    verify_bundle,
)
from edgepersona.sdk.protocol.manifest import canonical_json
from edgepersona.sdk.protocol.signing import MANIFEST_CONTEXT, key_id, sign
from edgepersona.sdk.protocol.trust import TrustedKeys
from edgepersona.trainer.release.export import zip_bundle

FILE_NAMES = ("manifest.json", "signature", "model.onnx", "cards.md", "cards.json")
FORMS = ("dir", "zip", "zip_bytes", "mapping")

Files = Mapping[str, bytes]


# ------------------------------------------------------------------ helpers


@pytest.fixture
def as_form(tmp_path: Path) -> Callable[[str, Files], Any]:
    """Turn name → bytes into the requested bundle form (written as-is, no checks)."""
    counter = itertools.count()

    def make(form: str, files: Files) -> Any:
        n = next(counter)
        if form == "mapping":
            return dict(files)
        if form == "dir":
            folder = tmp_path / f"bundle{n}"
            folder.mkdir()
            for name, data in files.items():
                (folder / name).write_bytes(data)
            return folder
        archive = zip_bundle(files, tmp_path / f"bundle{n}.zip")
        return archive.read_bytes() if form == "zip_bytes" else archive

    return make


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records the size of every graph handed to onnxruntime."""
    created: list[int] = []
    real = onnxruntime.InferenceSession

    def spy(model: bytes, *args: Any, **kwargs: Any) -> Any:
        created.append(len(model))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", spy)
    return created


def flip(data: bytes, position: int) -> bytes:
    changed = bytearray(data)
    changed[position] ^= 0x01
    return bytes(changed)


class RecordingSource:
    """A bundle source over a mapping that records every read and its limit."""

    def __init__(self, files: Files) -> None:
        self.files = dict(files)
        self.reads: list[tuple[str, int, int]] = []  # (name, limit, bytes returned)

    def names(self) -> frozenset[str]:
        return frozenset(self.files)

    def read(self, name: str, limit: int) -> bytes:
        if name not in self.files:
            raise ModelIntegrityError(f"no {name}")
        data = self.files[name][: limit + 1]
        self.reads.append((name, limit, len(data)))
        return data

    def limit_of(self, name: str) -> int:
        return next(limit for read, limit, _ in self.reads if read == name)


def open_bundle(bundle: Any, public_key: bytes, now: datetime, **options: Any) -> PersonaRuntime:
    return PersonaRuntime.open(bundle, trusted_keys=[public_key], now=now, **options)


def manifest_of(files: Files) -> dict[str, Any]:
    data = json.loads(files["manifest.json"])
    assert isinstance(data, dict)
    return data


# ------------------------------------------------------------- the baseline


@pytest.mark.parametrize("form", FORMS)
def test_untouched_bundle_opens_in_every_form(form: str, as_form: Callable[[str, Files], Any],
                                              bundle_files: Files, public_key: bytes,
                                              bundle_now: datetime, sessions: list[int]) -> None:
    runtime = open_bundle(as_form(form, bundle_files), public_key, bundle_now)
    assert runtime.version == 1
    assert runtime.backend == "onnxruntime"
    assert canonical_json(runtime.manifest.model_dump(mode="json")) == bundle_files["manifest.json"]
    assert sessions == [len(bundle_files["model.onnx"])]


def test_bundle_written_by_the_trainer_opens(bundle_dir: Path, bundle_zip: Path,
                                             public_key: bytes) -> None:
    # No `now`: the system clock, as on a device.
    for bundle in (bundle_dir, bundle_zip, str(bundle_dir), str(bundle_zip)):
        assert PersonaRuntime.open(bundle, trusted_keys=[public_key]).version == 1


def test_file_digests_cover_every_payload_file(bundle_files: Files) -> None:
    declared = manifest_of(bundle_files)["files"]
    assert set(declared) == {"model.onnx", "cards.md", "cards.json"}
    for name, entry in declared.items():
        assert entry["size"] == len(bundle_files[name])


# ----------------------------------------------------------------- tampering


@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("name", FILE_NAMES)
@pytest.mark.parametrize("form", FORMS)
def test_one_flipped_byte_is_refused_before_onnxruntime_sees_the_graph(
        form: str, name: str, where: str, as_form: Callable[[str, Files], Any],
        bundle_files: Files, public_key: bytes, bundle_now: datetime,
        sessions: list[int]) -> None:
    data = bundle_files[name]
    position = {"first": 0, "middle": len(data) // 2, "last": len(data) - 1}[where]
    tampered = {**bundle_files, name: flip(data, position)}
    with pytest.raises(ModelIntegrityError):
        open_bundle(as_form(form, tampered), public_key, bundle_now)
    assert sessions == []


@pytest.mark.parametrize(("name", "stride"), [("manifest.json", 1), ("signature", 1),
                                              ("model.onnx", 5), ("cards.md", 13),
                                              ("cards.json", 13)])
def test_every_single_byte_flip_is_refused(name: str, stride: int, bundle_files: Files,
                                           public_key: bytes, bundle_now: datetime) -> None:
    # Every byte of the signed parts; a sample of the payload files (a digest covers them).
    trusted = TrustedKeys([public_key])
    data = bundle_files[name]
    accepted = []
    for position in range(0, len(data), stride):
        source = bundle_source({**bundle_files, name: flip(data, position)})
        try:
            verify_bundle(source, trusted, now=bundle_now)
        except ModelIntegrityError:
            continue
        accepted.append(position)
    assert accepted == [], f"{name}: flips at {accepted[:10]} were accepted"


@pytest.mark.parametrize("name", FILE_NAMES)
@pytest.mark.parametrize("form", FORMS)
def test_missing_file_is_refused(form: str, name: str, as_form: Callable[[str, Files], Any],
                                 bundle_files: Files, public_key: bytes, bundle_now: datetime,
                                 sessions: list[int]) -> None:
    dropped = {n: d for n, d in bundle_files.items() if n != name}
    with pytest.raises(ModelIntegrityError):
        open_bundle(as_form(form, dropped), public_key, bundle_now)
    assert sessions == []


@pytest.mark.parametrize("extra", ["extra.txt", ".DS_Store", "model.onnx.bak"])
@pytest.mark.parametrize("form", FORMS)
def test_extra_file_is_refused(form: str, extra: str, as_form: Callable[[str, Files], Any],
                               bundle_files: Files, public_key: bytes, bundle_now: datetime,
                               sessions: list[int]) -> None:
    with pytest.raises(ModelIntegrityError, match="unexpected"):
        open_bundle(as_form(form, {**bundle_files, extra: b"hello"}), public_key, bundle_now)
    assert sessions == []


@pytest.mark.parametrize("name", FILE_NAMES)
@pytest.mark.parametrize("form", FORMS)
def test_renamed_file_is_refused(form: str, name: str, as_form: Callable[[str, Files], Any],
                                 bundle_files: Files, public_key: bytes, bundle_now: datetime,
                                 sessions: list[int]) -> None:
    renamed = {(f"{n}.old" if n == name else n): d for n, d in bundle_files.items()}
    with pytest.raises(ModelIntegrityError):
        open_bundle(as_form(form, renamed), public_key, bundle_now)
    assert sessions == []


def test_swapped_file_contents_are_refused(bundle_files: Files, public_key: bytes,
                                           bundle_now: datetime) -> None:
    swapped = {**bundle_files, "cards.md": bundle_files["cards.json"],
               "cards.json": bundle_files["cards.md"]}
    with pytest.raises(ModelIntegrityError):
        open_bundle(swapped, public_key, bundle_now)


def test_subdirectory_in_a_bundle_directory_is_refused(tmp_path: Path, as_form: Callable[
        [str, Files], Any], bundle_files: Files, public_key: bytes, bundle_now: datetime) -> None:
    folder = as_form("dir", bundle_files)
    (folder / "nested").mkdir()
    with pytest.raises(ModelIntegrityError, match="nested"):
        open_bundle(folder, public_key, bundle_now)


def test_symlinked_file_is_refused_even_with_the_right_content(
        tmp_path: Path, as_form: Callable[[str, Files], Any], bundle_files: Files,
        public_key: bytes, bundle_now: datetime) -> None:
    folder = as_form("dir", bundle_files)
    outside = tmp_path / "model-elsewhere.onnx"
    outside.write_bytes(bundle_files["model.onnx"])
    (folder / "model.onnx").unlink()
    os.symlink(outside, folder / "model.onnx")
    with pytest.raises(ModelIntegrityError, match="regular file"):
        open_bundle(folder, public_key, bundle_now)


def test_a_file_that_is_not_a_zip_is_refused(tmp_path: Path, public_key: bytes,
                                             bundle_now: datetime) -> None:
    path = tmp_path / "bundle.zip"
    path.write_bytes(b"PK\x03\x04 definitely not an archive")
    with pytest.raises(ModelIntegrityError):
        open_bundle(path, public_key, bundle_now)
    with pytest.raises(ModelIntegrityError):
        open_bundle(path.read_bytes(), public_key, bundle_now)


def test_a_missing_path_is_an_input_error(tmp_path: Path, public_key: bytes,
                                          bundle_now: datetime) -> None:
    with pytest.raises(InputError, match="no bundle at"):
        open_bundle(tmp_path / "nowhere.zip", public_key, bundle_now)


def zip_header_positions(archive: bytes) -> list[int]:
    """Byte positions of the archive's local headers, central directory and end record."""
    with zipfile.ZipFile(io.BytesIO(archive)) as parsed:
        infos, start_dir = parsed.infolist(), parsed.start_dir
    positions: set[int] = set(range(start_dir, len(archive)))
    for info in infos:
        name_len, extra_len = struct.unpack_from("<HH", archive, info.header_offset + 26)
        positions.update(range(info.header_offset, info.header_offset + 30 + name_len + extra_len))
    return sorted(positions)


def outcome_of_damaged_archive(archive: bytes, trusted: TrustedKeys, now: datetime,
                               original: Files) -> str:
    """'refused', 'identical' (the damage did not touch verified content) or the bad error."""
    try:
        verified = verify_bundle(bundle_source(archive), trusted, now=now)
    except ModelIntegrityError:
        return "refused"
    except Exception as exc:  # the point: anything else is a bug
        return f"{type(exc).__name__}: {exc}"
    assert {**verified.files} == {n: original[n] for n in verified.files}
    return "identical"


def test_damaged_zip_headers_give_an_integrity_error(bundle_zip: Path, bundle_files: Files,
                                                     public_key: bytes,
                                                     bundle_now: datetime) -> None:
    archive, trusted = bundle_zip.read_bytes(), TrustedKeys([public_key])
    bad = {}
    for position in zip_header_positions(archive):
        outcome = outcome_of_damaged_archive(flip(archive, position), trusted, bundle_now,
                                             bundle_files)
        if outcome not in ("refused", "identical"):
            bad.setdefault(outcome.split(":")[0], (position, outcome))
    assert bad == {}, f"damaged archive headers escaped as non-integrity errors: {bad}"


def test_damaged_compressed_data_gives_an_integrity_error(bundle_zip: Path, bundle_files: Files,
                                                          public_key: bytes,
                                                          bundle_now: datetime) -> None:
    archive, trusted = bundle_zip.read_bytes(), TrustedKeys([public_key])
    headers = set(zip_header_positions(archive))
    bad = {}
    for position in [p for p in range(len(archive)) if p not in headers][::7]:
        outcome = outcome_of_damaged_archive(flip(archive, position), trusted, bundle_now,
                                             bundle_files)
        if outcome not in ("refused", "identical"):
            bad.setdefault(outcome.split(":")[0], (position, outcome))
    assert bad == {}, f"damaged compressed data escaped as non-integrity errors: {bad}"


# -------------------------------------------------------------- keys and time


def test_wrong_trusted_key_is_refused_and_named(bundle_files: Files, bundle_now: datetime,
                                                other_signing_key: Ed25519PrivateKey,
                                                signing_keys: Any, sessions: list[int]) -> None:
    with pytest.raises(UntrustedKeyError) as info:
        PersonaRuntime.open(bundle_files, trusted_keys=[other_signing_key.public_key()],
                            now=bundle_now)
    assert signing_keys.key_id in str(info.value)
    assert key_id(other_signing_key.public_key()) in str(info.value)
    assert sessions == []


def test_bundle_signed_by_an_untrusted_key_is_refused(bundle_files: Files, public_key: bytes,
                                                      bundle_now: datetime,
                                                      other_signing_key: Ed25519PrivateKey
                                                      ) -> None:
    raw = bundle_files["manifest.json"]
    forged = {**bundle_files,
              "signature": sign(other_signing_key, MANIFEST_CONTEXT, raw).to_bytes()}
    with pytest.raises(UntrustedKeyError):
        open_bundle(forged, public_key, bundle_now)
    # Trusting both keys (key rotation) accepts either signature.
    runtime = PersonaRuntime.open(forged, trusted_keys=[public_key, other_signing_key.public_key()],
                                  now=bundle_now)
    assert runtime.version == 1


def test_signature_by_another_key_claiming_the_trusted_key_id_is_refused(
        bundle_files: Files, public_key: bytes, bundle_now: datetime,
        other_signing_key: Ed25519PrivateKey, signing_keys: Any) -> None:
    raw = bundle_files["manifest.json"]
    made = sign(other_signing_key, MANIFEST_CONTEXT, raw)
    forged = dataclasses.replace(made, key_id=signing_keys.key_id)
    with pytest.raises(ModelIntegrityError, match="does not verify") as info:
        open_bundle({**bundle_files, "signature": forged.to_bytes()}, public_key, bundle_now)
    assert not isinstance(info.value, UntrustedKeyError)


def test_signature_for_another_purpose_is_refused(bundle_files: Files, public_key: bytes,
                                                  bundle_now: datetime,
                                                  signing_key: Ed25519PrivateKey) -> None:
    raw = bundle_files["manifest.json"]
    other_purpose = sign(signing_key, b"edgepersona/ledger/v1\x00", raw).to_bytes()
    with pytest.raises(ModelIntegrityError):
        open_bundle({**bundle_files, "signature": other_purpose}, public_key, bundle_now)


def test_expired_bundle_is_refused(bundle_files: Files, public_key: bytes,
                                   sessions: list[int]) -> None:
    expires = datetime.fromisoformat(manifest_of(bundle_files)["expires_at"])
    assert open_bundle(bundle_files, public_key, expires - timedelta(seconds=1)).version == 1
    for now in (expires, expires + timedelta(seconds=1), expires + timedelta(days=3650)):
        with pytest.raises(BundleExpiredError, match="expired"):
            open_bundle(bundle_files, public_key, now)
    assert len(sessions) == 1  # only the still-valid open built a session


def test_naive_now_is_an_input_error(bundle_files: Files, public_key: bytes) -> None:
    with pytest.raises(InputError, match="timezone"):
        open_bundle(bundle_files, public_key, datetime(2025, 6, 1))


def test_version_below_min_version_is_refused(bundle_files: Files, public_key: bytes,
                                              bundle_now: datetime, sessions: list[int]) -> None:
    assert open_bundle(bundle_files, public_key, bundle_now, min_version=1).version == 1
    with pytest.raises(RollbackError, match="roll back"):
        open_bundle(bundle_files, public_key, bundle_now, min_version=2)
    assert len(sessions) == 1


def test_rollback_message_names_the_oldest_accepted_version_not_a_trusted_one(
        bundle_files: Files, public_key: bytes, bundle_now: datetime) -> None:
    # update() passes the active version + 1: re-sending the trusted v1 must not claim "trusted v2"
    with pytest.raises(RollbackError) as refused:
        open_bundle(bundle_files, public_key, bundle_now, min_version=2)
    assert "v1 is older than v2, the oldest version this device accepts" in str(refused.value)
    assert "trusted v2" not in str(refused.value)


@pytest.mark.parametrize("name", ["model.onnx", "cards.md"])
def test_a_tampered_old_bundle_is_reported_as_tampered_not_as_a_rollback(
        name: str, bundle_files: Files, public_key: bytes, bundle_now: datetime) -> None:
    tampered = {**bundle_files, name: flip(bundle_files[name], len(bundle_files[name]) // 2)}
    with pytest.raises(ModelIntegrityError, match="digest") as refused:
        open_bundle(tampered, public_key, bundle_now, min_version=5)
    assert not isinstance(refused.value, RollbackError)
    expired = bundle_now + timedelta(days=10_000)
    with pytest.raises(ModelIntegrityError, match="digest") as refused:
        open_bundle(tampered, public_key, expired)
    assert not isinstance(refused.value, BundleExpiredError)


# ------------------------------------------------- sizes and order of reading


def test_oversized_file_is_refused_reading_at_most_its_declared_size(
        bundle_files: Files, public_key: bytes, bundle_now: datetime) -> None:
    declared = manifest_of(bundle_files)["files"]["model.onnx"]["size"]
    source = RecordingSource({**bundle_files,
                              "model.onnx": bundle_files["model.onnx"] + b"\0" * 1_000_000})
    with pytest.raises(ModelIntegrityError, match="larger"):
        verify_bundle(source, TrustedKeys([public_key]), now=bundle_now)
    assert source.limit_of("model.onnx") == declared
    assert all(returned <= limit + 1 for _, limit, returned in source.reads)
    assert sum(returned for _, _, returned in source.reads) < 100_000


@pytest.mark.parametrize("form", ["dir", "zip", "mapping"])
def test_oversized_and_truncated_files_are_refused_in_every_form(
        form: str, as_form: Callable[[str, Files], Any], bundle_files: Files,
        public_key: bytes, bundle_now: datetime) -> None:
    for name in ("model.onnx", "cards.md"):
        longer = {**bundle_files, name: bundle_files[name] + b"x"}
        with pytest.raises(ModelIntegrityError, match="larger"):
            open_bundle(as_form(form, longer), public_key, bundle_now)
        shorter = {**bundle_files, name: bundle_files[name][:-1]}
        with pytest.raises(ModelIntegrityError, match="smaller"):
            open_bundle(as_form(form, shorter), public_key, bundle_now)


def test_huge_signature_file_is_read_only_to_its_cap(bundle_files: Files, public_key: bytes,
                                                     bundle_now: datetime) -> None:
    source = RecordingSource({**bundle_files, "signature": b" " * 10_000_000})
    with pytest.raises(ModelIntegrityError, match="malformed"):
        verify_bundle(source, TrustedKeys([public_key]), now=bundle_now)
    assert source.reads == [("signature", 4096, 4097)]


def test_huge_manifest_is_read_only_to_its_cap(bundle_files: Files, public_key: bytes,
                                               bundle_now: datetime) -> None:
    source = RecordingSource({**bundle_files,
                              "manifest.json": b" " * (MAX_MANIFEST_BYTES + 1_000_000)})
    with pytest.raises(ModelIntegrityError, match="larger"):
        verify_bundle(source, TrustedKeys([public_key]), now=bundle_now)
    assert source.limit_of("manifest.json") == MAX_MANIFEST_BYTES
    assert [name for name, _, _ in source.reads] == ["signature", "manifest.json"]


def test_bad_signature_stops_before_any_payload_file_is_read(
        bundle_files: Files, public_key: bytes, bundle_now: datetime) -> None:
    source = RecordingSource({**bundle_files,
                              "manifest.json": flip(bundle_files["manifest.json"], 10)})
    with pytest.raises(ModelIntegrityError):
        verify_bundle(source, TrustedKeys([public_key]), now=bundle_now)
    assert [name for name, _, _ in source.reads] == ["signature", "manifest.json"]


@pytest.mark.parametrize("garbage", [b"not json at all {", b"{}", b'{"version": "x"}', b"\xff" * 9])
def test_manifest_is_parsed_only_after_the_signature_verifies(
        garbage: bytes, bundle_files: Files, public_key: bytes, bundle_now: datetime,
        sign_raw_bundle: Any) -> None:
    # Garbage under the old signature: an integrity error, never a parse error.
    with pytest.raises(ModelIntegrityError):
        open_bundle({**bundle_files, "manifest.json": garbage}, public_key, bundle_now)
    # The same garbage, validly signed: now it is parsed, and refused as a schema error.
    with pytest.raises(SchemaError, match="invalid bundle manifest"):
        open_bundle(sign_raw_bundle(bundle_files, garbage), public_key, bundle_now)


# -------------------------------------------------- signed but lying manifests


def with_extra_feature(fields: dict[str, Any]) -> None:
    """Declare one more feature than the graph takes (consistently inside the manifest)."""
    fields["spec"]["features"].append({"name": "extra", "event": "x", "aggregate": "count",
                                       "bounds": [0, 1]})
    assigner = fields["assigner"]
    for key, value in (("lower", 0.0), ("upper", 1.0), ("log1p", False), ("center", 0.0),
                       ("scale", 1.0)):
        assigner[key] = [*assigner[key], value]
    assigner["centroids"] = [[*c, 0.0] for c in assigner["centroids"]]


def with_extra_persona(fields: dict[str, Any]) -> None:
    """Declare one more persona than the graph outputs."""
    assigner = fields["assigner"]
    assigner["centroids"] = [*assigner["centroids"], [9.0] * len(assigner["lower"])]
    card = {**fields["personas"][-1], "id": "PX", "index": len(fields["personas"])}
    fields["personas"] = [*fields["personas"], card]


@pytest.mark.parametrize("lie", [with_extra_feature, with_extra_persona])
def test_resigned_manifest_lying_about_the_graph_is_refused(
        lie: Callable[[dict[str, Any]], None], bundle_files: Files, public_key: bytes,
        bundle_now: datetime, resign_bundle: Any) -> None:
    lying = resign_bundle(bundle_files, lie)
    with pytest.raises(ModelIntegrityError, match="does not match its manifest"):
        open_bundle(lying, public_key, bundle_now, backend="onnxruntime")


def test_resigned_garbage_graph_is_refused_by_onnxruntime(bundle_files: Files, public_key: bytes,
                                                          bundle_now: datetime,
                                                          resign_bundle: Any) -> None:
    lying = resign_bundle(bundle_files, replace={"model.onnx": b"\x08\x07garbage" * 50})
    with pytest.raises(ModelIntegrityError, match="onnxruntime cannot load"):
        open_bundle(lying, public_key, bundle_now, backend="onnxruntime")


def test_resigned_manifest_with_a_wrong_digest_is_refused(bundle_files: Files, public_key: bytes,
                                                          bundle_now: datetime,
                                                          sign_raw_bundle: Any) -> None:
    fields = manifest_of(bundle_files)
    fields["files"]["cards.md"]["sha256"] = "0" * 64
    with pytest.raises(ModelIntegrityError, match="digest"):
        open_bundle(sign_raw_bundle(bundle_files, fields), public_key, bundle_now)


def test_resigned_manifest_without_a_graph_is_refused(bundle_files: Files, public_key: bytes,
                                                      bundle_now: datetime,
                                                      sign_raw_bundle: Any) -> None:
    fields = manifest_of(bundle_files)
    del fields["files"]["model.onnx"]
    without = {n: d for n, d in bundle_files.items() if n != "model.onnx"}
    with pytest.raises(ModelIntegrityError, match=r"model\.onnx"):
        open_bundle(sign_raw_bundle(without, fields), public_key, bundle_now)


# ------------------------------------------------------------------- updates


@pytest.fixture(scope="module")
def v1_runtime_factory(bundle_files: Files, public_key: bytes,
                       bundle_now: datetime) -> Callable[[], PersonaRuntime]:
    return lambda: open_bundle(bundle_files, public_key, bundle_now)


def test_update_to_a_newer_version_switches(v1_runtime_factory: Callable[[], PersonaRuntime],
                                            trained_v2: Any, bundle_now: datetime,
                                            bundle_training_rows: np.ndarray) -> None:
    runtime = v1_runtime_factory()
    assert runtime.update(dict(trained_v2.files), now=bundle_now) == 2
    assert runtime.version == 2
    assert len(runtime.personas) == 3
    result = runtime.assign(bundle_training_rows[0])
    assert result.model_version == 2
    assert len(result.distances) == 3


@pytest.mark.parametrize("older", [True, False], ids=["older", "same"])
def test_update_to_an_older_or_same_version_is_refused_and_keeps_the_active_one(
        older: bool, v1_runtime_factory: Callable[[], PersonaRuntime], trained_v2: Any,
        bundle_files: Files, bundle_now: datetime, bundle_training_rows: np.ndarray) -> None:
    runtime = v1_runtime_factory()
    runtime.update(dict(trained_v2.files), now=bundle_now)
    before = runtime.assign_many(bundle_training_rows[:50])
    stale = bundle_files if older else dict(trained_v2.files)
    with pytest.raises(RollbackError):
        runtime.update(stale, now=bundle_now)
    assert runtime.version == 2
    assert runtime.assign_many(bundle_training_rows[:50]) == before


def test_failed_update_keeps_the_active_bundle(v1_runtime_factory: Callable[[], PersonaRuntime],
                                               trained_v2: Any, bundle_now: datetime,
                                               bundle_training_rows: np.ndarray) -> None:
    runtime = v1_runtime_factory()
    before = runtime.assign_many(bundle_training_rows[:50])
    v2 = dict(trained_v2.files)
    expires = datetime.fromisoformat(manifest_of(v2)["expires_at"])
    attempts: list[tuple[Any, datetime, type[Exception]]] = [
        ({**v2, "model.onnx": flip(v2["model.onnx"], 100)}, bundle_now, ModelIntegrityError),
        ({**v2, "manifest.json": flip(v2["manifest.json"], 100)}, bundle_now,
         ModelIntegrityError),
        ({n: d for n, d in v2.items() if n != "cards.md"}, bundle_now, ModelIntegrityError),
        (v2, expires, BundleExpiredError),
    ]
    for bundle, now, error in attempts:
        with pytest.raises(error):
            runtime.update(bundle, now=now)
        assert runtime.version == 1
        assert runtime.assign_many(bundle_training_rows[:50]) == before


def test_update_to_another_model_is_refused(v1_runtime_factory: Callable[[], PersonaRuntime],
                                            bundle_files: Files, bundle_now: datetime,
                                            resign_bundle: Any) -> None:
    runtime = v1_runtime_factory()

    def other_model(fields: dict[str, Any]) -> None:
        fields["model_id"], fields["version"] = "someone-else", 5

    with pytest.raises(ModelIntegrityError, match="someone-else"):
        runtime.update(resign_bundle(bundle_files, other_model), now=bundle_now)
    assert runtime.version == 1


def test_concurrent_assign_during_updates_gets_results_wholly_from_one_version(
        bundle_files: Files, trained_v2: Any, public_key: bytes, bundle_now: datetime,
        resign_bundle: Any, bundle_training_rows: np.ndarray) -> None:
    # Odd versions carry model A (k=4, version 1's content), even versions model B (k=3).
    models = {1: bundle_files, 0: dict(trained_v2.files)}
    n_versions = 24
    bundles = {v: resign_bundle(models[v % 2], lambda f, v=v: f.update(version=v))
               for v in range(2, n_versions + 1)}
    probe, batch = bundle_training_rows[0], bundle_training_rows[:32]
    expected_one, expected_many = {}, {}
    for parity, files in models.items():
        reference = open_bundle(files, public_key, bundle_now)
        expected_one[parity] = reference.assign(probe)
        expected_many[parity] = reference.assign_many(batch)
    assert expected_one[0].distances != expected_one[1].distances  # the models are told apart

    runtime = open_bundle(bundle_files, public_key, bundle_now)
    stop, lock = threading.Event(), threading.Lock()
    calls = [0]
    problems: list[str] = []
    seen: set[int] = set()

    def reader() -> None:
        try:
            while not stop.is_set():
                one = runtime.assign(probe)
                want = dataclasses.replace(expected_one[one.model_version % 2],
                                           model_version=one.model_version)
                if one != want:
                    problems.append(f"assign mixed versions: {one}")
                many = runtime.assign_many(batch)
                version = many[0].model_version
                want_many = [dataclasses.replace(r, model_version=version)
                             for r in expected_many[version % 2]]
                if many != want_many:
                    problems.append(f"assign_many mixed versions at v{version}")
                with lock:
                    seen.update((one.model_version, version))
                    calls[0] += 1
        except Exception as exc:  # any failure in a reader fails the test
            problems.append(repr(exc))

    def calls_so_far() -> int:
        with lock:
            return calls[0]

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for version in range(2, n_versions + 1):
            assert runtime.update(bundles[version], now=bundle_now) == version
            target, deadline = calls_so_far() + 8, time.monotonic() + 5.0
            while calls_so_far() < target and not problems and time.monotonic() < deadline:
                time.sleep(0.0005)  # let the readers run against this version
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert problems == []
    assert runtime.version == n_versions
    assert len(seen) > n_versions // 2  # readers really ran across many versions
    assert {v % 2 for v in seen} == {0, 1}  # ... and against both models
