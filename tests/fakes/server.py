"""A tiny HTTP server base for the local fakes of ticket-system APIs (real sockets on 127.0.0.1).

Each fake (Zendesk, Freshdesk, Zammad, JSM, …) subclasses :class:`FakeApi`, registers routes with
:meth:`FakeApi.route` and keeps its tickets in plain Python state. The base adds what the contract
suite needs from every fake: authentication, fault injection (429 with Retry-After, 500, malformed
JSON, a response slower than the client's timeout) and a request log.

    api = FakeZendesk(token="secret")
    with api.running() as base_url:
        client = httpx.Client(base_url=base_url, timeout=0.5)
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default


@dataclass
class Response:
    status: int = 200
    body: Any = None  # JSON-serialised unless bytes
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[..., Response]


@dataclass
class _Fault:
    kind: str
    retry_after: float | None


class FakeApi:
    """Base of the fakes. Subclasses call ``self.route(method, pattern, handler)`` in ``__init__``."""

    # A request slower than this many seconds is what the "timeout" fault serves; clients in tests
    # use a read timeout well below it.
    slow_seconds = 2.0

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self.requests: list[Request] = []

    # --- what subclasses use ------------------------------------------------------------------

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((method.upper(), re.compile(f"^{pattern}$"), handler))

    def authorised(self, request: Request) -> bool:
        """Override: check the request's credentials. The default accepts everything."""
        return True

    def unauthorised(self) -> Response:
        return Response(401, {"error": "Couldn't authenticate you"})

    # --- what tests use -----------------------------------------------------------------------

    def inject_fault(self, kind: str, *, count: int = 1, retry_after: float | None = None) -> None:
        if kind not in ("429", "500", "malformed", "timeout"):
            raise ValueError(f"unknown fault {kind!r}")
        with self._lock:
            self._faults.extend(_Fault(kind, retry_after) for _ in range(count))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @contextmanager
    def running(self) -> Iterator[str]:
        server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()

    # --- dispatch -----------------------------------------------------------------------------

    def _dispatch(self, request: Request) -> Response:
        with self._lock:
            self.requests.append(request)
            fault = self._faults.pop(0) if self._faults else None
        if fault is not None:
            if fault.kind == "429":
                headers = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
                return Response(429, {"error": "TooManyRequests"}, headers)
            if fault.kind == "500":
                return Response(500, {"error": "InternalError"})
            if fault.kind == "malformed":
                return Response(200, b'{"tickets": [{"id": 1, "subject": ')
            time.sleep(self.slow_seconds)
        if not self.authorised(request):
            return self.unauthorised()
        for method, pattern, handler in self._routes:
            match = pattern.match(request.path)
            if match and method == request.method:
                return handler(request, **match.groupdict())
        return Response(404, {"error": "RecordNotFound", "description": f"no route {request.path}"})

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                )
                response = api._dispatch(request)
                raw = (
                    response.body
                    if isinstance(response.body, bytes)
                    else json.dumps(response.body).encode()
                    if response.body is not None
                    else b""
                )
                try:
                    self.send_response(response.status)
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                    self.send_header("Content-Length", str(len(raw)))
                    for name, value in response.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout fault): nothing to answer

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return _Handler
