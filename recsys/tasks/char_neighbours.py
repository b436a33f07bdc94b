"""Nearest training texts by character n-grams, as class votes blended into a classifier.

Product titles are often a brand and a model number ("Bosch KGN39VL35G"). A fine-tuned
backbone sees such a number as a few WordPiece fragments; a training title of the same product
line ("Bosch KGN39VL31G ...") shares most of its character n-grams. `CharNeighbours` keeps the
training texts as TF-IDF vectors of hashed character 2-5 grams taken within words (each word
padded with a space on both sides, as scikit-learn's `char_wb` analyser does; sublinear term
frequency, smoothed idf, L2-normalised) and, for a text, returns `weight * votes`: the cosine
similarities of its `k` most similar training texts, summed per class and divided by `k`.
Everything runs in TensorFlow ops (sparse CSR products), so the exported SavedModel computes
the same votes from raw strings; n-grams never seen in training carry no weight.

`k` and `weight` are chosen with the n-gram blend on validation log loss
(`ngram_linear.fit_blend`'s `neighbours` argument).

>>> import numpy as np
>>> memory = CharNeighbours.fit(["red wool hat", "blue mug"], [0, 1], num_classes=2, k=1)
>>> np.round(memory(["a red woolen hat"]).numpy(), 2)
array([[0.94, 0.  ]], dtype=float32)
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

DEFAULT_BUCKETS = 2**20
NGRAM_SIZES = (2, 3, 4, 5)
K_GRID = (1, 3, 5)


def char_ngram_ids(texts, buckets=DEFAULT_BUCKETS):
    """Ragged `[N, None]` int64 hashed ids of each text's character n-grams within words.

    >>> char_ngram_ids(["Hi"], buckets=10**6).row_lengths().numpy()  # " hi ": 3 + 2 + 1
    array([6])
    """
    words = tf.strings.split(tf.strings.lower(tf.convert_to_tensor(texts), encoding="utf-8"))
    chars = tf.strings.unicode_split(" " + words + " ", "UTF-8", errors="replace")
    grams = tf.concat([tf.strings.ngrams(chars, n, separator="") for n in NGRAM_SIZES], axis=-1)
    return tf.strings.to_hash_bucket_fast(grams.merge_dims(1, 2), buckets)


def _counts(texts, buckets):
    counts = tf.sparse.bincount(
        char_ngram_ids(texts, buckets), minlength=buckets, maxlength=buckets, axis=-1
    )
    return tf.sparse.reorder(counts)


def tfidf(texts, idf):
    """`tf.SparseTensor` `[N, buckets]` of L2-normalised TF-IDF rows (`idf` 0 drops an n-gram)."""
    idf = tf.convert_to_tensor(idf, tf.float32)
    return _weighted(_counts(texts, int(idf.shape[0])), idf)


def _weighted(counts, idf):
    """`tfidf` of n-gram `counts` already taken."""
    weights = (1.0 + tf.math.log(tf.cast(counts.values, tf.float32))) * tf.gather(
        idf, counts.indices[:, 1]
    )
    rows = counts.indices[:, 0]
    norms = tf.math.unsorted_segment_sum(
        tf.square(weights), rows, tf.cast(counts.dense_shape[0], tf.int32)
    )
    weights = weights * tf.math.rsqrt(tf.maximum(tf.gather(norms, rows), 1e-12))
    return tf.sparse.retain(
        tf.SparseTensor(counts.indices, weights, counts.dense_shape), weights > 0
    )


def _csr(sparse):
    return tf.raw_ops.SparseTensorToCSRSparseMatrix(
        indices=sparse.indices, values=sparse.values, dense_shape=sparse.dense_shape
    )


class CharNeighbours(tf.Module):
    """Raw texts `[N]` -> `weight * votes` `[N, C]` from the `k` most similar training texts.

    Build it with `CharNeighbours.fit`; the memory is held in non-trainable variables.

    Args:
        idf: `[buckets]` float. Inverse document frequencies (0 for unseen n-grams).
        memory: `tf.SparseTensor` `[M, buckets]`, the training texts' TF-IDF rows.
        classes: `[M]` int. Each training text's class.
        num_classes: int.
        k: int. Neighbours that vote.
        weight: float. Multiplies the votes (the blend weight).
    """

    def __init__(self, idf, memory, classes, num_classes, k=1, weight=1.0, name=None):
        super().__init__(name=name or "char_neighbours")
        self.num_classes, self.k = int(num_classes), int(k)
        self.idf = tf.Variable(np.asarray(idf, np.float32), trainable=False, name="idf")
        # Held transposed, `[buckets, M]` in row-major order: the product with a query's CSR
        # matrix then needs no transposition (which costs more than the product itself).
        by_ngram = tf.sparse.reorder(tf.sparse.transpose(memory))
        self.memory_indices = tf.Variable(by_ngram.indices, trainable=False, name="memory_indices")
        self.memory_values = tf.Variable(
            tf.cast(by_ngram.values, tf.float32), trainable=False, name="memory_values"
        )
        self.memory_size = int(memory.dense_shape[0])
        self.classes = tf.Variable(np.asarray(classes, np.int32), trainable=False, name="classes")
        self.weight = tf.Variable(float(weight), trainable=False, name="weight")

    @classmethod
    def fit(cls, texts, classes, num_classes, k=1, weight=1.0, buckets=DEFAULT_BUCKETS):
        """The memory of `texts` (their classes `classes`), with smoothed idf from them."""
        texts = list(texts)
        if not texts:
            raise ValueError("`CharNeighbours.fit` needs at least one training text.")
        counts = _counts(texts, buckets)
        df = np.bincount(counts.indices[:, 1].numpy(), minlength=buckets)
        idf = np.where(df > 0, np.log((1.0 + len(texts)) / (1.0 + df)) + 1.0, 0.0)
        memory = _weighted(counts, tf.constant(idf, tf.float32))  # the n-grams are taken once
        return cls(idf, memory, classes, num_classes, k=k, weight=weight)

    def similarities(self, texts):
        """Dense `[N, M]` cosine similarities of `texts` to the training texts."""
        by_ngram = tf.SparseTensor(
            self.memory_indices,
            self.memory_values,
            tf.constant([int(self.idf.shape[0]), self.memory_size], tf.int64),
        )
        product = tf.raw_ops.SparseMatrixSparseMatMul(
            a=_csr(tfidf(texts, self.idf)), b=_csr(by_ngram), type=tf.float32
        )
        return tf.raw_ops.CSRSparseMatrixToDense(sparse_input=product, type=tf.float32)

    def neighbours(self, texts, k):
        """`(similarities [N, k], classes [N, k])` of each text's `k` nearest training texts."""
        k = min(int(k), self.memory_size)
        top = tf.math.top_k(self.similarities(texts), k=k)
        return top.values, tf.gather(self.classes, top.indices)

    def __call__(self, texts):
        return self.weight * votes(*self.neighbours(texts, self.k), self.num_classes, self.k)


