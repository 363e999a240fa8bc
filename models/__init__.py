"""The papers' networks and the normalization layers they share."""

from models.batch_statistics import (RecomputeBatchNormStatistics,
                                     recompute_batch_norm_statistics)
from models.layers import GhostBatchNormalization, SubsampleAndPad, normalization, parse_norm
from models.zoo import MODELS, build

__all__ = ["recompute_batch_norm_statistics", "RecomputeBatchNormStatistics",
           "GhostBatchNormalization", "SubsampleAndPad", "normalization", "parse_norm",
           "MODELS", "build"]
