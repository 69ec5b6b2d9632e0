"""scikit-learn's estimator contract, shared by ``PersonaKMeans`` and ``DPKMeans``.

``__init__`` takes keyword-only parameters and only stores them under their
own names; :meth:`EstimatorParams.get_params` and :meth:`EstimatorParams.set_params`
read them off that signature, so ``sklearn.base.clone``, pipelines and grid
searches work without the trainer subclassing scikit-learn's classes.
"""

from __future__ import annotations

import inspect
from typing import Any, Self

from edgepersona.sdk import InputError

__all__ = ["EstimatorParams"]


class EstimatorParams:
    """``get_params``/``set_params`` from the keyword-only ``__init__`` parameters."""

    @classmethod
    def _param_names(cls) -> tuple[str, ...]:
        """The constructor's keyword-only parameters, in order."""
        signature = inspect.signature(cls.__init__)
        return tuple(p.name for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters.

        Args:
            deep: unused (no nested estimators).

        Returns:
            Parameter name to value.
        """
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Self:
        """Set constructor parameters.

        Args:
            **params: parameter name to value.

        Returns:
            self.

        Raises:
            InputError: an unknown parameter.
        """
        names = self._param_names()
        for name, value in params.items():
            if name not in names:
                raise InputError(f"unknown parameter {name!r}; expected one of {', '.join(names)}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if k != "spec")
        return f"{type(self).__name__}({shown})"
