"""Pydantic models of the collector's JSON response bodies (its OpenAPI schema)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edgepersona.trainer.collector._collector import IngestReport
from edgepersona.trainer.collector._outcomes import EnvelopeStatus, Outcome

__all__ = [
    "BundleListResponse",
    "EnvelopeResult",
    "ErrorResponse",
    "HealthResponse",
    "MetricsResponse",
    "SyncResponse",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class EnvelopeResult(BaseModel):
    """What happened to one envelope of a sync body."""

    model_config = _FROZEN

    index: int = Field(ge=0, description="position of the envelope in the body")
    status: EnvelopeStatus = Field(description="accepted and duplicate are both final acknowledgements;"
                                               " rejected is final; retry: keep it and send it again"
                                               " later (with a fresh admission token)")
    reason: Outcome | None = Field(default=None, description="why it was rejected or must be retried")


class SyncResponse(BaseModel):
    """The answer to ``POST /v1/sync``: totals and one result per envelope."""

    model_config = _FROZEN

    accepted: int = Field(ge=0)
    duplicate: int = Field(ge=0)
    rejected: int = Field(ge=0)
    retry: int = Field(default=0, ge=0, description="envelopes to send again later")
    results: list[EnvelopeResult]

    @classmethod
    def from_report(cls, report: IngestReport) -> SyncResponse:
        """Summarise a sync report.

        Args:
            report: The collector's outcomes.

        Returns:
            The response body.
        """
        results = [EnvelopeResult(index=index, status=outcome.status,
                                  reason=outcome if outcome.refused else None)
                   for index, outcome in enumerate(report.outcomes)]
        counts = {status: sum(r.status == status for r in results)
                  for status in ("accepted", "duplicate", "rejected", "retry")}
        return cls(**counts, results=results)


class ErrorResponse(BaseModel):
    """A request refused as a whole (body too large, malformed, not found)."""

    model_config = _FROZEN

    status: Literal["rejected"] = "rejected"
    reason: str = Field(description="an Outcome code, or not_found for bundles")
    detail: str


class HealthResponse(BaseModel):
    """Liveness: the process answers requests."""

    model_config = _FROZEN

    status: Literal["ok"] = "ok"


class MetricsResponse(BaseModel):
    """Counts since the process started; no identifiers of any kind."""

    model_config = _FROZEN

    accepted: int = Field(ge=0, description="envelopes added to the aggregates")
    duplicate: int = Field(ge=0, description="replays acknowledged again, not counted")
    rejected: dict[str, int] = Field(description="rejected envelopes and refused bodies by reason")
    ledger_keys: int = Field(ge=0, description="dedupe keys currently held (the field keeps its"
                                               " first name for existing dashboards)")
    accepted_versions: list[int] = Field(description="model versions accepted in sync now")


class BundleListResponse(BaseModel):
    """The approved bundle versions devices may download."""

    model_config = _FROZEN

    versions: list[int]
    latest: int | None
