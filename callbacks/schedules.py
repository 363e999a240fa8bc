"""Batch-size and learning-rate schedules of the papers.

- `TrainingSchedule`: batch size, learning rate and momentum of every epoch
  and every update, counted in updates; `BatchSizeSchedule` (Smith et al.
  2018), the callback that applies it: multiply the batch size at
  milestones; past a cap, decay the learning rate instead.
- learning-rate rules: `step_decay`, `linear_scaling`, `sqrt_scaling`
  (Hoffer et al.), `base_learning_rate` (Masters & Luschi), `WarmupStepDecay`
  (a `keras.optimizers.schedules.LearningRateSchedule`, warm-up from lr/32).
- `regime_adaptation` (Hoffer et al.): stretch epochs and milestones by B_L/B_S.
"""

import dataclasses
import math
import warnings

import keras

from optimizers import accumulator_of, inner_optimizer, micro_batches_until


# -- learning-rate rules ---------------------------------------------------
def linear_scaling(lr, batch_size, base_batch_size):
    """lr * B / B_base (Goyal et al.; the fig-lr-scaling article)."""
    return lr * batch_size / base_batch_size


def sqrt_scaling(lr, batch_size, base_batch_size):
    """lr * sqrt(B / B_base): Hoffer et al.'s +LR rule."""
    return lr * math.sqrt(batch_size / base_batch_size)


def base_learning_rate(eta_tilde, batch_size):
    """Masters & Luschi write the rate per example: SGD lr = m * eta_tilde."""
    return batch_size * eta_tilde


def milestones_at(fractions, epochs):
    """Milestone epochs at fractions of training, e.g. (0.5, 0.75) of 82 -> (41, 61);
    never epoch 0 (a step before any training is no step)."""
    return tuple(max(1, int(round(f * epochs))) for f in fractions)


def step_decay(lr, milestones, factor=0.1):
    """A function epoch -> lr that multiplies `lr` by `factor` at each milestone."""
    milestones = tuple(sorted(milestones))

    def schedule(epoch):
        return lr * factor ** sum(epoch >= m for m in milestones)

    return schedule


def regime_adaptation(epochs, milestones, large_batch, small_batch):
    """Hoffer et al.'s +RA: epochs and milestones times B_L / B_S, so the large
    batch makes as many updates as the small one."""
    ratio = large_batch / small_batch
    return int(round(epochs * ratio)), tuple(int(round(m * ratio)) for m in milestones)


