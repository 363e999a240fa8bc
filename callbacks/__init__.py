"""Batch-size schedules, the papers' learning-rate rules, the accumulator's
callbacks and the measurement callbacks of the papers."""

from callbacks.accumulation import AccumulatedNoiseScale, EpochAlignedAccumulation, NoiseScaleBatchSize
from callbacks.learning_rates import (
    LinearWarmup,
    base_learning_rate,
    linear_scaling,
    milestones_at,
    regime_adaptation,
    sqrt_scaling,
    warmup_factor,
)
from callbacks.measures import (
    UpdatesToTarget,
    WeightDistance,
    default_loss,
    gradient_noise_scale,
    interpolate,
    loss_and_gradient,
    sharpness,
)
from callbacks.schedules import (
    BatchSizeSchedule,
    ScheduledEpoch,
    TrainingSchedule,
    current_learning_rate,
    sgd_noise_scale,
    split_batch,
)

__all__ = [
    "AccumulatedNoiseScale", "EpochAlignedAccumulation", "NoiseScaleBatchSize", "LinearWarmup",
    "base_learning_rate", "linear_scaling", "milestones_at", "regime_adaptation", "sqrt_scaling",
    "warmup_factor", "UpdatesToTarget", "WeightDistance", "default_loss", "gradient_noise_scale",
    "interpolate", "loss_and_gradient", "sharpness", "BatchSizeSchedule", "ScheduledEpoch",
    "TrainingSchedule", "current_learning_rate", "sgd_noise_scale", "split_batch",
]
