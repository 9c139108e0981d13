"""The FastAPI app: thin routes over :mod:`ticketfleet.api.guard` (who, how big, what) and
:mod:`ticketfleet.api.service` (store, queue, read, nudge). Blocking database and broker calls run in
the thread pool so the event loop keeps reading other requests.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ticketfleet.api.errors import ApiError, api_error_handler, pii_key_error_handler
from ticketfleet.api.guard import Guard, parse_json
from ticketfleet.api.metrics import ApiMetrics, MetricsMiddleware
from ticketfleet.api.schemas import DraftDecisionReply, HookReply, IngestReply, TicketView
from ticketfleet.api.service import ApiService
from ticketfleet.core.settings import Settings, get_settings
from ticketfleet.pii.vault import PiiKeyError

VENDORS = ("zendesk", "zammad")


def create_app(settings: Settings) -> FastAPI:
    guard = Guard(settings)
    service = ApiService(settings)
    metrics = ApiMetrics()
    app = FastAPI(
        title="ticketfleet",
        summary="Chat messages and tickets in; triage results and drafts (never sent) out.",
        version="1",
    )
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(PiiKeyError, pii_key_error_handler)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.state.service = service
    app.state.metrics = metrics

    def _reply(endpoint: str, reply: IngestReply) -> JSONResponse:
        metrics.observe_ingest(endpoint, reply)
        return JSONResponse(reply.model_dump(mode="json"), status_code=reply.status_code())

    @app.post("/v1/chat", response_model=IngestReply, status_code=202)
    async def post_chat(request: Request) -> JSONResponse:
        """One chat message → the chat lane. Re-delivering a message id adds nothing (200)."""
        admitted = await guard.admit(request)
        payload = parse_json(admitted.body)
        return _reply("chat", await run_in_threadpool(service.ingest_chat, admitted.source, payload))

    @app.post("/v1/tickets", response_model=IngestReply, status_code=202)
    async def post_tickets(request: Request) -> JSONResponse:
        """A ticket (InboundTicket JSON) or a list of them; bad records are reported per index."""
        admitted = await guard.admit(request)
        payload = parse_json(admitted.body)
        return _reply("tickets", await run_in_threadpool(service.ingest_tickets, admitted.source, payload))

    @app.get("/v1/tickets/{source}/{external_id}", response_model=TicketView)
    async def get_ticket(
        source: str, external_id: str, request: Request, rehydrate: bool = False
    ) -> TicketView:
        """Latest triage result and draft per customer message. Drafts are for agents: never sent.
        ``?rehydrate=true`` is the agent view: drafts with the customer's data restored (audited)."""
        await guard.admit(request, source=source, json_body=False)
        return await run_in_threadpool(service.ticket_view, source, external_id, rehydrate=rehydrate)

    @app.post("/v1/drafts/{draft_id}/status", response_model=DraftDecisionReply)
    async def decide_draft(draft_id: int, request: Request) -> DraftDecisionReply:
        """An agent accepted, edited or rejected a proposed draft (`{"status", "agent"}`); audited."""
        admitted = await guard.admit(request)
        payload = parse_json(admitted.body)
        return await run_in_threadpool(service.decide_draft, admitted.source, draft_id, payload)

    @app.post("/v1/hooks/{vendor}/{source}", response_model=HookReply, status_code=202)
    async def vendor_hook(vendor: str, source: str, request: Request) -> JSONResponse:
        """A verified Zendesk/Zammad webhook nudges a poll of the source; its payload is not stored."""
        if vendor not in VENDORS:
            known = ", ".join(VENDORS)
            raise ApiError(404, "not_found", f"unknown webhook vendor {vendor!r}; known: {known}")
        admitted = await guard.admit_vendor_hook(request, vendor, source)
        reply = await run_in_threadpool(service.nudge_poll, admitted.source, vendor)
        metrics.nudges.labels(vendor, reply.poll).inc()
        return JSONResponse(reply.model_dump(), status_code=202)

    @app.get("/healthz")
    async def healthz(request: Request) -> JSONResponse:
        guard.check_ops_token(request)
        checks = await run_in_threadpool(service.health)
        healthy = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ok" if healthy else "unavailable", **checks}, 200 if healthy else 503)

    @app.get("/metrics")
    async def metrics_endpoint(request: Request) -> Response:
        guard.check_ops_token(request)
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (``ticketfleet serve``): settings from the environment."""
    return create_app(get_settings())