@keras.saving.register_keras_serializable(package="batchsize")
class WarmupStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Step decay in updates, after a linear warm-up from lr * start_factor.

    Masters & Luschi's warm-up: start at lr/32 and rise linearly to lr over
    the first 5% of training; then divide by 10 at the milestones.

    Args:
        learning_rate: the peak rate.
        boundaries: update counts at which the rate is multiplied by `factor`.
        warmup_steps: updates of linear warm-up (0 for none).
        factor: decay per boundary.
        start_factor: the warm-up starts at learning_rate * start_factor.

    Example:

    >>> lr = WarmupStepDecay(0.1, boundaries=[500, 750], warmup_steps=50)
    >>> keras.optimizers.SGD(lr)
    """

    def __init__(self, learning_rate, boundaries=(), warmup_steps=0, factor=0.1,
                 start_factor=1 / 32):
        self.learning_rate = float(learning_rate)
        self.boundaries = [int(b) for b in boundaries]
        self.warmup_steps = int(warmup_steps)
        self.factor = float(factor)
        self.start_factor = float(start_factor)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        decays = sum(keras.ops.cast(step >= b, "float32") for b in self.boundaries) \
            if self.boundaries else 0.0
        lr = self.learning_rate * keras.ops.power(self.factor, decays)
        if self.warmup_steps:
            progress = keras.ops.minimum(step / self.warmup_steps, 1.0)
            lr = lr * (self.start_factor + (1 - self.start_factor) * progress)
        return lr

    def get_config(self):
        return dict(learning_rate=self.learning_rate, boundaries=self.boundaries,
                    warmup_steps=self.warmup_steps, factor=self.factor,
                    start_factor=self.start_factor)


# -- the training schedule, in updates ---------------------------------------
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
            start = self.config["warmup_start_factor"]
            lr *= start + (1 - start) * update / self.warmup_updates
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
        """Smith et al.'s SGD noise scale g = lr N / (B (1 - momentum)) at `epoch`."""
        s = self[epoch]
        return s.learning_rate * self.num_examples / (s.batch_size * (1 - s.momentum))

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
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """A learning rate (a number or a schedule) ramped up linearly over the
    first `warmup_updates` updates, from `start_factor` of it to all of it.

    Args:
        learning_rate: a float or a `LearningRateSchedule`.
        warmup_updates: updates of warm-up.
        start_factor: the fraction of the rate at update 0.

    Example:

    >>> lr = LinearWarmup(keras.optimizers.schedules.PiecewiseConstantDecay([99], [0.1, 0.01]), 10)
    >>> keras.optimizers.SGD(lr)
    """

    def __init__(self, learning_rate, warmup_updates, start_factor=1 / 32):
        if isinstance(learning_rate, dict):
            learning_rate = keras.saving.deserialize_keras_object(learning_rate)
        self.learning_rate = learning_rate
        self.warmup_updates = int(warmup_updates)
        self.start_factor = float(start_factor)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        lr = self.learning_rate
        lr = lr(step) if callable(lr) else lr
        progress = keras.ops.minimum(step / max(self.warmup_updates, 1), 1.0)
        return lr * (self.start_factor + (1 - self.start_factor) * progress)

    def get_config(self):
        lr = self.learning_rate
        return dict(learning_rate=keras.saving.serialize_keras_object(lr) if callable(lr) else lr,
                    warmup_updates=self.warmup_updates, start_factor=self.start_factor)


