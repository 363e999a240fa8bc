"""The papers' learning-rate rules, and the linear warm-up.

- `linear_scaling` (Goyal et al.; the lr-scaling article), `sqrt_scaling`
  (Hoffer et al.'s +LR), `base_learning_rate` (Masters & Luschi's rate per
  example), `regime_adaptation` (Hoffer et al.'s +RA: stretch the schedule by
  B_L / B_S), `milestones_at` (milestones at fractions of training);
- `warmup_factor` and `LinearWarmup` (a `keras.optimizers.schedules.LearningRateSchedule`):
  a rate ramped up linearly from a fraction of itself, counted in updates.
"""

import math

import keras

def linear_scaling(lr, batch_size, base_batch_size):
    """lr * B / B_base (Goyal et al.; the fig-lr-scaling article)."""
    return lr * batch_size / base_batch_size


def sqrt_scaling(lr, batch_size, base_batch_size):
    """lr * sqrt(B / B_base): Hoffer et al.'s +LR rule."""
    return lr * math.sqrt(batch_size / base_batch_size)


def base_learning_rate(eta_tilde, batch_size):
    """Masters & Luschi write the rate per example: SGD lr = m * eta_tilde."""
    return batch_size * eta_tilde


def milestones_at(fractions, epochs):
    """Milestone epochs at fractions of training, e.g. (0.5, 0.75) of 82 -> (41, 61);
    never epoch 0 (a step before any training is no step)."""
    return tuple(max(1, int(round(f * epochs))) for f in fractions)


def regime_adaptation(epochs, milestones, large_batch, small_batch):
    """Hoffer et al.'s +RA: epochs and milestones times B_L / B_S, so the large
    batch makes as many updates as the small one."""
    ratio = large_batch / small_batch
    return int(round(epochs * ratio)), tuple(int(round(m * ratio)) for m in milestones)


def warmup_factor(update, warmup_updates, start_factor):
    """The warm-up's multiplier of the rate at `update` (0-based): rises
    linearly from `start_factor` at update 0 to 1 at `warmup_updates`, then 1.
    Works on Python numbers (exactly) and on tensors (`LinearWarmup`)."""
    if isinstance(update, (int, float)):
        progress = min(update / max(warmup_updates, 1), 1.0)
    else:
        progress = keras.ops.minimum(update / max(warmup_updates, 1), 1.0)
    return start_factor + (1 - start_factor) * progress


@keras.saving.register_keras_serializable(package="batchsize")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """A learning rate (a number or a schedule) ramped up linearly over the
    first `warmup_updates` updates, from `start_factor` of it to all of it.

    Args:
        learning_rate: a float or a `LearningRateSchedule`.
        warmup_updates: updates of warm-up.
        start_factor: the fraction of the rate at update 0.

    Example:

    >>> lr = LinearWarmup(keras.optimizers.schedules.PiecewiseConstantDecay([99], [0.1, 0.01]), 10)
    >>> keras.optimizers.SGD(lr)
    """

    def __init__(self, learning_rate, warmup_updates, start_factor=1 / 32):
        if isinstance(learning_rate, dict):
            learning_rate = keras.saving.deserialize_keras_object(learning_rate)
        self.learning_rate = learning_rate
        self.warmup_updates = int(warmup_updates)
        self.start_factor = float(start_factor)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        lr = self.learning_rate
        lr = lr(step) if callable(lr) else lr
        return lr * warmup_factor(step, self.warmup_updates, self.start_factor)

    def get_config(self):
        lr = self.learning_rate
        return dict(learning_rate=keras.saving.serialize_keras_object(lr) if callable(lr) else lr,
                    warmup_updates=self.warmup_updates, start_factor=self.start_factor)
