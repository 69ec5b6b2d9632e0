"""Bundle archives that one zip reader reads one way and another reader another way.

Each function takes an honest release (name -> bytes) and returns the bytes of
a zip archive an attacker could serve instead of the trainer's archive. The
Python SDK reads the central directory; a port may read local headers in order
(a streaming reader), resolve duplicate names to the first entry, honour the
Info-ZIP Unicode path field, stop a name at a NUL byte, follow a symlink when it
unpacks, or ignore bytes before the archive. Every archive here must therefore
be refused before any entry is read (``models/CONFORMANCE.md``, section 1).
"""

from __future__ import annotations

import io
import stat
import struct
import warnings
import zipfile
from collections.abc import Callable, Mapping

Files = Mapping[str, bytes]
EVIL_MODEL = b"\x08\x07unsigned graph bytes"


def _write(entries: list[tuple[zipfile.ZipInfo | str, bytes]], *, comment: bytes = b"") -> bytes:
    """Write entries in order (duplicates allowed) into one archive."""
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns on duplicate names
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for info, data in entries:
                archive.writestr(info, data)
            archive.comment = comment
    return out.getvalue()


def honest(files: Files) -> bytes:
    """The archive the trainer writes (the control: it must verify)."""
    return _write([(name, files[name]) for name in sorted(files)])


def duplicate(name: str, *, unsigned_first: bool) -> Callable[[Files], bytes]:
    """Two entries with one name: the signed bytes and unsigned ones."""
    def build(files: Files) -> bytes:
        entries = [(n, files[n]) for n in sorted(files) if n != name]
        pair = [(name, EVIL_MODEL), (name, files[name])]
        return _write(entries + (pair if unsigned_first else pair[::-1]))
    return build


def case_twin(files: Files) -> bytes:
    """``MODEL.ONNX`` beside ``model.onnx``: one file on a case-insensitive disk."""
    return _write([(n, files[n]) for n in sorted(files)] + [("MODEL.ONNX", EVIL_MODEL)])


def extra_entry(name: str) -> Callable[[Files], bytes]:
    """One more entry under a path-like or directory name."""
    return lambda files: _write([(n, files[n]) for n in sorted(files)] + [(name, EVIL_MODEL)])


def _info(name: str, **attributes: int | bytes) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    for key, value in attributes.items():
        setattr(info, key, value)
    return info


def model_entry(**attributes: int | bytes) -> Callable[[Files], bytes]:
    """The honest ``model.onnx`` bytes, stored with odd zip attributes."""
    def build(files: Files) -> bytes:
        entries: list[tuple[zipfile.ZipInfo | str, bytes]] = [
            (n, files[n]) for n in sorted(files) if n != "model.onnx"]
        return _write([*entries, (_info("model.onnx", **attributes), files["model.onnx"])])
    return build


SYMLINK = model_entry(external_attr=(stat.S_IFLNK | 0o777) << 16)
DIRECTORY_ATTRIBUTE = model_entry(external_attr=0x10)
UNICODE_PATH = model_entry(extra=struct.pack("<HHB", 0x7075, 15, 1) + b"\0\0\0\0" + b"evil.onnx\0")
STORED_AS_BZIP2 = model_entry(compress_type=zipfile.ZIP_BZIP2)


def flagged(bits: int) -> Callable[[Files], bytes]:
    """The honest archive with extra general-purpose flag bits on ``model.onnx``.

    Bit 0 says "encrypted", bit 3 "sizes follow in a data descriptor": a reader
    that honours them reads something else than the bytes the manifest signed.
    """
    def build(files: Files) -> bytes:
        data = bytearray(honest(files))
        for offset in _header_offsets(bytes(data), b"model.onnx"):
            flags = struct.unpack_from("<H", data, offset)[0]
            struct.pack_into("<H", data, offset, flags | bits)
        return bytes(data)
    return build


def _header_offsets(data: bytes, name: bytes) -> list[int]:
    """Offsets of the flag field of the local header and directory record naming ``name``."""
    offsets = []
    for magic, flag_at, name_at in ((b"PK\x03\x04", 6, 30), (b"PK\x01\x02", 8, 46)):
        start = data.find(magic)
        while start >= 0:
            if data[start + name_at:start + name_at + len(name)] == name:
                offsets.append(start + flag_at)
            start = data.find(magic, start + 1)
    return offsets


def nul_in_name(files: Files) -> bytes:
    """``model.onnx\\0x``: Python's reader cuts the name at the NUL, others keep it."""
    data = _write([(n, files[n]) for n in sorted(files) if n != "model.onnx"]
                  + [("model.onnx@x", files["model.onnx"])])
    return data.replace(b"model.onnx@x", b"model.onnx\0x")


def local_name_differs(files: Files) -> bytes:
    """A local header that names another file than its directory record."""
    data = honest(files)  # the first local header starts at 0; its name at 30
    return data[:30] + b"X" + data[31:]


def prepended(files: Files) -> bytes:
    """Bytes before the archive (a polyglot: another format first)."""
    return b"MZ" + bytes(126) + honest(files)


def commented(files: Files) -> bytes:
    """An archive comment, which can hide a second end-of-directory record."""
    return _write([(n, files[n]) for n in sorted(files)], comment=b"PK\x05\x06 hidden")


def appended(files: Files) -> bytes:
    """A second archive's worth of bytes after the first: which end record counts?"""
    return honest(files) + honest({"model.onnx": EVIL_MODEL})


def central_record_overruns(files: Files) -> bytes:
    """The last directory record declares a name longer than the directory holds.

    Python's reader cuts the name at the directory's end and reads ``signature``;
    a reader that trusts the declared length reads another name.
    """
    data = bytearray(honest(files))
    last = data.rfind(b"PK\x01\x02")
    data[last + 28] ^= 0x80  # the name length's low byte
    return bytes(data)
