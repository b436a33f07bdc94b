"""The ranking SavedModel: top-K product ids for raw product-id histories.

Signatures (the product-id vocabulary travels inside the SavedModel as a lookup table):

- `recommend(history, k, exclude)`: `history` is `tf.string [N, L]` product ids, **oldest
  first**, right-padded with empty strings; `k` an `int32` scalar; `exclude` `tf.string
  [N, M]` product ids never to return (right-padded with "", `M` may be 0). Returns
  `product_ids` (`tf.string [N, k]`) and `scores` (`float32 [N, k]`, best first).
- `recommend_simple(history, k)` (also `serving_default`): the same without `exclude`.

Unknown ids in `history` and `exclude` are ignored. The model reads the most recent
`sequence_length` known items of a history; every known history item is excluded from the
results. A row without any known history item gets the most popular products (scores are then
log training counts). `k` is clipped to `[0, catalog size]`; when exclusions leave fewer than
`k` products, the remaining slots hold "" with score `-inf`.

The backbone pass is XLA-compiled (about 1.5x the throughput on CPU) over inputs padded to a few
bucketed shapes; the first call at each new bucketed shape compiles. A call of many rows is sorted
by history length and scored in groups, each padded to its own longest history, so short
histories do not pay for the long ones of the same call.
"""

from __future__ import annotations

import logging
import pathlib

import numpy as np
import tensorflow as tf

from recsys import schema
from recsys.export import string_table

logger = logging.getLogger(__name__)

SIGNATURE_RECOMMEND_SIMPLE = "recommend_simple"


_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_WIDTH_BUCKETS = (8, 16, 32, 64, 128)
# Calls of at least `_GROUPED_ROWS` rows are scored in `_LENGTH_GROUPS` groups of similar length.
_GROUPED_ROWS = 64
_LENGTH_GROUPS = 4


def _bucket(size, buckets, step):
    """The smallest bucket >= `size`; past the last one, the next multiple of `step`."""
    buckets = tf.constant(buckets, tf.int32)
    fits = tf.reduce_min(tf.where(buckets >= size, buckets, tf.int32.max))
    return tf.where(size > buckets[-1], (size + step - 1) // step * step, fits)


def _pad_to_bucket(ids, sequence_length):
    """Right-pads `[N, W]` ids with `PAD_ID` to bucketed sizes (rows: powers of two, then
    multiples of 256; width: powers of two from 8, then `sequence_length`)."""
    rows, width = tf.shape(ids)[0], tf.shape(ids)[1]
    padded_rows = _bucket(rows, _ROW_BUCKETS, 256)
    padded_width = tf.minimum(
        _bucket(width, _WIDTH_BUCKETS, sequence_length), tf.maximum(sequence_length, width)
    )
    return tf.pad(ids, [[0, padded_rows - rows], [0, padded_width - width]])


class RankingServingModule(tf.Module):
    """The exported graph: id lookup, the backbone's last-position pass and a masked top-k.

    Args:
        model: a trained `NextItemModel`.
        item_ids: list of str. Product ids in vocabulary order (index `i + 2` for `item_ids[i]`).
        popularity: array `[V]`. Training interaction counts per vocabulary index.
        sequence_length: int. The longest history the model reads.
        jit_compile: bool. Compile the backbone pass with XLA.
    """

    def __init__(self, model, item_ids, popularity, sequence_length, jit_compile=True):
        super().__init__(name="ranking")
        self.model = model
        self.sequence_length = int(sequence_length)
        reserved = schema.NUM_RESERVED_IDS
        vocabulary_size = len(item_ids) + reserved
        if vocabulary_size != model.vocabulary_size:
            raise ValueError(
                f"{len(item_ids)} product ids do not fit a model with {model.vocabulary_size} "
                f"ids ({reserved} reserved)."
            )
        self.num_items = len(item_ids)
        # Item vectors are fixed after training (text projections included): computed once.
        self.item_vectors = tf.Variable(
            np.asarray(model.item_vectors(), "float32"), trainable=False, name="item_vectors"
        )
        self.index = string_table(
            item_ids, np.arange(reserved, vocabulary_size, dtype=np.int64), -1
        )
        self.product_ids = tf.Variable(
            [""] * reserved + list(item_ids), trainable=False, dtype=tf.string, name="product_ids"
        )
        # The backbone pass and the catalog scores, XLA-compiled: about 1.5x faster on CPU.
        # Inputs are padded to a few bucketed shapes so that few compilations are needed.
        self._scores = tf.function(self._compute_scores, jit_compile=bool(jit_compile))
        log_popularity = np.log1p(np.asarray(popularity, "float32"))
        log_popularity[:reserved] = -np.inf
        self.log_popularity = tf.Variable(log_popularity, trainable=False, name="log_popularity")

    def _compute_scores(self, ids):
        hidden = self.model.last_hidden(ids)
        return tf.matmul(tf.cast(hidden, tf.float32), self.item_vectors, transpose_b=True)

    def _scores_by_length(self, ids, count):
        """Catalog scores `[N, V]` of right-padded `ids` whose rows hold `count` items each.

        With `_GROUPED_ROWS` rows or more, rows are sorted by `count` and scored in
        `_LENGTH_GROUPS` groups, each cut to its own longest row before bucketing: the scores
        are the same (a row's last position never sees the padding after it), the work less.
        """
        n = tf.shape(ids)[0]

        def together():
            return self._scores(_pad_to_bucket(ids, self.sequence_length))[:n]

        def grouped():
            order = tf.argsort(count, stable=True)
            sorted_ids, sorted_count = tf.gather(ids, order), tf.gather(count, order)
            bounds = [n * i // _LENGTH_GROUPS for i in range(_LENGTH_GROUPS + 1)]
            parts = []
            for start, end in zip(bounds[:-1], bounds[1:], strict=True):
                width = tf.maximum(tf.reduce_max(sorted_count[start:end]), 1)
                rows = _pad_to_bucket(sorted_ids[start:end, :width], self.sequence_length)
                parts.append(self._scores(rows)[: end - start])
            return tf.gather(tf.concat(parts, axis=0), tf.math.invert_permutation(order))

        return tf.cond(n >= _GROUPED_ROWS, grouped, together)

    def _recommend(self, history, k, exclude):
        rows = self.index.lookup(history)  # [N, L], -1 for unknown ids and padding
        known = rows >= 0
        n = tf.shape(rows)[0]
        # The most recent `sequence_length` known items, moved left and right-padded with 0.
        after = tf.cumsum(tf.cast(known, tf.int32), axis=1, exclusive=True, reverse=True)
        count = tf.minimum(tf.reduce_sum(tf.cast(known, tf.int32), axis=1), self.sequence_length)
        kept = known & (after < self.sequence_length)
        slot = count[:, None] - 1 - after
        where = tf.where(kept)
        batch_rows = tf.cast(where[:, 0], tf.int32)
        positions = tf.stack([batch_rows, tf.gather_nd(slot, where)], axis=1)
        width = tf.maximum(tf.reduce_max(tf.concat([count, [1]], axis=0)), 1)
        ids = tf.scatter_nd(
            positions, tf.cast(tf.gather_nd(rows, where), tf.int32), tf.stack([n, width])
        )
        scores = self._scores_by_length(ids, count)
        scores = tf.where(count[:, None] > 0, scores, self.log_popularity[None, :])
        # Exclusions: every known history item, the `exclude` ids and the reserved ids.
        vocabulary_size = tf.shape(self.item_vectors)[0]
        excluded_rows = tf.concat([rows, self.index.lookup(exclude)], axis=1)
        hits = tf.where(excluded_rows >= 0)
        excluded = tf.scatter_nd(
            tf.stack([hits[:, 0], tf.gather_nd(excluded_rows, hits)], axis=1),
            tf.ones([tf.shape(hits)[0]], tf.int32),
            tf.cast(tf.stack([n, vocabulary_size]), tf.int64),
        )
        reserved = tf.range(vocabulary_size) < schema.NUM_RESERVED_IDS
        scores = tf.where((excluded > 0) | reserved[None, :], -np.inf, scores)
        k = tf.clip_by_value(k, 0, self.num_items)
        top = tf.math.top_k(scores, k=k)
        found = tf.math.is_finite(top.values)
        product_ids = tf.where(found, tf.gather(self.product_ids, top.indices), "")
        return {"product_ids": product_ids, "scores": top.values}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.string, name="history"),
            tf.TensorSpec([], tf.int32, name="k"),
            tf.TensorSpec([None, None], tf.string, name="exclude"),
        ]
    )
    def recommend(self, history, k, exclude):
        return self._recommend(history, k, exclude)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.string, name="history"),
            tf.TensorSpec([], tf.int32, name="k"),
        ]
    )
    def recommend_simple(self, history, k):
        empty = tf.zeros([tf.shape(history)[0], 0], tf.string)
        return self._recommend(history, k, empty)


