"""What can happen to one envelope (or one request body) at the collector.

Every outcome has a stable machine-readable code (the enum value), the HTTP
status a single-envelope request gets for it, and a one-line description for
people. The codes are what ``/v1/metrics`` counts and what log lines name.
"""

from __future__ import annotations

import enum
from typing import Literal

__all__ = ["EnvelopeStatus", "Outcome"]

EnvelopeStatus = Literal["accepted", "duplicate", "rejected", "retry"]


class Outcome(enum.StrEnum):
    """The result of one envelope, or the reason a whole body was refused."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    INVALID_ENVELOPE = "invalid_envelope"
    UNKNOWN_MODEL_VERSION = "unknown_model_version"
    UNKNOWN_PERSONA = "unknown_persona"
    WRONG_FEATURE_COUNT = "wrong_feature_count"
    FEATURES_OUT_OF_BOUNDS = "features_out_of_bounds"
    INCONSISTENT_PERSONA = "inconsistent_persona"
    QUOTA_EXCEEDED = "quota_exceeded"
    ADMISSION_QUOTA_EXCEEDED = "admission_quota_exceeded"
    ADMISSION_REQUIRED = "admission_required"
    STALE_DAY_BUCKET = "stale_day_bucket"
    FUTURE_DAY_BUCKET = "future_day_bucket"
    BODY_TOO_LARGE = "body_too_large"
    TOO_MANY_ENVELOPES = "too_many_envelopes"
    MALFORMED_BODY = "malformed_body"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"

    @property
    def status(self) -> EnvelopeStatus:
        """``accepted``, ``duplicate`` (counted once), ``rejected`` (final) or ``retry``.

        ``retry`` is not counted but may succeed later: the admission token's quota was spent.
        """
        if self is Outcome.ACCEPTED:
            return "accepted"
        if self is Outcome.ADMISSION_QUOTA_EXCEEDED:
            return "retry"
        return "duplicate" if self is Outcome.DUPLICATE else "rejected"

    @property
    def refused(self) -> bool:
        """Whether the envelope was not counted and not a replay (rejected or to retry)."""
        return self.status in ("rejected", "retry")

    @property
    def http_status(self) -> int:
        """The HTTP status of a request whose only envelope (or body) had this outcome."""
        return _HTTP_STATUS[self]

    @property
    def detail(self) -> str:
        """A short description for people; never names a user or a pseudonym."""
        return _DETAIL[self]


_HTTP_STATUS: dict[Outcome, int] = {
    Outcome.ACCEPTED: 200,
    Outcome.DUPLICATE: 200,
    Outcome.INVALID_ENVELOPE: 400,
    Outcome.UNKNOWN_MODEL_VERSION: 422,
    Outcome.UNKNOWN_PERSONA: 422,
    Outcome.WRONG_FEATURE_COUNT: 422,
    Outcome.FEATURES_OUT_OF_BOUNDS: 422,
    Outcome.INCONSISTENT_PERSONA: 422,
    Outcome.QUOTA_EXCEEDED: 429,
    Outcome.ADMISSION_QUOTA_EXCEEDED: 429,
    Outcome.ADMISSION_REQUIRED: 401,
    Outcome.STALE_DAY_BUCKET: 422,
    Outcome.FUTURE_DAY_BUCKET: 422,
    Outcome.BODY_TOO_LARGE: 413,
    Outcome.TOO_MANY_ENVELOPES: 413,
    Outcome.MALFORMED_BODY: 400,
    Outcome.UNSUPPORTED_MEDIA_TYPE: 415,
}

_DETAIL: dict[Outcome, str] = {
    Outcome.ACCEPTED: "added to the aggregates",
    Outcome.DUPLICATE: "already counted; acknowledged again",
    Outcome.INVALID_ENVELOPE: "invalid envelope",
    Outcome.UNKNOWN_MODEL_VERSION: "the model version is not one this collector accepts",
    Outcome.UNKNOWN_PERSONA: "the persona index does not exist in that model version",
    Outcome.WRONG_FEATURE_COUNT: "the feature count differs from that model version's spec",
    Outcome.FEATURES_OUT_OF_BOUNDS: "a feature lies outside the spec's clipping bounds",
    Outcome.INCONSISTENT_PERSONA: "the persona is not the nearest one to the features under that"
                                  " model version",
    Outcome.QUOTA_EXCEEDED: "the pseudonym's contributions for that model version and day are"
                            " over the quota",
    Outcome.ADMISSION_QUOTA_EXCEEDED: "the admission token's quota of contributions is spent;"
                                      " get a new token",
    Outcome.ADMISSION_REQUIRED: "send a valid admission token (Authorization: Bearer …) from the"
                                " app's backend",
    Outcome.STALE_DAY_BUCKET: "the day bucket is older than the replay window",
    Outcome.FUTURE_DAY_BUCKET: "the day bucket is later than tomorrow",
    Outcome.BODY_TOO_LARGE: "the body is over the size limit",
    Outcome.TOO_MANY_ENVELOPES: "the batch holds more envelopes than allowed",
    Outcome.MALFORMED_BODY: "the body is neither one envelope nor a well-formed batch",
    Outcome.UNSUPPORTED_MEDIA_TYPE: "send the body as application/octet-stream",
}
