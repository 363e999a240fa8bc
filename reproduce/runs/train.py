"""One run, trained: `train(config)` and the store record `train_record` makes
of it.

The run's `TrainingSchedule` is computed once (`RunConfig.training_schedule`)
and applied by one `BatchSizeSchedule`, the one writer of the batch: the
optimizer is built with epoch 0's accumulation steps, the training loop asks
the schedule for each epoch's physical batch, and adaptive growth (noise
scale) asks the schedule for more steps. So the order of the callbacks does
not matter. Both engines train each epoch on the batches of its
`pipeline.EpochPlan` (order and augmentation drawn from (seed, epoch)): the
fast engine (`reproduce.runs.engine`: data on the device, many steps per compiled
call) or one `model.fit` per epoch (`engine="fit"`), which give the same
numbers. A run whose loss becomes NaN or infinite stops early and is
recorded as diverged; a run that raises is a `RunFailure` to its sweep.
"""

import dataclasses
import math
import sys
import time

import keras
import numpy as np

from batchsize import models
from batchsize.callbacks.accumulation import NoiseScaleBatchSize
from batchsize.callbacks.measures import default_loss
from batchsize.callbacks.schedules import BatchSizeSchedule
from batchsize.optimizers import GradientAccumulator, accumulator_of
from reproduce.runs import settings
from reproduce.runs.datasets import data_of, validation_of
from reproduce.runs.devices import data_parallel, use_cpu_devices
from reproduce.runs.engine import FastEngine, fast_engine_available
from reproduce.runs.pipeline import epoch_arrays
from reproduce.runs.store import RunRecord, decode_correct, encode_correct  # noqa: F401 (old home)
from batchsize.models.batch_statistics import (RECOMPUTE_BATCHES, RECOMPUTE_EXAMPLES,
                                     RecomputeBatchNormStatistics, fixed_sample)


def build_model(config, input_shape, num_classes):
    keras.utils.set_random_seed(config.seed)
    return models.build(config.model, input_shape, num_classes, norm=config.norm,
                        he_init=config.he_init, weight_decay=config.weight_decay)


def build_optimizer(config, schedule):
    """The optimizer, its rate `schedule.learning_rate_schedule()` (in updates),
    wrapped in a GradientAccumulator with epoch 0's accumulation steps when
    some epoch accumulates."""
    common = dict(learning_rate=schedule.learning_rate_schedule(), clipnorm=config.clipnorm)
    if config.optimizer in ("sgd", "nesterov"):
        inner = keras.optimizers.SGD(momentum=config.momentum,
                                     nesterov=config.optimizer == "nesterov", **common)
    elif config.optimizer == "adam":
        inner = keras.optimizers.Adam(**common)
    else:
        inner = keras.optimizers.AdamW(weight_decay=config.weight_decay, **common)
    if not schedule.accumulates:
        return inner
    return GradientAccumulator(inner, schedule[0].accumulation_steps,
                               noise_scale_decay=config.noise_scale_decay)


def compile_model(model, optimizer=None):
    """Compiles with the suite's loss (mean cross-entropy of logits) and accuracy."""
    model.compile(optimizer=optimizer, loss=default_loss("sum_over_batch_size"),
                  metrics=["accuracy"])
    return model


