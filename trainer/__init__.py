"""edgepersona's trainer: event logs and tables in, signed persona bundles out.

Server-side only: it uses scikit-learn, onnx and pyarrow, which the device SDK
never imports. It builds on the public protocol layer
(:mod:`edgepersona.sdk.protocol`) and is organised by part::

    data/       reading event logs and tables, batch features, zero-config specs, replays
    engines/    the one Lloyd core, the local and Dask row engines, the k-means estimator
    privacy/    accounting, the budget ledger, DP k-means, the ε preview, the audit
    release/    training, persona cards, ONNX export, signed bundles, refits, keys
    collector/  the sync service (ASGI app, SQLite and PostgreSQL aggregate stores)
    report/     self-contained HTML reports (personas, audit)
    cli/        the ``edgepersona`` command, one module per sub-command

The names below are the entry points, flat and sorted (loaded on first use).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .data.events import (
        EventLog as EventLog,
        FeatureTable as FeatureTable,
        read_event_log as read_event_log,
        read_feature_table as read_feature_table,
    )
    from .data.features import (
        compute_features as compute_features,
    )
    from .data.replay import (
        replay_on_device as replay_on_device,
    )
    from .data.suggest import (
        suggest_spec as suggest_spec,
        suggest_table_spec as suggest_table_spec,
    )
    from .engines.kmeans import (
        PersonaKMeans as PersonaKMeans,
    )
    from .errors import (
        BudgetExceededError as BudgetExceededError,
        NotFittedError as NotFittedError,
    )
    from .privacy.audit import (
        build_audit as build_audit,
    )
    from .privacy.dp_kmeans import (
        DPKMeans as DPKMeans,
    )
    from .privacy.ledger import (
        PrivacyLedger as PrivacyLedger,
        read_ledger as read_ledger,
    )
    from .privacy.ledger_audit import (
        audit_releases as audit_releases,
    )
    from .privacy.preview import (
        epsilon_sweep as epsilon_sweep,
    )
    from .release.export import (
        write_bundle as write_bundle,
        zip_bundle as zip_bundle,
    )
    from .release.keys import (
        generate_collector_key as generate_collector_key,
        generate_signing_key as generate_signing_key,
        load_signing_key as load_signing_key,
    )
    from .release.refit import (
        DriftReport as DriftReport,
        approve_bundle as approve_bundle,
        refit_bundle as refit_bundle,
        write_refit as write_refit,
    )
    from .release.train import (
        TrainOptions as TrainOptions,
        TrainResult as TrainResult,
        train_bundle as train_bundle,
    )
    from .release.train_private import (
        PrivateRelease as PrivateRelease,
        fit_private as fit_private,
    )
    from .report import (
        render_audit_report as render_audit_report,
        render_persona_report as render_persona_report,
    )

# The one table of public names: name -> the module that defines it (loaded on first use).
_EXPORTS: dict[str, tuple[str, ...]] = {
    'data.events': (
        'EventLog',
        'FeatureTable',
        'read_event_log',
        'read_feature_table',
    ),
    'data.features': (
        'compute_features',
    ),
    'data.replay': (
        'replay_on_device',
    ),
    'data.suggest': (
        'suggest_spec',
        'suggest_table_spec',
    ),
    'engines.kmeans': (
        'PersonaKMeans',
    ),
    'errors': (
        'BudgetExceededError',
        'NotFittedError',
    ),
    'privacy.audit': (
        'build_audit',
    ),
    'privacy.dp_kmeans': (
        'DPKMeans',
    ),
    'privacy.ledger': (
        'PrivacyLedger',
        'read_ledger',
    ),
    'privacy.ledger_audit': (
        'audit_releases',
    ),
    'privacy.preview': (
        'epsilon_sweep',
    ),
    'release.export': (
        'write_bundle',
        'zip_bundle',
    ),
    'release.keys': (
        'generate_collector_key',
        'generate_signing_key',
        'load_signing_key',
    ),
    'release.refit': (
        'DriftReport',
        'approve_bundle',
        'refit_bundle',
        'write_refit',
    ),
    'release.train': (
        'TrainOptions',
        'TrainResult',
        'train_bundle',
    ),
    'release.train_private': (
        'PrivateRelease',
        'fit_private',
    ),
    'report': (
        'render_audit_report',
        'render_persona_report',
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
])
