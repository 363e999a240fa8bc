"""A sweep: a list of runs trained into the resumable results store.

`Sweep(folder).run(configs)` trains the configs the store lacks and returns
every stored run's rows as one DataFrame. A finished run is never trained
twice, so a sweep that was interrupted (Ctrl-C, kill -9) resumes with the
runs it lacks; several sweeps may share a store (`reproduce.runs.store`'s claims).

Side by side. A small-batch step cannot keep two cores busy, so on a CPU
machine of several cores a sweep with more than one run to train trains them
side by side on a local Ray (`reproduce.runs.cluster`), each run kept to its
thread budget (`threads_for`: one thread while its physical batch is at most
`SIDE_BY_SIDE_BATCH`, every core above it; measured with `make bench-sweep`).
`JOBS=1` trains one run at a time here, `JOBS=n` n at once with the cores
shared evenly, `ray=` (RAY_ADDRESS) sends them to a cluster. On a machine
with one GPU the runs go one by one, unless `RUNS_PER_GPU=n` lets n share it.
Budgets do not change what a run is (its key); the record says which one it
had (`threads`).
"""

import contextlib
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pandas as pd

from reproduce.runs import settings
from reproduce.runs import tensorboard as board
from reproduce.runs.cli import UserError
from reproduce.runs.plan import relative_cost, training_work
from reproduce.runs.store import RunStore
from reproduce.runs.train import RunFailure, train_record

# The largest physical batch trained on one thread when runs go side by side
# (larger ones get every core). `make bench-sweep` on this suite's 2-core host
# found no crossover up to here: two one-thread runs beat one two-thread run by
# 1.14-1.80x at every batch measured, 4 to 2048 (README "Runs side by side").
SIDE_BY_SIDE_BATCH = 2048


def threads_for(config, cores=None):
    """A run's thread budget side by side: 1 while its largest physical batch
    is at most SIDE_BY_SIDE_BATCH, else every core."""
    physical = max(epoch.physical_batch for epoch in config.training_schedule(1))
    return 1 if physical <= SIDE_BY_SIDE_BATCH else (cores or settings.cores())


def gpus_here():
    """GPUs on this machine (nvidia-smi's count; no backend is started)."""
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines())


