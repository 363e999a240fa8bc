"""The training schedule, counted in updates, and the callbacks that apply it.

- `TrainingSchedule`: batch size, learning rate and momentum of every epoch
  and every update, computed once from a run's settings;
- `BatchSizeSchedule` (Smith et al. 2018), the callback that applies it: it
  sets the physical batch and the accumulation steps k of each epoch (k is
  held by the `GradientAccumulator`); multiply the batch at milestones; past a
  cap, decay the learning rate instead;
The papers' learning-rate rules are in `callbacks.learning_rates`; the
batch grown on the measured noise scale (`NoiseScaleBatchSize`) in
`callbacks.accumulation`.
"""

import dataclasses
import math
import warnings

import keras

from batchsize.callbacks.learning_rates import LinearWarmup, warmup_factor
from batchsize.optimizers import built_accumulator, inner_optimizer


def sgd_noise_scale(learning_rate, num_examples, batch_size, momentum=0.0):
    """Smith et al.'s SGD noise scale g = lr N / (B (1 - momentum))."""
    return learning_rate * num_examples / (batch_size * (1 - momentum))


def split_batch(batch_size, max_device_batch=None):
    """(physical batch, accumulation steps) with physical * steps == batch_size
    and physical <= max_device_batch: the fewest steps that divide evenly."""
    if not max_device_batch or batch_size <= max_device_batch:
        return batch_size, 1
    steps = math.ceil(batch_size / max_device_batch)
    while batch_size % steps:
        steps += 1
    return batch_size // steps, steps


@dataclasses.dataclass(frozen=True)
class ScheduledEpoch:
    """One epoch of a `TrainingSchedule`.

    Attributes:
        epoch: its index, from 0.
        batch_size: examples per update.
        physical_batch: examples per forward pass (a micro-batch when
            accumulating).
        accumulation_steps: micro-batches per update.
        updates: updates made in this epoch, ceil(N / batch_size) (the last
            update of an epoch takes what is left).
        first_update: updates made before this epoch; the epoch's updates are
            numbered first_update .. first_update + updates - 1, as the
            optimizer's `iterations` counts them.
        learning_rate: the epoch's rate before warm-up: the batch schedule's
            rate (decayed past the batch cap) times the step decays so far.
        momentum: the epoch's momentum.
    """

    epoch: int
    batch_size: int
    physical_batch: int
    accumulation_steps: int
    updates: int
    first_update: int
    learning_rate: float
    momentum: float

    @property
    def cumulative_updates(self):
        """Updates made by the end of this epoch."""
        return self.first_update + self.updates


