"""The bundles folder: which signed bundles the collector serves and accepts.

Layout (one model line per collector)::

    BUNDLES/
      personas-v1.zip              an archive: served as version 1
      personas-v2/                 a bundle folder: served as version 2, zipped on request
      personas-v3.zip              held back: the marker beside it says it awaits review
      personas-v3.NEEDS_REVIEW
      personas-v4/                 held back too: the marker is inside the folder
      personas-v4/NEEDS_REVIEW

Entries are named ``<model_id>-v<version>`` (plus ``.zip`` for archives), the
version without leading zeros. A version is **held back** (neither served nor
accepted in sync) while a marker named ``NEEDS_REVIEW`` or ``REJECTED``
exists as ``<stem>.<MARKER>``, ``<stem>.zip.<MARKER>`` or ``<stem>/<MARKER>``.
When an archive and a folder share a stem, the archive is served. When two
model ids claim one version, or a manifest does not parse or names another
model id or version than its file name, that version is not served and a
warning is logged.

The folder is rescanned whenever its listing (names, inodes, sizes, mtimes)
changes, so publishing by rename and approving by deleting the marker take
effect on the next request. Bundles are served as stored: the collector holds
no trusted keys and does not verify signatures; devices do.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import threading
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from edgepersona.sdk import InputError, Manifest, SchemaError
from edgepersona.sdk.protocol.assign import model_space
from edgepersona.sdk.protocol.bundle import MANIFEST_NAME, MAX_MANIFEST_BYTES
from edgepersona.sdk.protocol.manifest import AssignerParams, parse_manifest

__all__ = ["HOLD_MARKERS", "BundleArchive", "BundleShelf", "ModelShape", "ShelvedBundle"]

HOLD_MARKERS: Final = ("NEEDS_REVIEW", "REJECTED")
_NAME: Final = re.compile(
    r"(?P<model>[A-Za-z0-9][A-Za-z0-9._-]{0,63})-v(?P<version>[1-9][0-9]{0,9})(?P<zip>\.zip)?")
_MAX_VERSION: Final = 2**32 - 1  # envelopes carry the model version as uint32
_ZIP_TIME: Final = (1980, 1, 1, 0, 0, 0)  # fixed entry time: the same folder gives the same archive
_log = logging.getLogger("edgepersona.trainer.collector")

Fingerprint = tuple[tuple[str, int, int, int], ...]


@dataclass(frozen=True)
class ModelShape:
    """What a model version's contributions must look like.

    Attributes:
        version: The model version.
        personas: Number of personas; valid indices are ``0..personas-1``.
        lower: Per-feature lower bound of a contribution (model space: the
            clipping bound after the spec's transform, as devices send it).
        upper: Per-feature upper bound of a contribution (model space).
        assigner: The signed assignment parameters (centroids, scaling), so
            the collector can recompute a contribution's persona; None when
            the shape was not read from a bundle.
        k_min: The release's k-min: closed aggregate cells below it are rolled up.
    """

    version: int
    personas: int
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    assigner: AssignerParams | None = None
    k_min: int = 1

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> ModelShape:
        """Read the shape a manifest declares.

        Args:
            manifest: A parsed bundle manifest.

        Returns:
            Its version, persona count and feature bounds.
        """
        params = manifest.assigner
        bounds = model_space(params, np.array([params.lower, params.upper], dtype=np.float64))
        return cls(manifest.version, len(manifest.personas), tuple(bounds[0].tolist()),
                   tuple(bounds[1].tolist()), params, manifest.privacy.k_min)


@dataclass(frozen=True)
class ShelvedBundle:
    """An approved bundle in the folder.

    Attributes:
        model_id: The manifest's model id.
        version: The manifest's version (equal to the file name's).
        path: The archive or folder.
        shape: What contributions under this version look like.
    """

    model_id: str
    version: int
    path: Path
    shape: ModelShape


@dataclass(frozen=True)
class BundleArchive:
    """An approved bundle as the zip bytes devices download.

    Attributes:
        model_id: The manifest's model id.
        version: The bundle version.
        data: The archive bytes.
        sha256: Hex digest of ``data`` (the HTTP ETag).
    """

    model_id: str
    version: int
    data: bytes
    sha256: str


class BundleShelf:
    """The approved bundles of a folder, rescanned when the folder changes.

    Args:
        root: The bundles folder (layout in the module docstring).

    Raises:
        InputError: ``root`` is not a folder.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = Path(root)
        if not self._root.is_dir():
            raise InputError(f"bundles folder {self._root} does not exist; create it and put"
                             " <model_id>-v<version>.zip bundles in it")
        self._lock = threading.Lock()
        self._fingerprint: Fingerprint | None = None
        self._approved: dict[int, ShelvedBundle] = {}
        self._archives: dict[int, BundleArchive] = {}

    def approved(self) -> Mapping[int, ShelvedBundle]:
        """The approved bundles now in the folder.

        Returns:
            Version → bundle.
        """
        with self._lock:
            self._refresh()
            return dict(self._approved)

    def latest(self) -> ShelvedBundle | None:
        """The approved bundle with the highest version, if any.

        Returns:
            The bundle, or None if the folder holds no approved bundle.
        """
        approved = self.approved()
        return approved[max(approved)] if approved else None

    def archive(self, version: int) -> BundleArchive | None:
        """An approved version as archive bytes (read once, cached until the folder changes).

        Args:
            version: The bundle version.

        Returns:
            The archive, or None if that version is not approved.
        """
        with self._lock:
            self._refresh()
            bundle = self._approved.get(version)
            if bundle is None:
                return None
            if version not in self._archives:
                data = _zip_folder(bundle.path) if bundle.path.is_dir() else bundle.path.read_bytes()
                self._archives[version] = BundleArchive(bundle.model_id, version, data,
                                                        hashlib.sha256(data).hexdigest())
            return self._archives[version]

    def _refresh(self) -> None:
        """Rescan when the listing changed; the caller holds the lock."""
        fingerprint = _fingerprint(self._root)
        if fingerprint != self._fingerprint:
            self._approved = _scan(self._root, frozenset(entry[0] for entry in fingerprint))
            self._archives = {}
            self._fingerprint = fingerprint


