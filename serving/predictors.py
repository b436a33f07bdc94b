"""Task adapters over a loaded SavedModel: buy scoring, ranking and classification.

Each adapter checks the signatures its task needs, warms the model up (so a broken version is
refused before it serves) and owns the micro-batchers that coalesce concurrent requests into one
model call:

- buy probability: catalog candidates go through `score_catalog` (one user per call in the
  SavedModel; a batch of users runs as one `tf.map_fn` call over it), inline products through
  `score` with the context text built exactly as the model builds it;
- ranking: `recommend` with histories right-padded with "" into one `[N, L]` call;
- text classification: `classify` over the concatenated texts.
"""

from __future__ import annotations

import logging
import pathlib
import threading

import numpy as np
import pandas as pd
import tensorflow as tf

from recsys import schema
from serving.batching import MicroBatcher
from serving.catalog import Catalog
from serving.errors import ApiError

logger = logging.getLogger(__name__)
DEFAULT_HISTORY_LENGTH = 8
_PADDING_PAIR = ("padding | padding", "padding | padding")


class ModelLoadError(RuntimeError):
    """A version cannot serve: a missing signature, a missing catalog, a failed warm-up."""


def _catalog(path, required):
    file = pathlib.Path(path) / schema.CATALOG_ASSET
    if not file.is_file():
        if required:
            raise ModelLoadError(f"{path} has no {schema.CATALOG_ASSET}.")
        return None
    return Catalog(pd.read_parquet(file), source=str(file))


class Batching:
    """The micro-batchers of one loaded model: settings, metrics, and one batcher per call."""

    def __init__(self, name, max_batch_size=64, timeout_ms=2.0, observer=None):
        self.name, self.max_batch_size, self.timeout_ms = name, max_batch_size, timeout_ms
        self.observer = observer
        self._lock = threading.Lock()
        self._signatures = {}

    def make(self, fn, call):
        on_batch = self.observer(self.name, call) if self.observer else None
        return MicroBatcher(
            fn, self.max_batch_size, self.timeout_ms, name=f"{self.name}-{call}", on_batch=on_batch
        )

    def for_signature(self, signature, fn):
        """The batcher for `:predict` calls of one signature (created on first use)."""
        with self._lock:
            if signature not in self._signatures:
                self._signatures[signature] = self.make(fn, f"predict:{signature}")
            return self._signatures[signature]


def query_text(query) -> str:
    """The query as the model's context shows it (cleaned like `context_text`; blank -> "").

    >>> query_text("  red;  mug "), query_text("   ")
    ('red, mug', '')
    """
    from recsys.tasks.buy_probability import QUERY_PREFIX, context_text

    if not query or not query.strip():
        return ""
    return context_text([], query)[len(QUERY_PREFIX) :]


