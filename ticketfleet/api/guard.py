"""What every request passes before any work is done: who sent it, how big it is, what it claims to be.

Order matters. Header-only checks come first (credentials present, bearer token, a signed timestamp
still inside the replay window, content type), then the body is read with a hard byte limit — counted
while reading, so neither a lying ``Content-Length`` nor a chunked body can make the server buffer more
than the limit — and only then is an HMAC over the body checked and the JSON parsed.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from connectors.webhook_signatures import (
    TICKETFLEET_SIGNATURE_HEADER,
    ZAMMAD_SIGNATURE_HEADER,
    ZENDESK_SIGNATURE_HEADER,
    ZENDESK_TIMESTAMP_HEADER,
    SignatureError,
    check_ticketfleet_timestamp,
    verify_ticketfleet,
    verify_zammad_webhook,
    verify_zendesk_webhook,
)
from ticketfleet.api.errors import ApiError, unauthenticated
from ticketfleet.core.settings import ApiSourceAuth, Settings

SOURCE_HEADER = "X-Ticketfleet-Source"
JSON_TYPES = ("application/json",)


@dataclass(frozen=True)
class Admitted:
    source: str
    body: bytes


class Guard:
    def __init__(self, settings: Settings) -> None:
        self._sources = settings.api_sources
        self.max_body_bytes = settings.api_max_body_bytes
        self.tolerance_s = settings.api_signature_tolerance_s
        self._ops_token = settings.api_ops_token

    # --- credentials ------------------------------------------------------------------------------

    def _auth_of(self, source: str | None) -> tuple[str, ApiSourceAuth]:
        if not source:
            raise unauthenticated(f"missing {SOURCE_HEADER} header naming the sending source")
        auth = self._sources.get(source)
        if auth is None:
            raise unauthenticated(f"no API credentials are configured for source {source!r}")
        return source, auth

    def _check_bearer(self, source: str, auth: ApiSourceAuth, authorization: str) -> None:
        given = authorization[len("bearer ") :].strip()
        if auth.token is None:
            raise unauthenticated(f"source {source!r} has no bearer token configured; sign the request")
        if not hmac.compare_digest(auth.token.get_secret_value().encode(), given.encode()):
            raise unauthenticated("bearer token is not valid for this source")

    def check_ops_token(self, request: Request) -> None:
        """/healthz and /metrics: open unless ``api_ops_token`` is set."""
        if self._ops_token is None:
            return
        authorization = request.headers.get("authorization", "")
        given = authorization[len("bearer ") :].strip() if authorization.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(self._ops_token.get_secret_value().encode(), given.encode()):
            raise unauthenticated("this endpoint needs Authorization: Bearer <ops token>")

    async def admit(self, request: Request, *, source: str | None = None, json_body: bool = True) -> Admitted:
        """Authenticate a request to ``source`` (default: the source header) and read its body."""
        name, auth = self._auth_of(source or request.headers.get(SOURCE_HEADER))
        authorization = request.headers.get("authorization", "")
        signature = request.headers.get(TICKETFLEET_SIGNATURE_HEADER)
        if authorization.lower().startswith("bearer "):
            self._check_bearer(name, auth, authorization)
            signature = None
        elif signature:
            if auth.signing_secret is None:
                raise unauthenticated(f"source {name!r} has no signing secret configured; use its token")
            try:  # a stale timestamp is refused before the body is read
                check_ticketfleet_timestamp(signature, tolerance_s=self.tolerance_s)
            except SignatureError as exc:
                raise unauthenticated(exc.reason, stale=exc.stale) from exc
        else:
            raise unauthenticated(
                f"missing credentials: send {TICKETFLEET_SIGNATURE_HEADER}: t=<unix>,v1=<hex> "
                "or Authorization: Bearer <token>"
            )
        if json_body:
            require_json(request)
        body = await read_limited(request, self.max_body_bytes)
        if signature and auth.signing_secret is not None:
            try:
                verify_ticketfleet(
                    [auth.signing_secret.get_secret_value()], body, signature, tolerance_s=self.tolerance_s
                )
            except SignatureError as exc:
                raise unauthenticated(exc.reason, stale=exc.stale) from exc
        return Admitted(name, body)

    async def admit_vendor_hook(self, request: Request, vendor: str, source: str) -> Admitted:
        """A Zendesk or Zammad webhook, verified with the source's ``hook_secret``."""
        name, auth = self._auth_of(source)
        if auth.hook_secret is None:
            raise unauthenticated(f"source {name!r} has no hook_secret configured for {vendor} webhooks")
        body = await read_limited(request, self.max_body_bytes)
        secret = auth.hook_secret.get_secret_value()
        try:
            if vendor == "zendesk":
                verify_zendesk_webhook(
                    secret,
                    body,
                    request.headers.get(ZENDESK_SIGNATURE_HEADER),
                    request.headers.get(ZENDESK_TIMESTAMP_HEADER),
                    tolerance_s=self.tolerance_s,
                )
            else:
                verify_zammad_webhook(secret, body, request.headers.get(ZAMMAD_SIGNATURE_HEADER))
        except SignatureError as exc:
            raise unauthenticated(exc.reason, stale=exc.stale) from exc
        return Admitted(name, body)


def require_json(request: Request) -> None:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type not in JSON_TYPES:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type must be application/json, got {media_type or 'none'!r}",
        )


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, refusing with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise ApiError(400, "bad_content_length", f"Content-Length {declared!r} is not a number")
        if int(declared) > limit:
            raise _too_large(f"body of {int(declared)} bytes exceeds the limit of {limit} bytes", limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            # Stop reading: whatever else the client sends is never buffered.
            raise _too_large(f"body exceeds the limit of {limit} bytes", limit)
    return bytes(body)


def _too_large(message: str, limit: int) -> ApiError:
    # Connection: close makes the server drop the connection after answering instead of draining
    # (and discarding) whatever the client still sends; a client that keeps streaming sees it end.
    return ApiError(413, "body_too_large", message, headers={"Connection": "close"}, limit=limit)


def parse_json(body: bytes) -> Any:
    """JSON, or a 400 naming where it broke (line, column and character offset)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(
            400, "malformed_json", f"body is not valid UTF-8 at byte {exc.start}", position=exc.start
        ) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(
            400,
            "malformed_json",
            f"malformed JSON at line {exc.lineno} column {exc.colno} (char {exc.pos}): {exc.msg}",
            line=exc.lineno,
            column=exc.colno,
            position=exc.pos,
        ) from exc
