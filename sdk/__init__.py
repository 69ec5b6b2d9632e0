"""edgepersona's device SDK: verify a signed persona bundle, fold events, assign locally.

The package root exports the safe recipes only; underscore modules are private.
Names load lazily on first use (PEP 562): a device that only assigns never pays
for the modules behind sync, the store or sealing, which keeps cold start short.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    BudgetExceededError,
    BundleExpiredError,
    InputError,
    InvalidEnvelope,
    ModelIntegrityError,
    NotFittedError,
    PersonaError,
    RollbackError,
    SchemaError,
    StoreCorruptError,
    StoreError,
    TransportError,
    UntrustedKeyError,
)

if TYPE_CHECKING:
    from ._client import ClientOptions, PersonaClient, TrackedEvent
    from ._explain import Reason
    from ._fold import FoldPlan, FoldState
    from ._keystore import FileKeyProvider, KeyProvider, MemoryKeyProvider
    from ._manifest import Manifest, PersonaCard
    from ._pseudonym import Pseudonym, Pseudonymizer, SecretProvider
    from ._runtime import Assignment, PersonaRuntime
    from ._seal import Contribution, Opener, SealConfig, Sealer, SealSuite, day_bucket
    from ._spec import Feature, FeatureSpec, Window, load_spec_json
    from ._store import EncryptedStore
    from ._sync import HttpTransport, MemoryTransport, SyncAgent, SyncReport, Transport

__version__ = "0.1.0"

_LAZY = {
    "Assignment": "_runtime",
    "ClientOptions": "_client",
    "Contribution": "_seal",
    "EncryptedStore": "_store",
    "Feature": "_spec",
    "FeatureSpec": "_spec",
    "FileKeyProvider": "_keystore",
    "FoldPlan": "_fold",
    "FoldState": "_fold",
    "HttpTransport": "_sync",
    "KeyProvider": "_keystore",
    "Manifest": "_manifest",
    "MemoryKeyProvider": "_keystore",
    "MemoryTransport": "_sync",
    "Opener": "_seal",
    "PersonaCard": "_manifest",
    "PersonaClient": "_client",
    "PersonaRuntime": "_runtime",
    "Pseudonym": "_pseudonym",
    "Pseudonymizer": "_pseudonym",
    "Reason": "_explain",
    "SealConfig": "_seal",
    "SealSuite": "_seal",
    "Sealer": "_seal",
    "SecretProvider": "_pseudonym",
    "SyncAgent": "_sync",
    "SyncReport": "_sync",
    "TrackedEvent": "_client",
    "Transport": "_sync",
    "Window": "_spec",
    "day_bucket": "_seal",
    "load_spec_json": "_spec",
}


def __getattr__(name: str) -> Any:
    """Import the module behind a public name on first access."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

__all__ = [
    "Assignment",
    "BudgetExceededError",
    "BundleExpiredError",
    "ClientOptions",
    "Contribution",
    "EncryptedStore",
    "Feature",
    "FeatureSpec",
    "FileKeyProvider",
    "FoldPlan",
    "FoldState",
    "HttpTransport",
    "InputError",
    "InvalidEnvelope",
    "KeyProvider",
    "Manifest",
    "MemoryKeyProvider",
    "MemoryTransport",
    "ModelIntegrityError",
    "NotFittedError",
    "Opener",
    "PersonaCard",
    "PersonaClient",
    "PersonaError",
    "PersonaRuntime",
    "Pseudonym",
    "Pseudonymizer",
    "Reason",
    "RollbackError",
    "SchemaError",
    "SealConfig",
    "SealSuite",
    "Sealer",
    "SecretProvider",
    "StoreCorruptError",
    "StoreError",
    "SyncAgent",
    "SyncReport",
    "TrackedEvent",
    "Transport",
    "TransportError",
    "UntrustedKeyError",
    "Window",
    "__version__",
    "day_bucket",
    "load_spec_json",
]
