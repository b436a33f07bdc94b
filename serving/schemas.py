"""Request parsing and validation (pure): JSON bodies in, frozen request objects out.

Every check raises `ApiError` with a message naming the field, what was expected and what was
received: 400 for malformed JSON, wrong types and unknown fields; 422 for values out of range
(empty lists, too many items, `k` outside 1..1000).

Example:
>>> r = parse_score({"model": "buy", "user": {"history": ["p1", {"id": "p2", "event": "purchase"}]},
...                  "products": ["p3", {"id": "new", "title": "Mug", "category": "kitchen"}]})
>>> [h.event for h in r.history], [p.inline for p in r.products]
(['view', 'purchase'], [False, True])
>>> parse_recommend({"k": 0})
Traceback (most recent call last):
...
serving.errors.ApiError: `k` must be an integer in 1..1000. Received: 0.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re

from recsys import schema
from recsys.store import StoreError, check_name
from serving.errors import ApiError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # recsys.store's rule, matched whole


@dataclasses.dataclass(frozen=True)
class HistoryItem:
    id: str
    event: str = "view"


@dataclasses.dataclass(frozen=True)
class Product:
    """A product to score: a catalog id, or an inline description (`inline=True`)."""

    id: str
    title: str | None = None
    category: str | None = None
    brand: str | None = None
    price: float | None = None

    @property
    def inline(self) -> bool:
        return self.title is not None


@dataclasses.dataclass(frozen=True)
class ScoreRequest:
    model: str | None
    version: int | None
    history: tuple
    query: str
    products: tuple


@dataclasses.dataclass(frozen=True)
class RecommendRequest:
    model: str | None
    version: int | None
    history: tuple
    query: str
    k: int
    exclude: tuple
    categories: tuple | None
    rerank: str | None


@dataclasses.dataclass(frozen=True)
class ClassifyRequest:
    model: str | None
    version: int | None
    texts: tuple


@dataclasses.dataclass(frozen=True)
class PredictRequest:
    signature_name: str | None
    format: str  # "instances" (row) or "inputs" (columnar)
    data: object


def _no_constant(name):
    raise ValueError(f"{name} is not valid JSON")


MAX_JSON_DEPTH = 32  # nested arrays and objects; the deepest valid body is a few levels
_SURROGATE = re.compile("[\ud800-\udfff]")


def load_json(body: bytes):
    """Decodes a request body into plain JSON values that every later step can handle.

    Refused with a 400: a body that is empty, not UTF-8, not JSON, holds NaN or Infinity
    literals (JSON has none), is nested more than `MAX_JSON_DEPTH` levels, or holds a string
    with a lone UTF-16 surrogate (`"\\ud800"` is valid JSON, but no valid text; TensorFlow
    cannot encode it).

    >>> load_json(b'{"a": 1}')
    {'a': 1}
    >>> load_json(b'{"a": ')
    Traceback (most recent call last):
    ...
    serving.errors.ApiError: The body is not valid JSON: Expecting value: line 1 column 7 (char 6).
    >>> load_json(b'{"texts": ["\\ud800"]}')
    Traceback (most recent call last):
    ...
    serving.errors.ApiError: The body holds a string with a lone UTF-16 surrogate ('\\ud800'); strings must be valid Unicode text.
    """
    if not body:
        raise ApiError(400, "The body is empty; send a JSON object.", code="invalid_json")
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise ApiError(400, "The body is not UTF-8 text.", code="invalid_json") from None
    except RecursionError:
        raise ApiError(400, _too_deep(), code="invalid_json") from None
    except ValueError as e:
        raise ApiError(400, f"The body is not valid JSON: {e}.", code="invalid_json") from None
    _check_tree(value)
    return value


def _too_deep():
    return f"The body is nested too deeply: at most {MAX_JSON_DEPTH} levels of arrays and objects."


def _check_tree(value):
    """Depth and text checks over a decoded body, without recursion (bodies are untrusted)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                bad = _SURROGATE.search(node).group()
                raise ApiError(
                    400,
                    f"The body holds a string with a lone UTF-16 surrogate ({bad!r}); strings "
                    "must be valid Unicode text.",
                    code="invalid_json",
                )
            continue
        if isinstance(node, dict):
            children = [*node.keys(), *node.values()]
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            raise ApiError(400, _too_deep(), code="invalid_json")
        stack.extend((child, depth + 1) for child in children)


