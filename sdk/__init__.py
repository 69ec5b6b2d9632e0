"""edgepersona's device SDK: verify a signed persona bundle, fold events, assign locally.

The package root exports the safe recipes only; underscore modules are private.
"""

from ._fold import FoldPlan, FoldState
from ._manifest import Manifest, PersonaCard
from ._runtime import Assignment, PersonaRuntime
from ._spec import Feature, FeatureSpec, Window, load_spec_json
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
    UntrustedKeyError,
)

__version__ = "0.1.0"

__all__ = [
    "Assignment",
    "BudgetExceededError",
    "BundleExpiredError",
    "Feature",
    "FeatureSpec",
    "FoldPlan",
    "FoldState",
    "InputError",
    "InvalidEnvelope",
    "Manifest",
    "ModelIntegrityError",
    "NotFittedError",
    "PersonaCard",
    "PersonaError",
    "PersonaRuntime",
    "RollbackError",
    "SchemaError",
    "StoreCorruptError",
    "StoreError",
    "UntrustedKeyError",
    "Window",
    "__version__",
    "load_spec_json",
]
