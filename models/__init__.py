"""The papers' networks and the normalization layers they share."""

from models.layers import GhostBatchNormalization, SubsampleAndPad, normalization, parse_norm
from models.zoo import MODELS, build

__all__ = ["GhostBatchNormalization", "SubsampleAndPad", "normalization", "parse_norm",
           "MODELS", "build"]
