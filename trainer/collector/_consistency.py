"""The consistency check: does a contribution's persona follow from its features?

A device assigns the persona with the signed bundle and sends the features in
model space (clipped, log1p where the spec says so). The collector holds the
same approved bundle, so it can redo the assignment: a contribution whose
claimed persona is not the nearest centroid to its own features was not made
by an honest device (or not with that bundle) and is refused. This stops
"claim persona 2 with features nowhere near it"; it cannot stop forged
features that are consistent (the quotas and admission bound those).

Devices assign in float32 (onnxruntime) or float64 (numpy): a contribution
within :data:`RELATIVE_TOLERANCE` of a tie between two personas is accepted for
either, so honest devices on either backend are never refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from edgepersona.sdk.protocol.assign import numpy_assign
from edgepersona.sdk.protocol.manifest import AssignerParams

__all__ = ["RELATIVE_TOLERANCE", "consistent_persona", "consistent_personas", "nearest_personas"]

RELATIVE_TOLERANCE: Final = 1e-4  # float32 assignment is exact to ~1e-6 relative; 100x margin
_ABSOLUTE_TOLERANCE: Final = 1e-9


def nearest_personas(params: AssignerParams, features: Sequence[float]) -> frozenset[int]:
    """The personas a device could have assigned to a model-space contribution.

    The features are mapped back to raw space (``expm1`` where the spec takes
    ``log1p``) and assigned with the protocol's reference maths
    (:func:`edgepersona.sdk.protocol.assign.numpy_assign`), which clips and
    transforms them again exactly as a device does.

    Args:
        params: The signed assigner parameters of the contribution's model version.
        features: The contribution's features, in model space, within bounds.

    Returns:
        The nearest persona and any other within the tolerance of it.
    """
    near = _near(params, np.array([features], dtype=np.float64))
    return frozenset(int(k) for k in np.flatnonzero(near[0]))


def consistent_personas(params: AssignerParams, features: Sequence[Sequence[float]],
                        persona_indices: Sequence[int]) -> list[bool]:
    """:func:`consistent_persona` for many contributions of one model version at once.

    One vectorised assignment for the whole batch: the per-call overhead of the
    reference maths is paid once, not per envelope.

    Args:
        params: The signed assigner parameters of the contributions' model version.
        features: One model-space feature row per contribution, within bounds.
        persona_indices: The persona each contribution claims (valid indices).

    Returns:
        One verdict per contribution, in order.
    """
    if not len(features):
        return []
    near = _near(params, np.array(features, dtype=np.float64))
    return [bool(near[row, persona]) for row, persona in enumerate(persona_indices)]


def _near(params: AssignerParams, rows: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """Per row and persona: whether the persona is within the tolerance of the nearest one."""
    mask = np.asarray(params.log1p, dtype=bool)
    rows[:, mask] = np.expm1(rows[:, mask])
    _, _, distances = numpy_assign(params, rows)
    nearest = distances.min(axis=1, keepdims=True)
    return np.asarray(distances <= nearest * (1.0 + RELATIVE_TOLERANCE) + _ABSOLUTE_TOLERANCE)


def consistent_persona(params: AssignerParams, features: Sequence[float], persona_index: int) -> bool:
    """Whether a claimed persona is the one the features lead to (see the module docstring).

    Args:
        params: The signed assigner parameters of the contribution's model version.
        features: The contribution's features, in model space, within bounds.
        persona_index: The persona the contribution claims.

    Returns:
        True if a device with this bundle could have assigned that persona.
    """
    return persona_index in nearest_personas(params, features)