class Sweep:
    """Runs configs into a results folder, skipping those already there.

    Several sweeps may share a store (two terminals, machines sharing the
    folder): each run is claimed before it is trained (`reproduce.runs.store`), a
    run another live sweep holds is waited for, and a stale claim (a dead
    owner) is taken over. With `ray`, every run is a Ray task
    (`reproduce.runs.cluster`); the records come back to this store as the serial
    sweep writes them.

    Faults: a run that raises (here, or in a Ray task after Ray's own
    retries) is a `RunFailure`: its claim is released, nothing is stored, the
    other runs go on, and the sweep ends with the list of failed runs
    (`failures`; the figure command then exits 1). An exception that stops the
    sweep itself (Ctrl-C) releases every claim it holds and propagates.

    Args:
        folder: the results, one `<key>.json` per finished run (`store`, a
            `reproduce.runs.store.RunStore`, reads and writes them).
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
            runs as Ray tasks there; None (default): here, side by side or one
            by one (`jobs`).
        jobs: runs at once here: 1 (one by one), n, or None ($JOBS, else side
            by side where the machine has several cores).
        tensorboard: whether each run writes TensorBoard curves under
            `<folder>/tensorboard/<run label>/` as it trains
            (`reproduce.runs.tensorboard`); None: $TENSORBOARD (default 1).
        heartbeat, stale_after: seconds; see `reproduce.runs.store.RunStore`.
        poll: seconds between looks at runs other sweeps are training.

    Attributes:
        failures: the `RunFailure`s of the last `run`.

    Example:

    >>> sweep = Sweep("results/small_batch")
    >>> table = sweep.run([RunConfig(batch_size=m) for m in (8, 64)])
    """

    def __init__(self, folder, describe=None, verbose=0, log=sys.stdout, callbacks=None,
                 measure=None, engine=None, ray=None, jobs=None, tensorboard=None,
                 heartbeat=30.0, stale_after=300.0, poll=5.0):
        self.folder = Path(folder)
        self.store = RunStore(folder, heartbeat=heartbeat, stale_after=stale_after)
        self.engine = engine
        self.callbacks, self.measure = callbacks, measure
        self.describe = describe or (lambda c: c.key)
        self.verbose = verbose
        self.log = log
        self.ray, self.poll = ray, poll
        self.jobs = jobs if jobs is not None else jobs_from_env()
        self.tensorboard = board.enabled() if tensorboard is None else bool(tensorboard)
        self.curves, self._grid = None, []
        self.failures = []
        self._kept = None  # the RayRuns that `kept_open` keeps between runs

    def load(self, config):
        return self.store.load(config)

    def train_record(self, config, log=None):
        return train_record(config, self.engine, self.verbose, self.callbacks, self.measure,
                            log=log or self.log, curves=self.curves)

    def run(self, configs):
        """Trains what is missing; returns all stored runs' rows as one
        DataFrame (failed runs are in `failures`, not in the table)."""
        configs = list(dict.fromkeys(configs))
        todo = [c for c in configs if self.load(c) is None]
        done_before = len(configs) - len(todo)
        self.failures = []
        self._say(f"{len(configs)} runs: {done_before} already in {self.folder}, "
                  f"{len(todo)} to train" + (f" on Ray ({self.ray})" if self.ray and todo else ""))
        if todo:
            self._log_curves(configs)
            runs = self._runs(todo)
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

    @contextlib.contextmanager
    def kept_open(self):
        """Within it, every `run` that trains side by side or on Ray reuses
        one Ray connection (a local Ray, its warm workers) instead of
        starting its own: a figure's rounds (the grid, the edge extensions,
        the seeds) pay Ray's start and the workers' imports once."""
        self._kept = False
        try:
            yield self
        finally:
            kept, self._kept = self._kept, None
            if kept:
                kept.shutdown()

    def _log_curves(self, configs):
        """The runs' TensorBoard folder and hparams: the fields that vary over
        every config this sweep has been given (follow-up rounds add theirs)."""
        if not self.tensorboard:
            return
        self._grid = list(dict.fromkeys([*self._grid, *configs]))
        # An absolute path: a Ray worker may start elsewhere.
        self.curves = board.SweepLogs((self.folder / board.FOLDER).absolute(), self.describe,
                                      board.grid_fields(self._grid))
        self.curves.write_config()

    def _runs(self, todo):
        """Where the runs train: on a Ray cluster, side by side on a local
        Ray, or one by one in this process."""
        if not self.ray and (self.jobs == 1 or len(todo) < 2 or not self._side_by_side_pays()):
            return LocalRuns(self)
        from reproduce.runs.cluster import RayRuns  # Ray only where it is used

        if self._kept:
            self._kept.prepare(self)
            return self._kept
        if self.ray:
            runs = RayRuns(self, self.ray)
        elif self.jobs is None:  # side by side, each run on its own budget
            runs = RayRuns(self, "local", threads_for=threads_for)
        else:
            share = max(1, settings.cores() // self.jobs)
            runs = RayRuns(self, "local", threads_for=lambda config: share, cpus=self.jobs)
        self._say(runs.describe() + ("" if self.ray else "; JOBS=1 trains them one by one"))
        if self._kept is not None:
            runs.kept_open, self._kept = True, runs
        return runs

    def _side_by_side_pays(self):
        """Whether runs at once can beat one run on the whole machine: JOBS
        asks for it, or several cores and no GPU, or GPUs to share (several,
        or RUNS_PER_GPU)."""
        if self.jobs is not None:
            return True
        gpus = gpus_here()
        if gpus:
            return gpus > 1 or settings.env_number("RUNS_PER_GPU", 1) > 1
        return settings.cores() > 1

    def _train(self, todo, runs):
        """Claims each run, hands it to `runs` (here or Ray), saves what comes
        back; waits for runs that other sweeps hold until they are stored.
        Every claim this sweep holds is released, however it ends."""
        pending, claims, spent = list(todo), {}, []
        work = {config: training_work(config) for config in todo}
        left = dict(work)  # the runs not yet back, for the ETA
        if runs.parallel > 1:  # the longest first, so none is left running alone at the end
            pending.sort(key=lambda config: relative_cost(work[config]), reverse=True)

        def save(finished):
            for config, record in finished:
                claim = claims.pop(config)
                try:
                    if isinstance(record, RunFailure):
                        self.failures.append(record)
                        outcome = f"FAILED: {record.error}"
                    else:
                        self.store.save(config, record)
                        spent.append((record.wall_time, work[config]))
                        last = record.final
                        outcome = (f"{record.status}, test acc "
                                   f"{last.get('test_accuracy', float('nan')):.4f}, "
                                   f"{record.wall_time:.1f}s")
                finally:
                    claim.release()
                left.pop(config, None)
                done = len(spent) + len(self.failures)
                eta = eta_seconds(spent, left.values(), runs.parallel)
                self._say(f"[{done}/{len(todo)}] {self.describe(config)}: {outcome}; "
                          f"ETA {_duration(eta)}")

        try:
            while pending or claims:
                waiting = []
                for config in pending:
                    if self.load(config) is not None:
                        continue  # another sweep stored it
                    claim = self.store.claim(config)
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
                              f"(claims in {self.folder}); waiting")
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
            rows = pd.DataFrame(record.rows or [{}])
            for field, value in record.config.items():
                column = f"config_{field}" if field in rows else field
                rows[column] = [tuple(value) if isinstance(value, list) else value] * len(rows)
            rows["status"] = record.status
            rows["key"] = record.key
            rows["run_time"] = record.wall_time
            frames.append(rows)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def _say(self, text):
        print(text, file=self.log, flush=True)


