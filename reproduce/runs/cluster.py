"""A sweep's runs as Ray tasks: the edge between `Sweep` and Ray.

`Sweep(..., ray=address)` hands each run it has claimed to `RayRuns.submit`;
the run trains in a Ray worker (`train.train_record`) and its record comes
back to the driver, which writes it into the store as a serial sweep does.
Ray schedules the tasks and retries one whose worker dies (`max_retries`);
the claims (`reproduce.runs.store`) make a killed driver's rerun train only what
is missing.

Addresses are Ray's own (`ray.init(address=...)`): "local" starts a Ray on
this machine for the sweep (`RAY_NUM_CPUS` caps its CPUs), "auto" joins the
cluster this machine belongs to (`ray start`), "ray://head:10001" connects a
client. A sweep with several runs to train on a machine of several cores
uses a local Ray by default, runs side by side (`reproduce.runs.sweep`).

What a task asks for (`resources_per_run`): where the cluster has GPUs, as
many as its run has devices (`RunConfig.devices`), or 1/n of one with
`RUNS_PER_GPU=n` (small-batch runs sharing a device; Ray's fractional
GPUs); otherwise CPUs: its thread budget. The budget is the run's own when
runs go side by side on this machine (`sweep.threads_for`: one thread for a
small physical batch, every core for a large one), the cores split evenly
with `JOBS=n`, or `RAY_CPUS_PER_RUN` (default 1) on a cluster. Each task
carries its budget in its environment (`settings.thread_settings`), so its
worker's TensorFlow, OpenMP and XLA keep to it; Ray starts a worker per
distinct budget.

Faults: Ray retries a task whose worker dies (`MAX_RETRIES`); a task that
still fails, or whose run raises, comes back as a `train.RunFailure` with
the error's last line, and the other tasks go on.
"""

import logging
import os
import sys

from reproduce.runs import settings
from reproduce.runs.cli import ROOT, UserError
from reproduce.runs.train import RunFailure, train_record

# The environment a worker needs to train as this driver does.
PASSED_ON = ("DATA_DIR", "DATA_MIRROR", "DATA_DOWNLOAD", "KERAS_BACKEND", "TF_ENABLE_ONEDNN_OPTS",
             "TF_CPP_MIN_LOG_LEVEL", "DEVICES", "XLA_FLAGS")
MAX_RETRIES = 3


def worker_environment(threads=None):
    """What a worker's process starts with: the driver's settings, the
    project on PYTHONPATH, and the run's thread budget (None: the default)."""
    env = {name: os.environ[name] for name in PASSED_ON if name in os.environ}
    # Every node runs this checkout at the same path (the README's cluster
    # recipe), so the workers import the project from it.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    if threads:
        env.update(settings.thread_settings(threads))
        if threads == 1:
            env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {settings.XLA_ONE_THREAD}".strip()
    return env


def connect(address, num_cpus=None):
    """ray.init for `address`; returns True if this call started Ray. A
    local Ray gets `num_cpus` (or RAY_NUM_CPUS) CPUs."""
    try:
        import ray
    except ImportError:
        raise UserError(f"--ray {address}: Ray is not installed; run `make setup` "
                        "(it installs ray from requirements.txt).") from None
    if ray.is_initialized():
        return False
    kwargs = dict(address=address, runtime_env={"env_vars": worker_environment()},
                  log_to_driver=False, include_dashboard=False, logging_level=logging.ERROR)
    if address == "local":
        cpus = num_cpus or (count_from_env("RAY_NUM_CPUS") if os.environ.get("RAY_NUM_CPUS")
                            else None)
        if cpus:
            kwargs["num_cpus"] = cpus
    try:
        ray.init(**kwargs)
    except (ConnectionError, ValueError) as error:
        raise UserError(f"--ray {address}: cannot connect ({error}); expected 'local', "
                        "'auto' (after `ray start`) or ray://host:port.") from None
    return True


def count_from_env(name, default=None):
    """A count > 0 from the environment (`settings.env_number`; RAY_CPUS_PER_RUN
    may be a fraction)."""
    kind = float if name == "RAY_CPUS_PER_RUN" else int
    return settings.env_number(name, default, kind=kind, minimum=1e-9 if kind is float else 1)


def resources_per_run(devices=1, cluster=None, cpus=None, runs_per_gpu=None):
    """What one run's task asks Ray for: `devices` GPUs (or devices /
    RUNS_PER_GPU of them) where the cluster has GPUs, else `cpus` CPUs
    (default RAY_CPUS_PER_RUN, or 1)."""
    import ray

    cluster = ray.cluster_resources() if cluster is None else cluster
    if cluster.get("GPU", 0) >= 1:
        share = runs_per_gpu or count_from_env("RUNS_PER_GPU", 1)
        return dict(num_gpus=devices / share, num_cpus=1)
    return dict(num_cpus=cpus or count_from_env("RAY_CPUS_PER_RUN", 1.0))


