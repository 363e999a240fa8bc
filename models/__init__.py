"""The papers' networks and the normalization layers they share."""

from batchsize.models.batch_statistics import (RecomputeBatchNormStatistics,
                                     recompute_batch_norm_statistics)
from batchsize.models.layers import GhostBatchNormalization, SubsampleAndPad, normalization, parse_norm
from batchsize.models.zoo import MODELS, build

__all__ = ["recompute_batch_norm_statistics", "RecomputeBatchNormStatistics",
           "GhostBatchNormalization", "SubsampleAndPad", "normalization", "parse_norm",
           "MODELS", "build"]


# Last, so the old path gets the same objects as the new one.
import warnings as _warnings  # noqa: E402

if __name__ == "models":  # the pre-package import path, from a checkout
    _warnings.warn("`import models` is deprecated; use `import batchsize.models` (pip install "
                   "the repository: `make setup` or `pip install .`)", DeprecationWarning,
                   stacklevel=2)
