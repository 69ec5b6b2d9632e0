"""Who a release is about: a keyed bottom-k sketch of the set of user ids.

A privacy budget belongs to people, not to a file name. Each private release
records a sketch of its users: every user id goes through keyed BLAKE2b (a
PRF; 8-byte output, about 3x faster than HMAC-SHA256 here) under a 32-byte
secret kept beside the ledger (:func:`load_source_secret`); the tag, read as
an unsigned integer, is the id's hash, and the sketch keeps the
:data:`SKETCH_SIZE` smallest distinct hashes. The ids never
leave the process; without the secret the hashes say nothing about them
(with it, someone can test whether a *guessed* id is among the kept ones, so
the secret is as sensitive as the ledger's signing key). Order, duplicates and
file names do not change a sketch.

Overlap (Broder's bottom-k estimator). Take t, the smaller of the two
sketches' thresholds (a sketch's threshold is its largest hash, or "every
hash" while it holds fewer than SKETCH_SIZE ids). Both sketches hold *every*
hash of their set up to t, so the hashes of each set below t are a uniform
random sample of that set, and the common ones are exactly the intersection's
hashes below t. The containment of A in B is estimated as
|A_t ∩ B_t| / |A_t|: exact while both sets are small, within a few percent
at SKETCH_SIZE = 2048 otherwise.

The rule for "the same people" (:func:`same_people`): two sets are the same
people when either is estimated to be contained in the other to at least
:data:`SAME_PEOPLE` (10 %). So a renamed or shuffled copy (containment 1), a
subset (the subset is contained in the whole) and a superset (the earlier
data is contained in it) all spend from the earlier budget; two files sharing
fewer than 10 % of either's users are separate budgets. Disjoint data shares
no hash (a false match needs a 64-bit collision). Limit: a subset smaller than
about 1/500 of a large earlier set has few or none of its hashes under that
set's threshold, so its containment is estimated from few samples or not at
all; such a small slice is treated as new people. Sketches merge
(:meth:`SourceSketch.merge`: the bottom-k of a union is the bottom-k of the
union of bottom-k's), so a source's sketch grows with every release it pays for.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edgepersona.sdk import InputError

__all__ = ["SAME_PEOPLE", "SKETCH_SIZE", "SourceSketch", "load_source_secret", "opaque_source",
           "same_people", "sketch_ids"]

SKETCH_SIZE = 2048  # hashes kept per sketch (8 B each: about 22 KB of base64 per ledger entry)
SAME_PEOPLE = 0.10  # containment from which two sets of users share one budget
U64 = npt.NDArray[np.uint64]
_SECRET_BYTES = 32


@dataclass(frozen=True, eq=False)
class SourceSketch:
    """The smallest keyed hashes of a set of user ids (sorted, distinct, at most SKETCH_SIZE).

    Attributes:
        hashes: the kept hashes, ascending.
        full: whether the set had more ids than the sketch keeps (then the
            largest kept hash is the sketch's threshold).
    """

    hashes: U64
    full: bool

    @property
    def threshold(self) -> int:
        """Every hash of the set up to this value is in the sketch."""
        return int(self.hashes[-1]) if self.full else 2**64 - 1

    def merge(self, other: SourceSketch) -> SourceSketch:
        """The sketch of the union of both sets.

        Args:
            other: another sketch under the same secret.

        Returns:
            The union's sketch.
        """
        union = np.union1d(self.hashes, other.hashes)
        return SourceSketch(union[:SKETCH_SIZE], self.full or other.full or len(union) > SKETCH_SIZE)

    def containment_in(self, other: SourceSketch) -> float:
        """Estimated share of this set's people who are also in ``other``'s set.

        Args:
            other: another sketch under the same secret.

        Returns:
            A share in [0, 1] (0 for an empty set).
        """
        limit = np.uint64(min(self.threshold, other.threshold))
        mine = self.hashes[self.hashes <= limit]
        if len(mine) == 0:
            return 0.0
        return float(np.isin(mine, other.hashes[other.hashes <= limit]).sum()) / len(mine)

    def encode(self) -> str:
        """The sketch as text for a ledger entry (``f:`` or ``p:`` then base64 of big-endian u64s).

        Returns:
            The encoding.
        """
        return ("f:" if self.full else "p:") + base64.b64encode(self.hashes.astype(">u8").tobytes()
                                                                ).decode("ascii")

    @classmethod
    def decode(cls, text: str) -> SourceSketch:
        """Read :meth:`encode`'s text.

        Args:
            text: the encoding.

        Returns:
            The sketch.

        Raises:
            InputError: the text is not a sketch.
        """
        try:
            flag, body = text.split(":", 1)
            raw = base64.b64decode(body, validate=True)
            hashes = np.frombuffer(raw, dtype=">u8").astype(np.uint64)
        except (ValueError, TypeError):
            raise InputError("a ledger entry holds a malformed source sketch") from None
        if flag not in ("f", "p") or len(hashes) > SKETCH_SIZE or np.any(np.diff(hashes) == 0):
            raise InputError("a ledger entry holds a malformed source sketch")
        return cls(np.sort(hashes), flag == "f")

    def label(self, secret: bytes) -> str:
        """An opaque, stable name for the set (for manifests and the ledger; no id in it).

        Args:
            secret: the same secret the sketch was made with.

        Returns:
            ``"source-"`` and 16 hex digits.
        """
        digest = hmac.new(secret, b"label\x00" + self.encode().encode("ascii"), hashlib.sha256)
        return "source-" + digest.hexdigest()[:16]


def sketch_ids(ids: Iterable[str], secret: bytes) -> SourceSketch:
    """The keyed bottom-k sketch of a set of user ids.

    Args:
        ids: the user ids (order and repeats do not matter).
        secret: the source secret (:func:`load_source_secret`).

    Returns:
        The sketch.

    Raises:
        InputError: no ids, or a secret of the wrong size.
    """
    if len(secret) != _SECRET_BYTES:
        raise InputError(f"the source secret must be {_SECRET_BYTES} bytes, got {len(secret)}")
    tags = [hashlib.blake2b(str(user).encode("utf-8"), key=secret, digest_size=8).digest()
            for user in ids]
    if not tags:
        raise InputError("a private release needs at least one user id to identify its people")
    hashes = np.unique(np.frombuffer(b"".join(tags), dtype=">u8").astype(np.uint64))
    return SourceSketch(hashes[:SKETCH_SIZE], len(hashes) > SKETCH_SIZE)


def same_people(a: SourceSketch, b: SourceSketch, threshold: float = SAME_PEOPLE) -> bool:
    """Whether two sets of users share one budget (see the module docstring).

    Args:
        a: one sketch.
        b: another, under the same secret.
        threshold: the containment from which they count as the same people.

    Returns:
        True when either set is estimated to lie in the other to at least ``threshold``.
    """
    return max(a.containment_in(b), b.containment_in(a)) >= threshold


def load_source_secret(path: Path) -> bytes:
    """Read the source secret, creating it (mode 0600, 32 random bytes) on first use.

    Args:
        path: the secret's file, beside the ledger.

    Returns:
        The secret.

    Raises:
        InputError: the file exists with the wrong size.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_bytes()
        if len(secret) != _SECRET_BYTES:
            raise InputError(f"the source secret {path.name} must hold {_SECRET_BYTES} bytes;"
                             " restore it from backup (a new one starts every budget afresh)"
                             ) from None
        return secret
    secret = secrets.token_bytes(_SECRET_BYTES)
    try:
        os.write(fd, secret)
        os.fsync(fd)
    finally:
        os.close(fd)
    return secret


def opaque_source(ids: Iterable[str], secret_path: Path) -> str:
    """The opaque label of a set of users, as a private release names them (no file name).

    Args:
        ids: the users' ids.
        secret_path: the source secret's file (created on first use).

    Returns:
        ``"source-"`` and 16 hex digits (:meth:`SourceSketch.label`).

    Raises:
        InputError: no ids, or a secret file of the wrong size.
    """
    secret = load_source_secret(secret_path)
    return sketch_ids(ids, secret).label(secret)
