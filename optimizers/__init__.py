"""Optimizer wrappers: gradient accumulation that equals the large batch."""

from optimizers.accumulation import (
    EpochAlignedAccumulation,
    GradientAccumulator,
    accumulator_of,
    inner_optimizer,
    wrapped_optimizers,
)

__all__ = ["GradientAccumulator", "EpochAlignedAccumulation", "accumulator_of",
           "inner_optimizer", "wrapped_optimizers"]
