"""The collector service: the server side of sync.

Devices seal pseudonymous contributions (:mod:`edgepersona.sdk.protocol.envelope`) and
post them to ``POST /v1/sync``; the collector opens them, drops replays, stale,
future and malformed ones, and adds each accepted contribution into running
aggregates per (model version, persona index, day bucket): a count, per-feature
sums and per-feature sums of squares. It never stores a per-user row; the only
other state is a dedupe ledger of keyed hashes that expires with the replay
window. It also serves the approved signed bundles devices update from.

- :func:`create_app` builds the FastAPI app (``edgepersona serve`` runs it
  with uvicorn); :class:`Collector` is the HTTP-free core behind it.
- :func:`open_store` opens an :class:`AggregateStore` from a URL
  (``sqlite:///PATH``); refits read :meth:`AggregateStore.aggregates` or
  :meth:`AggregateStore.daily_aggregates`.
- :func:`encode_batch` frames several envelopes as one request body.
- :class:`BundleShelf` reads the bundles folder (layout in ``_bundles.py``).
"""

from edgepersona.trainer.collector._aggregates import (
    AddResult,
    AggregateStore,
    DailyAggregate,
    Increment,
    PersonaAggregate,
)
from edgepersona.trainer.collector._app import create_app
from edgepersona.trainer.collector._bundles import (
    HOLD_MARKERS,
    BundleArchive,
    BundleShelf,
    ModelShape,
    ShelvedBundle,
)
from edgepersona.trainer.collector._collector import (
    Collector,
    CollectorConfig,
    IngestReport,
    check_contribution,
    ledger_key,
)
from edgepersona.trainer.collector._framing import BATCH_MAGIC, FramingError, encode_batch, split_body
from edgepersona.trainer.collector._loopback import LoopbackServer
from edgepersona.trainer.collector._outcomes import EnvelopeStatus, Outcome
from edgepersona.trainer.collector._sqlite import SqliteAggregateStore
from edgepersona.trainer.collector._store import open_store

__all__ = [
    "BATCH_MAGIC",
    "HOLD_MARKERS",
    "AddResult",
    "AggregateStore",
    "BundleArchive",
    "BundleShelf",
    "Collector",
    "CollectorConfig",
    "DailyAggregate",
    "EnvelopeStatus",
    "FramingError",
    "Increment",
    "IngestReport",
    "LoopbackServer",
    "ModelShape",
    "Outcome",
    "PersonaAggregate",
    "ShelvedBundle",
    "SqliteAggregateStore",
    "check_contribution",
    "create_app",
    "encode_batch",
    "ledger_key",
    "open_store",
    "split_body",
]
