"""Collaborative item affinity for buy probability: an EASE item-to-item model in the graph.

EASE (Steck, "Embarrassingly Shallow Autoencoders", 2019) regresses each product's column of
the binary user x product interaction matrix `X` on the other products' columns with an L2
penalty and a zero diagonal, in closed form: `P = (X'X + l2 I)^-1`, `B = -P / diag(P)`,
`diag(B) = 0`. A user's affinity for a candidate is the sum of `B[h, candidate]` over the
distinct products `h` in their history: how strongly shoppers who bought what they bought also
bought the candidate, with overlaps between history products regressed out.

`ItemAffinity` holds `B` and string tables from the context's item texts and the product texts
to its rows, so the features come from the same raw strings in training and serving. Next to
the affinity it reports the share of the history's distinct products that appear more than once
(how much of a repeat buyer the user is). Products outside the fitted catalog count for nothing.

Example:
>>> import pandas as pd
>>> events = pd.DataFrame({"user_id": ["u", "u", "v", "v", "w"],
...     "product_id": ["a", "b", "a", "b", "a"], "event": "purchase",
...     "timestamp": pd.to_datetime(["2024-01-01"] * 5, utc=True)})
>>> catalog = pd.DataFrame({"product_id": ["a", "b", "c"], "title": ["Mug", "Cap", "Hat"],
...                         "category": ["kitchen", "hats", "hats"]})
>>> affinity = ItemAffinity.fit(events, catalog, l2=1.0)
>>> f = affinity(tf.constant([["Mug | kitchen", "Mug | kitchen"]]), tf.constant(["Cap | hats"]))
>>> [round(float(v), 3) for v in f[0]]  # affinity of a Mug buyer for the Cap; 1 of 1 repeated
[0.5, 1.0]
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import tensorflow as tf

from recsys.data.buy_pairs import catalog_texts

MAX_PRODUCTS = 12_000  # B is dense [products, products] float32: 576 MB at this size
COLUMNS = ("item_affinity", "user_repeat_share")


def interaction_matrix(events, catalog, before=None):
    """Binary `[users, product texts]` interactions (any event) and the product texts.

    Products with identical product text share one column, as in `ProductStats`; events of
    products outside `catalog` are ignored.
    """
    if before is not None:
        events = events[events["timestamp"] < before]
    _, product_texts = catalog_texts(catalog)
    texts = list(dict.fromkeys(product_texts[pid] for pid in catalog["product_id"]))
    column = {text: i for i, text in enumerate(texts)}
    columns = events["product_id"].map(lambda pid: column.get(product_texts.get(pid), -1))
    keep = columns.to_numpy() >= 0
    users = pd.factorize(events["user_id"].to_numpy()[keep])[0]
    matrix = np.zeros((users.max() + 1 if users.size else 0, len(texts)), dtype=np.float32)
    matrix[users, columns.to_numpy()[keep]] = 1.0
    return matrix, texts


def ease_weights(matrix, l2):
    """EASE item-to-item weights `[products, products]` from a binary interaction matrix.

    >>> x = np.array([[1, 1, 0], [1, 1, 0], [1, 0, 1]], dtype=np.float32)
    >>> np.round(ease_weights(x, l2=1.0).astype(float), 3).tolist()
    [[0.0, 0.571, 0.375], [0.667, 0.0, -0.25], [0.5, -0.286, 0.0]]
    """
    if l2 <= 0:
        raise ValueError(f"`l2` must be > 0. Received: l2={l2}")
    gram = matrix.T.astype(np.float64) @ matrix.astype(np.float64)
    gram[np.diag_indices_from(gram)] += l2
    inverse = np.linalg.inv(gram)
    weights = -inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights.astype(np.float32)


class ItemAffinity(tf.Module):
    """EASE weights between products, looked up from history item texts and product texts.

    Args:
        item_texts: list of str. Each product's history item text (`item_text`), one per row.
        product_texts: list of str. The same products' product texts, in the same order.
        weights: `[len(product_texts), len(product_texts)]` EASE weights.
    """

    def __init__(self, item_texts, product_texts, weights):
        super().__init__(name="item_affinity")
        product_texts = list(product_texts)
        self.size = len(product_texts)
        weights = np.asarray(weights, dtype=np.float32)
        if weights.shape != (self.size, self.size) or len(item_texts) != self.size:
            raise ValueError(
                f"ItemAffinity needs one item text and one product text per row of a square "
                f"weight matrix; got {len(item_texts)} item texts, {self.size} product texts "
                f"and weights of shape {weights.shape}."
            )
        first_row = {}
        for row, text in enumerate(item_texts):  # products differing only in price band
            first_row.setdefault(text, row)
        self.item_table = _table(list(first_row), list(first_row.values()), self.size)
        self.product_table = _table(product_texts, range(self.size), self.size)
        self.weights = tf.Variable(_padded(weights), trainable=False, name="ease_weights")

    @classmethod
    def fit(cls, events, catalog, l2, before=None):
        """EASE on the interactions before `before` (all of them when None).

        Raises:
            ValueError: the catalog has more than `MAX_PRODUCTS` distinct product texts.
        """
        items, products = catalog_texts(catalog)
        distinct = len(set(products.values()))
        if distinct > MAX_PRODUCTS:  # before the [users, products] matrix is allocated
            raise ValueError(
                f"`model.item_affinity_l2` keeps a dense [products, products] matrix; the catalog "
                f"has {distinct:,} distinct products (at most {MAX_PRODUCTS:,}). Set "
                "`model.item_affinity_l2: null` to train without it."
            )
        matrix, texts = interaction_matrix(events, catalog, before)
        item_of = {}
        for pid in catalog["product_id"]:
            item_of.setdefault(products[pid], items[pid])
        return cls([item_of[t] for t in texts], texts, ease_weights(matrix, l2))

    def __call__(self, history_items, product):
        """`[N, 2]`: the affinity and the repeat share.

        Args:
            history_items: `[N, I]` string. History item texts without the purchase mark;
                padding entries (any text not in the table) are ignored.
            product: `[N]` string. Candidate product texts.
        """
        rows, first, repeat_share = self.history(history_items)
        return tf.stack([self.affinity(rows, first, product), repeat_share], axis=1)

    def history(self, history_items):
        """What the affinity needs from a history alone (computed once per distinct context).

        Returns:
            `(rows, first, repeat_share)`: `[N, I]` int64 weight rows of the items, sorted;
            `[N, I]` float32, 1 at the first occurrence of each known product; `[N]` float32,
            the share of the distinct known products that occur more than once.
        """
        rows = tf.sort(self.item_table.lookup(history_items), axis=1)
        known = rows < self.size
        first = tf.concat(
            [tf.ones_like(rows[:, :1], tf.bool), tf.not_equal(rows[:, 1:], rows[:, :-1])], axis=1
        )
        first = tf.logical_and(first, known)
        # a second occurrence: equal to the previous entry, which was a first one
        second = tf.logical_and(
            tf.logical_and(known[:, 1:], tf.equal(rows[:, 1:], rows[:, :-1])), first[:, :-1]
        )
        distinct = tf.reduce_sum(tf.cast(first, tf.float32), axis=1)
        repeated = tf.reduce_sum(tf.cast(second, tf.float32), axis=1)
        return rows, tf.cast(first, tf.float32), repeated / tf.maximum(distinct, 1.0)

    def affinity(self, rows, first, product):
        """`[N]`: the summed weights from the history's distinct products (`history`) to
        each candidate product text."""
        candidate = tf.broadcast_to(self.product_table.lookup(product)[:, None], tf.shape(rows))
        pair_weights = tf.gather_nd(self.weights, tf.stack([rows, candidate], axis=-1))
        return tf.reduce_sum(pair_weights * first, axis=1)


def _table(keys, rows, default):
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(keys), tf.string), tf.constant(list(rows), tf.int64)
        ),
        default_value=default,
    )


def _padded(weights):
    """The weights with a zero row and column for unknown products."""
    size = weights.shape[0]
    out = np.zeros((size + 1, size + 1), dtype=np.float32)
    out[:size, :size] = weights
    return out
