"""A run's identity: `RunConfig`, every field of a training run, validated,
with a content hash (`key`) that names its record in the results store.

    RunConfig(dataset="mnist", model="f1", batch_size=64, lr=0.05).key
"""

import dataclasses
import hashlib
import json
import math

from batchsize import models
from batchsize.callbacks.schedules import TrainingSchedule
from reproduce.runs.cli import UserError
from reproduce.runs.engine import ENGINES
from reproduce.runs.pipeline import AUGMENTATIONS

OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw")
# Fields added after runs were stored, left out of the key at these values so
# those runs keep their keys.
KEY_DEFAULTS = {"subset_seed": 12345, "devices": 1, "noise_scale_decay": None,
                "adaptive_batch": None, "eval_statistics": "moving",
                "validation_size": None, "evaluated_epochs": None}
# How batch norm is evaluated: with statistics recomputed over training batches
# (`models.recompute_batch_norm_statistics`), or with Keras's moving averages.
EVAL_STATISTICS = ("recomputed", "moving")


# Fields that make a run a different program (another graph to trace, another
# callback), besides sizes: by their value, or by whether they are set at all.
# The dry run trains one run of each kind (`plan.combination` reads these marks).
VALUE, IS_SET = "value", "set"


def field(default, program):
    """A RunConfig field whose `program` kind (VALUE or IS_SET) the dry run reads."""
    return dataclasses.field(default=default, metadata={"program": program})


def program_shape(config):
    """What, besides sizes, makes `config` a different program: each marked
    field's value or whether it is set, and whether some epoch accumulates."""
    shape = []
    for f in dataclasses.fields(config):
        kind, value = f.metadata.get("program"), getattr(config, f.name)
        if kind == VALUE:
            shape.append((f.name, value))
        elif kind == IS_SET:
            shape.append((f.name, value not in (None, 0, 0.0, (), False)))
    return tuple(shape) + (("accumulates", config.accumulates),)


