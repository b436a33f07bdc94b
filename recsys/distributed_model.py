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

A model that overrides `compute_loss` (the ranker) must also scale its loss for the replicas
itself, as Keras's compiled losses do: `replica_mean` below.

Both fixes live only here (`DistributionSafeMixin`; `DistributionSafeModel` for functional
models); `tests/recsys/test_distributed_model.py` fails if Keras changes the code they work
around, so they can be dropped when Keras fixes it upstream.

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


def replica_mean(values):
    """This replica's share of the mean of `values` over the global batch (float32 scalar).

    Under a strategy with R replicas each replica computes its loss on its part of the global
    batch, and the optimizer *sums* the replicas' gradients. Keras's compiled losses divide each
    replica's mean by R; a `compute_loss` override must do the same, or its gradients (and its
    logged loss) come out R times too large. This divides the replica's sum by the number of
    values in the whole global batch (all-reduced across replicas), so the summed gradient is
    exactly one device's gradient on the global batch, even when the replicas hold different
    numbers of values (padding positions, for example). With one replica it is the mean.

    Args:
        values: float tensor of per-example (or per-position) losses, any shape.

    >>> float(replica_mean(tf.constant([1.0, 2.0, 6.0])))
    3.0
    """
    values = tf.cast(tf.reshape(values, [-1]), tf.float32)
    count = tf.cast(tf.size(values), tf.float32)
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        count = context.all_reduce("SUM", tf.stop_gradient(count))
    return tf.math.divide_no_nan(tf.reduce_sum(values), count)


def replica_share(value):
    """`value` divided by the replicas in sync: this replica's share of a per-step loss term
    (a regularisation loss, for example) whose gradients the replicas will sum.

    >>> float(replica_share(tf.constant(4.0)))
    4.0
    """
    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync if context is not None else 1
    return value / replicas if replicas > 1 else value


class DistributionSafeMixin:
    """The two distribution fixes described in the module docstring, for any `keras.Model`.

    Subclassed models list it before `keras.Model`:
    `class NextItemModel(DistributionSafeMixin, keras.Model)`. Functional models use
    `DistributionSafeModel`. Do not subclass `DistributionSafeModel` itself: building a
    functional model from a `keras.Model` subclass makes Keras swap `Functional` into that
    class's bases (`inject_functional_model_class`), after which its subclasses can no longer
    be built as subclassed models ("Functional.__init__() missing 2 required positional
    arguments").
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


@keras.saving.register_keras_serializable(package="recsys")
class DistributionSafeModel(DistributionSafeMixin, keras.Model):
    """A functional `keras.Model` with the two distribution fixes (`DistributionSafeMixin`).

    Use it like `keras.Model`: `DistributionSafeModel(inputs=..., outputs=...)` builds a
    functional model. Subclassed models use `DistributionSafeMixin` instead.
    """
