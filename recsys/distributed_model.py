"""A `keras.Model` that trains under `tf.distribute` strategies on Keras 3.15.

Keras 3.15's TensorFlow trainer has two problems with distribution strategies, reproduced on
this stack with a tiny KerasHub BERT:

1. Before the first step it builds the model from the first data batch *averaged across
   replicas* (`strategy.reduce("MEAN", batch)`). That fails for boolean inputs (KerasHub's
   `padding_mask`: "Value for attr 'T' of bool is not in the list of allowed values ... AddN")
   and, under `MultiWorkerMirroredStrategy`, for nested inputs ("Attempt to convert a value
   ({'token_ids': PerReplica...").
   Fix: build from the first replica's local batch instead (`_maybe_symbolic_build` below).
   Our preprocessors also emit int32 masks, which avoids the boolean case on its own.
2. Under `MultiWorkerMirroredStrategy` every step's logs are reduced with
   `strategy.reduce("MEAN", value, axis=0)`, which fails for scalar logs ("Invalid reduction
   dimension 0 for input with 0 dimensions", tensorflow/tensorflow#72388;
   `distribute_reduction_method` is ignored in 3.15).
   Fix: return each log as a shape-[1] tensor under multi-worker, so the reduction over axis 0
   yields the mean across workers as a scalar.

Both fixes live only here; `tests/recsys/test_distributed_model.py` fails if Keras changes the
code they work around, so they can be dropped when Keras fixes it upstream.

Example:
>>> import keras, numpy as np
>>> x = keras.Input((2,))
>>> model = DistributionSafeModel(inputs=x, outputs=keras.layers.Dense(1)(x))
>>> model(np.ones((1, 2))).shape
TensorShape([1, 1])
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras.src import tree


def is_multi_worker(strategy) -> bool:
    """True for a `MultiWorkerMirroredStrategy` spanning more than one worker."""
    extended = getattr(strategy, "extended", None)
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and bool(
        getattr(extended, "_in_multi_worker_mode", lambda: False)()
    )


def first_replica(value, strategy):
    """The first local replica's part of a distributed value (other values unchanged)."""
    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value


@keras.saving.register_keras_serializable(package="recsys")
class DistributionSafeModel(keras.Model):
    """`keras.Model` with the two distribution fixes described in the module docstring.

    Use it like `keras.Model`: `DistributionSafeModel(inputs=..., outputs=...)` builds a
    functional model.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = getattr(self, "_distribute_strategy", None)
        if strategy is None or iterator is None:
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            batch = next(it)
            data_batch = tree.map_structure(lambda v: first_replica(v, strategy), batch)
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def train_step(self, data):
        return self._shape_logs(super().train_step(data))

    def test_step(self, data):
        return self._shape_logs(super().test_step(data))

    def _shape_logs(self, logs):
        if not is_multi_worker(self.distribute_strategy):
            return logs
        return {key: tf.reshape(tf.cast(value, tf.float32), [1]) for key, value in logs.items()}
