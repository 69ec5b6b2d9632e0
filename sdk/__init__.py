"""edgepersona's device SDK: verify a signed persona bundle, fold events, assign locally.

The package root exports the safe recipes a device needs; underscore modules are
private. The contract the device shares with the server (feature spec, manifest,
signing and rotation, bundle verification, envelope and batch framing, the fold
and the assignment maths) is the public layer :mod:`edgepersona.sdk.protocol`,
which the trainer and the collector build on as well.

Names load lazily on first use (PEP 562): a device that only assigns never pays
for the modules behind sync, the store or sealing, which keeps cold start short.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from edgepersona.sdk.errors import (
    BundleExpiredError as BundleExpiredError,
    InputError as InputError,
    InvalidEnvelope as InvalidEnvelope,
    ModelIntegrityError as ModelIntegrityError,
    PersonaError as PersonaError,
    RollbackError as RollbackError,
    SchemaError as SchemaError,
    StoreCorruptError as StoreCorruptError,
    StoreError as StoreError,
    TransportError as TransportError,
    UntrustedKeyError as UntrustedKeyError,
)

if TYPE_CHECKING:
    from ._client import (
        ClientOptions as ClientOptions,
        PersonaClient as PersonaClient,
        TimeInput as TimeInput,
        TrackedEvent as TrackedEvent,
    )
    from ._explain import (
        Reason as Reason,
    )
    from ._keystore import (
        FileKeyProvider as FileKeyProvider,
        KeyProvider as KeyProvider,
        MemoryKeyProvider as MemoryKeyProvider,
    )
    from ._pseudonym import (
        DEFAULT_EPOCH_PERIOD_S as DEFAULT_EPOCH_PERIOD_S,
        Pseudonym as Pseudonym,
        Pseudonymizer as Pseudonymizer,
        SecretProvider as SecretProvider,
    )
    from ._runtime import (
        Assignment as Assignment,
        PersonaRuntime as PersonaRuntime,
    )
    from ._store import (
        EncryptedStore as EncryptedStore,
    )
    from ._sync import (
        HttpTransport as HttpTransport,
        MemoryTransport as MemoryTransport,
        SyncAgent as SyncAgent,
        SyncReport as SyncReport,
        Transport as Transport,
    )
    from .protocol.envelope import (
        Contribution as Contribution,
        SealConfig as SealConfig,
        Sealer as Sealer,
        SealSuite as SealSuite,
        day_bucket as day_bucket,
    )
    from .protocol.fold import (
        FoldPlan as FoldPlan,
        FoldState as FoldState,
    )
    from .protocol.manifest import (
        Manifest as Manifest,
        PersonaCard as PersonaCard,
    )
    from .protocol.spec import (
        Feature as Feature,
        FeatureSpec as FeatureSpec,
        Window as Window,
        load_spec_json as load_spec_json,
    )

__version__ = "0.1.0"

# The one table of public names: name -> the module that defines it (loaded on first use).
_EXPORTS: dict[str, tuple[str, ...]] = {
    '_client': (
        'ClientOptions',
        'PersonaClient',
        'TimeInput',
        'TrackedEvent',
    ),
    '_explain': (
        'Reason',
    ),
    '_keystore': (
        'FileKeyProvider',
        'KeyProvider',
        'MemoryKeyProvider',
    ),
    '_pseudonym': (
        'DEFAULT_EPOCH_PERIOD_S',
        'Pseudonym',
        'Pseudonymizer',
        'SecretProvider',
    ),
    '_runtime': (
        'Assignment',
        'PersonaRuntime',
    ),
    '_store': (
        'EncryptedStore',
    ),
    '_sync': (
        'HttpTransport',
        'MemoryTransport',
        'SyncAgent',
        'SyncReport',
        'Transport',
    ),
    'protocol.envelope': (
        'Contribution',
        'SealConfig',
        'SealSuite',
        'Sealer',
        'day_bucket',
    ),
    'protocol.fold': (
        'FoldPlan',
        'FoldState',
    ),
    'protocol.manifest': (
        'Manifest',
        'PersonaCard',
    ),
    'protocol.spec': (
        'Feature',
        'FeatureSpec',
        'Window',
        'load_spec_json',
    ),
}
_LAZY = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str) -> Any:
    """Import the module behind a public name on first access (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return list(__all__)


__all__ = sorted([
    *_LAZY,
    'BundleExpiredError',
    'InputError',
    'InvalidEnvelope',
    'ModelIntegrityError',
    'PersonaError',
    'RollbackError',
    'SchemaError',
    'StoreCorruptError',
    'StoreError',
    'TransportError',
    'UntrustedKeyError',
    '__version__',
])