def jobs_from_env():
    """JOBS from the environment: runs at once here, None if unset (side by side)."""
    return settings.env_number("JOBS", None, minimum=1)


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


def eta_seconds(spent, work_left, parallel):
    """Seconds until the runs left are back, from the runs finished so far.

    A run's seconds are fitted as a x examples + b x micro-batches (a, b >= 0,
    `scipy.optimize.nnls`) once the finished runs differ in physical batch,
    so that the two can be told apart: a step's fixed cost is 60 examples'
    worth for F1 but a few for a convolutional network, and a sweep that sends
    its longest runs first must not judge the rest by them. Before that, the
    finished runs' seconds per unit of `plan.relative_cost`.

    Args:
        spent: (seconds, (examples, micro-batches)) of each run finished.
        work_left: (examples, micro-batches) of each run not yet back
            (`plan.training_work`).
        parallel: runs at once.

    Example: two runs of 1,000 s, one of 10 micro-batches of 100 examples,
    one of 20 of 50, fit to 1 s an example; 4 runs of 500 examples left, 2 at
    once: `eta_seconds([(1e3, (1000, 10)), (1e3, (1000, 20))], [(500, 5)] * 4,
    2) == 1000.0`.
    """
    import numpy as np
    import scipy.optimize

    work_left = list(work_left)
    if not spent or not work_left:
        return 0.0
    seconds = np.array([s for s, _ in spent], dtype=float)
    done = np.array([w for _, w in spent], dtype=float)
    todo = np.array(work_left, dtype=float)
    scale = done.max(axis=0)  # comparable columns for the fit and the rank test
    if np.linalg.matrix_rank(done / scale) == 2:
        per_unit, _ = scipy.optimize.nnls(done / scale, seconds)
        return float(((todo / scale) @ per_unit).sum()) / parallel
    cost_done = sum(relative_cost(w) for w in done)
    return float(seconds.sum() / cost_done * sum(relative_cost(w) for w in todo)) / parallel


def _duration(seconds):
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
