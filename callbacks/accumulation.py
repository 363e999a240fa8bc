"""Callbacks for the `GradientAccumulator`: how an epoch is cut
(`EpochAlignedAccumulation`), the noise scale it measures logged
(`AccumulatedNoiseScale`), and the batch grown on that measurement
(`NoiseScaleBatchSize`, McCandlish et al. 2018)."""

import math
import warnings

import keras
from keras import ops

from batchsize.optimizers.accumulation import built_accumulator, micro_batches_until
from batchsize.optimizers.arguments import micro_batch_argument


def measuring_accumulator(callback):
    """The callback's model's `GradientAccumulator`, which must measure the
    noise scale; else an error that says what to compile with."""
    accumulator = built_accumulator(callback.model)
    if accumulator is None or accumulator.noise_scale_decay is None:
        raise ValueError(f"{type(callback).__name__} needs the model's optimizer to be a "
                         "GradientAccumulator(..., noise_scale_decay=0.99) (any decay).")
    return accumulator


@keras.saving.register_keras_serializable(package="batchsize")
class EpochAlignedAccumulation(keras.callbacks.Callback):
    """Tells a `GradientAccumulator` how each epoch is cut into micro-batches.

    With it the short last micro-batch of an epoch is weighted by its size
    and the epoch's last window is flushed, so accumulated training equals
    native large-batch training epoch by epoch.

    Args:
        num_examples: training examples per epoch.
        micro_batch_size: the batch given to `fit` (an update takes the
            accumulator's `accumulation_steps` of them). `batch_size=` is its
            deprecated name.

    Example:

    >>> model.fit(x, y, batch_size=128,
    ...           callbacks=[EpochAlignedAccumulation(len(x), 128)])
    """

    def __init__(self, num_examples, micro_batch_size=None, *, batch_size=None):
        super().__init__()
        self.num_examples = int(num_examples)
        self.micro_batch_size = micro_batch_argument(micro_batch_size, batch_size,
                                                     "EpochAlignedAccumulation")

    def get_config(self):
        return {"num_examples": self.num_examples, "micro_batch_size": self.micro_batch_size}

    def on_epoch_begin(self, epoch, logs=None):
        accumulator = built_accumulator(self.model)
        if accumulator is not None:
            accumulator.set_epoch(self.num_examples, self.micro_batch_size)


class AccumulatedNoiseScale(keras.callbacks.Callback):
    """Logs the `GradientAccumulator`'s measured noise scale B_simple as
    `noise_scale_simple` at every epoch end (so `History` and `CSVLogger` record
    it; `GradientNoiseScale`'s name for the same quantity), and every
    `every_updates` updates into `history` if that is set.

    Args:
        every_updates: None, or record (updates, B_simple) every this many
            updates in `self.history`.

    Example:

    >>> opt = GradientAccumulator(keras.optimizers.SGD(0.1), 8, noise_scale_decay=0.99)
    >>> model.compile(opt, "sparse_categorical_crossentropy")
    >>> model.fit(x, y, batch_size=64, callbacks=[AccumulatedNoiseScale()])
    """

    def __init__(self, every_updates=None):
        super().__init__()
        self.every_updates = every_updates
        self.history = []

    def get_config(self):
        return {"every_updates": self.every_updates}

    def _accumulator(self):
        return measuring_accumulator(self)

    def on_train_begin(self, logs=None):
        self._accumulator()
        self._last = -1

    def on_train_batch_end(self, batch, logs=None):
        if not self.every_updates:
            return
        optimizer = self._accumulator()
        updates = int(ops.convert_to_numpy(optimizer.iterations))
        if updates and updates != self._last and updates % self.every_updates == 0:
            self._last = updates
            self.history.append({"updates": updates, "noise_scale_simple": optimizer.noise_scale_simple})

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["noise_scale_simple"] = self._accumulator().noise_scale_simple


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
    never shrinks the batch.

    It sets the accumulator's steps, the one holder of k (a
    `BatchSizeSchedule` carries the growth over its own phase changes), and
    logs the `batch_size` in force at every epoch end. It looks at the noise
    scale before each training call, so the callbacks that count the last
    call's updates (`UpdatesToTarget`) see the batch they were made at,
    whatever their order.

    Args:
        factor: grow while B_simple > factor x batch (k; 1 grows up to the
            noise scale itself).
        growth: the multiplier of the accumulation steps at each growth.
        max_batch_size: the largest batch (None: no cap).
        every_updates: updates between looks at the noise scale.
        schedule: deprecated and unused (the accumulator holds the steps).

    Attributes:
        history: [{"updates", "batch_size", "noise_scale_simple"}] at each growth.

    Example:

    >>> optimizer = GradientAccumulator(keras.optimizers.SGD(0.2), 2, noise_scale_decay=0.95)
    >>> model.compile(optimizer, loss)
    >>> model.fit(x, y, batch_size=16, epochs=5, callbacks=[
    ...     EpochAlignedAccumulation(len(x), 16), NoiseScaleBatchSize(max_batch_size=4096)])
    """

    def __init__(self, factor=1.0, growth=2, max_batch_size=None, every_updates=10,
                 schedule=None):
        super().__init__()
        if not factor > 0 or int(growth) < 2 or int(every_updates) < 1:
            raise ValueError(
                f"NoiseScaleBatchSize needs factor > 0, growth >= 2 and every_updates >= 1; "
                f"got factor={factor!r}, growth={growth!r}, every_updates={every_updates!r}.")
        self.factor, self.growth = float(factor), int(growth)
        self.max_batch_size, self.every_updates = max_batch_size, int(every_updates)
        if schedule is not None:
            warnings.warn("NoiseScaleBatchSize(schedule=...) is deprecated and unused: the "
                          "accumulator holds the accumulation steps", DeprecationWarning,
                          stacklevel=2)
        self.history = []
        self._next = None

    def get_config(self):
        return dict(factor=self.factor, growth=self.growth, max_batch_size=self.max_batch_size,
                    every_updates=self.every_updates)

    def _accumulator(self):
        return measuring_accumulator(self)

    def _read(self, variable):
        return int(keras.ops.convert_to_numpy(variable))

    @property
    def batch_size(self):
        """The batch in force: micro-batch x accumulation steps (None before training)."""
        return None if self.model is None else self._accumulator().batch_size

    def on_train_begin(self, logs=None):
        self._accumulator()
        if self._next is None:  # once: a run trained one fit per epoch calls this each epoch
            self._next = self.every_updates

    def on_train_batch_begin(self, batch, logs=None):
        accumulator = self._accumulator()
        updates = self._read(accumulator.iterations)
        if updates < self._next:
            return
        self._next = updates + self.every_updates
        noise = accumulator.noise_scale_simple
        micro = self._read(accumulator.micro_batch_size)
        steps = self._read(accumulator.accumulation_steps)
        times = 1
        while (math.isfinite(noise) and noise > self.factor * micro * steps * times
               and (self.max_batch_size is None
                    or micro * steps * times * self.growth <= self.max_batch_size)):
            times *= self.growth
        if times > 1:
            accumulator.set_accumulation_steps(steps * times)
            self.history.append(dict(updates=updates, batch_size=micro * steps * times,
                                     noise_scale_simple=noise))

    def steps_until_due(self):
        """Micro-batches until the next look (the fast engine calls back there)."""
        updates = self._read(self._accumulator().iterations)
        return micro_batches_until(self.model.optimizer, self._next - updates)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["batch_size"] = self.batch_size
