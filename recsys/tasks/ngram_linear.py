"""A bag-of-n-grams linear classifier over WordPiece tokens, blended into a text classifier.

The fine-tuned backbone and a linear model over hashed token n-grams make different errors, so
their logits add up to a better classifier than either (the "wide" part of a wide-and-deep
model). The n-grams are the backbone's own token ids, so the blend needs no other tokenizer and
runs inside the exported SavedModel: unigrams keep their token id, bigrams are hashed into the
remaining buckets; each text's features are binary and L2-normalised.

The linear part is fitted after the backbone, with scikit-learn's logistic regression on the
training texts; its strength (`C`), its weight in the blend and a temperature for the blended
logits are chosen together on the validation texts, by log loss (`fit_blend`). Without the
temperature, a fine-tuned model's over-confident logits leave no room for a second opinion in
the log loss. `NgramLinear` then holds the fitted weights, already scaled by the blend weight,
as constants of the graph; the blended logits are `scale * (model + ngram)`.

>>> import numpy as np
>>> layer = NgramLinear(vocabulary_size=100, num_classes=2, buckets=1024)
>>> x = {"token_ids": np.array([[2, 7, 9, 3, 0]]), "padding_mask": np.array([[1, 1, 1, 1, 0]])}
>>> features = ngram_features(x["token_ids"], x["padding_mask"], 100, 1024)
>>> features.shape, round(float(features.sum()), 4)  # 4 unigrams + 3 bigrams, each 1/sqrt(7)
((1, 1024), 2.6458)
>>> tuple(layer(x).shape)
(1, 2)
"""

from __future__ import annotations

import logging

import keras
import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)

DEFAULT_BUCKETS = 2**18
_HASH_MULTIPLIER = 2654435761  # Knuth's multiplicative hash
C_GRID = (2.0, 8.0, 32.0)
WEIGHT_GRID = tuple(np.round(np.arange(0.0, 2.01, 0.1), 2))
SCALE_GRID = tuple(np.round(np.arange(0.3, 1.51, 0.05), 2))
# votes are similarities in [0, 1] summed per class over k neighbours / k: they need large weights
NEIGHBOUR_WEIGHT_GRID = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0)


def _ngram_ids(token_ids, padding_mask, vocabulary_size, buckets):
    """Ragged `[N, None]` int64 feature ids: unigram token ids, then hashed bigrams."""
    ids = tf.cast(token_ids, tf.int64)
    mask = tf.cast(padding_mask, tf.bool)
    pairs = ids[:, :-1] * vocabulary_size + ids[:, 1:]
    hashed = tf.math.floormod(pairs * _HASH_MULTIPLIER, 2**32)
    bigrams = vocabulary_size + tf.math.floormod(hashed, buckets - vocabulary_size)
    return tf.concat(
        [
            tf.ragged.boolean_mask(ids, mask),
            tf.ragged.boolean_mask(bigrams, mask[:, :-1] & mask[:, 1:]),
        ],
        axis=1,
    )


def sparse_ngram_features(token_ids, padding_mask, vocabulary_size, buckets=DEFAULT_BUCKETS):
    """`tf.SparseTensor` `[N, buckets]`: each text's distinct n-grams, `1 / sqrt(count)` each.

    A text without tokens has no features (an all-zero row).
    """
    if buckets <= vocabulary_size:
        raise ValueError(
            f"`buckets` ({buckets}) must exceed the vocabulary size ({vocabulary_size}): "
            "unigrams take the first `vocabulary_size` buckets, bigrams the rest."
        )
    present = tf.sparse.bincount(
        _ngram_ids(token_ids, padding_mask, vocabulary_size, buckets),
        minlength=buckets,
        maxlength=buckets,
        binary_output=True,
        axis=-1,
    )
    present = tf.sparse.reorder(present)
    per_row = tf.math.bincount(
        tf.cast(present.indices[:, 0], tf.int32),
        minlength=tf.cast(present.dense_shape[0], tf.int32),
        dtype=tf.float32,
    )
    values = tf.math.rsqrt(tf.gather(per_row, present.indices[:, 0]))
    return tf.SparseTensor(present.indices, values, present.dense_shape)


def ngram_features(token_ids, padding_mask, vocabulary_size, buckets=DEFAULT_BUCKETS):
    """`scipy.sparse.csr_matrix` `[N, buckets]` of `sparse_ngram_features` (for fitting)."""
    import scipy.sparse

    sparse = sparse_ngram_features(
        tf.convert_to_tensor(token_ids),
        tf.convert_to_tensor(padding_mask),
        vocabulary_size,
        buckets,
    )
    indices = sparse.indices.numpy()
    return scipy.sparse.csr_matrix(
        (sparse.values.numpy(), (indices[:, 0], indices[:, 1])),
        shape=tuple(int(d) for d in sparse.dense_shape.numpy()),
    )


