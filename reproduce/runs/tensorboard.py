"""TensorBoard curves for every run of a sweep, written while it trains.

These papers' curves are drawn against updates and against examples, not
against epochs only: Smith's "same loss per epoch, far fewer updates",
Hoffer's |w - w0| against log t, Shallue's updates to a target. So every
scalar of a run is written with the step axis in **updates** (optimizer steps
on the large batch, never micro-batches), and the loss and accuracy curves
are written twice more, against examples seen and against epochs:

    train/loss, train/accuracy, test/loss, test/accuracy      step = updates
    schedule/learning_rate, momentum, batch_size, physical_batch,
        accumulation_steps
    measures/weight_distance (where the figure measures it),
        measures/noise_scale_simple (where the run measures B_simple)
    progress/examples, progress/epochs                         step = updates
    by_examples/<train|test>_<loss|accuracy>                   step = examples seen
    by_epochs/<train|test>_<loss|accuracy>                     step = epochs done

TensorBoard's scalar dashboard groups the tags by their prefix, so the
`by_epochs` section shows a sweep's loss against epochs and the `train`
section the same runs against updates. Every run also writes its config's
grid fields as hparams, so the HParams tab compares a sweep's runs (batch
against rate against final test accuracy).

When. At every epoch end the values are the run's record row (what the
store keeps), and within an epoch about once per compiled call of the fast
engine (every `BATCHES_PER_CALL` micro-batches, rounded to whole updates:
every 100 / k updates at k micro-batches an update), the epoch's running
train loss and accuracy (Keras's metrics so far) with the rate and batch in
force. The fast engine stops its compiled call where a write is due
(`steps_until_due`, counted in micro-batches from the optimizer's own
accumulation state) and the `fit` engine counts its batches to the same
points, so both engines write the same values at the same updates, and no
write forces a device sync per micro-batch: one small read per write.

Where. `results/<figure>/tensorboard/<run label>-<key prefix>/`, a run's
readable label from the figure's progress lines. A run trained again (a
sweep killed mid-run) starts its folder afresh, so nothing is logged twice;
a run served from the store writes nothing. Ray workers write into the same
results folder (on a cluster the README already asks for it to be shared).
`TENSORBOARD=0` turns the logging off. `make tensorboard [FIGURE=name]`
(`python -m reproduce.runs.tensorboard [--figure name]`) serves one figure's runs,
or every figure's. The writer is TensorBoard's own
event-file writer, not `tf.summary`, so it runs on every Keras backend
without starting TensorFlow.
"""

import dataclasses
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path

import keras

from batchsize.callbacks.schedules import current_learning_rate
from reproduce import registry
from reproduce.runs import cli, settings
from reproduce.runs.cli import UserError
from reproduce.runs.engine import BATCHES_PER_CALL

# A run writes its curves here inside its figure's results folder.
FOLDER = "tensorboard"
# The loss and accuracy curves, also written against examples and epochs.
CURVES = ("train/loss", "train/accuracy", "test/loss", "test/accuracy")
# What the HParams tab lists as each run's results (the last value of each).
RESULT_METRICS = ("by_epochs/test_accuracy", "by_epochs/test_loss", "by_epochs/train_loss")


def enabled():
    """Whether runs write TensorBoard logs: TENSORBOARD=1 (default) or 0."""
    return settings.env_text("TENSORBOARD", "1", choices=("1", "0")) == "1"


def run_label(config, describe=None):
    """The run's folder name: its progress-line label made file-safe, its
    seed, then the start of its key (two presets may share a label)."""
    text = describe(config) if describe else ""
    if text == config.key:  # no label of its own (a Sweep's default)
        text = ""
    safe = re.sub(r"[^A-Za-z0-9.+=-]+", "_", text).strip("_")
    return f"{safe}_seed{config.seed}-{config.key[:8]}" if safe else config.key


