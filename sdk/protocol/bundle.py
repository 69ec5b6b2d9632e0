"""Verifying a signed model bundle before anything in it is parsed.

A bundle is ``manifest.json`` + ``signature`` + the files the manifest lists
(``model.onnx``), as a directory, a zip archive or an in-memory mapping. The
order of checks is the point of this module:

1. read the small ``signature`` file and find its key among the trusted keys;
2. verify the signature over the raw manifest bytes (nothing parsed yet);
3. parse the manifest;
4. require the exact file set the manifest declares (no extra, none missing);
5. read each file no further than its declared size and check its SHA-256;
6. only then refuse it if expired or older than the trusted version, so a
   tampered old bundle is reported as tampered, not as a rollback.

Only then does the caller hand ``model.onnx`` to onnxruntime.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import re
import stat
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

from edgepersona.sdk.errors import BundleExpiredError, InputError, ModelIntegrityError, RollbackError
from edgepersona.sdk.protocol.manifest_read import parse_manifest_view
from edgepersona.sdk.protocol.manifest_view import ManifestView
from edgepersona.sdk.protocol.signing import MANIFEST_CONTEXT, SignatureFile
from edgepersona.sdk.protocol.trust import TrustedKeys

if TYPE_CHECKING:
    from edgepersona.sdk.protocol.manifest import Manifest

__all__ = [
    "MANIFEST_NAME",
    "MAX_MANIFEST_BYTES",
    "MODEL_NAME",
    "SIGNATURE_NAME",
    "BundleSource",
    "VerifiedBundle",
    "bundle_source",
    "verify_bundle",
]

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "signature"
MODEL_NAME = "model.onnx"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # bytes
_SIGNATURE_MAX_BYTES = 4096  # bytes


class BundleSource(Protocol):
    """Where bundle files come from: a directory, an archive or memory."""

    def names(self) -> frozenset[str]:
        """Every entry in the bundle (files and anything else)."""
        ...

    def read(self, name: str, limit: int) -> bytes:
        """Read at most ``limit + 1`` bytes of a file (so oversize is detectable)."""
        ...


class _MemorySource:
    """A bundle held as a name → bytes mapping (tests, downloads)."""

    def __init__(self, files: Mapping[str, bytes]) -> None:
        self._files = dict(files)

    def names(self) -> frozenset[str]:
        return frozenset(self._files)

    def read(self, name: str, limit: int) -> bytes:
        data = self._files.get(name)
        if data is None:
            raise ModelIntegrityError(f"bundle has no {name!r}; rebuild it with `edgepersona train`")
        return data[: limit + 1]


class _DirectorySource:
    """A bundle directory; symlinks and sub-directories count as unexpected entries."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def names(self) -> frozenset[str]:
        return frozenset(os.listdir(self._path))

    def read(self, name: str, limit: int) -> bytes:
        path = self._path / name
        try:
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode):
                raise ModelIntegrityError(f"bundle entry {name!r} is not a regular file")
            with open(path, "rb") as handle:
                return handle.read(limit + 1)
        except FileNotFoundError:
            raise ModelIntegrityError(
                f"bundle has no {name!r}; rebuild it with `edgepersona train`") from None


class _ZipSource:
    """A bundle archive; entries are read through size-limited streams.

    The archive must have one reading only (see :func:`_check_zip_layout`):
    duplicate, case-folded duplicate or path-like names, directories, links,
    encryption and anything else another zip reader could resolve differently
    are refused before any entry is read.
    """

    def __init__(self, archive: zipfile.ZipFile) -> None:
        if archive.fp is None:
            raise _ambiguous("a closed archive")
        _check_zip_layout(archive, archive.fp)
        self._zip = archive
        self._names = frozenset(archive.namelist())

    def names(self) -> frozenset[str]:
        return self._names

    def read(self, name: str, limit: int) -> bytes:
        if name not in self._names:
            raise ModelIntegrityError(f"bundle has no {name!r}; rebuild it with `edgepersona train`")
        try:
            with self._zip.open(name) as handle:
                return handle.read(limit + 1)
        except Exception:  # zipfile raises zlib.error, NotImplementedError, RuntimeError, ...
            raise ModelIntegrityError(f"bundle archive entry {name!r} is damaged") from None


_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record (no ZIP64)
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # local file header, before name and extra
_CENTRAL_RECORD = struct.Struct("<4s2xB21x3H12x")  # magic, version needed, name/extra/comment lengths
_MAX_EXTRACT_VERSION = 63  # "version needed to extract" 6.3: the newest any reader must know
_ENTRY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # the manifest's file-name rule
_ALLOWED_FLAGS = 0x0806  # deflate option bits 1-2 and the UTF-8 name bit 11, nothing else
_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
_HARMLESS_EXTRAS = frozenset({0x000A, 0x5455, 0x7875})  # NTFS times, unix times, unix owner
_DOS_DIRECTORY_OR_VOLUME = 0x18  # MS-DOS attribute bits


def _ambiguous(what: str) -> ModelIntegrityError:
    """The error for an archive another zip reader could read differently."""
    return ModelIntegrityError(f"bundle archive can be read more than one way ({what}); use the"
                               " archive `edgepersona train` wrote, unmodified")


