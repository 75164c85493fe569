"""Errors as the caller's own format: OpenAI JSON on the OpenAI route, Anthropic JSON on the
Anthropic route. Every failure inside the proxy becomes a ``ProxyError`` with a status and a
message safe to show (never a key, never a traceback)."""

from __future__ import annotations

import orjson

__all__ = [
    "ProxyError",
    "anthropic_error_body",
    "anthropic_type_for_status",
    "openai_error_body",
    "openai_type_for_status",
]

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    421: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
}

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    415: "invalid_request_error",
    421: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def openai_type_for_status(status: int) -> str:
    return _OPENAI_TYPES.get(status, "api_error")


def anthropic_type_for_status(status: int) -> str:
    return _ANTHROPIC_TYPES.get(status, "api_error")


class ProxyError(Exception):
    """A request that ends in an error response. ``headers`` are extra response headers
    (``retry-after``, rate-limit headers) to pass back."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
        extra: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or []
        # more fields of the OpenAI error object (e.g. a budget's reset time)
        self.extra = extra


def openai_error_body(err: ProxyError) -> bytes:
    error: dict[str, object] = {
        "message": err.message,
        "type": err.type or openai_type_for_status(err.status),
        "param": err.param,
        "code": err.code,
    }
    if err.extra:
        error.update(err.extra)
    return orjson.dumps({"error": error})


def anthropic_error_body(err: ProxyError, request_id: str | None = None) -> bytes:
    body: dict[str, object] = {
        "type": "error",
        "error": {
            "type": err.type or anthropic_type_for_status(err.status),
            "message": err.message,
        },
    }
    if request_id:
        body["request_id"] = request_id
    return orjson.dumps(body)
