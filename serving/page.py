"""The web page at `/` and the shopper endpoints it reads (`/v1/users`, `/v1/users/<id>`).

The page is plain HTML, CSS and JavaScript in `serving/static/` (no build step). It talks to the
service only through the public API: it lists shoppers (`GET /v1/users`), shows one shopper's
recent history (`GET /v1/users/<user_id>`), their top 10 (`POST /v1/recommend`) with buy
probabilities (`POST /v1/score`), and classifies a typed review (`POST /v1/classify`).

Shoppers come from an events table given to the server (`RECSYS_EVENTS`: CSV or Parquet with
`user_id`, `product_id`, `event`, `timestamp`), read once per worker on first use. Titles come
from the server's catalog (`RECSYS_CATALOG`), then from the catalogs saved with the models.
Without `RECSYS_EVENTS` the two endpoints answer 404 and say how to set it.

Example:
>>> import pandas as pd
>>> shoppers = Shoppers(pd.DataFrame({
...     "user_id": ["u1", "u1", "u2"], "product_id": ["p1", "p2", "p1"],
...     "event": ["view", "purchase", "view"],
...     "timestamp": pd.to_datetime([1, 2, 3], unit="D", utc=True)}))
>>> [u["id"] for u in shoppers.users(10)], [h["id"] for h in shoppers.history("u1", 10)]
(['u2', 'u1'], ['p2', 'p1'])
"""

from __future__ import annotations

import logging
import pathlib
import threading

from flask import Blueprint, current_app, request, send_from_directory

from recsys import schema
from serving import model_store
from serving.errors import ApiError

logger = logging.getLogger(__name__)

STATIC = pathlib.Path(__file__).resolve().parent / "static"
DEFAULT_USERS, MAX_USERS = 50, 1000
DEFAULT_HISTORY = 20

page = Blueprint("page", __name__)
users_api = Blueprint("users", __name__, url_prefix="/v1")


class Shoppers:
    """Each shopper's events, most recent first, from an events table.

    Args:
        events: DataFrame with `user_id`, `product_id`, `event` and `timestamp` (UTC).
    """

    def __init__(self, events):
        ordered = events.sort_values("timestamp", ascending=False, kind="stable")
        ordered = ordered.assign(
            product_id=ordered["product_id"].astype(str),
            event=ordered["event"].astype(str),
            timestamp=ordered["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        self._history = {}
        for user, rows in ordered.groupby("user_id", sort=False):
            columns = (rows["product_id"], rows["event"], rows["timestamp"])
            self._history[str(user)] = list(zip(*columns, strict=True))
        # Most recently active first (groupby kept the order of first appearance).
        self._order = list(self._history)

    def __len__(self):
        return len(self._order)

    def __contains__(self, user_id):
        return user_id in self._history

    def users(self, limit):
        """The `limit` most recently active shoppers: id, event count, last event time."""
        return [
            {"id": u, "events": len(self._history[u]), "last_seen": self._history[u][0][2]}
            for u in self._order[:limit]
        ]

    def history(self, user_id, limit):
        """The shopper's `limit` most recent events: id, event, timestamp."""
        return [
            {"id": pid, "event": event, "timestamp": ts}
            for pid, event, ts in self._history[user_id][:limit]
        ]


def _shoppers():
    """The worker's `Shoppers`, read from `RECSYS_EVENTS` on first use."""
    app = current_app
    cached = app.extensions.get("recsys_shoppers")
    if cached is not None:
        return cached
    path = app.config.get("EVENTS")
    if not path:
        raise ApiError(
            404,
            "This server has no events table, so it cannot list shoppers: start it with "
            "RECSYS_EVENTS=FILE (CSV or Parquet: user_id, product_id, event, timestamp).",
            code="events_not_configured",
        )
    with app.extensions.setdefault("recsys_shoppers_lock", threading.Lock()):
        cached = app.extensions.get("recsys_shoppers")
        if cached is None:
            from recsys.data.errors import DataError
            from recsys.data.events import load_events

            try:
                cached = Shoppers(load_events(path))
            except (DataError, OSError) as e:
                logger.error("Cannot read the events table %s: %s", path, e)
                raise ApiError(
                    503, f"The events table cannot be read: {e}", code="events_unavailable"
                ) from None
            logger.info("Read %d shoppers from %s", len(cached), path)
            app.extensions["recsys_shoppers"] = cached
    return cached


def _title_lookup():
    """`product_id -> (title, category)` through the server's catalog, then the models'."""
    models = model_store.get_store()
    catalogs = [models.catalog] if models.catalog is not None else []
    for _, loaded in sorted(models.latest().items()):
        catalog = getattr(loaded.predictor, "catalog", None)
        if catalog is not None:
            catalogs.append(catalog)

    def meta(product_id):
        for catalog in catalogs:
            if product_id in catalog:
                return catalog.meta(product_id)
        return None, None

    return meta


def _limit(name, default, maximum):
    value = request.args.get(name)
    if value is None:
        return default
    if not value.isdigit() or not 1 <= int(value) <= maximum:
        raise ApiError(422, f"`{name}` must be an integer in 1..{maximum}. Received: {value!r}.")
    return int(value)


@page.get("/")
def index():
    """The demo page (static HTML; its script calls the API)."""
    response = send_from_directory(STATIC, "index.html", max_age=0)
    response.headers["Cache-Control"] = "no-cache"
    return response


@users_api.get("/users")
def list_users():
    """The most recently active shoppers of the events table."""
    limit = _limit("limit", DEFAULT_USERS, MAX_USERS)
    shoppers = _shoppers()
    return {"users": shoppers.users(limit), "total": len(shoppers)}


@users_api.get("/users/<user_id>")
def user_history(user_id):
    """One shopper's recent events, most recent first, with product titles."""
    limit = _limit("limit", DEFAULT_HISTORY, schema.MAX_HISTORY)
    shoppers = _shoppers()
    if user_id not in shoppers:
        raise ApiError(404, f"No shopper {user_id!r} in the events table.", code="user_not_found")
    meta = _title_lookup()
    history = []
    for item in shoppers.history(user_id, limit):
        title, category = meta(item["id"])
        history.append({**item, "title": title, "category": category})
    return {"id": user_id, "history": history}


def init_app(app):
    """Registers the page and the shopper endpoints."""
    app.register_blueprint(page)
    app.register_blueprint(users_api)