class EpochRecorder(keras.callbacks.Callback):
    """Collects one row per epoch and stops a run whose loss is not finite.

    It reads the batch, rate and noise scale from the run's `BatchSizeSchedule`
    and its accumulator, not from other callbacks' logs, so its place in the
    callbacks list does not matter. Divergence is checked at epoch ends only:
    a per-batch hook would make Keras copy the logs to the host after every
    step, which costs most at the small batches the sweeps care about.
    """

    def __init__(self, batches):
        super().__init__()
        self.batches = batches
        self.rows = []
        self.diverged = False
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        loss = float(logs.get("loss", np.nan))
        self.diverged = self.diverged or not math.isfinite(loss)
        accumulator = accumulator_of(self.model.optimizer)
        measured = accumulator is not None and accumulator.noise_scale_decay is not None
        self.rows.append(dict(
            epoch=epoch + 1,
            updates=int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)),
            batch_size=self.batches.batch_size_in_force,
            lr=self.batches.epoch_learning_rate,
            momentum=self.batches.schedule[epoch].momentum,
            loss=loss, accuracy=float(logs.get("accuracy", np.nan)),
            test_loss=float(logs.get("val_loss", np.nan)),
            test_accuracy=float(logs.get("val_accuracy", np.nan)),
            validation_accuracy=float(logs.get("validation_accuracy", np.nan)),
            noise_scale=self.batches.noise_scale_now(),
            noise_scale_simple=accumulator.noise_scale_simple if measured else float("nan"),
            wall_time=time.perf_counter() - self.started))
        if self.diverged:
            self.model.stop_training = True


def _engine(config, log):
    """The engine the run trains with: the config's, or fit where the fast
    engine cannot (PyTorch, several devices), with a line saying so."""
    if config.engine == "fast" and not fast_engine_available():
        print(f"the fast engine needs the JAX or TensorFlow backend, not "
              f"{keras.backend.backend()}; training with fit", file=log, flush=True)
        return "fit"
    if config.engine == "fast" and config.devices > 1:
        print(f"the fast engine runs on one device; training with fit on {config.devices} "
              "devices", file=log, flush=True)
        return "fit"
    return config.engine


def train(config, verbose=0, callbacks=(), model=None, return_model=False, data=None,
          log=sys.stdout, curves=None):
    """Trains one run; returns {"status", "rows", "wall_time"} (and the model).

    `data`, if given, is (x, y, x_test, y_test), already standardized, in
    place of `datasets.data_of(config)` (e.g. the Kaggle CSVs). `callbacks`
    are the run's own (e.g. a `WeightDistance`). `curves`, a
    `tensorboard.SweepLogs`, writes the run's TensorBoard curves as it trains.
    """
    x, y, x_test, y_test = data or data_of(config)
    num_classes = int(max(y.max(), y_test.max()) + 1)
    schedule = config.training_schedule(len(x))
    batches = BatchSizeSchedule.from_schedule(schedule)
    engine = _engine(config, log)
    use_cpu_devices(config.devices)
    with data_parallel(config.devices):
        model = model or build_model(config, x.shape[1:], num_classes)
        compile_model(model, build_optimizer(config, schedule))
        recorder = EpochRecorder(batches)
        grow = [NoiseScaleBatchSize(config.adaptive_batch, max_batch_size=config.max_batch_size)
                ] if config.adaptive_batch else []
        # The curves last: they write the row the recorder has just made.
        board = [curves.callback(config, recorder, batches)] if curves else []
        evaluation = test_evaluation(config, batches, x, (x_test, y_test))
        validation_data = None if evaluation else (x_test, y_test)
        held_out = validation_of(config) if data is None else None
        first = config.first_evaluated_epoch
        evaluation += [HeldOutEvaluation(*held_out, first_evaluated_epoch=first)] if held_out else []
        # The test set is scored first, so the run's own callbacks see val_* in the logs.
        all_callbacks = [batches, *grow, *evaluation, *callbacks, recorder, *board]
        started = time.perf_counter()
        with np.errstate(all="ignore"):
            if engine == "fast":
                FastEngine(model, x, y, log=log).fit(
                    config.epochs, batches.physical_batch, seed=config.seed,
                    augment=config.augment, validation_data=validation_data,
                    first_evaluated_epoch=first, callbacks=all_callbacks, verbose=verbose)
            for epoch in range(config.epochs if engine == "fit" else 0):
                x_epoch, y_epoch = epoch_arrays(x, y, epoch, config.seed, augment=config.augment)
                model.fit(x_epoch, y_epoch, batch_size=batches.physical_batch(epoch),
                          shuffle=False, epochs=epoch + 1, initial_epoch=epoch, verbose=verbose,
                          validation_data=validation_data if epoch >= first else None,
                          validation_batch_size=1000,
                          callbacks=all_callbacks)
                if recorder.diverged:
                    break
        for curves_of_run in board:
            curves_of_run.close()
    result = dict(status="diverged" if recorder.diverged else "finished",
                  rows=recorder.rows, wall_time=time.perf_counter() - started,
                  test_correct=encode_correct(correct_on(model, x_test, y_test)))
    return (result, model) if return_model else result