def hparam_value(value):
    """A config value as TensorBoard takes it: bool, number or string."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return "none" if value is None else str(value)


@dataclasses.dataclass(frozen=True)
class SweepLogs:
    """Where and what a sweep's runs log (picklable: a Ray worker gets it).

    Args:
        root: the figure's TensorBoard folder (results/<figure>/tensorboard).
        describe: config -> the run's label (`Figure.describe`).
        fields: the config fields written as hparams (the sweep's grid).
        every_updates: see `RunCurves`.
    """

    root: Path
    describe: object = None
    fields: tuple = ("batch_size", "lr", "seed")
    every_updates: int = None

    def log_dir(self, config):
        return Path(self.root) / run_label(config, self.describe)

    def hparams(self, config):
        values = dataclasses.asdict(config)
        return {name: hparam_value(values[name]) for name in self.fields}

    def callback(self, config, recorder, schedule):
        return RunCurves(self.log_dir(config), recorder, schedule, hparams=self.hparams(config),
                         trial=run_label(config, self.describe), every_updates=self.every_updates)

    def write_config(self):
        """The HParams tab's columns: the grid's fields and the run results.
        Written by the driver at the figure's folder, once per sweep."""
        from tensorboard.plugins.hparams import summary_v2 as hp

        config = hp.hparams_config_pb([hp.HParam(name) for name in self.fields],
                                      [hp.Metric(tag) for tag in RESULT_METRICS])
        root = Path(self.root)
        for old in root.glob("events.out.tfevents.*"):
            old.unlink(missing_ok=True)  # one layout, the latest sweep's (or a racing one's)
        writer = _writer(root)
        writer.add_event(_event(0, config))
        writer.close()


def grid_fields(configs, always=("batch_size", "lr", "seed")):
    """The config fields that vary over `configs`, and `always`."""
    rows = [dataclasses.asdict(c) for c in configs]
    varying = [name for name in rows[0] if name != "engine"
               and len({repr(row[name]) for row in rows}) > 1] if rows else []
    return tuple(dict.fromkeys([*always, *varying]))


def _writer(folder):
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    return EventFileWriter(str(folder), flush_secs=10)


def _event(step, summary):
    from tensorboard.compat.proto import event_pb2

    return event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)


def _scalars(values):
    from tensorboard.compat.proto import summary_pb2

    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(v))
                                      for tag, v in values.items()
                                      if v is not None and math.isfinite(float(v))])


