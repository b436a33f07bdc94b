"""The buy-probability SavedModel: `score` over raw text pairs and `score_catalog` over ids.

`score(context, product)` maps paired raw strings to probabilities (also `serving_default`).
`score_catalog(history, history_events, candidates, query)` takes one user's history as product
ids (most recent first) with each interaction's event (`purchase` and `cart` are marked;
anything else counts as a view) and candidate product ids: the context is encoded once, catalog products
use embeddings computed at export, and unknown candidates come back with `known = False`.
"""

from __future__ import annotations

import logging
import pathlib

import numpy as np
import tensorflow as tf

from recsys import schema
from recsys.data.buy_pairs import catalog_texts
from recsys.export import embed_texts, string_table
from recsys.tasks.buy_probability import (
    BOUGHT_PREFIX,
    CART_PREFIX,
    ITEM_SEPARATOR,
    QUERY_PREFIX,
    history_features,
)

logger = logging.getLogger(__name__)


class BuyServingModule(tf.Module):
    """The exported graph. Holds the model, the preprocessor and the catalog embeddings."""

    def __init__(self, model, preprocessor, catalog, history_length):
        super().__init__(name="buy_probability")
        self.model, self.preprocessor = model, preprocessor
        self.encoder = model.get_layer("text_encoder")
        self.head = model.get_layer("buy_head")
        self.history_length = int(history_length)
        self.product_stats = preprocessor.product_stats  # tracked here so they are saved
        self.item_affinity = preprocessor.item_affinity
        self.attribute_tastes = preprocessor.attribute_tastes
        ids = catalog["product_id"].astype(str).tolist()
        items, products = catalog_texts(catalog)
        product_texts = [products[i] for i in ids]
        embeddings = embed_texts(
            lambda t: self.encoder(self.preprocessor.encode_text("product", t), training=False),
            product_texts,
        )
        self.product_embeddings = tf.Variable(
            embeddings, trainable=False, name="product_embeddings"
        )
        self.index = string_table(ids, np.arange(len(ids), dtype=np.int64), -1)
        self.item_texts = tf.Variable([items[i] for i in ids], trainable=False, dtype=tf.string)
        self.product_texts = tf.Variable(product_texts, trainable=False, dtype=tf.string)
        logger.info("Embedded %d catalog products for export", len(ids))

    def _probability(self, context_embedding, product_embedding, context, product):
        features = history_features(
            context, product, self.product_stats, self.item_affinity, self.attribute_tastes
        )
        logits = self.head(context_embedding, product_embedding, features)
        return tf.sigmoid(tf.reshape(tf.cast(logits, tf.float32), [-1]))

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="context"),
            tf.TensorSpec([None], tf.string, name="product"),
        ]
    )
    def score(self, context, product):
        x = self.preprocessor({"context": context, "product": product})
        u = self.encoder(x["context"], training=False)
        p = self.encoder(x["product"], training=False)
        logits = self.head(u, p, x["features"], training=False)
        return {"probability": tf.sigmoid(tf.reshape(tf.cast(logits, tf.float32), [-1]))}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="history"),
            tf.TensorSpec([None], tf.string, name="history_events"),
            tf.TensorSpec([None], tf.string, name="candidates"),
            tf.TensorSpec([], tf.string, name="query"),
        ]
    )
    def score_catalog(self, history, history_events, candidates, query):
        rows = self.index.lookup(history)
        known_history = rows >= 0
        rows = tf.boolean_mask(rows, known_history)[: self.history_length]
        events = tf.boolean_mask(history_events, known_history)[: self.history_length]
        items = tf.gather(self.item_texts, rows)
        items = tf.where(tf.equal(events, "cart"), CART_PREFIX + items, items)
        items = tf.where(tf.equal(events, "purchase"), BOUGHT_PREFIX + items, items)
        query_item = tf.where(tf.strings.length(query) > 0, QUERY_PREFIX + query, "")
        parts = tf.concat([tf.reshape(query_item, [1]), items], axis=0)
        parts = tf.boolean_mask(parts, tf.strings.length(parts) > 0)
        context = tf.strings.reduce_join(parts, separator=ITEM_SEPARATOR)
        encoded = self.preprocessor.encode_text("context", tf.reshape(context, [1]))
        user = self.encoder(encoded, training=False)
        cand_rows = self.index.lookup(candidates)
        known = cand_rows >= 0
        safe = tf.maximum(cand_rows, 0)
        n = tf.shape(candidates)[0]
        products = tf.gather(self.product_embeddings, safe)
        contexts = tf.fill([n], context)
        prob = self._probability(
            tf.repeat(user, n, axis=0), products, contexts, tf.gather(self.product_texts, safe)
        )
        prob = tf.where(known, prob, tf.fill([n], float("nan")))
        return {"probability": prob, "known": known}


def export(model, preprocessor, catalog, export_dir, history_length):
    """Writes the SavedModel (and the catalog it was trained with) into `export_dir`."""
    export_dir = pathlib.Path(export_dir)
    module = BuyServingModule(model, preprocessor, catalog, history_length)
    tf.saved_model.save(
        module,
        str(export_dir),
        signatures={
            "serving_default": module.score,
            schema.SIGNATURE_SCORE: module.score,
            schema.SIGNATURE_SCORE_CATALOG: module.score_catalog,
        },
    )
    catalog.to_parquet(export_dir / schema.CATALOG_ASSET, index=False)
    return {
        schema.SIGNATURE_SCORE: {
            "inputs": {"context": "string[N]", "product": "string[N]"},
            "outputs": {"probability": "float32[N]"},
        },
        schema.SIGNATURE_SCORE_CATALOG: {
            "inputs": {
                "history": "string[L]",
                "history_events": "string[L]",
                "candidates": "string[M]",
                "query": "string[]",
            },
            "outputs": {"probability": "float32[M]", "known": "bool[M]"},
        },
    }
