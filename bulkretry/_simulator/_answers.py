"""The bodies Adobe answers with: gateway errors, Flow Service errors, and malformed successes."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import web

from ._trouble import Fault

JSON = "application/json"
FLOW_ERROR_TYPE = "https://ns.adobe.com/aep/errors/FLOW-{code}"

TITLES: Mapping[int, str] = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

# Flow Service's codes for the statuses a script may ask for by number alone.
FLOW_CODES: Mapping[int, tuple[str, str]] = {
    400: ("1409-400", "The operation is not allowed in the current state of the run."),
    404: ("1101-404", "The requested resource was not found."),
    500: ("1102-500", "An internal error occurred. Please try again."),
    502: ("1102-502", "An upstream service failed. Please try again."),
    503: ("1103-503", "The service is unavailable. Please try again."),
    504: ("1104-504", "The request timed out. Please try again."),
}

# The gateway's codes, checked in this order before Flow Service sees the request.
TOKEN_MISSING = (403, "403010", "Oauth token is missing.")
TOKEN_INVALID = (401, "401013", "Oauth token is not valid")
API_KEY_MISSING = (403, "403000", "Api Key is required")
API_KEY_INVALID = (403, "403003", "Api Key is invalid")
ORG_MISSING = (400, "400003", "Missing header x-gw-ims-org-id")
ORG_INVALID = (403, "403025", "Profile is not valid")
THROTTLED = (429, "429050", "Too many requests")
GATEWAY_CODES: Mapping[int, tuple[int, str, str]] = {
    401: TOKEN_INVALID,
    403: API_KEY_INVALID,
    429: THROTTLED,
}

# Flow Service's answers about the sandbox; Adobe does not document them, these are our choice.
SANDBOX_MISSING = (400, "1100-400", "Header x-sandbox-name is required.")
SANDBOX_UNKNOWN = (403, "1103-403", "Access denied to sandbox {sandbox!r}.")
UNSUPPORTED_OP = (400, "1434-400", "Unsupported operation {op!r}; the only one is RE_TRIGGER.")
NOT_FOUND = (404, "1101-404", "Run {run_id} was not found.")
FLOW_NOT_FOUND = (404, "1101-404", "Flow {flow_id} was not found.")
NOT_FAILED = (400, "1409-400", "Operation not allowed in the current state: run {run_id} is {s}.")
ALREADY = (
    400,
    "1409-400",
    "Operation not allowed in the current state: run {run_id} was already re-triggered.",
)
BAD_QUERY = (400, "1100-400", "{detail}")


def json_answer(
    status: int, payload: object, request_id: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """Answer `payload` as JSON, with the request ID every answer carries."""
    all_headers = {"x-request-id": request_id}
    if headers:
        all_headers.update(headers)
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type=JSON, headers=all_headers
    )


def gateway_error(
    error: tuple[int, str, str], request_id: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """Answer an error from Adobe's API gateway: ``{"error_code","message"}``."""
    status, code, message = error
    return json_answer(status, {"error_code": code, "message": message}, request_id, headers)


def flow_error(status: int, code: str, detail: str, request_id: str) -> web.Response:
    """Answer an error in Flow Service's format, with its FLOW-xxxx-sss type."""
    body = {
        "type": FLOW_ERROR_TYPE.format(code=code),
        "title": TITLES.get(status, "Error"),
        "status": status,
        "report": {"detailed-message": detail, "request-id": request_id},
    }
    return json_answer(status, body, request_id)


def flow_error_for(error: tuple[int, str, str], request_id: str, **details: object) -> web.Response:
    """Answer one of the Flow Service errors above, filling in its message."""
    status, code, template = error
    return flow_error(status, code, template.format(**details), request_id)


def canned_error(status: int, request_id: str, headers: Mapping[str, str] | None) -> web.Response:
    """Answer a bare status from a script or fault, with the body Adobe would send with it."""
    if status in GATEWAY_CODES:
        return gateway_error(GATEWAY_CODES[status], request_id, headers)
    code, detail = FLOW_CODES.get(status, (f"1100-{status}", "Simulated error."))
    return flow_error(status, code, detail, request_id)


def malformed(kind: Fault, payload: dict[str, object], request_id: str) -> web.Response:
    """Spoil a 200 answer: an HTML page, JSON cut short, no body, or JSON without its ID."""
    if kind == "html":
        page = "<html><head><title>OK</title></head><body>Request accepted.</body></html>"
        return web.Response(
            status=200, text=page, content_type="text/html", headers={"x-request-id": request_id}
        )
    if kind == "truncated":
        body = orjson.dumps(payload)
        return web.Response(
            status=200,
            body=body[: max(1, len(body) // 2)],
            content_type=JSON,
            headers={"x-request-id": request_id},
        )
    if kind == "empty":
        return web.Response(status=200, content_type=JSON, headers={"x-request-id": request_id})
    spoiled = {k: v for k, v in payload.items() if k not in ("id", "items")}
    return json_answer(200, spoiled, request_id)