class BuyPredictor:
    """Buy probabilities for one user against catalog ids and inline product texts."""

    task = "buy_probability"

    def __init__(self, module, card, path, batching):
        self._score = schema.signature(module, schema.SIGNATURE_SCORE, path, ModelLoadError)
        self._score_catalog = schema.signature(
            module, schema.SIGNATURE_SCORE_CATALOG, path, ModelLoadError
        )
        self.catalog = _catalog(path, required=True)
        length = card.get("history_length")
        if length is None:
            length = (card.get("config") or {}).get("data", {}).get("history_length")
        self.history_length = int(length or DEFAULT_HISTORY_LENGTH)
        self._users = batching.make(self._run_users, "score_catalog")
        self._pairs = batching.make(self._run_pairs, "score")
        spec = tf.TensorSpec([None, None], tf.string)
        self._many_users = tf.function(
            self._map_users, input_signature=[spec, spec, spec, tf.TensorSpec([None], tf.string)]
        )

    def warm_up(self):
        from serving.schemas import HistoryItem, Product

        some = self.catalog.ids[:2]
        products = [Product(p) for p in some] + [Product("-", "Warm-up", "warm-up")]
        for history in ([HistoryItem(p) for p in some], []):  # a known user and a cold one
            self.score(history, "", self.resolve(products))
        self._run_users([(some, ["view"] * len(some), some, ""), (some[:1], ["view"], some, "")])

    # -- the model calls -------------------------------------------------------------------
    def _map_users(self, history, events, candidates, query):
        def one(args):
            out = self._score_catalog(
                history=args[0], history_events=args[1], candidates=args[2], query=args[3]
            )
            return out["probability"]

        return tf.map_fn(
            one,
            (history, events, candidates, query),
            fn_output_signature=tf.TensorSpec([None], tf.float32),
            parallel_iterations=16,
        )

    def _run_users(self, jobs):
        """jobs: (history ids, events, candidate ids, query); returns one array per job."""
        if len(jobs) == 1:
            history, events, candidates, query = jobs[0]
            out = self._score_catalog(
                history=tf.constant(history, tf.string),
                history_events=tf.constant(events, tf.string),
                candidates=tf.constant(candidates, tf.string),
                query=tf.constant(query, tf.string),
            )
            return [out["probability"].numpy()]
        length = max(len(j[0]) for j in jobs)
        width = max(len(j[2]) for j in jobs)
        history = [list(j[0]) + [""] * (length - len(j[0])) for j in jobs]
        events = [list(j[1]) + [""] * (length - len(j[1])) for j in jobs]
        candidates = [list(j[2]) + [""] * (width - len(j[2])) for j in jobs]
        probs = self._many_users(
            tf.constant(history, tf.string, shape=[len(jobs), length]),
            tf.constant(events, tf.string, shape=[len(jobs), length]),
            tf.constant(candidates, tf.string, shape=[len(jobs), width]),
            tf.constant([j[3] for j in jobs], tf.string),
        ).numpy()
        return [probs[i, : len(j[2])] for i, j in enumerate(jobs)]

    def _run_pairs(self, jobs):
        """jobs: (contexts, product texts); one `score` call over all the pairs.

        A padding pair with a one-item context rides along: the model's history features
        take a max over the batch's history items, which is NaN when no row has any.
        """
        contexts = [c for j in jobs for c in j[0]] + [_PADDING_PAIR[0]]
        products = [p for j in jobs for p in j[1]] + [_PADDING_PAIR[1]]
        probs = self._score(
            context=tf.constant(contexts, tf.string), product=tf.constant(products, tf.string)
        )["probability"].numpy()
        out, start = [], 0
        for j in jobs:
            out.append(probs[start : start + len(j[0])])
            start += len(j[0])
        return out

    # -- the public API --------------------------------------------------------------------
    def context(self, history, query) -> str:
        """The user context `score_catalog` builds: query, then known history items."""
        from recsys.tasks.buy_probability import context_text, event_prefix

        known = [h for h in history if h.id in self.catalog][: self.history_length]
        items = [event_prefix(h.event) + self.catalog.item_text(h.id) for h in known]
        return context_text(items, query or None)

    def resolve(self, products, fallbacks=()):
        """Each product as `("catalog", id)` or `("inline", product text)`.

        A plain id is looked up in the model's catalog, then in `fallbacks` (other catalogs);
        an object with `title` and `category` whose id is not in the model's catalog is inline.

        Raises:
            ApiError: 422 naming the ids found nowhere.
        """
        from recsys.tasks.buy_probability import product_text

        resolved, unknown = [], []
        for p in products:
            if p.id in self.catalog:
                resolved.append(("catalog", p.id))
            elif p.inline:
                band = schema.price_band(p.price) if p.price is not None else None
                resolved.append(("inline", product_text(p.title, p.category, p.brand, band)))
            else:
                source = next((c for c in fallbacks if c is not None and c.describes(p.id)), None)
                if source is None:
                    unknown.append(p.id)
                else:
                    resolved.append(("inline", source.product_text(p.id)))
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:10])
            raise ApiError(
                422,
                f"{len(unknown)} product id(s) are not in the model's catalog: {shown}. "
                "Send them as objects with `title` and `category` (and optionally `brand`, "
                "`price`).",
                code="unknown_product",
            )
        return resolved

    def score(self, history, query, resolved) -> np.ndarray:
        """Probabilities in the order of `resolved` (from `resolve`)."""
        query = query_text(query)
        out = np.full(len(resolved), np.nan, dtype=np.float64)
        catalog_rows = [i for i, r in enumerate(resolved) if r[0] == "catalog"]
        inline_rows = [i for i, r in enumerate(resolved) if r[0] == "inline"]
        texts = [resolved[i][1] for i in inline_rows]
        if catalog_rows:
            job = (
                [h.id for h in history],
                [h.event for h in history],
                [resolved[i][1] for i in catalog_rows],
                query,
            )
            out[catalog_rows] = self._users.submit(job, rows=1)
            # `score_catalog` of a user without a known history item (a query alone does not
            # count) is NaN in models exported so far (see `_run_pairs`): use `score` instead.
            cold = [i for i in catalog_rows if not np.isfinite(out[i])]
            inline_rows += cold
            texts += [self.catalog.product_text(resolved[i][1]) for i in cold]
        if inline_rows:
            context = self.context(history, query)
            out[inline_rows] = self._pairs.submit(([context] * len(texts), texts), len(texts))
        if not np.isfinite(out).all():
            raise RuntimeError("The buy model returned no probability for a resolved product.")
        return out