class RunCurves(keras.callbacks.Callback):
    """Writes one run's curves to TensorBoard event files as it trains.

    The runner's callback (`reproduce.runs.train`): at epoch ends it writes the
    row the `EpochRecorder` just recorded, so TensorBoard shows what the store
    keeps. Place it after the recorder.

    Args:
        log_dir: the run's folder; emptied when training starts.
        recorder: the run's `train.EpochRecorder` (its rows).
        schedule: the run's `BatchSizeSchedule` (batch, split, momentum).
        hparams: {name: value} written for TensorBoard's HParams tab.
        trial: the run's name in the HParams tab.
        every_updates: the running train loss every this many updates within
            an epoch; None: a compiled call's worth, `BATCHES_PER_CALL` / k
            updates (at least 1) at the epoch's k micro-batches an update.

    Example:

    >>> curves = RunCurves("results/fig/tensorboard/run", recorder, batches)
    >>> model.fit(x, y, callbacks=[batches, recorder, curves])
    >>> curves.close()
    """

    def __init__(self, log_dir, recorder, schedule, hparams=None, trial=None,
                 every_updates=None):
        super().__init__()
        if every_updates is not None and int(every_updates) < 1:
            raise ValueError(f"every_updates={every_updates!r}: expected an integer >= 1 "
                             "or None (once per compiled call).")
        self.log_dir, self.recorder, self.schedule = Path(log_dir), recorder, schedule
        self.hparams, self.trial = dict(hparams or {}), trial
        self.every_updates = None if every_updates is None else int(every_updates)
        self.writer = None
        self.num_examples = None

    # -- writing -----------------------------------------------------------------
    def _write(self, step, values):
        self.writer.add_event(_event(step, _scalars(values)))

    def _curves(self, updates, examples, values, epochs=None):
        """`values` {tag: value} against updates; the loss and accuracy curves
        among them also against examples (and epochs, at an epoch end)."""
        self._write(updates, {**values, "progress/examples": examples,
                              "progress/epochs": examples / self.num_examples})
        curves = {tag.replace("/", "_"): values[tag] for tag in CURVES if tag in values}
        self._write(examples, {f"by_examples/{name}": v for name, v in curves.items()})
        if epochs is not None:
            self._write(epochs, {f"by_epochs/{name}": v for name, v in curves.items()})

    # -- when ------------------------------------------------------------------
    def _updates(self):
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def _schedule_next(self):
        """Micro-batches from here to the next due write: the updates to go
        times this epoch's accumulation steps, less the micro-batches already
        in the open window (two small reads)."""
        from batchsize.optimizers import accumulator_of

        updates = self._updates()
        every = self.interval()
        due = (updates // every + 1) * every
        accumulator = accumulator_of(self.model.optimizer)
        in_window = (int(keras.ops.convert_to_numpy(accumulator.micro_step))
                     if accumulator is not None and accumulator.built else 0)
        self._left = max(1, (due - updates) * self.schedule.accumulation_steps - in_window)

    def interval(self):
        """Updates between writes within this epoch."""
        if self.every_updates is not None:
            return self.every_updates
        return max(1, BATCHES_PER_CALL // self.schedule.accumulation_steps)

    def steps_until_due(self):
        """Micro-batches until the next write: the fast engine stops there."""
        return self._left

    # -- Keras hooks -------------------------------------------------------------
    def on_train_begin(self, logs=None):
        # The fit engine calls fit once per epoch: the first call opens the log.
        if self.writer is not None:
            return
        if self.log_dir.exists():  # a run trained again: its old curves go
            shutil.rmtree(self.log_dir)
        self.writer = _writer(self.log_dir)
        self.num_examples = self.schedule.schedule.num_examples
        if self.hparams:
            from tensorboard.plugins.hparams import summary_v2 as hp

            self.writer.add_event(_event(0, hp.hparams_pb(self.hparams, trial_id=self.trial)))
        self.writer.flush()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self._last_batch = epoch, -1
        self._schedule_next()

    def on_train_batch_end(self, batch, logs=None):
        # `batch` is the last micro-batch run (the fast engine runs many per call).
        self._left -= batch - self._last_batch
        self._last_batch = batch
        last_of_epoch = batch + 1 >= self.params.get("steps", math.inf)
        if self._left > 0 or last_of_epoch:  # the epoch end writes the last
            return
        metrics = {k: float(v) for k, v in self.model.get_metrics_result().items()}
        physical = self.schedule.physical_batch(self.epoch)
        examples = self.epoch * self.num_examples + min(self.num_examples, (batch + 1) * physical)
        self._curves(self._updates(), examples, {
            "train/loss": metrics.get("loss"), "train/accuracy": metrics.get("accuracy"),
            "schedule/learning_rate": current_learning_rate(self.model.optimizer),
            "schedule/batch_size": self.schedule.batch_size_in_force,
            "schedule/accumulation_steps": self.schedule.accumulation_steps})
        self._schedule_next()

    def on_epoch_end(self, epoch, logs=None):
        row = self.recorder.rows[-1]
        logs = logs or {}
        self._curves(row["updates"], (epoch + 1) * self.num_examples, {
            "train/loss": row["loss"], "train/accuracy": row["accuracy"],
            "test/loss": row["test_loss"], "test/accuracy": row["test_accuracy"],
            "schedule/learning_rate": row["lr"], "schedule/momentum": row["momentum"],
            "schedule/batch_size": row["batch_size"],
            "schedule/physical_batch": self.schedule.physical_batch(epoch),
            "schedule/accumulation_steps": self.schedule.accumulation_steps,
            "measures/weight_distance": logs.get("weight_distance"),
            "measures/noise_scale_simple": row["noise_scale_simple"]}, epochs=epoch + 1)
        self.writer.flush()

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.flush()

    def close(self):
        """Closes the event file (the runner calls it when the run is over)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_scalars(log_dir):
    """{tag: [(step, value), ...]} of every scalar in a run's event files
    (TensorBoard's own reader): for tests and for a look from Python."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"]}


def folder_bytes(folder):
    """Bytes of every file under `folder` (the disk a run's logs take)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())



def log_root(figure=None, results=cli.RESULTS):
    """The folder TensorBoard serves: one figure's runs (`small_batch`, or its
    target `fig-small-batch`), or every figure's (None)."""
    if not figure:
        return Path(results)
    name = figure.removeprefix("fig-").replace("-", "_")
    if name not in registry.NAMES:
        raise UserError(f"FIGURE={figure!r}: expected one of {', '.join(registry.NAMES)} "
                        "(or none, for every figure)")
    return Path(results) / name / FOLDER


def main(argv=None):
    """`make tensorboard`: TensorBoard over the runs' curves, live while they train."""
    p = cli.OneLineParser(description=main.__doc__)
    p.add_argument("--figure", default=settings.env_text("FIGURE"),
                   help="one figure's runs (default $FIGURE, else every figure's)")
    p.add_argument("--results", type=Path, default=cli.RESULTS, help="the results store")
    p.add_argument("--host", default="localhost",
                   help="the address to serve on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=6006)
    args = p.parse_args(argv)
    with cli.one_line_errors():
        root = log_root(args.figure, args.results)
    # TensorBoard looks for new runs and new points every few seconds, so it can
    # start before the figure target does.
    root.mkdir(parents=True, exist_ok=True)
    print(f"TensorBoard over {root}: http://{args.host}:{args.port}/ (Ctrl-C to stop); "
          "the loss against updates is under 'train', against epochs under 'by_epochs', "
          "the sweep's grid in the HParams tab", flush=True)
    os.execv(sys.executable, [sys.executable, "-m", "tensorboard.main", "--logdir", str(root),
                              "--host", args.host, "--port", str(args.port),
                              "--reload_interval", "5"])


if __name__ == "__main__":
    main()
