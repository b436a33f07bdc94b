"""Small Keras layers on top of backbones: pooling text encoder and task heads.

Example:
>>> import numpy as np
>>> head = BuyProbabilityHead(hidden_dim=4)
>>> tuple(head(np.ones((2, 3)), np.ones((2, 3)), np.zeros((2, 4))).shape)
(2, 1)
"""

from __future__ import annotations

import keras
from keras import ops

from recsys.schema import EMBEDDING_INTERACTIONS


@keras.saving.register_keras_serializable(package="recsys")
class MaskedMeanPooling(keras.layers.Layer):
    """Averages a sequence over its unmasked positions and L2-normalises the result.

    Works for any backbone family (GPT-2 returns no pooled output), so heads never branch on it.

    >>> import numpy as np
    >>> pooled = MaskedMeanPooling()(np.array([[[3.0, 4.0], [9.0, 9.0]]]), np.array([[1, 0]]))
    >>> [round(float(v), 2) for v in np.asarray(pooled)[0]]
    [0.6, 0.8]
    """

    def __init__(self, normalize=True, **kwargs):
        super().__init__(**kwargs)
        self.normalize = normalize

    def call(self, sequence, mask):
        mask = ops.cast(ops.expand_dims(mask, -1), sequence.dtype)
        total = ops.sum(sequence * mask, axis=1)
        pooled = total / ops.maximum(ops.sum(mask, axis=1), 1.0)
        if self.normalize:
            pooled = pooled / ops.maximum(ops.norm(pooled, axis=-1, keepdims=True), 1e-6)
        return pooled

    def get_config(self):
        return {**super().get_config(), "normalize": self.normalize}