def votes(similarities, classes, num_classes, k):
    """`[N, C]`: the first `k` neighbours' similarities summed per class, divided by `k`.

    >>> votes(np.array([[0.9, 0.5]]), np.array([[1, 0]]), 2, k=2).numpy()
    array([[0.25, 0.45]], dtype=float32)
    """
    similarities = tf.cast(similarities, tf.float32)[:, :k]
    one_hot = tf.one_hot(tf.convert_to_tensor(classes)[:, :k], num_classes)
    return tf.reduce_sum(similarities[:, :, None] * one_hot, axis=1) / float(k)


def candidate_votes(memory, texts, k_grid=K_GRID, batch_size=256):
    """`{k: votes [N, C]}` of `texts` for each `k` (one similarity pass; for `fit_blend`)."""
    texts = list(texts)
    widest = max(k_grid)
    parts = [
        memory.neighbours(texts[i : i + batch_size], widest)
        for i in range(0, len(texts), batch_size)
    ]
    sims = np.concatenate([p[0].numpy() for p in parts]) if parts else np.zeros((0, widest))
    empty = np.zeros((0, widest), np.int32)
    classes = np.concatenate([p[1].numpy() for p in parts]) if parts else empty
    return {k: votes(sims, classes, memory.num_classes, k).numpy() for k in k_grid}
