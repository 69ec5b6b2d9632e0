"""The collector as an ASGI app (FastAPI): sync, bundles, health and metrics.

Endpoints::

    POST /v1/sync                 application/octet-stream: one envelope or a batch
    GET  /v1/bundles              approved versions and the latest
    GET  /v1/bundles/latest       the highest approved bundle, application/zip
    GET  /v1/bundles/{version}    one approved bundle, application/zip
    GET  /healthz                 liveness
    GET  /v1/metrics              accepted / duplicate / rejected-by-reason counts

``POST /v1/sync`` answers a single envelope with the status of its outcome
(200 accepted or duplicate, 400 invalid envelope, 429 over a quota, 422 for
the other rejections) and a batch with 200 and one result per envelope. A body
over the limit gets 413, a body of another media type 415, malformed framing
400, and, when admission is required, a request without a valid
``Authorization: Bearer <token>`` 401; none of these touch the aggregates.
Every rejection is final: retrying the same envelope cannot succeed, while a
5xx may be retried (replays are counted once).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Path as PathParam, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from edgepersona.sdk import __version__
from edgepersona.trainer.collector._aggregates import AggregateStore
from edgepersona.trainer.collector._collector import Collector, CollectorConfig
from edgepersona.trainer.collector._framing import FramingError
from edgepersona.trainer.collector._outcomes import Outcome
from edgepersona.trainer.collector._schemas import (
    BundleListResponse,
    ErrorResponse,
    HealthResponse,
    MetricsResponse,
    SyncResponse,
)

__all__ = ["create_app"]

_OCTETS = "application/octet-stream"
_SYNC_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {_OCTETS: {"schema": {
    "type": "string", "format": "binary",
    "description": "one sealed envelope, or a batch: b'EPB', 0x01, u16 count, then per"
                   " envelope a u32 length and its bytes"}}}}}
_ZIP: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/zip": {}}, "description": "the signed bundle archive"},
    304: {"description": "If-None-Match matched the ETag"},
    404: {"model": ErrorResponse, "description": "no such approved bundle"}}


def create_app(config: CollectorConfig, *, collector_private_key: bytes, store: AggregateStore,
               clock: Callable[[], float] = time.time) -> FastAPI:
    """Build the collector's ASGI app.

    Args:
        config: The rules (app id, bundles folder, window, limits).
        collector_private_key: The collector's private key file bytes.
        store: The aggregate store; the caller closes it after the app stops.
        clock: POSIX seconds now; tests pass a fake clock.

    Returns:
        The FastAPI app; ``app.state.collector`` is its :class:`Collector`.

    Raises:
        InputError: The key file is unusable or the bundles folder is missing.
    """
    collector = Collector(config, collector_private_key=collector_private_key, store=store, clock=clock)
    app = FastAPI(title="edgepersona collector", version=__version__,
                  description="Receives sealed, pseudonymous persona contributions and serves"
                              " approved signed bundles. Stores no per-user rows.")
    app.state.collector = collector
    _add_sync(app, collector)
    _add_bundles(app, collector)
    _add_status(app, collector)
    return app


def _refusal(outcome: Outcome, detail: str | None = None) -> JSONResponse:
    """A whole-body refusal as JSON with the outcome's status code."""
    body = ErrorResponse(reason=outcome.value, detail=detail or outcome.detail)
    return JSONResponse(body.model_dump(mode="json"), status_code=outcome.http_status)


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it grows past ``limit`` bytes (the rest is not read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _bearer(request: Request) -> str | None:
    """The bearer token of the Authorization header, if any."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _add_sync(app: FastAPI, collector: Collector) -> None:
    """Register ``POST /v1/sync``."""
    refusals: dict[int | str, dict[str, Any]] = {
        400: {"model": SyncResponse | ErrorResponse,  # one invalid envelope, or a malformed body
              "description": "invalid envelope (opaque) or malformed body"},
        401: {"model": ErrorResponse, "description": "admission required: no valid token"},
        413: {"model": ErrorResponse, "description": "body or batch over the limit"},
        415: {"model": ErrorResponse, "description": "not application/octet-stream"},
        422: {"model": SyncResponse, "description": "stale, future, unknown version, bad shape,"
                                                    " inconsistent persona"},
        429: {"model": SyncResponse, "description": "over the pseudonym's or the token's quota"}}

    @app.post("/v1/sync", response_model=SyncResponse, responses=refusals, openapi_extra=_SYNC_BODY,
              summary="Submit one sealed envelope or a batch")
    async def sync(request: Request) -> Response:
        media = request.headers.get("content-type", _OCTETS).split(";")[0].strip().lower()
        if media != _OCTETS:
            collector.count_refusal(Outcome.UNSUPPORTED_MEDIA_TYPE)
            return _refusal(Outcome.UNSUPPORTED_MEDIA_TYPE)
        body = await _read_limited(request, collector.config.max_body_bytes)
        if body is None:
            collector.count_refusal(Outcome.BODY_TOO_LARGE)
            return _refusal(Outcome.BODY_TOO_LARGE,
                            f"the body is over the {collector.config.max_body_bytes}-byte limit")
        try:
            report = await run_in_threadpool(collector.ingest, body, token=_bearer(request))
        except FramingError as exc:
            refusal = _refusal(exc.outcome, str(exc))
            if exc.outcome is Outcome.ADMISSION_REQUIRED:
                refusal.headers["WWW-Authenticate"] = 'Bearer realm="edgepersona-sync"'
            return refusal
        response = SyncResponse.from_report(report)
        return JSONResponse(response.model_dump(mode="json"), status_code=report.http_status)


def _bundle_response(request: Request, collector: Collector, version: int | None) -> Response:
    """The archive of an approved version (latest if None), 304 on a matching ETag, else 404."""
    shelf = collector.shelf
    if version is None and shelf is not None:
        latest = shelf.latest()
        version = latest.version if latest is not None else None
    archive = shelf.archive(version) if shelf is not None and version is not None else None
    if archive is None:
        body = ErrorResponse(reason="not_found", detail="no approved bundle with that version")
        return JSONResponse(body.model_dump(mode="json"), status_code=404)
    etag = f'"{archive.sha256}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache",
               "X-Edgepersona-Model-Id": archive.model_id,
               "X-Edgepersona-Model-Version": str(archive.version),
               "Content-Disposition": f'attachment; filename="{archive.model_id}-v{archive.version}.zip"'}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(archive.data, media_type="application/zip", headers=headers)


def _add_bundles(app: FastAPI, collector: Collector) -> None:
    """Register the bundle download endpoints (``latest`` before ``{version}``)."""

    @app.get("/v1/bundles", response_model=BundleListResponse, summary="List approved bundle versions")
    def bundles() -> BundleListResponse:
        versions = sorted(collector.shelf.approved()) if collector.shelf is not None else []
        return BundleListResponse(versions=versions, latest=versions[-1] if versions else None)

    @app.get("/v1/bundles/latest", response_class=Response, responses=_ZIP,
             summary="Download the highest approved bundle")
    def latest(request: Request) -> Response:
        return _bundle_response(request, collector, None)

    @app.get("/v1/bundles/{version}", response_class=Response, responses=_ZIP,
             summary="Download one approved bundle")
    def by_version(request: Request, version: int = PathParam(ge=1, le=2**32 - 1)) -> Response:
        return _bundle_response(request, collector, version)


def _add_status(app: FastAPI, collector: Collector) -> None:
    """Register ``/healthz`` and ``/v1/metrics``."""

    @app.get("/healthz", response_model=HealthResponse, summary="Liveness")
    def healthz() -> HealthResponse:
        return HealthResponse()

    @app.get("/v1/metrics", response_model=MetricsResponse, summary="Outcome counts since start")
    def metrics() -> MetricsResponse:
        counts = collector.counts()
        return MetricsResponse(
            accepted=counts[Outcome.ACCEPTED], duplicate=counts[Outcome.DUPLICATE],
            rejected={o.value: n for o, n in counts.items() if o.refused},
            ledger_keys=collector.store.dedupe_size(),
            accepted_versions=sorted(collector.accepted_versions()))
