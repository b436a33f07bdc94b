"""Tiny models for batch-scoring tests, published into a model store.

The buy model is the real export (`recsys.tasks.buy_probability_export`) of a tiny random
BERT. The classifier and the ranker are `tf.Module`s with the signatures and model cards of the
text-classification and ranking exports (`classify`, `recommend`), in a few lines each, with
scores that differ from row to row.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pandas as pd
import tensorflow as tf

from recsys import schema, store

LABELS = ["kitchen", "shoes", "other"]


class TinyClassifier(tf.Module):
    """Logits from hashed words: deterministic, different for every text."""

    def __init__(self, multi_label=False):
        super().__init__()
        self.labels = tf.Variable(LABELS, dtype=tf.string, trainable=False)
        self.weights = tf.Variable(
            np.random.default_rng(0).normal(size=(64, len(LABELS))).astype("float32"),
            trainable=False,
        )
        self.multi_label = multi_label

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def classify(self, text):
        words = tf.strings.split(tf.strings.lower(text))
        buckets = tf.strings.to_hash_bucket_fast(words, 64)
        counts = tf.reduce_sum(tf.one_hot(buckets, 64), axis=1)  # ragged -> [N, 64]
        logits = tf.matmul(counts, self.weights)
        if self.multi_label:
            probabilities = tf.sigmoid(logits)
        else:
            probabilities = tf.nn.softmax(logits)
        out = {
            "probabilities": probabilities,
            "label": tf.gather(self.labels, tf.argmax(probabilities, axis=1)),
        }
        if self.multi_label:
            out["predicted"] = probabilities >= 0.5
        return out


class TinyRanker(tf.Module):
    """Scores = a random item bias plus the similarity of random item vectors to the mean of
    the known history items; history (oldest first, padded with "") and `exclude` are masked."""

    def __init__(self, ids):
        super().__init__()
        rng = np.random.default_rng(1)
        n = len(ids)
        self.ids = tf.Variable(ids, dtype=tf.string, trainable=False)
        self.vectors = tf.Variable(rng.normal(size=(n, 4)).astype("float32"), trainable=False)
        self.bias = tf.Variable(rng.normal(size=(n,)).astype("float32"), trainable=False)
        self.index = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(ids), tf.range(n, dtype=tf.int64)),
            default_value=-1,
        )
        self.n = n

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.string, name="history"),
            tf.TensorSpec([], tf.int32, name="k"),
            tf.TensorSpec([None, None], tf.string, name="exclude"),
        ]
    )
    def recommend(self, history, k, exclude):
        rows = self.index.lookup(history)
        known = tf.cast(rows >= 0, tf.float32)
        vectors = tf.gather(self.vectors, tf.maximum(rows, 0)) * known[:, :, None]
        user = tf.reduce_sum(vectors, axis=1) / tf.maximum(tf.reduce_sum(known, 1), 1.0)[:, None]
        scores = self.bias[None, :] + tf.matmul(user, self.vectors, transpose_b=True)
        masked = tf.concat([rows, self.index.lookup(exclude)], axis=1)
        hit = tf.reduce_sum(tf.one_hot(masked, self.n), axis=1) > 0  # -1 -> all zeros
        scores = tf.where(hit, float("-inf"), scores)
        top = tf.math.top_k(scores, k)
        ids = tf.where(tf.math.is_finite(top.values), tf.gather(self.ids, top.indices), "")
        return {"product_ids": ids, "scores": top.values}


def _card(path, card):
    (pathlib.Path(path) / schema.MODEL_CARD).write_text(json.dumps(card))


def publish_classifier(root, name="categories", multi_label=False):
    def write(tmp):
        module = TinyClassifier(multi_label)
        tf.saved_model.save(module, str(tmp), signatures={"classify": module.classify})
        card = {"name": name, "task": "text_classification", "labels": LABELS}
        _card(tmp, {**card, "multi_label": multi_label})

    return store.publish(root, name, write)


def publish_ranker(root, catalog, name="ranker"):
    def write(tmp):
        module = TinyRanker(catalog["product_id"].tolist())
        tf.saved_model.save(module, str(tmp), signatures={"recommend": module.recommend})
        catalog[["product_id", "title", "category"]].to_parquet(
            pathlib.Path(tmp) / schema.CATALOG_ASSET, index=False
        )
        _card(tmp, {"name": name, "task": "ranking", "history_order": "oldest first"})

    return store.publish(root, name, write)


def publish_buy(root, tiny_store, name="buy"):
    """The real buy export of a tiny random BERT (about 10 s on one core)."""
    import keras

    from recsys.backbones import tiny_bert
    from recsys.data.buy_pairs import product_counts
    from recsys.export import write_model_card
    from recsys.tasks import buy_probability as bp
    from recsys.tasks import buy_probability_export

    keras.utils.set_random_seed(3)
    backbone, text_pre = tiny_bert(sequence_length=32, hidden_dim=8)
    counts = product_counts(tiny_store.events, tiny_store.catalog)
    pre = bp.BuyProbabilityPreprocessor(
        text_pre.tokenizer, 32, 16, product_stats=bp.ProductStats(*counts)
    )
    model = bp.build_model(backbone, hidden_dim=8)

    def write(tmp):
        signatures = buy_probability_export.export(
            model, pre, tiny_store.catalog, tmp, history_length=4
        )
        write_model_card(
            tmp,
            {
                "name": name,
                "task": "buy_probability",
                "signatures": signatures,
                "history_length": 4,
            },
        )

    return store.publish(root, name, write)


def users_table(events, max_history=6):
    """`user_id, history` (most recent first) from events, as a users file holds them."""
    recent = events.sort_values("timestamp", kind="stable").iloc[::-1]
    grouped = recent.groupby("user_id", sort=True)
    frame = pd.DataFrame(
        {
            "history": grouped["product_id"].agg(lambda s: list(s)[:max_history]),
            "history_events": grouped["event"].agg(lambda s: list(s)[:max_history]),
        }
    ).reset_index()
    return frame