def _check_zip_layout(archive: zipfile.ZipFile, raw: IO[bytes]) -> None:
    """Refuse any archive whose entries another zip reader could resolve differently.

    The rule (``models/CONFORMANCE.md``, bundle verification): no archive
    comment, no ZIP64, no bytes before the first entry or between entries; each
    entry's local header repeats its central directory record; names follow the
    manifest's file-name rule and are unique even case-folded; only stored or
    deflated regular files, unencrypted, with no data descriptor and no extra
    field that could rename them.
    """
    infos = archive.infolist()
    size = raw.seek(0, os.SEEK_END)
    if size < _EOCD.size:
        raise _ambiguous("no end record")
    raw.seek(size - _EOCD.size)
    magic, disk, cd_disk, on_disk, total, cd_size, cd_offset, comment = _EOCD.unpack(
        raw.read(_EOCD.size))
    if (magic != b"PK\x05\x06" or disk or cd_disk or comment or on_disk != total
            or total != len(infos) or cd_offset + cd_size != size - _EOCD.size):
        raise _ambiguous("a comment, ZIP64, or data around the central directory")
    _check_central_directory(raw, cd_offset, cd_size, infos)
    names = [info.orig_filename for info in infos]
    if len({name.casefold() for name in names}) != len(names):
        raise _ambiguous("duplicate entry names")
    end = 0
    for info in sorted(infos, key=lambda i: i.header_offset):
        if info.header_offset != end:
            raise _ambiguous("bytes before, between or across entries")
        end = _check_zip_entry(info, raw)
    if end != cd_offset:
        raise _ambiguous("bytes after the last entry")


def _check_central_directory(raw: IO[bytes], offset: int, size: int,
                             infos: list[zipfile.ZipInfo]) -> None:
    """The directory's records, read by their declared lengths, fill it exactly.

    zipfile reads a record that overruns the directory as a shorter one; another
    reader would see another name.
    """
    raw.seek(offset)
    directory, position = raw.read(size), 0
    for info in infos:
        record = directory[position:position + _CENTRAL_RECORD.size]
        if len(record) != _CENTRAL_RECORD.size:
            raise _ambiguous("a truncated central directory")
        magic, extract_version, name_length, extra_length, comment_length = _CENTRAL_RECORD.unpack(record)
        start = position + _CENTRAL_RECORD.size
        name = directory[start:start + name_length]
        position = start + name_length + extra_length + comment_length
        if (magic != b"PK\x01\x02" or extract_version > _MAX_EXTRACT_VERSION
                or name != info.orig_filename.encode("ascii", "replace") or position > size):
            raise _ambiguous("a central directory record that overruns or misnames its entry")
    if position != size:
        raise _ambiguous("bytes inside the central directory after its records")


def _check_zip_entry(info: zipfile.ZipInfo, raw: IO[bytes]) -> int:
    """Check one entry's central record and local header; return where its data ends."""
    name = info.orig_filename
    if _ENTRY_NAME.fullmatch(name) is None:
        raise _ambiguous(f"unexpected entry {name[:64]!r}: a path, a directory or not a plain"
                         " file name")
    mode = info.external_attr >> 16
    if (info.flag_bits & ~_ALLOWED_FLAGS or info.compress_type not in _METHODS
            or stat.S_IFMT(mode) not in (0, stat.S_IFREG)
            or info.external_attr & _DOS_DIRECTORY_OR_VOLUME):
        raise _ambiguous(f"entry {name!r} is encrypted, a link or directory, uses a data"
                         " descriptor or an unusual compression")
    raw.seek(info.header_offset)
    head = raw.read(_LOCAL_HEADER.size)
    if len(head) != _LOCAL_HEADER.size:
        raise _ambiguous(f"entry {name!r} has no local header")
    (magic, _version, flags, method, _time, _date, crc, packed, unpacked, name_length,
     extra_length) = _LOCAL_HEADER.unpack(head)
    local_name, extra = raw.read(name_length), raw.read(extra_length)
    if (magic != b"PK\x03\x04" or flags != info.flag_bits or method != info.compress_type
            or (crc, packed, unpacked) != (info.CRC, info.compress_size, info.file_size)
            or local_name != name.encode("ascii")):
        raise _ambiguous(f"entry {name!r} has a local header that differs from the directory")
    _check_extra(name, info.extra)
    _check_extra(name, extra)
    return int(info.header_offset + _LOCAL_HEADER.size + name_length + extra_length + packed)


def _check_extra(name: str, extra: bytes) -> None:
    """Only extra fields that cannot rename, resize or hide an entry (times, owner)."""
    position = 0
    while position < len(extra):
        if position + 4 > len(extra):
            raise _ambiguous(f"entry {name!r} has a truncated extra field")
        kind, length = struct.unpack_from("<2H", extra, position)
        if kind not in _HARMLESS_EXTRAS or position + 4 + length > len(extra):
            raise _ambiguous(f"entry {name!r} has an extra field of kind {kind:#06x}")
        position += 4 + length