class RankPredictor:
    """Top-K product ids with scores for user histories (`recommend`)."""

    task = "ranking"

    def __init__(self, module, card, path, batching):
        self._recommend = schema.signature(module, schema.SIGNATURE_RECOMMEND, path, ModelLoadError)
        # the API takes histories most recent first; the ranking export reads them oldest first
        self.oldest_first = card.get("history_order", "oldest first") == "oldest first"
        self.catalog = _catalog(path, required=False)
        if self.catalog is None:
            logger.warning("%s has no %s: no titles, no filters", path, schema.CATALOG_ASSET)
        self._batcher = batching.make(self._run, "recommend")

    def warm_up(self):
        self._run([([], 1, [])])

    def _run(self, jobs):
        """jobs: (history ids, k, exclude ids); one call with the largest k of the batch."""
        length = max(1, max(len(j[0]) for j in jobs))
        width = max(1, max(len(j[2]) for j in jobs))
        k = max(j[1] for j in jobs)
        out = self._recommend(
            history=tf.constant(
                [list(j[0]) + [""] * (length - len(j[0])) for j in jobs], tf.string
            ),
            k=tf.constant(k, tf.int32),
            exclude=tf.constant([list(j[2]) + [""] * (width - len(j[2])) for j in jobs], tf.string),
        )
        ids, scores = out["product_ids"].numpy(), out["scores"].numpy()
        results = []
        for i, (_, k_i, _) in enumerate(jobs):
            row = [
                (pid.decode("utf-8"), float(s))
                for pid, s in zip(ids[i, :k_i], scores[i, :k_i], strict=True)
                if pid and np.isfinite(s)
            ]
            results.append(row)
        return results

    def top(self, history_ids, k, exclude, categories=None):
        """Up to `k` `(id, score)` pairs, best first, not excluded, in `categories` if given.

        `history_ids` are most recent first, as everywhere in the HTTP API.
        """
        size = len(self.catalog) if self.catalog is not None else None
        if categories is not None and self.catalog is None:
            raise ApiError(422, "This ranking model has no catalog, so it cannot filter.")
        excluded, wanted = set(exclude), set(categories or ())
        ask = k if categories is None else max(4 * k, k + 50)
        while True:
            ask = min(ask, size) if size else ask
            history = list(history_ids)[::-1] if self.oldest_first else list(history_ids)
            rows = self._batcher.submit((history, max(1, ask), list(exclude)))
            rows = [r for r in rows if r[0] not in excluded]
            if categories is not None:
                rows = [r for r in rows if self.catalog.category(r[0]) in wanted]
            if len(rows) >= k or size is None or ask >= size:
                return rows[:k]
            ask = size  # a narrow filter: rank the whole catalog once


class ClassifyPredictor:
    """Labels and per-label probabilities for texts (`classify`)."""

    task = "text_classification"

    def __init__(self, module, card, path, batching):
        self._classify = schema.signature(module, schema.SIGNATURE_CLASSIFY, path, ModelLoadError)
        self.labels = [str(label) for label in card.get("labels") or []]
        self._batcher = batching.make(self._run, "classify")

    def warm_up(self):
        probs = self._classify(text=tf.constant(["warm up"]))["probabilities"].numpy()
        if not self.labels:
            self.labels = [str(i) for i in range(probs.shape[-1])]
        if probs.shape[-1] != len(self.labels):
            raise ModelLoadError(
                f"classify returns {probs.shape[-1]} probabilities but the card names "
                f"{len(self.labels)} labels."
            )

    def _run(self, jobs):
        texts = [t for j in jobs for t in j]
        out = self._classify(text=tf.constant(texts, tf.string))
        probs, labels = out["probabilities"].numpy(), out["label"].numpy()
        predicted = out["predicted"].numpy() if "predicted" in out else None  # multi-label
        results, start = [], 0
        for j in jobs:
            rows = slice(start, start + len(j))
            results.append(
                (labels[rows], probs[rows], None if predicted is None else predicted[rows])
            )
            start += len(j)
        return results

    def classify(self, texts):
        labels, probs, predicted = self._batcher.submit(list(texts), rows=len(texts))
        out = []
        for i, (label, row) in enumerate(zip(labels, probs, strict=True)):
            item = {
                "label": label.decode("utf-8"),
                "probabilities": dict(zip(self.labels, map(float, row), strict=True)),
            }
            if predicted is not None:
                item["labels"] = [n for n, on in zip(self.labels, predicted[i], strict=True) if on]
            out.append(item)
        return out


PREDICTORS = {p.task: p for p in (BuyPredictor, RankPredictor, ClassifyPredictor)}


def make_predictor(module, card, path, name, settings, observer=None):
    """The adapter for the card's `task`, warmed up. Raises `ModelLoadError` if it cannot serve."""
    task = card.get("task")
    if task not in PREDICTORS:
        raise ModelLoadError(
            f"{path}: unknown task {task!r} in the model card; known: {schema.TASKS}."
        )
    batching = Batching(
        name,
        max_batch_size=int(settings.get("MAX_BATCH_SIZE", 64)),
        timeout_ms=float(settings.get("BATCH_TIMEOUT_MS", 2.0)),
        observer=observer,
    )
    predictor = PREDICTORS[task](module, card, path, batching)
    predictor.batching = batching
    predictor.warm_up()
    return predictor
