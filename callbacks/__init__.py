"""Batch-size schedules and the measurement callbacks of the papers."""

from callbacks.schedules import (
    BatchSizeSchedule,
    LinearWarmup,
    NoiseScaleBatchSize,
    ScheduledEpoch,
    TrainingSchedule,
    WarmupStepDecay,
    base_learning_rate,
    current_learning_rate,
    linear_scaling,
    milestones_at,
    regime_adaptation,
    split_batch,
    sqrt_scaling,
    step_decay,
)
from callbacks.measures import (
    GradientNoiseScale,
    Sharpness,
    UpdatesToTarget,
    WeightDistance,
    gradient_noise_scale,
    interpolate,
    loss_and_gradient,
    sharpness,
)
