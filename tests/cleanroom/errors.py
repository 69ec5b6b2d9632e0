"""The outcome classes of CONFORMANCE.md section 0."""

from __future__ import annotations


class KitError(Exception):
    """Every error a conformant implementation raises."""


class ModelIntegrityError(KitError):
    """A bundle or rotation statement failed verification."""


class UntrustedKeyError(ModelIntegrityError):
    """Its signer is not trusted."""


class BundleExpiredError(ModelIntegrityError):
    """It expired."""


class RollbackError(ModelIntegrityError):
    """It is older than what is trusted."""


class SchemaError(KitError):
    """A correctly signed manifest is not a valid manifest."""


class InputError(KitError):
    """The caller passed something invalid."""


class InvalidEnvelope(KitError):  # noqa: N818 - the outcome's name in CONFORMANCE.md
    """A sync envelope does not open."""
