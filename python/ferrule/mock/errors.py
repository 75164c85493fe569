"""Anthropic's error envelope and the identifiers that go with every response.

The body of every error is ``{"type": "error", "error": {"type", "message"}, "request_id"}``; the
status code decides ``error.type`` (Anthropic's errors page). 502 and 503 are the odd ones: on the
real service they come from an intermediary (Cloudflare, a load balancer) as HTML, not from the API,
so the mock sends HTML for them too — a proxy must never forward such a body as if it were JSON.
"""

from __future__ import annotations

import secrets
import string

import orjson

__all__ = [
    "ERROR_TYPES",
    "ApiError",
    "error_body",
    "invalid",
    "new_id",
    "should_retry",
]

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

# What the API says for a status when nothing more specific is known.
_DEFAULT_MESSAGES: dict[int, str] = {
    400: "Invalid request",
    401: "invalid x-api-key",
    402: "Your credit balance is too low to access the Anthropic API.",
    403: "Your API key does not have permission to use the specified resource.",
    404: "Not found",
    413: "Request exceeds the maximum allowed number of bytes.",
    429: "Number of request tokens has exceeded your per-minute rate limit",
    500: "Internal server error",
    504: "Request timed out",
    529: "Overloaded",
}

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str) -> str:
    """An id shaped like the API's: ``msg_01…``, ``req_011C…``, ``toolu_01…`` (24 characters)."""
    lead = "011C" if prefix == "req" else "01"
    return f"{prefix}_{lead}" + "".join(secrets.choice(_ALPHABET) for _ in range(24 - len(lead)))


def should_retry(status: int) -> bool:
    """The ``x-should-retry`` verdict the API attaches to errors (the SDK obeys it first)."""
    return status in (408, 409, 429) or status >= 500


class ApiError(Exception):
    """An error response to send before any byte of a success response went out."""

    def __init__(
        self,
        status: int,
        message: str | None = None,
        *,
        error_type: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.status = status
        self.error_type = error_type or ERROR_TYPES.get(status, "api_error")
        self.message = message or _DEFAULT_MESSAGES.get(status, "Error")
        self.headers = headers or []
        super().__init__(f"{status} {self.error_type}: {self.message}")

    @property
    def is_html(self) -> bool:
        """502/503 come from an intermediary in front of the API, as an HTML page."""
        return self.status in (502, 503)

    def body(self, request_id: str) -> bytes:
        if self.is_html:
            title = (
                "502 Bad Gateway" if self.status == 502 else "503 Service Temporarily Unavailable"
            )
            return (
                f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
                f"<center><h1>{title}</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
                "</body>\r\n</html>\r\n"
            ).encode()
        return error_body(self.error_type, self.message, request_id)


def invalid(message: str) -> ApiError:
    """A 400 ``invalid_request_error`` with the API's ``path: problem`` style message."""
    return ApiError(400, message)


def error_body(error_type: str, message: str, request_id: str | None) -> bytes:
    """The JSON error envelope; ``request_id`` is left out of in-stream ``event: error`` payloads."""
    payload: dict[str, object] = {
        "type": "error",
        "error": {"type": error_type, "message": message},
    }
    if request_id is not None:
        payload["request_id"] = request_id
    return orjson.dumps(payload)
