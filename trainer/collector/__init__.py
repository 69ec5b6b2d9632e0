"""The collector service: the server side of sync.

Devices seal pseudonymous contributions (:mod:`edgepersona.sdk.protocol.envelope`) and
post them to ``POST /v1/sync``; the collector opens them, drops replays, stale,
future and malformed ones, and adds each accepted contribution into running
aggregates per (model version, persona index, day bucket): a count, per-feature
sums and per-feature sums of squares. It never stores a per-user row; the only
other state is a dedupe set and per-pseudonym quota slots (keyed hashes that
expire with the replay window) and admission token use counts. Closed cells
below k-min are rolled forward, so none stays at rest. It refuses a persona
that does not follow from the features, a pseudonym over its daily quota and,
if an operator requires admission, requests without a token from the app's
backend. It also serves the approved signed bundles devices update from.

- :func:`create_app` builds the FastAPI app (``edgepersona serve`` runs it
  with uvicorn); :class:`Collector` is the HTTP-free core behind it.
- :func:`open_store` opens an :class:`AggregateStore` from a URL
  (``sqlite:///PATH``); refits read :meth:`AggregateStore.aggregates` or
  :meth:`AggregateStore.daily_aggregates`.
- :func:`encode_batch` frames several envelopes as one request body.
- :class:`BundleShelf` reads the bundles folder (layout in ``_bundles.py``).
- :class:`Ed25519Admission` checks admission tokens; the app's backend issues
  them with :func:`issue_admission_token` (threat model in ``_admission.py``).
- :func:`small_cells_at_rest` lists closed cells below k-min (for the audit).
"""

from edgepersona.trainer.collector._admission import (
    ADMISSION_CONTEXT,
    Admission,
    AdmissionCheck,
    Ed25519Admission,
    issue_admission_token,
)
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
    AdmissionRefusedError,
    Collector,
    CollectorConfig,
    IngestReport,
    check_contribution,
    dedupe_key,
    quota_keys,
)
from edgepersona.trainer.collector._consistency import (
    consistent_persona,
    consistent_personas,
    nearest_personas,
)
from edgepersona.trainer.collector._framing import BATCH_MAGIC, FramingError, encode_batch, split_body
from edgepersona.trainer.collector._loopback import LoopbackServer
from edgepersona.trainer.collector._outcomes import EnvelopeStatus, Outcome
from edgepersona.trainer.collector._sqlite import SqliteAggregateStore
from edgepersona.trainer.collector._store import open_store, small_cells_at_rest

__all__ = [
    "ADMISSION_CONTEXT",
    "BATCH_MAGIC",
    "HOLD_MARKERS",
    "AddResult",
    "Admission",
    "AdmissionCheck",
    "AdmissionRefusedError",
    "AggregateStore",
    "BundleArchive",
    "BundleShelf",
    "Collector",
    "CollectorConfig",
    "DailyAggregate",
    "Ed25519Admission",
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
    "consistent_persona",
    "consistent_personas",
    "create_app",
    "dedupe_key",
    "encode_batch",
    "issue_admission_token",
    "nearest_personas",
    "open_store",
    "quota_keys",
    "small_cells_at_rest",
    "split_body",
]
