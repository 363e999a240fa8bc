"""Optimizer wrappers: gradient accumulation that equals the large batch."""

from optimizers.accumulation import (
    AccumulatedNoiseScale,
    EpochAlignedAccumulation,
    GradientAccumulator,
    accumulator_of,
    inner_optimizer,
    micro_batches_until,
    wrapped_optimizers,
)

__all__ = ["GradientAccumulator", "EpochAlignedAccumulation", "AccumulatedNoiseScale", "accumulator_of",
           "inner_optimizer", "micro_batches_until", "wrapped_optimizers"]
