"""API keys: `Authorization: Bearer <key>` on every endpoint except the health checks and the
web page (`/` and its files under `/static/`, which hold no data; the page asks for a key and
sends it with its API calls).

Keys come from `RECSYS_API_KEYS` (comma-separated) and/or `RECSYS_API_KEYS_FILE` (one key per
line, `#` comments). With no key configured, authentication is off and the service says so at
start-up.

>>> parse_keys("k1, k2,,k1")
('k1', 'k2')
>>> bearer_token("Bearer abc"), bearer_token("Basic abc"), bearer_token(None)
('abc', None, None)
"""

from __future__ import annotations

import hmac
import logging
import pathlib

from flask import request

from serving.errors import ApiError

logger = logging.getLogger(__name__)
OPEN_PATHS = ("/healthz", "/readyz", "/")
OPEN_PREFIXES = ("/static/",)


def parse_keys(value) -> tuple:
    """Keys from a comma-separated string or a list (env values may arrive parsed as JSON)."""
    if value is None or value == "":
        return ()
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return tuple(dict.fromkeys(str(k).strip() for k in items if str(k).strip()))


def read_keys_file(path) -> tuple:
    try:
        lines = pathlib.Path(path).read_text().splitlines()
    except OSError as e:
        raise ValueError(f"Cannot read the API keys file {path}: {e}") from None
    keys = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    return tuple(dict.fromkeys(keys))


def bearer_token(header):
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def key_matches(token, keys) -> bool:
    """Constant-time comparison against every key (no early exit on a match)."""
    token = token.encode()
    found = False
    for key in keys:
        found |= hmac.compare_digest(token, key.encode())
    return found


def init_app(app):
    keys = parse_keys(app.config.get("API_KEYS"))
    if app.config.get("API_KEYS_FILE"):
        keys = tuple(dict.fromkeys(keys + read_keys_file(app.config["API_KEYS_FILE"])))
    app.extensions["recsys_api_keys"] = keys
    if not keys:
        logger.warning(
            "No API keys configured: every endpoint is open. Set RECSYS_API_KEYS or "
            "RECSYS_API_KEYS_FILE to require 'Authorization: Bearer <key>'."
        )
        return
    logger.info("API key authentication on (%d keys)", len(keys))

    @app.before_request
    def _require_key():
        if request.path in OPEN_PATHS or request.path.startswith(OPEN_PREFIXES):
            return None
        token = bearer_token(request.headers.get("Authorization"))
        if token is None or not key_matches(token, keys):
            raise ApiError(
                401,
                "A valid API key is required: send 'Authorization: Bearer <key>'.",
                headers={"WWW-Authenticate": 'Bearer realm="recsys"'},
            )
        return None