@keras.saving.register_keras_serializable(package="recsys")
class NgramLinear(keras.layers.Layer):
    """`{"token_ids", "padding_mask"}` -> logits `[N, C]` of a linear model over n-grams.

    The weights are not trained by gradient: `set_linear_model` loads them (see `fit_blend`).

    Args:
        vocabulary_size: int. The tokenizer's vocabulary size.
        num_classes: int.
        buckets: int. Feature space size (> `vocabulary_size`).
    """

    def __init__(self, vocabulary_size, num_classes, buckets=DEFAULT_BUCKETS, **kwargs):
        kwargs.setdefault("dtype", "float32")  # logits at full precision under mixed policies
        kwargs["trainable"] = False
        super().__init__(**kwargs)
        self.vocabulary_size = int(vocabulary_size)
        self.num_classes = int(num_classes)
        self.buckets = int(buckets)
        self.kernel = self.add_weight(
            shape=(self.buckets, self.num_classes),
            initializer="zeros",
            name="kernel",
            trainable=False,
        )
        self.bias = self.add_weight(
            shape=(self.num_classes,), initializer="zeros", name="bias", trainable=False
        )

    def set_linear_model(self, kernel, bias):
        """Loads `[buckets, C]` weights and `[C]` biases."""
        self.kernel.assign(np.asarray(kernel, dtype=np.float32))
        self.bias.assign(np.asarray(bias, dtype=np.float32))

    def call(self, inputs):
        features = sparse_ngram_features(
            inputs["token_ids"], inputs["padding_mask"], self.vocabulary_size, self.buckets
        )
        logits = tf.sparse.sparse_dense_matmul(features, tf.convert_to_tensor(self.kernel))
        return logits + self.bias[None, :]

    def compute_output_shape(self, input_shape):
        return (input_shape["token_ids"][0], self.num_classes)

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "num_classes": self.num_classes,
            "buckets": self.buckets,
        }


def _log_loss(targets, logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probabilities[np.arange(len(targets)), targets].mean())


def _best_scale(targets, logits, scale_grid):
    """`(log loss, scale)` of the scale in `scale_grid` with the lowest log loss (first on ties)."""
    losses = [_log_loss(targets, scale * logits) for scale in scale_grid]
    best = int(np.argmin(losses))
    return losses[best], float(scale_grid[best])


def _class_logits(classifier, features, num_classes):
    """`[N, C]` logits of a fitted scikit-learn logistic regression (binary: `[0, z]`)."""
    scores = classifier.decision_function(features)
    logits = np.zeros((features.shape[0], num_classes))
    if scores.ndim == 1:  # binary: the second class against the first
        logits[:, classifier.classes_[1]] = scores
    else:
        logits[:, classifier.classes_] = scores
    return logits


def _kernel(classifier, buckets, num_classes):
    """The fitted model as `[buckets, C]` weights and `[C]` biases (as `_class_logits`)."""
    classes = classifier.classes_ if len(classifier.coef_) > 1 else classifier.classes_[1:]
    kernel = np.zeros((buckets, num_classes))
    kernel[:, classes] = np.asarray(classifier.coef_).T
    bias = np.zeros(num_classes)
    bias[classes] = classifier.intercept_
    return kernel, bias


def fit_blend(
    train,
    validation,
    num_classes,
    c_grid=C_GRID,
    weight_grid=WEIGHT_GRID,
    scale_grid=SCALE_GRID,
    seed=0,
    neighbours=None,
    neighbour_weight_grid=NEIGHBOUR_WEIGHT_GRID,
):
    """Fits the n-gram model, its blend weight and the logit scale; see the module docstring.

    Args:
        train: `(features, class_ids)`: csr features of the training texts and their classes.
        validation: `(features, class_ids, model_logits)`: the validation texts' features,
            classes and the fine-tuned model's logits `[N, C]`.
        num_classes: int.
        c_grid: inverse regularisation strengths tried (the best validation log loss wins).
        weight_grid: blend weights tried; 0 leaves the model's ranking as it is.
        scale_grid: logit scales (inverse temperatures) tried for the blended logits.
        neighbours: `{k: votes [N, C]}` of the validation texts from a
            `char_neighbours.CharNeighbours` memory, or None. Each `k` and each weight of
            `neighbour_weight_grid` is tried together with the rest; the choice goes into the
            summary as `neighbour_k` and `neighbour_weight`.

    Returns:
        `(kernel, bias, summary)`: `kernel [buckets, C]` and `bias [C]` already multiplied by
        the chosen weight (all zero when 0 wins), and a dict of the choice (`ngram_c`,
        `ngram_weight`, `logit_scale`) and the validation log losses before and after.
    """
    from sklearn.linear_model import LogisticRegression

    train_features, train_targets = train
    features, targets, model_logits = validation
    targets = np.asarray(targets)
    model_logits = np.asarray(model_logits, dtype=np.float64)
    extras = [(None, 0.0, None)]
    if neighbours:
        extras = [
            (k, float(w), np.asarray(votes, dtype=np.float64))
            for k, votes in neighbours.items()
            for w in neighbour_weight_grid
        ]
    best = None
    for c in c_grid:
        classifier = LogisticRegression(C=c, max_iter=3000, random_state=seed)
        classifier.fit(train_features, train_targets)
        wide = _class_logits(classifier, features, num_classes)
        for weight in weight_grid:
            blended = model_logits + weight * wide
            for k, neighbour_weight, votes in extras:
                total = blended if votes is None else blended + neighbour_weight * votes
                loss, scale = _best_scale(targets, total, scale_grid)
                if best is None or loss < best[0] - 1e-9:
                    best = (loss, c, float(weight), scale, classifier, k, neighbour_weight)
    loss, c, weight, scale, classifier, k, neighbour_weight = best
    kernel, bias = _kernel(classifier, train_features.shape[1], num_classes)
    summary = {
        "ngram_c": c,
        "ngram_weight": weight,
        "logit_scale": scale,
        "validation_log_loss_model": round(_log_loss(targets, model_logits), 5),
        "validation_log_loss_blend": round(loss, 5),
    }
    if neighbours:
        summary.update(neighbour_k=int(k), neighbour_weight=neighbour_weight)
        logger.info("Character n-gram neighbours: k=%d, weight %.1f", k, neighbour_weight)
    logger.info(
        "N-gram blend: C=%s, weight %.2f, logit scale %.2f; validation log loss %.4f -> %.4f",
        c,
        weight,
        scale,
        summary["validation_log_loss_model"],
        loss,
    )
    return kernel * weight, bias * weight, summary
