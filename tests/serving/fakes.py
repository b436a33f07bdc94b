"""Tiny models for serving tests, published into a model store.

The ranking and text-classification exports are built elsewhere; these `tf.Module`s have the
same signatures (`recommend`, `classify`) and model cards, in a few lines of TensorFlow each.
The buy model is the real export (`recsys.tasks.buy_probability_export`) of a tiny random BERT.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pandas as pd
import tensorflow as tf

from recsys import schema, store

CLASSIFIER_LABELS = ["kitchen", "shoes", "other"]
RANKER_ONLY_ITEMS = pd.DataFrame(
    {
        "product_id": ["R-NEW-1", "R-NEW-2"],
        "title": ["Glow mug", "Trail shoe"],
        "category": ["kitchen", "shoes"],
    }
)


class FakeRanker(tf.Module):
    """Scores = popularity, plus 1 for the item after the most recent history item (in catalog
    order). Histories are oldest first, right-padded with "", as in the ranking export."""

    def __init__(self, ids):
        super().__init__()
        n = len(ids)
        self.ids = tf.Variable(ids, dtype=tf.string, trainable=False)
        self.popularity = tf.Variable(np.linspace(1.0, 0.0, n, dtype="float32"), trainable=False)
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
        length = tf.reduce_sum(tf.cast(tf.not_equal(history, ""), tf.int32), axis=1)
        last = tf.gather(history, tf.maximum(length - 1, 0), batch_dims=1)
        rows = self.index.lookup(tf.where(length > 0, last, ""))
        after = tf.where(rows >= 0, (rows + 1) % self.n, -1)
        bonus = tf.one_hot(after, self.n)
        scores = self.popularity[None, :] + bonus
        excluded = tf.reduce_sum(tf.one_hot(self.index.lookup(exclude), self.n), axis=1) > 0
        scores = tf.where(excluded, float("-inf"), scores)
        top = tf.math.top_k(scores, k)
        return {"product_ids": tf.gather(self.ids, top.indices), "scores": top.values}


class FakeClassifier(tf.Module):
    """'mug' -> kitchen, 'shoe' -> shoes, anything else leans to other."""

    def __init__(self):
        super().__init__()
        self.labels = tf.Variable(CLASSIFIER_LABELS, dtype=tf.string, trainable=False)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def classify(self, text):
        text = tf.strings.lower(text)
        mug = tf.cast(tf.strings.regex_full_match(text, ".*mug.*"), tf.float32)
        shoe = tf.cast(tf.strings.regex_full_match(text, ".*shoe.*"), tf.float32)
        logits = tf.stack([3.0 * mug, 3.0 * shoe, tf.ones_like(mug)], axis=1)
        probabilities = tf.nn.softmax(logits)
        label = tf.gather(self.labels, tf.argmax(probabilities, axis=1))
        return {"probabilities": probabilities, "label": label}


def _card(path, card):
    (pathlib.Path(path) / schema.MODEL_CARD).write_text(json.dumps(card))


def publish_ranker(root, catalog, name="ranker"):
    catalog = pd.concat(
        [catalog[["product_id", "title", "category"]], RANKER_ONLY_ITEMS], ignore_index=True
    )

    def write(tmp):
        module = FakeRanker(catalog["product_id"].tolist())
        tf.saved_model.save(module, str(tmp), signatures={"recommend": module.recommend})
        catalog.to_parquet(pathlib.Path(tmp) / schema.CATALOG_ASSET, index=False)
        card = {"name": name, "task": "ranking", "history_order": "oldest first"}
        _card(tmp, {**card, "headline_metrics": {"ndcg_at_10": 0.1}})

    return store.publish(root, name, write)


def publish_classifier(root, name="categories"):
    def write(tmp):
        module = FakeClassifier()
        tf.saved_model.save(module, str(tmp), signatures={"classify": module.classify})
        _card(tmp, {"name": name, "task": "text_classification", "labels": CLASSIFIER_LABELS})

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
                "metrics": {"roc_auc": 0.5},
                "headline_metrics": {"roc_auc": 0.5},
            },
        )

    return store.publish(root, name, write)


def republish(root, name, source, corrupt=False):
    """Publishes a copy of `source` (a version directory) as the next version of `name`."""

    def write(tmp):
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        if corrupt:
            (pathlib.Path(tmp) / "saved_model.pb").write_bytes(b"not a SavedModel")

    return store.publish(root, name, write)
