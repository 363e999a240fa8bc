"""Batch-size schedules, the papers' learning-rate rules, the accumulator's
callbacks and the measurement callbacks of the papers."""

from batchsize.callbacks.accumulation import AccumulatedNoiseScale, EpochAlignedAccumulation, NoiseScaleBatchSize
from batchsize.callbacks.learning_rates import (
    LinearWarmup,
    base_learning_rate,
    linear_scaling,
    milestones_at,
    regime_adaptation,
    sqrt_scaling,
    warmup_factor,
)
from batchsize.callbacks.measures import (
    UpdatesToTarget,
    WeightDistance,
    default_loss,
    gradient_noise_scale,
    interpolate,
    loss_and_gradient,
    sharpness,
)
from batchsize.callbacks.schedules import (
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


# Last, so the old path gets the same objects as the new one.
import warnings as _warnings  # noqa: E402

if __name__ == "callbacks":  # the pre-package import path, from a checkout
    _warnings.warn("`import callbacks` is deprecated; use `import batchsize.callbacks` (pip install "
                   "the repository: `make setup` or `pip install .`)", DeprecationWarning,
                   stacklevel=2)