@keras.saving.register_keras_serializable(package="batchsize")
class BatchSizeSchedule(keras.callbacks.Callback):
    """Increase the batch size instead of decaying the learning rate.

    Smith, Kindermans, Ying & Le (2018): at each milestone the target batch
    is multiplied by `factor`, capped at `max_batch_size` (past the cap the
    rate decays instead; see `TrainingSchedule`). So:

    - `max_batch_size=batch_size` is the classic decaying learning rate,
    - a cap of `batch_size * factor` is their "hybrid",
    - no cap is "increasing batch size"; their Fig 5 caps at 5120.

    The callback applies a `TrainingSchedule`; it computes nothing itself. At
    every epoch start it sets the accumulation steps and the accumulator's
    epoch layout (`GradientAccumulator`, needed for batches above
    `max_device_batch`), the momentum, and the learning rate where the
    optimizer's rate is a number (give the optimizer
    `schedule.learning_rate_schedule()` instead and the rate moves per
    update). At every epoch end it logs `batch_size`, `lr`, `momentum`,
    `updates` and `noise_scale`.

    A Keras `fit` cannot change its batch size mid-way: train one `fit` per
    phase of constant physical batch (`phases()`, or `reproduce.runner`,
    which does it). Within a phase the callback checks the step count.

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
        super().__init__()
        if isinstance(batch_size, TrainingSchedule):
            warnings.warn("BatchSizeSchedule(<a TrainingSchedule>) is deprecated and will be "
                          "removed; use BatchSizeSchedule.from_schedule(schedule).",
                          DeprecationWarning, stacklevel=2)
            self.schedule = batch_size
        else:
            self.schedule = TrainingSchedule(
                batch_size, learning_rate, num_examples, epochs=epochs,
                batch_milestones=milestones, batch_factor=factor, max_batch_size=max_batch_size,
                momentum=momentum, max_device_batch=max_device_batch,
                lr_milestones=lr_milestones, lr_decay=lr_decay, warmup=warmup,
                warmup_start_factor=warmup_start_factor)
        self.num_examples = self.schedule.num_examples

    @classmethod
    def from_schedule(cls, schedule):
        """The callback that applies `schedule` (a `TrainingSchedule`)."""
        return cls(**cls._arguments(schedule.get_config()))

    @staticmethod
    def _arguments(config):
        """A `TrainingSchedule` config in this constructor's argument names."""
        config = dict(config)
        config["milestones"] = config.pop("batch_milestones")
        config["factor"] = config.pop("batch_factor")
        return config

    # Readers of the schedule, epoch by epoch.
    def batch_size(self, epoch):
        return self.schedule[epoch].batch_size

    def learning_rate(self, epoch):
        return self.schedule[epoch].learning_rate

    def momentum_at(self, epoch):
        return self.schedule[epoch].momentum

    def split(self, epoch):
        """(physical batch, accumulation steps) at `epoch`."""
        return self.schedule[epoch].physical_batch, self.schedule[epoch].accumulation_steps

    def total_updates(self, epochs):
        return self.schedule.total_updates(epochs)

    def noise_scale(self, epoch):
        return self.schedule.noise_scale(epoch)

    def phases(self, epochs):
        return self.schedule.phases(epochs)

    # The callback.
    def on_epoch_begin(self, epoch, logs=None):
        optimizer, planned = self.model.optimizer, self.schedule[epoch]
        expected = math.ceil(self.num_examples / planned.physical_batch)
        if self.params.get("steps") not in (None, expected):
            raise ValueError(
                f"BatchSizeSchedule: epoch {epoch} needs physical batch {planned.physical_batch} "
                f"({expected} steps) but this fit runs {self.params['steps']} steps; "
                "train one fit per phase (BatchSizeSchedule.phases or reproduce.runner).")
        accumulator = accumulator_of(optimizer)
        if planned.accumulation_steps > 1 and accumulator is None:
            raise ValueError(
                f"BatchSizeSchedule: batch {planned.batch_size} exceeds max_device_batch="
                f"{self.schedule.config['max_device_batch']}; compile with "
                "GradientAccumulator(optimizer).")
        if accumulator is not None:
            if not accumulator.built:
                accumulator.build(self.model.trainable_variables)
            accumulator.set_accumulation_steps(planned.accumulation_steps)
            accumulator.set_epoch(self.num_examples, planned.physical_batch)
        inner = inner_optimizer(optimizer)
        if not _has_schedule(inner):
            optimizer.learning_rate = planned.learning_rate
        if hasattr(inner, "momentum") and inner.momentum != planned.momentum:
            # A Python float baked into the compiled step: phases() splits fits
            # where it changes, and the step must be traced again.
            inner.momentum = planned.momentum
            self.model.make_train_function(force=True)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        planned, lr = self.schedule[epoch], current_learning_rate(self.model.optimizer)
        logs.update(batch_size=planned.batch_size, lr=lr, momentum=planned.momentum,
                    updates=int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)),
                    noise_scale=lr * self.num_examples
                    / (planned.batch_size * (1 - planned.momentum)))

    def get_config(self):
        return self._arguments(self.schedule.get_config())

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="batchsize")
class NoiseScaleBatchSize(keras.callbacks.Callback):
    """Grows the batch, by accumulation, while the measured gradient noise
    scale says a larger one would still pay.

    McCandlish et al. (2018): below the noise scale B_simple a larger batch
    cuts the updates needed almost in proportion; above it, it mostly wastes
    examples. Every `every_updates` updates the callback reads the
    `GradientAccumulator`'s B_simple (`noise_scale_decay` must be set) and,
    while B_simple > `factor` x the current batch, multiplies the
    accumulation steps by `growth`, up to `max_batch_size`. The micro-batch
    and the learning rate stay as they are: as in Smith et al. (2018), the
    growing batch lowers the gradient noise instead of a decaying rate. It
    never shrinks the batch. At every epoch end it logs the `batch_size` in
    force.

    Args:
        factor: grow while B_simple > factor x batch (k; 1 grows up to the
            noise scale itself).
        growth: the multiplier of the accumulation steps at each growth.
        max_batch_size: the largest batch (None: no cap).
        every_updates: updates between looks at the noise scale.

    Attributes:
        history: [{"updates", "batch_size", "noise_scale_simple"}] at each growth.

    Example:

    >>> optimizer = GradientAccumulator(keras.optimizers.SGD(0.2), 2, noise_scale_decay=0.95)
    >>> model.compile(optimizer, loss)
    >>> model.fit(x, y, batch_size=16, epochs=5, callbacks=[
    ...     EpochAlignedAccumulation(len(x), 16), NoiseScaleBatchSize(max_batch_size=4096)])
    """

    def __init__(self, factor=1.0, growth=2, max_batch_size=None, every_updates=10):
        super().__init__()
        if not factor > 0 or int(growth) < 2 or int(every_updates) < 1:
            raise ValueError(
                f"NoiseScaleBatchSize needs factor > 0, growth >= 2 and every_updates >= 1; "
                f"got factor={factor!r}, growth={growth!r}, every_updates={every_updates!r}.")
        self.factor, self.growth = float(factor), int(growth)
        self.max_batch_size, self.every_updates = max_batch_size, int(every_updates)
        self.history = []
        self.accumulation_steps = None  # the grown value; None until training starts

    def get_config(self):
        return dict(factor=self.factor, growth=self.growth, max_batch_size=self.max_batch_size,
                    every_updates=self.every_updates)

    def _accumulator(self):
        accumulator = accumulator_of(self.model.optimizer)
        if accumulator is None or accumulator.noise_scale_decay is None:
            raise ValueError("NoiseScaleBatchSize needs the model's optimizer to be a "
                             "GradientAccumulator(..., noise_scale_decay=0.95) (any decay).")
        if not accumulator.built:
            accumulator.build(self.model.trainable_variables)
        return accumulator

    def _read(self, variable):
        return int(keras.ops.convert_to_numpy(variable))

    @property
    def batch_size(self):
        """The batch in force: micro-batch x accumulation steps (None before training)."""
        if self.model is None or self.accumulation_steps is None:
            return None
        return self._accumulator().batch_size

    def on_train_begin(self, logs=None):
        self._next = self.every_updates

    def on_epoch_begin(self, epoch, logs=None):
        # A BatchSizeSchedule before this callback sets the planned steps at
        # every epoch start: keep the grown ones.
        accumulator = self._accumulator()
        if self.accumulation_steps is None:
            self.accumulation_steps = self._read(accumulator.accumulation_steps)
        accumulator.set_accumulation_steps(self.accumulation_steps)

    def on_train_batch_end(self, batch, logs=None):
        accumulator = self._accumulator()
        updates = self._read(accumulator.iterations)
        if updates < self._next:
            return
        self._next = updates + self.every_updates
        noise = accumulator.noise_scale_simple
        micro = self._read(accumulator.micro_batch_size)
        grown = self.accumulation_steps
        while (math.isfinite(noise) and noise > self.factor * micro * grown
               and (self.max_batch_size is None or micro * grown * self.growth <= self.max_batch_size)):
            grown *= self.growth
        if grown != self.accumulation_steps:
            self.accumulation_steps = grown
            accumulator.set_accumulation_steps(grown)
            self.history.append(dict(updates=updates, batch_size=micro * grown,
                                     noise_scale_simple=noise))

    def steps_until_due(self):
        """Micro-batches until the next look (the fast engine calls back there)."""
        updates = self._read(self._accumulator().iterations)
        return micro_batches_until(self.model.optimizer, self._next - updates)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["batch_size"] = self.batch_size


def _has_schedule(optimizer):
    """Whether `optimizer`'s rate is a LearningRateSchedule (read from its public config)."""
    return isinstance(optimizer.get_config().get("learning_rate"), dict)


def current_learning_rate(optimizer):
    """The learning rate the next update will use, schedules included."""
    return float(keras.ops.convert_to_numpy(inner_optimizer(optimizer).learning_rate))