def _type_name(value):
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def _object(value, where, allowed, required=()):
    if not isinstance(value, dict):
        raise ApiError(400, f"{where} must be a JSON object. Received: {_type_name(value)}.")
    if unknown := sorted(set(value) - set(allowed)):
        raise ApiError(
            400,
            f"Unknown field(s) {unknown} in {where}; allowed: {sorted(allowed)}.",
            code="unknown_field",
        )
    if missing := [k for k in required if k not in value]:
        raise ApiError(400, f"{where} is missing the required field(s) {missing}.")
    return value


def _string(value, where, empty=False):
    if not isinstance(value, str):
        raise ApiError(400, f"`{where}` must be a string. Received: {_type_name(value)}.")
    if not empty and not value.strip():
        raise ApiError(422, f"`{where}` must not be empty.")
    return value


def _list(value, where, lo, hi):
    if not isinstance(value, list):
        raise ApiError(400, f"`{where}` must be an array. Received: {_type_name(value)}.")
    if not lo <= len(value) <= hi:
        what = "must not be empty" if not value else f"holds too many items ({len(value)})"
        raise ApiError(422, f"`{where}` {what}: it must hold {lo}..{hi} items.")
    return value


def model_name(name, where="model"):
    """A model name as the store allows it (no path separators, no leading dot), or a 400.

    >>> model_name("buy")
    'buy'
    >>> model_name("../etc")
    Traceback (most recent call last):
    ...
    serving.errors.ApiError: `model`: invalid model name '../etc': use 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit.
    """
    try:
        if isinstance(name, str) and _NAME.fullmatch(name):
            return check_name(name)
    except StoreError:
        pass
    raise ApiError(
        400,
        f"`{where}`: invalid model name {name!r:.80}: use 1-64 letters, digits, '_', '-' or "
        "'.', starting with a letter or digit.",
        code="invalid_name",
    )


def _model(payload, field="model"):
    name = payload.get(field)
    if name is None:
        return None
    _string(name, field)
    return model_name(name, field)


def parse_version(value, where="version"):
    """A positive integer version (or a decimal string, as in a URL); None when absent.

    >>> parse_version("3"), parse_version(None)
    (3, None)
    """
    if value is None:
        return None
    if isinstance(value, str) and value.isdecimal():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ApiError(400, f"`{where}` must be a positive integer. Received: {value!r:.40}.")
    return value


def _history(value, where):
    if value is None:
        return ()
    items = []
    for i, entry in enumerate(_list(value, where, 0, schema.MAX_HISTORY)):
        if isinstance(entry, str):
            items.append(HistoryItem(_string(entry, f"{where}[{i}]")))
            continue
        entry = _object(entry, f"`{where}[{i}]`", ("id", "event"), ("id",))
        event = entry.get("event", "view")
        if event not in schema.EVENT_TYPES:
            raise ApiError(
                422,
                f"`{where}[{i}].event` must be one of {list(schema.EVENT_TYPES)}. "
                f"Received: {event!r:.40}.",
            )
        items.append(HistoryItem(_string(entry["id"], f"{where}[{i}].id"), event))
    return tuple(items)


def _user(payload, allowed):
    user = payload.get("user")
    if user is None:
        return (), ""
    _object(user, "`user`", allowed)
    query = user.get("query")
    query = "" if query is None else _string(query, "user.query", empty=True)
    return _history(user.get("history"), "user.history"), query


