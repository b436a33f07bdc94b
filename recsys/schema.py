"""Field names, value sets and size limits shared by training, batch scoring and serving.

This module is the single source of the names that cross a boundary (files, the exported
SavedModel, the HTTP API). Nothing here imports TensorFlow.

>>> EVENT_TYPES
('view', 'cart', 'purchase')
>>> CATALOG.required
('product_id', 'title', 'category')
"""

from __future__ import annotations

import dataclasses

EVENT_TYPES = ("view", "cart", "purchase")


@dataclasses.dataclass(frozen=True)
class TableSchema:
    """The columns of one kind of table.

    Args:
        kind: str. The table's name, as in `recsys data check --kind`.
        required: tuple of str. Columns that must be present.
        optional: tuple of str. Columns that may be present.
        dtypes: dict. Column name -> one of "string", "float", "int", "bool", "timestamp".
        key: str or None. A column whose values must be unique.
    """

    kind: str
    required: tuple
    optional: tuple
    dtypes: dict
    key: str | None = None

    @property
    def columns(self):
        return self.required + self.optional


CATALOG = TableSchema(
    kind="catalog",
    required=("product_id", "title", "category"),
    optional=("description", "brand", "price"),
    dtypes={
        "product_id": "string",
        "title": "string",
        "category": "string",
        "description": "string",
        "brand": "string",
        "price": "float",
    },
    key="product_id",
)

EVENTS = TableSchema(
    kind="events",
    required=("user_id", "product_id", "event", "timestamp"),
    optional=(),
    dtypes={
        "user_id": "string",
        "product_id": "string",
        "event": "string",
        "timestamp": "timestamp",
    },
)

REVIEWS = TableSchema(
    kind="reviews",
    required=("product_id", "text", "rating"),
    optional=("user_id", "title", "recommended"),
    dtypes={
        "product_id": "string",
        "text": "string",
        "rating": "float",
        "user_id": "string",
        "title": "string",
        "recommended": "bool",
    },
)

TABLES = {s.kind: s for s in (CATALOG, EVENTS, REVIEWS)}

# Item vocabularies reserve the first ids.
PAD_ID = 0
OOV_ID = 1
NUM_RESERVED_IDS = 2

# Price bands used in product and context text ("price band" features).
PRICE_BANDS = ((10.0, "budget"), (30.0, "low"), (80.0, "mid"), (200.0, "high"))
TOP_PRICE_BAND = "premium"

# Limits enforced by the HTTP API and batch scoring.
MAX_ITEMS_PER_REQUEST = 1000
MAX_TEXTS_PER_REQUEST = 1000
MAX_K = 1000
MAX_BODY_BYTES = 1024 * 1024
MAX_HISTORY = 200

# Names inside exported SavedModels (signatures, inputs and outputs).
SIGNATURE_SCORE = "score"
SIGNATURE_SCORE_CATALOG = "score_catalog"
SIGNATURE_RECOMMEND = "recommend"
SIGNATURE_CLASSIFY = "classify"
MODEL_CARD = "model_card.json"
CATALOG_ASSET = "catalog.parquet"

TASKS = ("buy_probability", "ranking", "text_classification")
# `model.embedding_interaction`: how the buy head combines the user and product embeddings.
EMBEDDING_INTERACTIONS = ("full", "cosine")


def signature(module, name, path, error):
    """The signature `name` of a loaded SavedModel `module`; where it has none, raises `error`
    (an exception class) naming the model's `path` and the signatures it has.

    >>> class Loaded:
    ...     signatures = {"score": "the score function"}
    >>> signature(Loaded, SIGNATURE_SCORE, "m/1", LookupError)
    'the score function'
    >>> signature(Loaded, SIGNATURE_CLASSIFY, "m/1", LookupError)
    Traceback (most recent call last):
    ...
    LookupError: m/1 has no signature 'classify'; it has ['score'].
    """
    try:
        return module.signatures[name]
    except KeyError:
        raise error(
            f"{path} has no signature {name!r}; it has {sorted(module.signatures)}."
        ) from None


def price_band(price):
    """Maps a price to a coarse band name; a missing price gives "unknown".

    >>> price_band(5.0), price_band(45.0), price_band(999.0), price_band(None)
    ('budget', 'mid', 'premium', 'unknown')
    """
    if price is None or price != price:  # None or NaN
        return "unknown"
    for upper, name in PRICE_BANDS:
        if price < upper:
            return name
    return TOP_PRICE_BAND
