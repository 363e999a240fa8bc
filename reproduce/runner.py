"""Deprecated, for one release: the runner's names under their old import path.
Import them from their modules: `reproduce.runs.config` (RunConfig),
`reproduce.runs.train` (train, train_record), `reproduce.runs.sweep` (Sweep)."""

import warnings

from reproduce.runs.config import KEY_DEFAULTS, OPTIMIZERS, ConfigError, RunConfig
from reproduce.runs.datasets import data_of, prepared_data
from reproduce.runs.sweep import LocalRuns, Sweep
from reproduce.runs.train import (EpochRecorder, RunFailure, build_model, build_optimizer,
                                  compile_model, train, train_record)

__all__ = ["KEY_DEFAULTS", "OPTIMIZERS", "ConfigError", "RunConfig", "data_of", "prepared_data",
           "LocalRuns", "Sweep", "EpochRecorder", "RunFailure", "build_model", "build_optimizer",
           "compile_model", "train", "train_record"]

warnings.warn("`reproduce.runner` is deprecated; import RunConfig from reproduce.runs.config, "
              "train from reproduce.runs.train and Sweep from reproduce.runs.sweep",
              DeprecationWarning, stacklevel=2)
