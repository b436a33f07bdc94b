"""`ApiError` and the JSON error handlers: every error is `{"error": {code, status, message}}`.

Bad input is a 4xx that says what was wrong; an unexpected exception is logged with its
traceback and answered with a generic 500 that leaks nothing.

>>> e = ApiError(422, "`k` must be in 1..1000. Received: 0.")
>>> e.body()
{'error': {'code': 'invalid_value', 'status': 422, 'message': '`k` must be in 1..1000. Received: 0.'}}
"""

from __future__ import annotations

import logging
import time

logger = logging.getLogger(__name__)

DEFAULT_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_value",
    500: "internal",
    503: "unavailable",
}


class ApiError(Exception):
    """An error the client should see, with its HTTP status and a stable machine-readable code.

    Args:
        status: int. The HTTP status (4xx for the client's mistakes, 503 while loading).
        message: str. What was expected and what was received.
        code: str. A stable identifier such as `model_not_found`; defaults by status.
        headers: dict. Extra response headers (`WWW-Authenticate` on a 401).
    """

    def __init__(self, status, message, code=None, headers=None):
        super().__init__(message)
        self.status = int(status)
        self.message = str(message)
        self.code = code or DEFAULT_CODES.get(self.status, "error")
        self.headers = dict(headers or {})

    def body(self):
        return {"error": {"code": self.code, "status": self.status, "message": self.message}}


DRAIN_LIMIT = 16 * 1024 * 1024
DRAIN_SECONDS = 10.0


def drain_request_body(limit=DRAIN_LIMIT, seconds=DRAIN_SECONDS) -> bool:
    """Reads and drops a request body the app refused before reading it (401, 404, 413, ...).

    Without this a client still sending its body gets a connection reset instead of the error
    response. Returns False (the connection should close) when the body is larger than
    `limit`, or not in within `seconds`: a client trickling a large body must not hold the
    thread (under gunicorn the socket's timeout bounds each read).
    """
    from flask import request

    stream = request.environ.get("wsgi.input")
    length = request.content_length
    if stream is None or (length is not None and length > limit):
        return length is None or length <= limit
    sock = request.environ.get("gunicorn.socket")
    deadline = time.monotonic() + seconds
    remaining = length if length is not None else limit
    try:
        while remaining > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if sock is not None:
                sock.settimeout(left)
            chunk = stream.read(min(1 << 16, remaining))
            if not chunk:
                return True
            remaining -= len(chunk)
    except OSError:  # timed out, or the client went away
        return False
    finally:
        if sock is not None:
            sock.settimeout(None)
    return length is not None


def init_app(app):
    """Registers the handlers that turn every error into the JSON error shape."""
    from werkzeug.exceptions import HTTPException

    @app.after_request
    def _drain_refused_body(response):
        if response.status_code >= 400 and not drain_request_body():
            response.headers["Connection"] = "close"
        return response

    @app.errorhandler(ApiError)
    def _api_error(e):
        return e.body(), e.status, e.headers

    @app.errorhandler(HTTPException)  # 404, 405, 413 ... keep their real status, as JSON
    def _http_error(e):
        message = e.description or e.name
        if e.code == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            message = f"The request body is larger than the limit of {limit} bytes."
        error = ApiError(e.code or 500, message)
        headers = {}
        if e.code == 405 and getattr(e, "valid_methods", None):
            headers["Allow"] = ", ".join(e.valid_methods)
        return error.body(), error.status, headers

    @app.errorhandler(Exception)
    def _unexpected(e):
        logger.exception("Unhandled error")
        return ApiError(500, "Internal error.").body(), 500
