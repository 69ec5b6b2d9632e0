"""The trainer's own errors, on the same tree as the SDK's (:mod:`edgepersona.sdk.errors`).

The device never raises these, so they live on the server side::

    PersonaError (edgepersona.sdk.errors)
    ├── BudgetExceededError        a release would spend more privacy budget than is left
    └── NotFittedError (AttributeError)  an estimator was used before ``fit``
"""

from __future__ import annotations

from edgepersona.sdk.errors import PersonaError

__all__ = ["BudgetExceededError", "NotFittedError"]


class BudgetExceededError(PersonaError):
    """A release would spend more privacy budget than the ledger has left."""


class NotFittedError(PersonaError, AttributeError):
    """An estimator was used before ``fit`` was called."""