@keras.saving.register_keras_serializable(package="recsys")
class BuyProbabilityHead(keras.layers.Layer):
    """Combines a user embedding, a product embedding and history features into a buy logit.

    The interaction vector is `[u, p, u * p, |u - p|, features]` (`interaction="full"`) or
    `[u . p, features]` (`"cosine"`: the embeddings' similarity only, for frozen backbones whose
    embeddings would otherwise give the head thousands of inputs to overfit on), fed to a small
    MLP. `normalize_features` puts the features through batch normalisation first (counts, days
    and shares live on very different scales). With `offset_feature`, that feature is already a
    buy logit (from a model of the user's tastes) and the head learns a correction to it: the
    logit is the feature plus the MLP's output, whose last layer starts at zero.

    Args:
        hidden_dim: int. Width of the hidden layer.
        dropout: float. Dropout rate before the output.
        interaction: str. "full" or "cosine".
        normalize_features: bool. Batch-normalise the features.
        offset_feature: int or None. Index of a feature the logit is a correction to.
    """

    def __init__(
        self,
        hidden_dim=256,
        dropout=0.1,
        interaction="full",
        normalize_features=False,
        offset_feature=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if interaction not in EMBEDDING_INTERACTIONS:
            raise ValueError(
                f"`interaction` must be one of {EMBEDDING_INTERACTIONS}. Received: {interaction!r}"
            )
        self.hidden_dim, self.dropout = hidden_dim, dropout
        self.interaction, self.normalize_features = interaction, bool(normalize_features)
        if self.normalize_features:
            self._norm = keras.layers.BatchNormalization(name="feature_norm", dtype="float32")
        self._hidden = keras.layers.Dense(hidden_dim, activation="gelu", name="hidden")
        self._hidden2 = keras.layers.Dense(
            max(hidden_dim // 2, 1), activation="gelu", name="hidden2"
        )
        self._drop = keras.layers.Dropout(dropout)
        self.offset_feature = None if offset_feature is None else int(offset_feature)
        self._logit = keras.layers.Dense(
            1,
            dtype="float32",
            name="logit",
            kernel_initializer="glorot_uniform" if self.offset_feature is None else "zeros",
        )

    def call(self, user, product, features, training=False):
        user = ops.cast(user, "float32")
        product = ops.cast(product, "float32")
        features = ops.cast(features, "float32")
        offset = None
        if self.offset_feature is not None:
            offset = features[:, self.offset_feature : self.offset_feature + 1]
        if self.normalize_features:
            features = self._norm(features, training=training)
        if self.interaction == "cosine":
            parts = [ops.sum(user * product, axis=-1, keepdims=True), features]
        else:
            parts = [user, product, user * product, ops.abs(user - product), features]
        x = ops.concatenate(parts, axis=-1)
        x = self._drop(self._hidden2(self._hidden(x)), training=training)
        return self._logit(x) if offset is None else self._logit(x) + offset

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_dim": self.hidden_dim,
            "dropout": self.dropout,
            "interaction": self.interaction,
            "normalize_features": self.normalize_features,
            "offset_feature": self.offset_feature,
        }


@keras.saving.register_keras_serializable(package="recsys")
class ClassificationHead(keras.layers.Layer):
    """Maps a pooled text embedding to one logit per class (float32, also under mixed precision).

    The input is layer-normalised first: pooled embeddings are L2-normalised (entries near
    `1 / sqrt(dim)`), which would otherwise make the logits learn slowly at fine-tuning rates.

    Args:
        num_classes: int. Number of classes (multi-class) or labels (multi-label), >= 2.
        hidden_dim: int. Width of an optional GELU hidden layer; 0 for a linear head.
        dropout: float. Dropout rate before the hidden layer and before the logits.

    >>> import numpy as np
    >>> head = ClassificationHead(num_classes=3, hidden_dim=4)
    >>> logits = head(np.ones((2, 8)))
    >>> tuple(logits.shape), keras.backend.standardize_dtype(logits.dtype)
    ((2, 3), 'float32')
    """

    def __init__(self, num_classes, hidden_dim=0, dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        if int(num_classes) < 2:
            raise ValueError(
                f"`num_classes` must be >= 2 (a classifier needs two or more classes). "
                f"Received: num_classes={num_classes}"
            )
        if int(hidden_dim) < 0:
            raise ValueError(f"`hidden_dim` must be >= 0. Received: hidden_dim={hidden_dim}")
        self.num_classes, self.hidden_dim, self.dropout = int(num_classes), int(hidden_dim), dropout
        self._norm = keras.layers.LayerNormalization(name="norm")
        self._drop = keras.layers.Dropout(dropout)
        self._hidden = (
            keras.layers.Dense(self.hidden_dim, activation="gelu", name="hidden")
            if self.hidden_dim
            else None
        )
        self._logits = keras.layers.Dense(self.num_classes, dtype="float32", name="logits")

    def call(self, pooled, training=False):
        x = self._drop(self._norm(pooled), training=training)
        if self._hidden is not None:
            x = self._drop(self._hidden(x), training=training)
        return self._logits(x)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "hidden_dim": self.hidden_dim,
            "dropout": self.dropout,
        }


@keras.saving.register_keras_serializable(package="recsys")
class RankingHead(keras.layers.Layer):
    """Scores hidden states against item vectors tied to the backbone's token embeddings.

    An item's vector is its id embedding (a row of the backbone's token-embedding table) plus,
    with `text_fusion`, a learned projection of a frozen text embedding of the item (its title),
    so items without interactions still get a meaningful vector. Logits are dot products.

    Args:
        hidden_dim: int. Width of the backbone's hidden states and id embeddings.
        text_fusion: bool. Add a projection of text embeddings to the id embeddings.

    Example:
    >>> import numpy as np
    >>> head = RankingHead(hidden_dim=4, text_fusion=True)
    >>> logits = head(np.ones((2, 4)), np.ones((5, 4)), np.zeros((5, 3)))
    >>> tuple(logits.shape), float(logits[0, 0])
    ((2, 5), 4.0)
    """

    def __init__(self, hidden_dim, text_fusion=False, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim, self.text_fusion = int(hidden_dim), bool(text_fusion)
        # No bias: a constant added to every item vector shifts all of a user's logits alike.
        self._text_projection = (
            keras.layers.Dense(self.hidden_dim, use_bias=False, name="text_projection")
            if self.text_fusion
            else None
        )

    def item_vectors(self, id_embeddings, text_embeddings=None):
        """`[M, hidden_dim]` item vectors from `[M, hidden_dim]` id and `[M, T]` text embeddings."""
        vectors = ops.cast(id_embeddings, "float32")
        if self.text_fusion:
            if text_embeddings is None:
                raise ValueError("RankingHead(text_fusion=True) needs `text_embeddings`.")
            vectors = vectors + ops.cast(
                self._text_projection(ops.cast(text_embeddings, "float32")), "float32"
            )
        return vectors

    def call(self, hidden, id_embeddings, text_embeddings=None):
        """Logits `[..., M]` of hidden states `[..., hidden_dim]` against `M` items."""
        vectors = self.item_vectors(id_embeddings, text_embeddings)
        return ops.matmul(ops.cast(hidden, "float32"), ops.transpose(vectors))

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_dim": self.hidden_dim,
            "text_fusion": self.text_fusion,
        }