SIGNATURES = {
    schema.SIGNATURE_RECOMMEND: {
        "inputs": {
            "history": "string[N, L] product ids, oldest first, right-padded with ''",
            "k": "int32[]",
            "exclude": "string[N, M] product ids, right-padded with '' (M may be 0)",
        },
        "outputs": {"product_ids": "string[N, k]", "scores": "float32[N, k]"},
    },
    SIGNATURE_RECOMMEND_SIMPLE: {
        "inputs": {
            "history": "string[N, L] product ids, oldest first, right-padded with ''",
            "k": "int32[]",
        },
        "outputs": {"product_ids": "string[N, k]", "scores": "float32[N, k]"},
    },
}


def export(
    model, item_ids, popularity, sequence_length, export_dir, catalog=None, jit_compile=True
):
    """Writes the SavedModel and `catalog.parquet` into `export_dir`; returns the signatures.

    Args:
        model: a trained `NextItemModel`.
        item_ids: list of str. Product ids in vocabulary order.
        popularity: array `[V]`. Training interaction counts per vocabulary index.
        sequence_length: int.
        export_dir: path.
        catalog: DataFrame or None. `catalog.parquet` holds `product_id` and `popularity` for
            every product of the vocabulary, plus the catalog's columns (title, category, ...)
            where one is given.
        jit_compile: bool. XLA-compile the backbone pass (the first call at each new
            bucketed batch shape compiles it).
    """
    import pandas as pd

    export_dir = pathlib.Path(export_dir)
    module = RankingServingModule(model, item_ids, popularity, sequence_length, jit_compile)
    tf.saved_model.save(
        module,
        str(export_dir),
        signatures={
            "serving_default": module.recommend_simple,
            schema.SIGNATURE_RECOMMEND: module.recommend,
            SIGNATURE_RECOMMEND_SIMPLE: module.recommend_simple,
        },
    )
    table = pd.DataFrame(
        {
            "product_id": pd.Series(list(item_ids), dtype="string"),
            "popularity": np.asarray(popularity[schema.NUM_RESERVED_IDS :], dtype="int64"),
        }
    )
    if catalog is not None:
        extra = catalog.drop(columns=["popularity"], errors="ignore")
        extra = extra.assign(product_id=extra["product_id"].astype("string"))
        table = table.merge(extra, on="product_id", how="left")
    table.to_parquet(export_dir / schema.CATALOG_ASSET, index=False)
    logger.info("Exported a ranker over %d products to %s", len(item_ids), export_dir)
    return SIGNATURES
