"""The one experiment runner every figure uses.

A `RunConfig` says everything about a run (data, model, optimizer, schedule,
seed); `train(config)` trains it with the fast engine (`reproduce.engine`:
data on the device, many steps per compiled call) or with `model.fit`
(`engine="fit"`), which give the same numbers, and returns one row per epoch; `Sweep` runs a list of configs into a results store with one JSON file
per run, named by the config's hash. A finished run is never trained twice,
so a sweep that was interrupted (Ctrl-C, kill -9) resumes with the runs it
lacks; files are written whole (temp file + rename) or not at all. A run whose
loss becomes NaN or infinite stops early and is stored as diverged.
"""

import dataclasses
import functools
import hashlib
import json
import math
import sys
import time
import traceback
from pathlib import Path

import keras
import numpy as np
import pandas as pd

import models
from callbacks.schedules import (BatchSizeSchedule, NoiseScaleBatchSize, TrainingSchedule,
                                 current_learning_rate)
from optimizers import AccumulatedNoiseScale, GradientAccumulator
from reproduce import datasets
from reproduce.cli import UserError
from reproduce.devices import data_parallel, use_cpu_devices
from reproduce.engine import ENGINES, FastEngine, fast_engine_available
from reproduce.pipeline import AUGMENTATIONS, channel_stats, epoch_arrays, standardize
from reproduce.store import RunStore

OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw")
# Fields added after runs were stored, left out of the key at these values so
# those runs keep their keys.
KEY_DEFAULTS = {"subset_seed": 12345, "devices": 1, "noise_scale_decay": None,
                "adaptive_batch": None}


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
    (`reproduce.devices`: MirroredStrategy or DataParallel, with `fit`).
    Engine: "fast" (`reproduce.engine.FastEngine`) or "fit" (`model.fit`);
    not part of the key, since both train the same run (a sweep resumes with
    runs the other engine stored).
    """

    dataset: str = "cifar10"
    model: str = "resnet8"
    norm: str = "batch"
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    batch_size: int = 128
    epochs: int = 10
    lr_milestones: tuple = ()
    lr_decay: float = 0.1
    warmup: float = 0.0
    batch_milestones: tuple = ()
    batch_factor: int = 5
    max_batch_size: int = None
    max_device_batch: int = None
    accumulation: int = 1
    noise_scale_decay: float = None  # measure B_simple from the windows (needs accumulation)
    adaptive_batch: float = None  # grow the batch while B_simple > this x batch
    weight_decay: float = 0.0
    clipnorm: float = None
    he_init: bool = True
    augment: object = False  # False, True (CIFAR pad-crop-flip) or "shift" (digits)
    train_size: int = None
    test_size: int = None
    subset_seed: int = 12345  # which train_size / test_size examples (every run of a sweep alike)
    seed: int = 0
    devices: int = 1  # data parallel over n devices (reproduce.devices); batch norm sees batch / n
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
            0 <= self.noise_scale_decay < 1 and (self.accumulation > 1 or (
                self.max_device_batch and self.batch_size > self.max_device_batch))),
             "noise_scale_decay", "None, or a decay in [0, 1) for a run that accumulates "
             "(accumulation > 1): the windows' micro-batches are its small batches")
        need(self.adaptive_batch is None or (
            self.adaptive_batch > 0 and self.noise_scale_decay is not None),
             "adaptive_batch", "None, or a factor > 0 with noise_scale_decay set (the batch "
             "grows on the measured noise scale)")
        need(self.weight_decay >= 0, "weight_decay", "a number >= 0")
        need(any(self.augment is a for a in AUGMENTATIONS) or self.augment == "shift",
             "augment", "False, True (pad-crop-flip) or 'shift'")
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
        for name, value in KEY_DEFAULTS.items():
            if fields[name] == value:
                del fields[name]
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

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


# -- data ------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def prepared_data(dataset, train_size=None, test_size=None, subset_seed=12345):
    """Standardized float32 arrays; subsets drawn once with `subset_seed`, so
    every run of a sweep sees the same examples."""
    (x, y), (x_test, y_test) = datasets.load(dataset)
    rng = np.random.default_rng(subset_seed)
    if train_size and train_size < len(x):
        keep = np.sort(rng.permutation(len(x))[:train_size])
        x, y = x[keep], y[keep]
    if test_size and test_size < len(x_test):
        keep = np.sort(rng.permutation(len(x_test))[:test_size])
        x_test, y_test = x_test[keep], y_test[keep]
    mean, std = channel_stats(x)
    return (standardize(x, mean, std), y.astype(np.int32),
            standardize(x_test, mean, std), y_test.astype(np.int32))


def data_of(config):
    """`prepared_data` for `config`: (x, y, x_test, y_test)."""
    return prepared_data(config.dataset, config.train_size, config.test_size, config.subset_seed)


def build_model(config, input_shape, num_classes):
    keras.utils.set_random_seed(config.seed)
    return models.build(config.model, input_shape, num_classes, norm=config.norm,
                        he_init=config.he_init, weight_decay=config.weight_decay)


def build_optimizer(config, schedule):
    """The optimizer, its rate `schedule.learning_rate_schedule()` (in updates),
    wrapped in a GradientAccumulator when batches are accumulated."""
    common = dict(learning_rate=schedule.learning_rate_schedule(), clipnorm=config.clipnorm)
    if config.optimizer in ("sgd", "nesterov"):
        inner = keras.optimizers.SGD(momentum=config.momentum,
                                     nesterov=config.optimizer == "nesterov", **common)
    elif config.optimizer == "adam":
        inner = keras.optimizers.Adam(**common)
    else:
        inner = keras.optimizers.AdamW(weight_decay=config.weight_decay, **common)
    accumulates = any(epoch.accumulation_steps > 1 for epoch in schedule)
    return GradientAccumulator(inner, noise_scale_decay=config.noise_scale_decay) \
        if accumulates else inner


# -- one run ---------------------------------------------------------------
class EpochRecorder(keras.callbacks.Callback):
    """Collects one row per epoch and stops a run whose loss is not finite.

    Divergence is checked at epoch ends only: a per-batch hook would make
    Keras copy the logs to the host after every step, which costs most at
    the small batches the sweeps care about.
    """

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule
        self.rows = []
        self.diverged = False
        self.started = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_lr = current_learning_rate(self.model.optimizer)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        loss = float(logs.get("loss", np.nan))
        self.diverged = self.diverged or not math.isfinite(loss)
        self.rows.append(dict(
            epoch=epoch + 1,
            updates=int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)),
            batch_size=int(logs.get("batch_size", self.schedule[epoch].batch_size)),
            lr=self.epoch_lr,
            momentum=self.schedule[epoch].momentum,
            loss=loss, accuracy=float(logs.get("accuracy", np.nan)),
            test_loss=float(logs.get("val_loss", np.nan)),
            test_accuracy=float(logs.get("val_accuracy", np.nan)),
            noise_scale=float(logs.get("noise_scale", np.nan)),
            noise_scale_simple=float(logs.get("noise_scale_simple", np.nan)),
            wall_time=time.perf_counter() - self.started))
        if self.diverged:
            self.model.stop_training = True


def train(config, verbose=0, callbacks=(), model=None, return_model=False, data=None,
          log=sys.stdout):
    """Trains one run; returns {"status", "rows", "wall_time"} (and the model).

    `data`, if given, is (x, y, x_test, y_test), already standardized, in
    place of `prepared_data(config.dataset, ...)` (e.g. the Kaggle CSVs).

    Both engines train each epoch on the batches of its `pipeline.EpochPlan`
    (order and augmentation drawn from (seed, epoch)) at that epoch's
    physical batch size, with the same callbacks throughout. The fast engine
    applies the plan on the device; with engine="fit" the run trains one
    `fit` per epoch on the plan's arrays (`pipeline.epoch_arrays`).
    """
    x, y, x_test, y_test = data or data_of(config)
    num_classes = int(max(y.max(), y_test.max()) + 1)
    schedule = config.training_schedule(len(x))
    engine = config.engine
    if engine == "fast" and not fast_engine_available():
        print(f"the fast engine needs the JAX or TensorFlow backend, not "
              f"{keras.backend.backend()}; training with fit", file=log, flush=True)
        engine = "fit"
    if engine == "fast" and config.devices > 1:
        print(f"the fast engine runs on one device; training with fit on {config.devices} "
              "devices", file=log, flush=True)
        engine = "fit"
    use_cpu_devices(config.devices)
    with data_parallel(config.devices):
        model = model or build_model(config, x.shape[1:], num_classes)
        model.compile(
            optimizer=build_optimizer(config, schedule),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"])
        recorder = EpochRecorder(schedule)
        measured = [AccumulatedNoiseScale()] if config.noise_scale_decay is not None else []
        if config.adaptive_batch is not None:
            measured.append(NoiseScaleBatchSize(config.adaptive_batch,
                                                max_batch_size=config.max_batch_size))
        # The run's own callbacks see each call's updates before the batch grows.
        all_callbacks = [BatchSizeSchedule.from_schedule(schedule), *callbacks, *measured, recorder]
        started = time.perf_counter()
        with np.errstate(all="ignore"):
            if engine == "fast":
                FastEngine(model, x, y, log=log).fit(
                    config.epochs, lambda epoch: schedule[epoch].physical_batch,
                    seed=config.seed, augment=config.augment,
                    validation_data=(x_test, y_test), callbacks=all_callbacks, verbose=verbose)
            for epoch in range(config.epochs if engine == "fit" else 0):
                x_epoch, y_epoch = epoch_arrays(x, y, epoch, config.seed, augment=config.augment)
                model.fit(x_epoch, y_epoch, batch_size=schedule[epoch].physical_batch,
                          shuffle=False, epochs=epoch + 1, initial_epoch=epoch, verbose=verbose,
                          validation_data=(x_test, y_test), validation_batch_size=1000,
                          callbacks=all_callbacks)
                if recorder.diverged:
                    break
    result = dict(status="diverged" if recorder.diverged else "finished",
                  rows=recorder.rows, wall_time=time.perf_counter() - started)
    return (result, model) if return_model else result


# -- the results store and sweeps ------------------------------------------
def train_record(config, engine=None, verbose=0, callbacks=None, measure=None, log=sys.stdout):
    """Trains `config` and returns its store record: the `train` result, the
    config and its key, and `measure`'s measurements (see `Sweep`). A Ray
    worker runs this for a sweep on a cluster (`reproduce.cluster`)."""
    extra = callbacks(config) if callbacks else []
    chosen = config.replace(engine=engine) if engine else config
    result, model = train(chosen, verbose=verbose, callbacks=extra, return_model=True, log=log)
    if measure is not None:
        result["measures"] = measure(config, model, data_of(config), extra)
    return dict(config=dataclasses.asdict(config), key=config.key, **result)


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


class Sweep:
    """Runs configs into `store` (a folder), skipping those already there.

    Several sweeps may share a store (two terminals, machines sharing the
    folder): each run is claimed before it is trained (`reproduce.store`), a
    run another live sweep holds is waited for, and a stale claim (a dead
    owner) is taken over. With `ray`, every run is a Ray task
    (`reproduce.cluster`); the records come back to this store as the serial
    sweep writes them.

    Faults: a run that raises (here, or in a Ray task after Ray's own
    retries) is a `RunFailure`: its claim is released, nothing is stored, the
    other runs go on, and the sweep ends with the list of failed runs
    (`failures`; the figure command then exits 1). An exception that stops the
    sweep itself (Ctrl-C) releases every claim it holds and propagates.

    Args:
        store: folder of the results, one `<key>.json` per finished run.
        describe: config -> short label for the progress line.
        verbose: 1 shows Keras's progress bar.
        engine: "fast" or "fit" for every run (`RunConfig.engine`); None:
            each config's own.
        callbacks: optional `config -> list` of extra callbacks for that run
            (e.g. a `WeightDistance`).
        measure: optional `(config, trained model, data, callbacks) -> dict` of
            JSON-able measurements taken after training (sharpness, weight
            change, a callback's history...), stored with the run under
            "measures"; `data` is (x, y, x_test, y_test).
        ray: a Ray address ("local", "auto", "ray://host:10001"): train the
            runs as Ray tasks; None (default) trains them here, one by one.
        heartbeat, stale_after: seconds; see `reproduce.store.RunStore`.
        poll: seconds between looks at runs other sweeps are training.

    Attributes:
        failures: the `RunFailure`s of the last `run`.

    Example:

    >>> sweep = Sweep("results/small_batch")
    >>> table = sweep.run([RunConfig(batch_size=m) for m in (8, 64)])
    """

    def __init__(self, store, describe=None, verbose=0, log=sys.stdout, callbacks=None,
                 measure=None, engine=None, ray=None, heartbeat=30.0, stale_after=300.0,
                 poll=5.0):
        self.store = Path(store)
        self.records = RunStore(store, heartbeat=heartbeat, stale_after=stale_after)
        self.engine = engine
        self.callbacks, self.measure = callbacks, measure
        self.describe = describe or (lambda c: c.key)
        self.verbose = verbose
        self.log = log
        self.ray, self.poll = ray, poll
        self.failures = []

    def path(self, config):
        return self.records.path(config)

    def load(self, config):
        return self.records.load(config)

    def train_record(self, config, log=None):
        return train_record(config, self.engine, self.verbose, self.callbacks, self.measure,
                            log=log or self.log)

    def run(self, configs):
        """Trains what is missing; returns all stored runs' rows as one
        DataFrame (failed runs are in `failures`, not in the table)."""
        configs = list(dict.fromkeys(configs))
        todo = [c for c in configs if self.load(c) is None]
        done_before = len(configs) - len(todo)
        self.failures = []
        self._say(f"{len(configs)} runs: {done_before} already in {self.store}, "
                  f"{len(todo)} to train" + (f" on Ray ({self.ray})" if self.ray and todo else ""))
        if todo:
            if self.ray:
                from reproduce.cluster import RayRuns  # Ray only where asked for
                runs = RayRuns(self, self.ray)
            else:
                runs = LocalRuns(self)
            try:
                self._train(todo, runs)
            finally:
                runs.close()
        if self.failures:
            self._say(f"{len(self.failures)} of {len(todo)} runs failed (nothing stored for "
                      "them; rerun the same command to train them again):")
            for failure in self.failures:
                self._say(f"  {self.describe(failure.config)} [{failure.config.key}]: "
                          f"{failure.error}")
        return self.table(configs)

    def _train(self, todo, runs):
        """Claims each run, hands it to `runs` (here or Ray), saves what comes
        back; waits for runs that other sweeps hold until they are stored.
        Every claim this sweep holds is released, however it ends."""
        pending, claims, spent = list(todo), {}, []

        def save(finished):
            for config, record in finished:
                claim = claims.pop(config)
                try:
                    if isinstance(record, RunFailure):
                        self.failures.append(record)
                        outcome = f"FAILED: {record.error}"
                    else:
                        self.records.save(config, record)
                        spent.append(record["wall_time"])
                        last = record["rows"][-1] if record["rows"] else {}
                        outcome = (f"{record['status']}, test acc "
                                   f"{last.get('test_accuracy', float('nan')):.4f}, "
                                   f"{record['wall_time']:.1f}s")
                finally:
                    claim.release()
                done = len(spent) + len(self.failures)
                eta = np.mean(spent) * (len(todo) - done) / runs.parallel if spent else 0.0
                self._say(f"[{done}/{len(todo)}] {self.describe(config)}: {outcome}; "
                          f"ETA {_duration(eta)}")

        try:
            while pending or claims:
                waiting = []
                for config in pending:
                    if self.load(config) is not None:
                        continue  # another sweep stored it
                    claim = self.records.claim(config)
                    if claim is None:
                        waiting.append(config)
                    elif self.load(config) is not None:  # stored between the look and the claim
                        claim.release()
                    else:
                        claims[config] = claim
                        runs.submit(config)
                        save(runs.results(timeout=0))  # a serial run is stored at once
                if waiting and not claims:
                    self._say(f"{len(waiting)} runs are being trained by another sweep "
                              f"(claims in {self.store}); waiting")
                save(runs.results(timeout=self.poll if waiting or claims else 0))
                if waiting and not claims:
                    time.sleep(self.poll)
                pending = waiting
        finally:
            for claim in claims.values():
                claim.release()

    def table(self, configs):
        """One row per epoch of every stored run, with its config's fields.

        A field the rows record per epoch (batch_size, lr, momentum) keeps the
        recorded value; the configured initial one is `config_<field>`.
        """
        frames = []
        for config in configs:
            record = self.load(config)
            if record is None:
                continue
            rows = pd.DataFrame(record["rows"] or [{}])
            for field, value in record["config"].items():
                column = f"config_{field}" if field in rows else field
                rows[column] = [tuple(value) if isinstance(value, list) else value] * len(rows)
            rows["status"] = record["status"]
            rows["key"] = record["key"]
            rows["run_time"] = record["wall_time"]
            frames.append(rows)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def _say(self, text):
        print(text, file=self.log, flush=True)


class LocalRuns:
    """Trains each submitted run at once, in this process (the serial sweep).
    A run that raises becomes a `RunFailure` (its traceback on stderr), but
    for bad input (`UserError`: a missing dataset), which stops the sweep with
    its one-line message."""

    parallel = 1

    def __init__(self, sweep):
        self.sweep, self.done = sweep, []

    def submit(self, config):
        try:
            outcome = self.sweep.train_record(config)
        except UserError:
            raise  # bad input (a missing dataset, a bad value): one line, exit 2
        except Exception as error:  # a crashed run; KeyboardInterrupt stops the sweep
            traceback.print_exc(file=sys.stderr)
            outcome = RunFailure.of(config, error)
        self.done.append((config, outcome))

    def results(self, timeout):
        done, self.done = self.done, []
        return done

    def close(self):
        pass


def _duration(seconds):
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