class TrainingSchedule:
    """Batch size, learning rate and momentum of every epoch and every update.

    One value, computed once from the run's settings and the training-set
    size, that every part of training reads: the batch each epoch trains at
    (and how it is reached: physical batch x accumulation steps), how many
    updates each epoch makes, and the learning rate at each update. Schedules
    count *updates* (optimizer steps on the full batch): the learning-rate
    milestones and the warm-up, given in epochs and in a fraction of
    training, are placed at the update counts of those epochs, so they fall
    where they should however the batch grows or is accumulated.

    Batch size (Smith et al. 2018): the target batch is multiplied by
    `batch_factor` at each epoch of `batch_milestones`; the batch used is the
    target capped at `max_batch_size`, and past the cap the learning rate is
    divided by what the cap withholds (target / cap), which keeps the SGD
    noise scale g = lr N / (B (1 - momentum)) on the same schedule. Batches
    above `max_device_batch` are physical x accumulation steps.

    Learning rate: `learning_rate`, times the cap's decay, times `lr_decay`
    at each epoch of `lr_milestones`; during the first `warmup` fraction of
    all updates it rises linearly from `warmup_start_factor` of that (Goyal
    et al. 2017; Masters & Luschi use lr/32 over 5%).

    Args:
        batch_size: initial batch size B0.
        learning_rate: initial learning rate.
        num_examples: training-set size N.
        epochs: epochs of training (None: open-ended, then `warmup` must be 0).
        batch_milestones, batch_factor, max_batch_size, max_device_batch:
            the batch schedule, above.
        momentum: a number, or (epoch, momentum) pairs in order, the first at
            epoch 0 (Smith et al. raise the momentum).
        lr_milestones, lr_decay: the step decay, in epochs.
        warmup, warmup_start_factor: the linear warm-up.

    Example:

    >>> s = TrainingSchedule(1024, 0.1, 50000, epochs=10, lr_milestones=(1,),
    ...                      max_device_batch=128, warmup=0.05)
    >>> s[1].first_update, s[1].physical_batch, s[1].accumulation_steps
    (49, 128, 8)
    >>> s.warmup_updates
    24
    """

    def __init__(self, batch_size, learning_rate, num_examples, epochs=None,
                 batch_milestones=(), batch_factor=5, max_batch_size=None, momentum=0.0,
                 max_device_batch=None, lr_milestones=(), lr_decay=0.1, warmup=0.0,
                 warmup_start_factor=1 / 32):
        if batch_size < 1 or learning_rate <= 0 or num_examples < 1:
            raise ValueError(
                "TrainingSchedule needs batch_size >= 1, learning_rate > 0 and num_examples "
                f">= 1; got batch_size={batch_size}, learning_rate={learning_rate}, "
                f"num_examples={num_examples}.")
        if warmup and epochs is None:
            raise ValueError(f"warmup={warmup} is a fraction of training: give epochs too.")
        self.config = dict(
            batch_size=int(batch_size), learning_rate=float(learning_rate),
            num_examples=int(num_examples), epochs=epochs,
            batch_milestones=tuple(sorted(int(m) for m in batch_milestones)),
            batch_factor=batch_factor, max_batch_size=max_batch_size,
            momentum=momentum if isinstance(momentum, (int, float)) else tuple(
                (int(e), float(m)) for e, m in momentum),
            max_device_batch=max_device_batch,
            lr_milestones=tuple(sorted(int(m) for m in lr_milestones)), lr_decay=float(lr_decay),
            warmup=float(warmup), warmup_start_factor=float(warmup_start_factor))
        self.num_examples = self.config["num_examples"]
        self.epochs = epochs
        self._epochs = []
        self.warmup_updates = int(warmup * self.total_updates()) if warmup else 0

    def __getitem__(self, epoch):
        """The `ScheduledEpoch` at `epoch` (0-based)."""
        if epoch < 0 or (self.epochs is not None and epoch >= self.epochs):
            raise IndexError(f"epoch {epoch} is outside this schedule's {self.epochs} epochs.")
        while len(self._epochs) <= epoch:
            self._epochs.append(self._next_epoch())
        return self._epochs[epoch]

    def __iter__(self):
        if self.epochs is None:
            raise TypeError("an open-ended TrainingSchedule (epochs=None) has no end to iterate to.")
        return (self[e] for e in range(self.epochs))

    def _next_epoch(self):
        c, e = self.config, len(self._epochs)
        target = c["batch_size"] * c["batch_factor"] ** sum(e >= m for m in c["batch_milestones"])
        batch = int(min(target, c["max_batch_size"] or target))
        physical, steps = split_batch(batch, c["max_device_batch"])
        momentum = c["momentum"]
        if not isinstance(momentum, (int, float)):
            momentum = [m for start, m in momentum if start <= e][-1]
        lr = (c["learning_rate"] * batch / target
              * c["lr_decay"] ** sum(e >= m for m in c["lr_milestones"]))
        first = self._epochs[-1].cumulative_updates if self._epochs else 0
        return ScheduledEpoch(epoch=e, batch_size=batch, physical_batch=physical,
                              accumulation_steps=steps, updates=math.ceil(self.num_examples / batch),
                              first_update=first, learning_rate=lr, momentum=float(momentum))

    @property
    def accumulates(self):
        """Whether some epoch accumulates micro-batches (batch > physical batch)."""
        return any(epoch.accumulation_steps > 1 for epoch in self)

    def total_updates(self, epochs=None):
        """Updates in the first `epochs` epochs (default: all)."""
        epochs = self.epochs if epochs is None else epochs
        return self[epochs - 1].cumulative_updates if epochs else 0

    def epoch_of_update(self, update):
        """The epoch in which update number `update` (0-based) is made."""
        e = 0
        while self[e].cumulative_updates <= update:
            e += 1
        return e

    def learning_rate_at(self, update):
        """The learning rate of update number `update` (0-based), warm-up included."""
        lr = self[self.epoch_of_update(update)].learning_rate
        if update < self.warmup_updates:
            lr *= warmup_factor(update, self.warmup_updates, self.config["warmup_start_factor"])
        return lr

    def learning_rate_schedule(self):
        """The rate as a Keras `LearningRateSchedule` over the optimizer's
        `iterations` (updates): `learning_rate_at` for every update; a float
        where the rate never changes."""
        rates = [(s.first_update, s.learning_rate) for s in self]
        changes = [(u, lr) for i, (u, lr) in enumerate(rates) if i == 0 or lr != rates[i - 1][1]]
        if len(changes) == 1 and not self.warmup_updates:
            return changes[0][1]
        # PiecewiseConstantDecay moves to the next value for step > boundary,
        # and update u is made with iterations == u.
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
            [u - 1 for u, _ in changes[1:]], [lr for _, lr in changes]) if len(changes) > 1 \
            else changes[0][1]
        if self.warmup_updates:
            schedule = LinearWarmup(schedule, self.warmup_updates,
                                    self.config["warmup_start_factor"])
        return schedule

    def noise_scale(self, epoch):
        """Smith et al.'s SGD noise scale at `epoch` (`sgd_noise_scale`)."""
        s = self[epoch]
        return sgd_noise_scale(s.learning_rate, self.num_examples, s.batch_size, s.momentum)

    def phases(self, epochs=None):
        """[(first_epoch, end_epoch, physical_batch, momentum)]: runs of epochs
        one `fit` can train (physical batch and momentum constant)."""
        out = []
        for e in range(self.epochs if epochs is None else epochs):
            key = (self[e].physical_batch, self[e].momentum)
            if out and out[-1][2:] == key:
                out[-1] = (out[-1][0], e + 1, *key)
            else:
                out.append((e, e + 1, *key))
        return out

    def get_config(self):
        return dict(self.config)


