"""The one exception tree of edgepersona.

Every error the project raises on purpose derives from :class:`PersonaError`,
so an app can catch everything edgepersona-specific with one ``except``::

    PersonaError
    ├── ModelIntegrityError        a bundle failed verification; nothing was loaded
    │   ├── UntrustedKeyError      signed by a key the device does not trust
    │   ├── BundleExpiredError     the manifest's expiry time has passed (freeze attack)
    │   └── RollbackError          the version is not newer than the trusted one
    ├── SchemaError (ValueError)   a spec, manifest or table has the wrong structure
    ├── InputError (ValueError)    a feature vector, event or argument is unusable
    ├── InvalidEnvelope            a sealed payload could not be opened (opaque)
    ├── TransportError             the collector could not be reached; retry later
    ├── StoreError                 the encrypted local store cannot be used
    │   └── StoreCorruptError      tampered or truncated; see the recovery in its message
    └── (server side, in :mod:`edgepersona.trainer.errors`)
        ├── BudgetExceededError    a release would spend more privacy budget than is left
        └── NotFittedError (AttributeError)  an estimator was used before ``fit``

Messages say what was expected, what was found and what to do next, except
for cryptographic failures of sealed payloads, which are opaque on purpose: an
attacker learns nothing about which check failed.
"""

from __future__ import annotations

__all__ = [
    "BundleExpiredError",
    "InputError",
    "InvalidEnvelope",
    "ModelIntegrityError",
    "PersonaError",
    "RollbackError",
    "SchemaError",
    "StoreCorruptError",
    "StoreError",
    "TransportError",
    "UntrustedKeyError",
]


class PersonaError(Exception):
    """Base class of every error edgepersona raises on purpose."""


class ModelIntegrityError(PersonaError):
    """A model bundle failed verification; nothing from it was loaded."""


class UntrustedKeyError(ModelIntegrityError):
    """The bundle is signed by a key that is not among the trusted keys."""


class BundleExpiredError(ModelIntegrityError):
    """The bundle's manifest has expired (protects against freeze attacks)."""


class RollbackError(ModelIntegrityError):
    """The bundle's version is not newer than the version already trusted."""


class SchemaError(PersonaError, ValueError):
    """A feature spec, manifest or input table does not have the expected structure."""


class InputError(PersonaError, ValueError):
    """A feature vector, event or argument cannot be used as given."""


class InvalidEnvelope(PersonaError):  # noqa: N818 - the name states what the payload is
    """A sealed payload could not be opened or verified.

    Deliberately carries no detail: tampering, a wrong key, a replay and a
    malformed body are indistinguishable to the caller.
    """

    def __init__(self) -> None:
        super().__init__("envelope rejected")


class TransportError(PersonaError):
    """The collector could not be reached or answered with a server error; retry later."""


class StoreError(PersonaError):
    """The encrypted local store cannot be read or written."""


class StoreCorruptError(StoreError):
    """The local store is tampered, truncated or encrypted under another key."""
