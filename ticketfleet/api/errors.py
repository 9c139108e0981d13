"""API errors: one JSON shape for every refusal, ``{"error": <code>, "message": <why>, …}``."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.extra}


def unauthenticated(message: str, **extra: Any) -> ApiError:
    return ApiError(
        401,
        "unauthenticated",
        message,
        headers={"WWW-Authenticate": 'Bearer realm="ticketfleet"'},
        **extra,
    )


async def api_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, ApiError):  # registered for ApiError only; anything else is a bug upstream
        raise exc
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def pii_key_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    """Without the vault key nothing can be stored redacted: refuse loudly, keep nothing, let the sender
    retry (503) once the operator has set TICKETFLEET_PII_KEY."""
    return JSONResponse(
        {"error": "pii_key_unavailable", "message": str(exc)}, status_code=503, headers={"Retry-After": "60"}
    )