@keras.saving.register_keras_serializable(package="batchsize")
class BatchSizeSchedule(keras.callbacks.Callback):
    """Increase the batch size instead of decaying the learning rate.

    Smith, Kindermans, Ying & Le (2018): at each milestone the target batch
    is multiplied by `factor`, capped at `max_batch_size` (past the cap the
    rate decays instead; see `TrainingSchedule`). So:

    - `max_batch_size=batch_size` is the classic decaying learning rate,
    - a cap of `batch_size * factor` is their "hybrid",
    - no cap is "increasing batch size"; their Fig 5 caps at 5120.

    The callback applies a `TrainingSchedule`. At every epoch start it sets
    the accumulation steps k (held by the model's `GradientAccumulator`, the
    one holder of k) and the accumulator's epoch layout (`GradientAccumulator`, needed
    for batches above `max_device_batch`), the momentum, and the learning rate
    where the optimizer's rate is a number (give the optimizer
    `schedule.learning_rate_schedule()` instead and the rate moves per
    update). The training loop asks it for each epoch's `physical_batch`. A
    callback that grows the batch on a measurement (`NoiseScaleBatchSize`)
    multiplies the accumulator's k, and the callback carries that growth over
    its own phase changes, so nothing depends on the order of the callbacks.
    At every epoch end it logs `batch_size` (in
    force), `lr`, `momentum`, `updates` and `noise_scale`.

    A Keras `fit` cannot change its batch size mid-way: train one `fit` per
    phase of constant physical batch (`TrainingSchedule.phases()`, or
    `reproduce.runs.train`, which does it). Within a phase the callback checks the
    step count.

    Args:
        batch_size: initial batch size B0.
        learning_rate: initial learning rate.
        num_examples: training-set size N.
        milestones: epochs at which the target batch is multiplied.
        factor: the multiplier (Smith et al.: 5).
        max_batch_size: the cap B_max (None: no cap).
        momentum: a number, or (epoch, momentum) pairs in order, the first at
            epoch 0.
        max_device_batch: the largest batch one forward pass may take.
        epochs, lr_milestones, lr_decay, warmup, warmup_start_factor: the
            rest of the `TrainingSchedule` (step decay and warm-up, in updates).

    Use `BatchSizeSchedule.from_schedule(schedule)` to apply a
    `TrainingSchedule` you already have. `get_config` holds the whole
    schedule, so a saved callback is the one that was trained with.

    Example:

    >>> schedule = BatchSizeSchedule(128, 0.1, 50000, milestones=(60, 120, 160))
    >>> [schedule.batch_size(e) for e in (0, 60, 120, 160)]
    [128, 640, 3200, 16000]
    """

    def __init__(self, batch_size, learning_rate=None, num_examples=None, milestones=(),
                 factor=5, max_batch_size=None, momentum=0.0, max_device_batch=None,
                 epochs=None, lr_milestones=(), lr_decay=0.1, warmup=0.0,
                 warmup_start_factor=1 / 32):
        if isinstance(batch_size, TrainingSchedule):
            warnings.warn("BatchSizeSchedule(<a TrainingSchedule>) is deprecated and will be "
                          "removed; use BatchSizeSchedule.from_schedule(schedule).",
                          DeprecationWarning, stacklevel=2)
            schedule = batch_size
        else:
            schedule = TrainingSchedule(
                batch_size, learning_rate, num_examples, epochs=epochs,
                batch_milestones=milestones, batch_factor=factor, max_batch_size=max_batch_size,
                momentum=momentum, max_device_batch=max_device_batch,
                lr_milestones=lr_milestones, lr_decay=lr_decay, warmup=warmup,
                warmup_start_factor=warmup_start_factor)
        self._apply(schedule)

    def _apply(self, schedule):
        super().__init__()
        self.schedule = schedule
        self.num_examples = schedule.num_examples
        self.epoch = None  # the epoch begun last (None before the first)
        self.epoch_learning_rate = None  # the rate of the epoch's first update

    def phases(self, epochs=None):
        """Deprecated (gone in the next release): `self.schedule.phases(epochs)`."""
        warnings.warn("BatchSizeSchedule.phases is deprecated; use "
                      "BatchSizeSchedule.schedule.phases()", DeprecationWarning, stacklevel=2)
        return self.schedule.phases(epochs)

    @classmethod
    def from_schedule(cls, schedule):
        """The callback that applies `schedule` (a `TrainingSchedule`): that
        very object, not a copy rebuilt from its settings."""
        callback = cls.__new__(cls)
        callback._apply(schedule)
        return callback

    @staticmethod
    def _arguments(config):
        """A `TrainingSchedule` config in this constructor's argument names."""
        config = dict(config)
        config["milestones"] = config.pop("batch_milestones")
        config["factor"] = config.pop("batch_factor")
        return config

    def get_config(self):
        return self._arguments(self.schedule.get_config())

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # What the schedule says, epoch by epoch.
    def batch_size(self, epoch):
        return self.schedule[epoch].batch_size

    def learning_rate(self, epoch):
        return self.schedule[epoch].learning_rate

    def physical_batch(self, epoch):
        """Examples per forward pass at `epoch`: what the training loop trains at."""
        return self.schedule[epoch].physical_batch

    # What is in force now.
    @property
    def accumulation_steps(self):
        """Micro-batches per update now. The model's `GradientAccumulator` holds
        it, the one holder of k: the plan's k at the epoch, times any growth a
        measurement asked for since (1 without an accumulator)."""
        accumulator = None if self.model is None else built_accumulator(self.model)
        if accumulator is None:
            return self.schedule[self.epoch or 0].accumulation_steps
        return int(keras.ops.convert_to_numpy(accumulator.accumulation_steps))

    @property
    def batch_size_in_force(self):
        return self.physical_batch(self.epoch or 0) * self.accumulation_steps

    def noise_scale_now(self):
        """Smith et al.'s noise scale at this epoch's planned batch and the rate
        the next update will use (logged at epoch ends)."""
        planned = self.schedule[self.epoch or 0]
        return sgd_noise_scale(current_learning_rate(self.model.optimizer), self.num_examples,
                               planned.batch_size, planned.momentum)

    def grow_accumulation(self, times):
        """Multiplies the accumulation steps by `times` from now on (the
        micro-batch and the rate stay): for a callback that decides the batch
        on a measurement. Takes effect at the accumulator's next window."""
        if int(times) < 1:
            raise ValueError(f"grow_accumulation(times={times!r}): expected an integer >= 1.")
        accumulator = built_accumulator(self.model)
        if accumulator is None:
            raise ValueError("BatchSizeSchedule.grow_accumulation needs the model's optimizer "
                             "to be a GradientAccumulator.")
        accumulator.set_accumulation_steps(self.accumulation_steps * int(times))

    # The callback.
    def on_epoch_begin(self, epoch, logs=None):
        previous = None if self.epoch is None else self.schedule[self.epoch]
        self.epoch = epoch
        optimizer, planned = self.model.optimizer, self.schedule[epoch]
        expected = math.ceil(self.num_examples / planned.physical_batch)
        if self.params.get("steps") not in (None, expected):
            raise ValueError(
                f"BatchSizeSchedule: epoch {epoch} needs physical batch {planned.physical_batch} "
                f"({expected} steps) but this fit runs {self.params['steps']} steps; "
                "train one fit per phase (TrainingSchedule.phases or reproduce.runs.train).")
        accumulator = built_accumulator(self.model)
        if planned.accumulation_steps > 1 and accumulator is None:
            raise ValueError(
                f"BatchSizeSchedule: batch {planned.batch_size} exceeds max_device_batch="
                f"{self.schedule.config['max_device_batch']}; compile with "
                "GradientAccumulator(optimizer).")
        if accumulator is not None:
            # The growth a measurement asked for (a whole multiple of the
            # previous epoch's planned k) carries over to this epoch's plan.
            growth = 1 if previous is None else (
                self.accumulation_steps // previous.accumulation_steps)
            accumulator.set_accumulation_steps(planned.accumulation_steps * growth)
            accumulator.set_epoch(self.num_examples, planned.physical_batch)
        inner = inner_optimizer(optimizer)
        if not _has_schedule(inner):
            optimizer.learning_rate = planned.learning_rate
        if hasattr(inner, "momentum") and inner.momentum != planned.momentum:
            # A Python float baked into the compiled step: phases() splits fits
            # where it changes, and the step must be traced again.
            inner.momentum = planned.momentum
            self.model.make_train_function(force=True)
        self.epoch_learning_rate = current_learning_rate(optimizer)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs.update(batch_size=self.batch_size_in_force,
                    lr=current_learning_rate(self.model.optimizer),
                    momentum=self.schedule[epoch].momentum,
                    updates=int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)),
                    noise_scale=self.noise_scale_now())


def _has_schedule(optimizer):
    """Whether `optimizer`'s rate is a LearningRateSchedule (read from its public config)."""
    return isinstance(optimizer.get_config().get("learning_rate"), dict)


def current_learning_rate(optimizer):
    """The learning rate the next update will use, schedules included."""
    return float(keras.ops.convert_to_numpy(inner_optimizer(optimizer).learning_rate))
