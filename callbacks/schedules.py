"""Batch-size and learning-rate schedules of the papers.

- `BatchSizeSchedule` (Smith et al. 2018): multiply the batch size at
  milestones; past a cap, decay the learning rate instead.
- learning-rate rules: `step_decay`, `linear_scaling`, `sqrt_scaling`
  (Hoffer et al.), `base_learning_rate` (Masters & Luschi), `WarmupStepDecay`
  (a `keras.optimizers.schedules.LearningRateSchedule`, warm-up from lr/32).
- `regime_adaptation` (Hoffer et al.): stretch epochs and milestones by B_L/B_S.
"""

import math

import keras

from optimizers import accumulator_of


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


# -- batch-size schedule ---------------------------------------------------
def split_batch(batch_size, max_device_batch=None):
    """(physical batch, accumulation steps) with physical * steps == batch_size
    and physical <= max_device_batch: the fewest steps that divide evenly."""
    if not max_device_batch or batch_size <= max_device_batch:
        return batch_size, 1
    steps = math.ceil(batch_size / max_device_batch)
    while batch_size % steps:
        steps += 1
    return batch_size // steps, steps


@keras.saving.register_keras_serializable(package="batchsize")
class BatchSizeSchedule(keras.callbacks.Callback):
    """Increase the batch size instead of decaying the learning rate.

    Smith, Kindermans, Ying & Le (2018). At each milestone the *target* batch
    size is multiplied by `factor`. The batch size used is the target capped
    at `max_batch_size`; past the cap the learning rate is divided by what
    the cap withholds (target / cap), which keeps the SGD noise scale
    g = lr * N / (B * (1 - momentum)) on the same schedule. So:

    - `max_batch_size=batch_size` is the classic decaying learning rate,
    - a cap of `batch_size * factor` is their "hybrid",
    - no cap is "increasing batch size"; their Fig 5 caps at 5120.

    A batch larger than `max_device_batch` is reached as physical batch x
    accumulation steps through `GradientAccumulator`. The callback sets, at
    every epoch start, the learning rate, the momentum (where the optimizer
    has one), the accumulation steps and the accumulator's epoch layout, and
    at every epoch end logs `batch_size`, `lr`, `momentum`, `updates` and
    `noise_scale`.

    A Keras `fit` cannot change its batch size mid-way: train one `fit` per
    phase of constant physical batch (`phases()`, or `reproduce.runner`,
    which does it). Within a phase the callback checks the step count.

    Args:
        batch_size: initial batch size B0.
        learning_rate: initial learning rate.
        num_examples: training-set size N (for steps and the noise scale).
        milestones: epochs at which the target batch is multiplied.
        factor: the multiplier (Smith et al.: 5).
        max_batch_size: the cap B_max (None: no cap).
        momentum: a number, or a tuple of (epoch, momentum) pairs, in order,
            the first at epoch 0 (Smith et al. raise momentum).
        max_device_batch: the largest batch one forward pass may take.

    Example:

    >>> schedule = BatchSizeSchedule(128, 0.1, 50000, milestones=(60, 120, 160))
    >>> [schedule.batch_size(e) for e in (0, 60, 120, 160)]
    [128, 640, 3200, 16000]
    """

    def __init__(self, batch_size, learning_rate, num_examples, milestones=(), factor=5,
                 max_batch_size=None, momentum=0.0, max_device_batch=None):
        super().__init__()
        if batch_size < 1 or learning_rate <= 0 or num_examples < 1:
            raise ValueError(
                "BatchSizeSchedule needs batch_size >= 1, learning_rate > 0 and "
                f"num_examples >= 1; got {batch_size}, {learning_rate}, {num_examples}.")
        self.initial_batch_size = int(batch_size)
        self.initial_learning_rate = float(learning_rate)
        self.num_examples = int(num_examples)
        self.milestones = tuple(sorted(int(m) for m in milestones))
        self.factor = factor
        self.max_batch_size = max_batch_size
        self.momentum = momentum if isinstance(momentum, (int, float)) else tuple(
            (int(e), float(m)) for e, m in momentum)
        self.max_device_batch = max_device_batch

    # The schedule, epoch by epoch.
    def _target(self, epoch):
        return self.initial_batch_size * self.factor ** sum(epoch >= m for m in self.milestones)

    def batch_size(self, epoch):
        target = self._target(epoch)
        return int(min(target, self.max_batch_size or target))

    def learning_rate(self, epoch):
        return self.initial_learning_rate * self.batch_size(epoch) / self._target(epoch)

    def momentum_at(self, epoch):
        if isinstance(self.momentum, (int, float)):
            return float(self.momentum)
        return [m for e, m in self.momentum if e <= epoch][-1]

    def split(self, epoch):
        """(physical batch, accumulation steps) at `epoch`."""
        return split_batch(self.batch_size(epoch), self.max_device_batch)

    def updates_per_epoch(self, epoch):
        return math.ceil(self.num_examples / self.batch_size(epoch))

    def total_updates(self, epochs):
        return sum(self.updates_per_epoch(e) for e in range(epochs))

    def noise_scale(self, epoch):
        """g = lr * N / (B * (1 - momentum))."""
        return self.learning_rate(epoch) * self.num_examples / (
            self.batch_size(epoch) * (1 - self.momentum_at(epoch)))

    def phases(self, epochs):
        """[(first_epoch, end_epoch, physical_batch, momentum)]: runs of epochs
        one `fit` can train (physical batch and momentum constant)."""
        out = []
        for e in range(epochs):
            key = (self.split(e)[0], self.momentum_at(e))
            if out and out[-1][2:] == key:
                out[-1] = (out[-1][0], e + 1, *key)
            else:
                out.append((e, e + 1, *key))
        return out

    # The callback.
    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        physical, steps = self.split(epoch)
        expected = math.ceil(self.num_examples / physical)
        if self.params.get("steps") not in (None, expected):
            raise ValueError(
                f"BatchSizeSchedule: epoch {epoch} needs physical batch {physical} "
                f"({expected} steps) but this fit runs {self.params['steps']} steps; "
                "train one fit per phase (BatchSizeSchedule.phases or reproduce.runner).")
        accumulator = accumulator_of(optimizer)
        if steps > 1 and accumulator is None:
            raise ValueError(
                f"BatchSizeSchedule: batch {self.batch_size(epoch)} exceeds max_device_batch="
                f"{self.max_device_batch}; compile with GradientAccumulator(optimizer).")
        if accumulator is not None:
            if not accumulator.built:
                accumulator.build(self.model.trainable_variables)
            accumulator.set_steps(steps)
            accumulator.set_epoch(self.num_examples, physical)
        inner = inner_optimizer(optimizer)
        if not isinstance(inner._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            optimizer.learning_rate = self.learning_rate(epoch)
        if hasattr(inner, "momentum") and inner.momentum != self.momentum_at(epoch):
            # A Python float baked into the compiled step: phases() splits fits
            # where it changes, and the step must be traced again.
            inner.momentum = self.momentum_at(epoch)
            self.model.make_train_function(force=True)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        lr = current_learning_rate(self.model.optimizer)
        momentum = self.momentum_at(epoch)
        logs.update(batch_size=self.batch_size(epoch), lr=lr, momentum=momentum,
                    updates=int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)),
                    noise_scale=lr * self.num_examples / (self.batch_size(epoch) * (1 - momentum)))

    def get_config(self):
        return dict(batch_size=self.initial_batch_size, learning_rate=self.initial_learning_rate,
                    num_examples=self.num_examples, milestones=self.milestones,
                    factor=self.factor, max_batch_size=self.max_batch_size,
                    momentum=self.momentum, max_device_batch=self.max_device_batch)


def current_learning_rate(optimizer):
    """The learning rate the next update will use, schedules included."""
    inner = inner_optimizer(optimizer)
    lr = inner._learning_rate
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        lr = lr(inner.iterations)
    return float(keras.ops.convert_to_numpy(lr))


def inner_optimizer(optimizer):
    """The optimizer that does the arithmetic, below any wrappers."""
    while hasattr(optimizer, "inner_optimizer"):
        optimizer = optimizer.inner_optimizer
    return optimizer