def _product(value, i):
    where = f"products[{i}]"
    if isinstance(value, str):
        return Product(_string(value, where))
    value = _object(value, f"`{where}`", ("id", "title", "category", "brand", "price"), ("id",))
    pid = _string(value["id"], f"{where}.id")
    title, category = value.get("title"), value.get("category")
    if title is None and category is None:
        if value.get("brand") is not None or value.get("price") is not None:
            raise ApiError(422, f"`{where}`: an inline product needs `title` and `category`.")
        return Product(pid)
    if title is None or category is None:
        raise ApiError(422, f"`{where}`: an inline product needs both `title` and `category`.")
    brand = value.get("brand")
    brand = None if brand is None else _string(brand, f"{where}.brand", empty=True) or None
    price = value.get("price")
    if price is not None:
        if isinstance(price, bool) or not isinstance(price, (int, float)):
            raise ApiError(400, f"`{where}.price` must be a number. Received: {price!r:.40}.")
        if not math.isfinite(price) or price < 0:
            raise ApiError(422, f"`{where}.price` must be finite and >= 0. Received: {price}.")
        price = float(price)
    return Product(
        pid, _string(title, f"{where}.title"), _string(category, f"{where}.category"), brand, price
    )


def parse_score(payload) -> ScoreRequest:
    """`POST /v1/score`: a user (history, query) and 1..1000 products."""
    _object(payload, "The body", ("model", "version", "user", "products"), ("products",))
    history, query = _user(payload, ("history", "query"))
    products = _list(payload["products"], "products", 1, schema.MAX_ITEMS_PER_REQUEST)
    return ScoreRequest(
        model=_model(payload),
        version=parse_version(payload.get("version")),
        history=history,
        query=query,
        products=tuple(_product(p, i) for i, p in enumerate(products)),
    )


def parse_recommend(payload) -> RecommendRequest:
    """`POST /v1/recommend`: a user history, `k`, exclusions, category filters, a re-ranker."""
    fields = ("model", "version", "user", "k", "exclude", "filters", "rerank")
    _object(payload, "The body", fields)
    k = payload.get("k", 10)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= schema.MAX_K:
        raise ApiError(
            422 if isinstance(k, int) and not isinstance(k, bool) else 400,
            f"`k` must be an integer in 1..{schema.MAX_K}. Received: {k!r:.40}.",
        )
    history, query = _user(payload, ("history", "query"))
    exclude = payload.get("exclude")
    exclude = () if exclude is None else _list(exclude, "exclude", 0, schema.MAX_ITEMS_PER_REQUEST)
    exclude = tuple(_string(x, f"exclude[{i}]") for i, x in enumerate(exclude))
    categories = None
    if payload.get("filters") is not None:
        filters = _object(payload["filters"], "`filters`", ("category",), ("category",))
        values = _list(filters["category"], "filters.category", 1, schema.MAX_ITEMS_PER_REQUEST)
        categories = tuple(_string(c, f"filters.category[{i}]") for i, c in enumerate(values))
    return RecommendRequest(
        model=_model(payload),
        version=parse_version(payload.get("version")),
        history=history,
        query=query,
        k=k,
        exclude=exclude,
        categories=categories,
        rerank=_model(payload, "rerank"),
    )


def parse_classify(payload) -> ClassifyRequest:
    """`POST /v1/classify`: 1..1000 texts."""
    _object(payload, "The body", ("model", "version", "texts"), ("texts",))
    texts = _list(payload["texts"], "texts", 1, schema.MAX_TEXTS_PER_REQUEST)
    return ClassifyRequest(
        model=_model(payload),
        version=parse_version(payload.get("version")),
        texts=tuple(_string(t, f"texts[{i}]", empty=True) for i, t in enumerate(texts)),
    )


def parse_predict(payload) -> PredictRequest:
    """TensorFlow Serving's REST body: `instances` (row format) or `inputs` (columnar)."""
    _object(payload, "The body", ("signature_name", "instances", "inputs"))
    signature = payload.get("signature_name")
    if signature is not None:
        _string(signature, "signature_name")
    if ("instances" in payload) == ("inputs" in payload):
        raise ApiError(400, "Send exactly one of `instances` (row format) or `inputs` (columnar).")
    if "instances" in payload:
        rows = payload["instances"]
        _list(rows, "instances", 1, schema.MAX_ITEMS_PER_REQUEST)
        return PredictRequest(signature, "instances", rows)
    if payload["inputs"] is None:
        raise ApiError(400, "`inputs` must not be null.")
    return PredictRequest(signature, "inputs", payload["inputs"])