class RayRuns:
    """The runs of one sweep, trained as Ray tasks (see `Sweep`).

    Args:
        sweep: the `Sweep`.
        address: Ray's address; "local" for runs side by side here.
        threads_for: `config -> thread budget` of each run, for runs side by
            side on this machine; None on a cluster (RAY_CPUS_PER_RUN).
        cpus: the local Ray's CPUs (None: every core, or RAY_NUM_CPUS).
    """

    def __init__(self, sweep, address, threads_for=None, cpus=None):
        import ray
        self.ray = ray
        self.started_ray = connect(address, num_cpus=cpus)
        self.cluster = ray.cluster_resources()
        self.threads_for = threads_for
        self.task = ray.remote(_train_task)
        self.recipe = None
        self.prepare(sweep)
        self.futures = {}
        self.kept_open = False  # `Sweep.kept_open`: the next `run` reuses it
        one = resources_per_run(1, self.cluster)
        if "num_gpus" in one:  # 1 / num_gpus runs per GPU
            self.parallel = int(self.cluster["GPU"] / one["num_gpus"])
        else:  # side by side: one-thread runs fill every core
            per_run = 1 if threads_for else one["num_cpus"]
            self.parallel = max(1, int(self.cluster.get("CPU", 1) // per_run))

    def describe(self):
        """The one line a sweep prints: how many runs at once, on what."""
        if "GPU" in self.cluster and self.cluster["GPU"] >= 1:
            share = count_from_env("RUNS_PER_GPU", 1)
            return (f"Ray: up to {self.parallel} runs at once on {self.cluster['GPU']:g} GPU(s)"
                    + (f", {share} runs sharing each" if share > 1 else ""))
        cpus = self.cluster.get("CPU", 1)
        how = ("1 thread each for a small physical batch, all of them for a large one"
               if self.threads_for else f"{resources_per_run(1, self.cluster)['num_cpus']:g} "
               "CPU(s) each")
        return f"Ray: up to {self.parallel} runs at once on {cpus:g} CPU cores ({how})"

    def prepare(self, sweep):
        """What every task of the sweep's next `run` trains with (the curves'
        hparams can change between a figure's rounds). The workers write their
        TensorBoard curves into the sweep's results folder themselves (on a
        cluster, the shared folder the README asks for)."""
        self.recipe = self.ray.put(dict(engine=sweep.engine, verbose=0,
                                        callbacks=sweep.callbacks, measure=sweep.measure,
                                        curves=sweep.curves))

    def _threads(self, config):
        if "GPU" in self.cluster and self.cluster["GPU"] >= 1:
            return None
        if self.threads_for:
            return self.threads_for(config)
        return max(1, int(resources_per_run(config.devices, self.cluster)["num_cpus"]))

    def submit(self, config):
        threads = self._threads(config)
        resources = resources_per_run(config.devices, self.cluster, cpus=threads)
        task = self.task.options(max_retries=MAX_RETRIES, **resources,
                                 runtime_env={"env_vars": worker_environment(threads)})
        self.futures[task.remote(config, self.recipe)] = config

    def results(self, timeout):
        """(config, record or RunFailure) of the tasks finished within `timeout` seconds."""
        if not self.futures:
            return []
        ready, _ = self.ray.wait(list(self.futures), num_returns=1, timeout=timeout)
        if ready:  # and whatever else is ready now
            ready, _ = self.ray.wait(list(self.futures), num_returns=len(self.futures), timeout=0)
        done = [(self.futures.pop(future), future) for future in ready]
        return [(config, self._get(future, config)) for config, future in done]

    def _get(self, future, config):
        try:
            return self.ray.get(future)
        except self.ray.exceptions.RayError as error:  # after Ray's own retries
            if isinstance(getattr(error, "cause", None), UserError):
                raise error.cause from None  # bad input: one line, as a serial sweep says it
            print(error, file=sys.stderr, flush=True)
            return RunFailure.of(config, error)

    def close(self):
        """The end of a `run`: cancels what is still running, and shuts the
        Ray it started down unless the sweep keeps it open for the next run."""
        for future in self.futures:
            self.ray.cancel(future, force=True)
        self.futures = {}
        if not self.kept_open:
            self.shutdown()

    def shutdown(self):
        if self.started_ray and self.ray.is_initialized():
            self.ray.shutdown()
        self.started_ray = False


def _train_task(config, recipe):
    return train_record(config, log=sys.stdout, **recipe)
