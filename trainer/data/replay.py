"""Replaying an event log through the device-side fold (demos, CLI, parity tests)."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from edgepersona.sdk import FoldPlan
from edgepersona.sdk.protocol.fold import check_event
from edgepersona.trainer.data.events import EventLog

__all__ = ["replay_on_device"]


def _cell(value: object) -> object:
    """A log cell as a property: NaN (a missing Parquet number) means absent."""
    return None if isinstance(value, float) and math.isnan(value) else value


def replay_on_device(plan: FoldPlan, log: EventLog, at: float | None = None,
                     order: npt.NDArray[np.int64] | None = None) -> npt.NDArray[np.float64]:
    """Fold every user's events one at a time, as each device would, and evaluate.

    Args:
        plan: the compiled feature spec.
        log: the events.
        at: reference time (default: the last event); later events are skipped.
        order: the arrival order of the events (default: time order).

    Returns:
        Raw feature rows, one per user of the log.
    """
    reference = float(log.time.max()) if at is None else at
    states = [plan.new_state() for _ in range(log.n_users)]
    names = [p for p in log.properties if p != "value"]
    values = log.properties["value"]
    sequence = np.argsort(log.time, kind="stable") if order is None else order
    for i in sequence:
        when = float(log.time[i])
        if when > reference:
            continue
        value = float(values[i])
        props = check_event(str(log.event[i]), None if math.isnan(value) else value, when,
                            {n: _cell(log.properties[n][i]) for n in names})
        states[int(log.user[i])].fold(str(log.event[i]), when, props)
    return np.vstack([s.evaluate(reference) for s in states])
