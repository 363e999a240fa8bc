"""batchsize: what batch size, what learning rate, and what gradient
accumulation really does, as Keras 3 pieces for your own training code.

    from batchsize import GradientAccumulator, BatchSizeSchedule, TrainingSchedule

The library keeps to keras and keras.ops, so it runs on TensorFlow, JAX and
PyTorch. Its parts live in the repository's top-level folders and install as
subpackages: `batchsize.optimizers` (optimizers/: the accumulation wrapper),
`batchsize.callbacks` (callbacks/: schedules in updates, learning-rate rules,
the accumulator's callbacks and the papers' measurements) and
`batchsize.models` (models/: the papers' networks, ghost batch norm and the
batch norm statistics recomputed exactly). Saved models register their
objects under the package name "batchsize".
"""

from batchsize.callbacks import (
    AccumulatedNoiseScale,
    BatchSizeSchedule,
    EpochAlignedAccumulation,
    LinearWarmup,
    NoiseScaleBatchSize,
    ScheduledEpoch,
    TrainingSchedule,
    UpdatesToTarget,
    WeightDistance,
    base_learning_rate,
    gradient_noise_scale,
    interpolate,
    linear_scaling,
    milestones_at,
    regime_adaptation,
    sharpness,
    sqrt_scaling,
)
from batchsize.models import (
    GhostBatchNormalization,
    RecomputeBatchNormStatistics,
    recompute_batch_norm_statistics,
)
from batchsize.optimizers import GradientAccumulator, accumulator_of

__all__ = [
    "GradientAccumulator", "accumulator_of", "BatchSizeSchedule", "TrainingSchedule",
    "ScheduledEpoch", "EpochAlignedAccumulation", "AccumulatedNoiseScale", "NoiseScaleBatchSize",
    "LinearWarmup", "base_learning_rate", "linear_scaling", "sqrt_scaling", "milestones_at",
    "regime_adaptation", "WeightDistance", "UpdatesToTarget", "sharpness", "interpolate",
    "gradient_noise_scale", "GhostBatchNormalization", "recompute_batch_norm_statistics",
    "RecomputeBatchNormStatistics",
]
