"""A sweep's runs as Ray tasks: the edge between `Sweep` and a Ray cluster.

`Sweep(..., ray=address)` hands each run it has claimed to `RayRuns.submit`;
the run trains in a Ray worker (`train.train_record`) and its record comes
back to the driver, which writes it into the store as a serial sweep does.
Ray schedules the tasks and retries one whose worker dies (`max_retries`);
the claims (`reproduce.store`) make a killed driver's rerun train only what
is missing.

Addresses are Ray's own (`ray.init(address=...)`): "local" starts a Ray on
this machine for the sweep (`RAY_NUM_CPUS` caps its CPUs), "auto" joins the
cluster this machine belongs to (`ray start`), "ray://head:10001" connects a
client. Each task asks for as many GPUs as its run has devices
(`RunConfig.devices`) where the cluster has GPUs, otherwise
`RAY_CPUS_PER_RUN` CPUs (default 1).

Faults: Ray retries a task whose worker dies (`MAX_RETRIES`); a task that
still fails, or whose run raises, comes back as a `train.RunFailure` with
the error's last line, and the other tasks go on.
"""

import os
import sys

from reproduce.cli import ROOT, UserError
from reproduce.train import RunFailure, train_record

# The environment a worker needs to train as this driver does.
PASSED_ON = ("DATA_DIR", "DATA_MIRROR", "DATA_DOWNLOAD", "KERAS_BACKEND", "TF_ENABLE_ONEDNN_OPTS",
             "TF_CPP_MIN_LOG_LEVEL", "DEVICES", "XLA_FLAGS")
MAX_RETRIES = 3


def connect(address):
    """ray.init for `address`; returns True if this call started Ray."""
    try:
        import ray
    except ImportError:
        raise UserError(f"--ray {address}: Ray is not installed; run `make setup` "
                        "(it installs ray from requirements.txt).") from None
    if ray.is_initialized():
        return False
    env = {name: os.environ[name] for name in PASSED_ON if name in os.environ}
    # Every node runs this checkout at the same path (the README's cluster
    # recipe), so the workers import the project from it.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    kwargs = dict(address=address, runtime_env={"env_vars": env}, log_to_driver=False,
                  include_dashboard=False)
    if address == "local" and os.environ.get("RAY_NUM_CPUS"):
        kwargs["num_cpus"] = int(os.environ["RAY_NUM_CPUS"])
    try:
        ray.init(**kwargs)
    except (ConnectionError, ValueError) as error:
        raise UserError(f"--ray {address}: cannot connect ({error}); expected 'local', "
                        "'auto' (after `ray start`) or ray://host:port.") from None
    return True


def resources_per_run(devices=1, cluster=None):
    """What one run's task asks Ray for: as many GPUs as the run has devices
    (`RunConfig.devices`) where the cluster has GPUs, else RAY_CPUS_PER_RUN CPUs."""
    import ray

    cluster = ray.cluster_resources() if cluster is None else cluster
    if cluster.get("GPU", 0) >= 1:
        return dict(num_gpus=devices, num_cpus=1)
    cpus = os.environ.get("RAY_CPUS_PER_RUN", "1")
    try:
        cpus = float(cpus)
        assert cpus > 0
    except (ValueError, AssertionError):
        raise UserError(f"RAY_CPUS_PER_RUN={cpus!r}: expected a number > 0.") from None
    return dict(num_cpus=cpus)


class RayRuns:
    """The runs of one sweep, trained as Ray tasks (see `Sweep`)."""

    def __init__(self, sweep, address):
        import ray
        self.ray = ray
        self.started_ray = connect(address)
        self.cluster = ray.cluster_resources()
        self.task = ray.remote(_train_task)
        self.recipe = ray.put(dict(engine=sweep.engine, verbose=0, callbacks=sweep.callbacks,
                                   measure=sweep.measure))
        self.futures = {}
        example = resources_per_run(1, self.cluster)
        slots = self.cluster.get("GPU" if "num_gpus" in example else "CPU", 1)
        per_run = example.get("num_gpus", example["num_cpus"])
        self.parallel = max(1, int(slots // per_run))
        print(f"Ray: {self.parallel} runs at a time, each with {example}"
              + (" (x its devices)" if "num_gpus" in example else ""), file=sweep.log, flush=True)

    def submit(self, config):
        task = self.task.options(max_retries=MAX_RETRIES,
                                 **resources_per_run(config.devices, self.cluster))
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
        for future in self.futures:
            self.ray.cancel(future, force=True)
        if self.started_ray:
            self.ray.shutdown()


def _train_task(config, recipe):
    return train_record(config, log=sys.stdout, **recipe)