def bundle_source(bundle: str | os.PathLike[str] | bytes | Mapping[str, bytes]) -> BundleSource:
    """Wrap a directory, a zip archive (path or bytes) or a mapping as a source.

    Args:
        bundle: a bundle directory, a ``.zip`` path, archive bytes or name → bytes.

    Returns:
        A source for :func:`verify_bundle`.

    Raises:
        InputError: the path does not exist.
        ModelIntegrityError: the archive cannot be read.
    """
    if isinstance(bundle, Mapping):
        return _MemorySource(bundle)
    if not isinstance(bundle, bytes):
        path = Path(bundle)
        if path.is_dir():
            return _DirectorySource(path)
        if not path.exists():
            raise InputError(f"no bundle at {path}: expected a bundle directory or .zip archive")
    try:
        return _ZipSource(zipfile.ZipFile(io.BytesIO(bundle) if isinstance(bundle, bytes) else path))
    except (zipfile.BadZipFile, NotImplementedError, ValueError, OSError, EOFError,
            struct.error):
        # zipfile raises several types for damaged archives (e.g. an unknown extract
        # version, a name flagged UTF-8 that is not); all mean the same to a device.
        raise ModelIntegrityError("bundle archive is not a valid zip file") from None


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose signature, expiry, version and every file hash checked out.

    Attributes:
        view: the manifest as the device reads it (no pydantic).
        files: name → verified bytes of every declared file.
        key_id: the id of the trusted key that signed the manifest.
    """

    view: ManifestView
    files: Mapping[str, bytes]
    key_id: str

    @property
    def manifest(self) -> Manifest:
        """The full manifest (the pydantic models, built on first use)."""
        return self.view.model()

    @property
    def model_bytes(self) -> bytes:
        """The verified ONNX graph."""
        return self.files[MODEL_NAME]


def verify_bundle(source: BundleSource, trusted: TrustedKeys, *, now: datetime,
                  min_version: int = 0) -> VerifiedBundle:
    """Verify a bundle; see the module docstring for the order of checks.

    Args:
        source: where the files come from (see :func:`bundle_source`).
        trusted: the public keys accepted as signers.
        now: the current time (timezone-aware), for the expiry check.
        min_version: the lowest acceptable version (the device's trusted one).

    Returns:
        The verified manifest and file contents.

    Raises:
        UntrustedKeyError: signed by a key not in ``trusted``.
        ModelIntegrityError: bad signature, unexpected or missing files, a hash
            or size mismatch.
        BundleExpiredError: the manifest expired.
        RollbackError: the version is below ``min_version``.
        SchemaError: the signed manifest is not a valid manifest.
    """
    signature = SignatureFile.from_bytes(source.read(SIGNATURE_NAME, _SIGNATURE_MAX_BYTES))
    raw = source.read(MANIFEST_NAME, MAX_MANIFEST_BYTES)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ModelIntegrityError(f"bundle manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    trusted.verify(MANIFEST_CONTEXT, raw, signature)
    manifest = parse_manifest_view(raw)
    _check_file_set(manifest, source.names())
    files = {name: _read_checked(source, name, entry.size, entry.sha256)
             for name, entry in manifest.files.items()}
    _check_freshness(manifest, now=now, min_version=min_version)
    return VerifiedBundle(manifest, files, signature.key_id)


def _check_freshness(manifest: ManifestView, *, now: datetime, min_version: int) -> None:
    """Refuse expired manifests and versions below the trusted one."""
    if now.tzinfo is None:
        raise InputError("`now` must be timezone-aware, e.g. datetime.now(UTC)")
    if manifest.expires_at <= now:
        raise BundleExpiredError(
            f"bundle {manifest.model_id} v{manifest.version} expired at"
            f" {manifest.expires_at.astimezone(UTC).isoformat()}; fetch a newer bundle")
    if manifest.version < min_version:
        raise RollbackError(
            f"bundle {manifest.model_id} v{manifest.version} is older than v{min_version},"
            " the oldest version this device accepts; refusing to roll back")


def _check_file_set(manifest: ManifestView, present: frozenset[str]) -> None:
    """The bundle holds exactly the declared files plus manifest and signature."""
    if MODEL_NAME not in manifest.files:
        raise ModelIntegrityError(f"bundle manifest does not declare {MODEL_NAME}")
    expected = set(manifest.files) | {MANIFEST_NAME, SIGNATURE_NAME}
    missing, extra = sorted(expected - present), sorted(present - expected)
    if missing or extra:
        raise ModelIntegrityError(
            f"bundle file set differs from its manifest (missing: {missing or 'none'},"
            f" unexpected: {extra or 'none'}); use the bundle exactly as exported")


def _read_checked(source: BundleSource, name: str, size: int, sha256: str) -> bytes:
    """Read a file no further than its declared size and compare its digest."""
    data = source.read(name, size)
    if len(data) != size:
        raise ModelIntegrityError(
            f"bundle file {name!r} is {'larger' if len(data) > size else 'smaller'} than the"
            f" {size} bytes its manifest declares")
    if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), sha256):
        raise ModelIntegrityError(f"bundle file {name!r} does not match its manifest digest")
    return data
