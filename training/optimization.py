"""AdamW with linear warm-up and linear decay.

Example:
>>> schedule = WarmupLinearDecay(1e-3, total_steps=100, warmup_steps=10)
>>> [round(float(schedule(s)), 6) for s in (0, 5, 10, 100)]
[0.0, 0.0005, 0.001, 0.0]
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="recsys")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Rises linearly to `peak` over `warmup_steps`, then falls linearly to 0 at `total_steps`."""

    def __init__(self, peak, total_steps, warmup_steps):
        self.peak = float(peak)
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = max(int(warmup_steps), 0)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = self.peak * step / max(self.warmup_steps, 1)
        decay_span = max(self.total_steps - self.warmup_steps, 1)
        decay = self.peak * ops.maximum(0.0, (self.total_steps - step) / decay_span)
        return ops.where(step < self.warmup_steps, warm, decay)

    def get_config(self):
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
        }


def make_optimizer(train_config, total_steps):
    """AdamW with the warm-up schedule, weight decay and gradient clipping of the config."""
    schedule = WarmupLinearDecay(
        train_config.learning_rate, total_steps, int(total_steps * train_config.warmup_fraction)
    )
    return keras.optimizers.AdamW(
        learning_rate=schedule,
        weight_decay=train_config.weight_decay,
        global_clipnorm=train_config.clipnorm,
    )