class HeldOutEvaluation(keras.callbacks.Callback):
    """Scores the held-out training examples at every epoch end from
    `first_evaluated_epoch` on (after the test set, with the same batch norm
    statistics), as `validation_accuracy` and `validation_loss` in the
    epoch's logs."""

    def __init__(self, x, y, first_evaluated_epoch=0):
        super().__init__()
        self.x, self.y, self.first_evaluated_epoch = x, y, first_evaluated_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch < self.first_evaluated_epoch:
            return
        results = self.model.evaluate(self.x, self.y, batch_size=1000, verbose=0,
                                      return_dict=True)
        if logs is not None:
            logs.update({f"validation_{name}": float(v) for name, v in results.items()})


def test_evaluation(config, batches, x, test):
    """[the callback that scores the test set with recomputed batch norm
    statistics] where the run asks for them, else [] (the engines then score
    it with the moving averages). The statistics average over a fixed sample
    of the training images (unaugmented, the same for every run) in batches
    of the epoch's physical batch per device: what batch norm normalised with."""
    if config.eval_statistics != "recomputed" or not config.batch_statistics:
        return []
    largest = max(planned.physical_batch for planned in batches.schedule) // config.devices
    sample = fixed_sample(x, max(RECOMPUTE_EXAMPLES, largest))
    return [RecomputeBatchNormStatistics(
        sample, batch_size=lambda epoch: batches.physical_batch(epoch) // config.devices,
        num_batches=RECOMPUTE_BATCHES, validation_data=test,
        first_evaluated_epoch=config.first_evaluated_epoch)]


def correct_on(model, x, y, batch_size=1000):
    """Which examples the trained model classifies right (inference mode): what
    a paired comparison of two runs scored on the same test set needs."""
    logits = model.predict(x, batch_size=batch_size, verbose=0)
    with np.errstate(invalid="ignore"):
        return np.argmax(logits, axis=-1) == np.asarray(y).reshape(-1)


def train_record(config, engine=None, verbose=0, callbacks=None, measure=None, log=sys.stdout,
                 curves=None):
    """Trains `config` and returns its store record (`store.RunRecord`): the
    `train` result, the config and its key, and `measure`'s measurements
    (see `sweep.Sweep`). A
    Ray worker runs this for a sweep on a cluster (`reproduce.runs.cluster`)."""
    extra = callbacks(config) if callbacks else []
    chosen = config.replace(engine=engine) if engine else config
    result, model = train(chosen, verbose=verbose, callbacks=extra, return_model=True, log=log,
                          curves=curves)
    if measure is not None:
        result["measures"] = measure(config, model, data_of(config), extra)
    # The thread budget it ran with (not part of the key: it changes no result
    # beyond round-off).
    threads = settings.requested_threads() or settings.cores()
    return RunRecord.of(dict(config=dataclasses.asdict(config), key=config.key, threads=threads,
                             **result))


@dataclasses.dataclass(frozen=True)
class RunFailure:
    """A run that raised instead of finishing (a crash: a diverged run is a
    result and is stored). Nothing is stored for it, so a rerun of the sweep
    trains it again.

    Attributes:
        config: the run's `RunConfig`.
        error: the error's last line, e.g. "ValueError: ...".
    """

    config: object
    error: str

    @classmethod
    def of(cls, config, error):
        """From an exception; a Ray task's error (a remote traceback) gives its last line."""
        lines = str(error).strip().splitlines()
        if len(lines) > 1:
            return cls(config, lines[-1])
        return cls(config, f"{type(error).__name__}: {lines[0]}" if lines else
                   type(error).__name__)
