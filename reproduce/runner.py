"""The one experiment runner every figure uses, in three rooms:

- `reproduce.config`: `RunConfig`, a run's every setting and its key;
- `reproduce.train`: `train(config)`, one run with the fast engine or `fit`,
  and `train_record`, the store record made of it;
- `reproduce.sweep`: `Sweep`, a list of runs into the resumable store, here
  or on Ray (`reproduce.cluster`).

This module gathers their names, so `from reproduce.runner import RunConfig,
Sweep, train` works as it always has.
"""

from reproduce.config import KEY_DEFAULTS, OPTIMIZERS, ConfigError, RunConfig
from reproduce.datasets import data_of, prepared_data
from reproduce.sweep import LocalRuns, Sweep
from reproduce.train import (EpochRecorder, RunFailure, build_model, build_optimizer,
                             compile_model, train, train_record)

__all__ = ["KEY_DEFAULTS", "OPTIMIZERS", "ConfigError", "RunConfig", "data_of", "prepared_data",
           "LocalRuns", "Sweep", "EpochRecorder", "RunFailure", "build_model", "build_optimizer",
           "compile_model", "train", "train_record"]