class ConfigError(UserError, ValueError):
    """A RunConfig field with a bad value; the message names the field and value."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One training run. Every field is part of the run's identity (its key).

    Learning rate: `lr` is the rate of the mean-reduced loss; it is multiplied
    by `lr_decay` at each epoch of `lr_milestones`, after a linear warm-up
    from lr/32 over the first `warmup` fraction of updates. Every schedule
    counts updates (`callbacks.TrainingSchedule`, from `training_schedule`).
    Batch size: `batch_size`, multiplied by `batch_factor` at each epoch of
    `batch_milestones` and capped at `max_batch_size` (past the cap the rate
    decays instead: `callbacks.BatchSizeSchedule`). Batches above
    `max_device_batch` are accumulated (`optimizers.GradientAccumulator`);
    `accumulation` > 1 forces k micro-batches of batch_size / k.
    Gradient noise scale: with `noise_scale_decay` (an accumulated run), the
    accumulator measures B_simple from its windows (McCandlish et al. 2018),
    recorded per epoch as `noise_scale_simple`; with `adaptive_batch` = k too,
    the batch grows by accumulation while B_simple > k x batch, up to
    `max_batch_size` (`callbacks.NoiseScaleBatchSize`).
    Devices: `devices` > 1 splits every physical batch across n devices
    (`reproduce.runs.devices`: MirroredStrategy or DataParallel, with `fit`).
    Evaluation: `eval_statistics` "recomputed" (the default) scores every
    epoch with batch norm statistics recomputed over training batches of the
    physical batch (`models.recompute_batch_norm_statistics`); "moving" with
    Keras's moving averages (momentum 0.99: stale for the first hundreds of
    updates). A model without batch norm is the same run either way (same key).
    `evaluated_epochs` = n scores the test and held-out sets at the last n
    epochs only (None, or n >= epochs: every epoch; so a shortened run, e.g.
    `--set epochs=1` or a dry run, keeps it), for a figure that reads nothing earlier:
    the training is the same, the earlier rows have no test accuracy.
    Validation: `validation_size` examples of the training subset are held out
    (not trained on) and scored every epoch as `validation_accuracy`: what a
    sweep chooses its best cell on, so the test set only judges.
    Engine: "fast" (`reproduce.runs.engine.FastEngine`) or "fit" (`model.fit`);
    not part of the key, since both train the same run (a sweep resumes with
    runs the other engine stored).
    """

    dataset: str = field("cifar10", VALUE)
    model: str = field("resnet8", VALUE)
    norm: str = field("batch", VALUE)
    optimizer: str = field("sgd", VALUE)
    lr: float = 0.1
    momentum: float = field(0.0, IS_SET)
    batch_size: int = 128
    epochs: int = 10
    lr_milestones: tuple = field((), IS_SET)
    lr_decay: float = 0.1
    warmup: float = field(0.0, IS_SET)
    batch_milestones: tuple = field((), IS_SET)
    batch_factor: int = 5
    max_batch_size: int = None
    max_device_batch: int = None
    accumulation: int = 1
    noise_scale_decay: float = field(None, IS_SET)  # measure B_simple from the windows (needs accumulation)
    adaptive_batch: float = field(None, IS_SET)  # grow the batch while B_simple > this x batch
    weight_decay: float = field(0.0, IS_SET)
    clipnorm: float = field(None, IS_SET)
    he_init: bool = True
    augment: object = field(False, VALUE)  # False, True (CIFAR pad-crop-flip) or "shift" (digits)
    train_size: int = None
    test_size: int = None
    validation_size: int = field(None, IS_SET)  # training examples held out to choose on (datasets.validation_of)
    subset_seed: int = 12345  # which train_size / test_size examples (every run of a sweep alike)
    seed: int = 0
    devices: int = field(1, VALUE)  # data parallel over n devices (reproduce.runs.devices); batch norm sees batch / n
    eval_statistics: str = field("recomputed", VALUE)  # or "moving" (batch norm's moving averages)
    evaluated_epochs: int = None  # score the test and held-out sets at the last n epochs only
    engine: str = "fast"

    def __post_init__(self):
        for name in ("lr_milestones", "batch_milestones"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self.validate()

    def validate(self):
        """Raises ConfigError naming the bad field, its value and what is expected."""
        def need(ok, field, expected):
            if not ok:
                raise ConfigError(f"{field}={getattr(self, field)!r}: expected {expected}.")

        need(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", "an integer >= 1")
        need(self.lr > 0 and math.isfinite(self.lr), "lr", "a number > 0")
        need(isinstance(self.epochs, int) and self.epochs >= 1, "epochs", "an integer >= 1")
        need(self.optimizer in OPTIMIZERS, "optimizer", f"one of {', '.join(OPTIMIZERS)}")
        need(self.model in models.MODELS, "model", f"one of {', '.join(sorted(models.MODELS))}")
        need(0 <= self.momentum < 1, "momentum", "0 <= momentum < 1")
        need(0 <= self.warmup < 1, "warmup", "a fraction in [0, 1)")
        need(self.accumulation >= 1 and self.batch_size % self.accumulation == 0,
             "accumulation", f"an integer >= 1 that divides batch_size={self.batch_size}")
        need(self.noise_scale_decay is None or (
            0 <= self.noise_scale_decay < 1 and self.accumulates),
             "noise_scale_decay", "None, or a decay in [0, 1) for a run that accumulates "
             "(accumulation > 1): the windows' micro-batches are its small batches")
        need(self.adaptive_batch is None or (
            self.adaptive_batch > 0 and self.noise_scale_decay is not None),
             "adaptive_batch", "None, or a factor > 0 with noise_scale_decay set (the batch "
             "grows on the measured noise scale)")
        need(self.weight_decay >= 0, "weight_decay", "a number >= 0")
        need(any(self.augment is a for a in AUGMENTATIONS) or self.augment == "shift",
             "augment", "False, True (pad-crop-flip) or 'shift'")
        need(self.validation_size is None or (
            isinstance(self.validation_size, int) and 1 <= self.validation_size
            < (self.train_size or math.inf)), "validation_size",
             f"None, or an integer >= 1 below train_size={self.train_size}")
        need(self.eval_statistics in EVAL_STATISTICS, "eval_statistics",
             f"one of {', '.join(EVAL_STATISTICS)}")
        need(self.evaluated_epochs is None or (
            isinstance(self.evaluated_epochs, int) and self.evaluated_epochs >= 1),
             "evaluated_epochs", "None, or an integer >= 1")
        need(self.engine in ENGINES, "engine", f"one of {', '.join(ENGINES)}")
        need(isinstance(self.devices, int) and self.devices >= 1
             and (self.batch_size // self.accumulation) % self.devices == 0, "devices",
             f"an integer >= 1 that divides the physical batch "
             f"{self.batch_size // self.accumulation}")
        try:
            models.parse_norm(self.norm)
        except ValueError as error:
            raise ConfigError(str(error)) from None

    @property
    def key(self):
        fields = dataclasses.asdict(self)
        del fields["engine"]
        if not self.batch_statistics:
            fields["eval_statistics"] = KEY_DEFAULTS["eval_statistics"]
        for name, value in KEY_DEFAULTS.items():
            if fields[name] == value:
                del fields[name]
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def first_evaluated_epoch(self):
        """The first epoch (0-based) whose end scores the test and held-out sets."""
        return 0 if self.evaluated_epochs is None else max(0, self.epochs - self.evaluated_epochs)

    @property
    def batch_statistics(self):
        """Whether the run's normalization keeps batch statistics (batch or ghost)."""
        return models.parse_norm(self.norm)[0] in ("batch", "ghost")

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    @property
    def accumulates(self):
        """Whether some epoch of the run accumulates micro-batches (its batch
        exceeds the physical batch). Batch sizes do not depend on the number
        of examples, so one example stands in for the data."""
        return self.training_schedule(1).accumulates

    def training_schedule(self, num_examples):
        """The run's `TrainingSchedule` on `num_examples` training examples:
        batch, physical batch, accumulation, updates, learning rate at every
        update and momentum, per epoch. Everything that trains the run reads it."""
        device_batch = self.max_device_batch
        if self.accumulation > 1:
            device_batch = self.batch_size // self.accumulation
        return TrainingSchedule(
            self.batch_size, self.lr, num_examples, epochs=self.epochs,
            batch_milestones=self.batch_milestones, batch_factor=self.batch_factor,
            max_batch_size=self.max_batch_size, momentum=self.momentum,
            max_device_batch=device_batch, lr_milestones=self.lr_milestones,
            lr_decay=self.lr_decay, warmup=self.warmup)
