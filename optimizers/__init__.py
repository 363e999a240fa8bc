"""Optimizer wrappers: gradient accumulation that equals the large batch."""

from batchsize.optimizers.accumulation import (
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
        from batchsize.callbacks import accumulation

        return getattr(accumulation, name)
    raise AttributeError(f"module 'optimizers' has no attribute {name!r}")


# Last, so the old path gets the same objects as the new one.
import warnings as _warnings  # noqa: E402

if __name__ == "optimizers":  # the pre-package import path, from a checkout
    _warnings.warn("`import optimizers` is deprecated; use `import batchsize.optimizers` (pip install "
                   "the repository: `make setup` or `pip install .`)", DeprecationWarning,
                   stacklevel=2)
