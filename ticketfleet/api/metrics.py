"""Prometheus metrics of one API app (own registry, so several apps in one process never collide)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ticketfleet.api.schemas import IngestReply


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ticketfleet_api_requests",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ticketfleet_api_request_seconds",
            "Time to answer a request, by route template.",
            ["route"],
            registry=self.registry,
        )
        self.messages = Counter(
            "ticketfleet_api_messages",
            "Messages received by endpoint and outcome (new, known, rejected records).",
            ["endpoint", "outcome"],
            registry=self.registry,
        )
        self.nudges = Counter(
            "ticketfleet_api_poll_nudges",
            "Verified vendor webhooks by vendor and what they did (nudged, coalesced).",
            ["vendor", "poll"],
            registry=self.registry,
        )

    def observe_ingest(self, endpoint: str, reply: IngestReply) -> None:
        self.messages.labels(endpoint, "new").inc(reply.new_messages)
        self.messages.labels(endpoint, "known").inc(reply.known_messages)
        self.messages.labels(endpoint, "rejected").inc(len(reply.rejected))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI (no body buffering): counts and times every request by its route template."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: dict[str, Any] = {"code": 500}

        async def send_and_record(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(template, scope["method"], str(status["code"])).inc()
            self.metrics.latency.labels(template).observe(time.perf_counter() - started)
