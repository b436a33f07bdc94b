"""Objectives: a named model output with its loss, metrics and weight (TFRS's "task" idea).

Example:
>>> import keras
>>> kwargs = compile_kwargs([Objective("buy_logit", keras.losses.BinaryCrossentropy(from_logits=True))])
>>> sorted(kwargs)
['loss', 'loss_weights', 'metrics']
"""

from __future__ import annotations

import dataclasses

import keras


@dataclasses.dataclass(frozen=True)
class Objective:
    """One output's loss and metrics.

    Args:
        output: str. The key of the model output it applies to.
        loss: keras.losses.Loss.
        metrics: tuple of keras.metrics.Metric.
        weight: float. The loss weight.
    """

    output: str
    loss: keras.losses.Loss
    metrics: tuple = ()
    weight: float = 1.0


def compile_kwargs(objectives):
    """The `loss`, `loss_weights` and `metrics` arguments of `Model.compile`."""
    return {
        "loss": {o.output: o.loss for o in objectives},
        "loss_weights": {o.output: o.weight for o in objectives},
        "metrics": {o.output: list(o.metrics) for o in objectives},
    }
