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

    The interaction vector is `[u, p, u * p, |u - p|, features]`, fed to a small MLP.

    Args:
        hidden_dim: int. Width of the hidden layer.
        dropout: float. Dropout rate before the output.
    """

    def __init__(self, hidden_dim=256, dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim, self.dropout = hidden_dim, dropout
        self._hidden = keras.layers.Dense(hidden_dim, activation="gelu", name="hidden")
        self._hidden2 = keras.layers.Dense(
            max(hidden_dim // 2, 1), activation="gelu", name="hidden2"
        )
        self._drop = keras.layers.Dropout(dropout)
        self._logit = keras.layers.Dense(1, dtype="float32", name="logit")

    def call(self, user, product, features, training=False):
        user = ops.cast(user, "float32")
        product = ops.cast(product, "float32")
        features = ops.cast(features, "float32")
        x = ops.concatenate(
            [user, product, user * product, ops.abs(user - product), features], axis=-1
        )
        x = self._drop(self._hidden2(self._hidden(x)), training=training)
        return self._logit(x)

    def get_config(self):
        return {**super().get_config(), "hidden_dim": self.hidden_dim, "dropout": self.dropout}
