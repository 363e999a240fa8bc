"""Optimizer wrappers: gradient accumulation that equals the large batch."""

from optimizers.accumulation import (
    GradientAccumulator,
    accumulator_of,
    built_accumulator,
    inner_optimizer,
    micro_batches_until,
    wrapped_optimizers,
)

__all__ = ["GradientAccumulator", "accumulator_of", "built_accumulator", "inner_optimizer",
           "micro_batches_until", "wrapped_optimizers"]

# The accumulator's callbacks moved to `callbacks.accumulation`; the old import
# path still works. Lazy, because `callbacks` imports this package.
MOVED_TO_CALLBACKS = ("EpochAlignedAccumulation", "AccumulatedNoiseScale")


def __getattr__(name):
    if name in MOVED_TO_CALLBACKS:
        from callbacks import accumulation

        return getattr(accumulation, name)
    raise AttributeError(f"module 'optimizers' has no attribute {name!r}")
