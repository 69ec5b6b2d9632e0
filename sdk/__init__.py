"""edgepersona's device SDK: verify a signed persona bundle, fold events, assign locally.

The package root exports the safe recipes only; underscore modules are private.
"""

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

__version__ = "0.1.0"

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