def _fingerprint(root: Path) -> Fingerprint:
    """Names, inodes, sizes and mtimes of the folder's entries (a folder's mtime covers markers in it)."""
    entries = []
    with os.scandir(root) as listing:
        for entry in listing:
            try:
                info = entry.stat()
            except OSError:  # removed while listing, or a dangling symlink
                continue
            entries.append((entry.name, info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(sorted(entries))


def _scan(root: Path, names: frozenset[str]) -> dict[int, ShelvedBundle]:
    """Pick one approved bundle per version (rules in the module docstring)."""
    by_version: dict[int, dict[str, Path]] = {}
    for name in sorted(names):
        match = _NAME.fullmatch(name)
        if match is None or int(match["version"]) > _MAX_VERSION:
            continue
        path, stem = root / name, name.removesuffix(".zip")
        if not (path.is_file() if match["zip"] else path.is_dir()) or _held(root, names, stem):
            continue
        models = by_version.setdefault(int(match["version"]), {})
        if match["zip"] or match["model"] not in models:  # an archive wins over a folder
            models[match["model"]] = path
    approved = {}
    for version, models in sorted(by_version.items()):
        if len(models) > 1:
            _log.warning("bundles: version %d is claimed by model ids %s; serving neither",
                         version, sorted(models))
            continue
        [(model_id, path)] = models.items()
        bundle = _shelve(path, model_id, version)
        if bundle is not None:
            approved[version] = bundle
    return approved


def _held(root: Path, names: frozenset[str], stem: str) -> bool:
    """Whether a hold marker exists beside or inside the bundle named ``stem``."""
    return any(f"{stem}.{marker}" in names or f"{stem}.zip.{marker}" in names
               or (root / stem / marker).exists() for marker in HOLD_MARKERS)


def _shelve(path: Path, model_id: str, version: int) -> ShelvedBundle | None:
    """Read a bundle's manifest; None (and a warning) if it is unusable or mislabelled."""
    try:
        manifest = parse_manifest(_manifest_bytes(path))
    except (OSError, KeyError, zipfile.BadZipFile, SchemaError) as exc:
        _log.warning("bundles: %s is not served: %s", path.name, type(exc).__name__)
        return None
    if (manifest.model_id, manifest.version) != (model_id, version):
        _log.warning("bundles: %s is not served: its manifest says %s v%d", path.name,
                     manifest.model_id, manifest.version)
        return None
    return ShelvedBundle(model_id, version, path, ModelShape.from_manifest(manifest))


def _manifest_bytes(path: Path) -> bytes:
    """The manifest of an archive or folder, read no further than the manifest limit."""
    if path.is_dir():
        with open(path / MANIFEST_NAME, "rb") as handle:
            raw = handle.read(MAX_MANIFEST_BYTES + 1)
    else:
        with zipfile.ZipFile(path) as archive, archive.open(MANIFEST_NAME) as handle:
            raw = handle.read(MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise SchemaError("manifest too large")
    return raw


def _zip_folder(folder: Path) -> bytes:
    """Zip a bundle folder's regular files in name order with fixed entry times."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.is_symlink():
                archive.writestr(zipfile.ZipInfo(path.name, _ZIP_TIME), path.read_bytes(),
                                 compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()
