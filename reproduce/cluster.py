"""A sweep's runs as Ray tasks: the edge between `Sweep` and a Ray cluster.

`Sweep(..., ray=address)` hands each run it has claimed to `RayRuns.submit`;
the run trains in a Ray worker (`runner.train_record`) and its record comes
back to the driver, which writes it into the store as a serial sweep does.
Ray schedules the tasks and retries one whose worker dies (`max_retries`);
the claims (`reproduce.store`) make a killed driver's rerun train only what
is missing.

Addresses are Ray's own (`ray.init(address=...)`): "local" starts a Ray on
this machine for the sweep (`RAY_NUM_CPUS` caps its CPUs), "auto" joins the
cluster this machine belongs to (`ray start`), "ray://head:10001" connects a
client. Each task asks for one GPU where the cluster has GPUs, otherwise
`RAY_CPUS_PER_RUN` CPUs (default 1).
"""

import os
import sys

from reproduce.cli import ROOT, UserError
from reproduce.runner import train_record

# The environment a worker needs to train as this driver does.
PASSED_ON = ("DATA_DIR", "DATA_MIRROR", "DATA_DOWNLOAD", "KERAS_BACKEND", "TF_ENABLE_ONEDNN_OPTS",
             "TF_CPP_MIN_LOG_LEVEL")
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


def resources_per_run():
    """One GPU per run where the cluster has GPUs, else RAY_CPUS_PER_RUN CPUs."""
    import ray
    if ray.cluster_resources().get("GPU", 0) >= 1:
        return dict(num_gpus=1, num_cpus=1)
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
        self.resources = resources_per_run()
        self.task = ray.remote(_train_task).options(max_retries=MAX_RETRIES, **self.resources)
        self.recipe = ray.put(dict(engine=sweep.engine, verbose=0, callbacks=sweep.callbacks,
                                   measure=sweep.measure))
        self.futures = {}
        slots = ray.cluster_resources().get("GPU" if "num_gpus" in self.resources else "CPU", 1)
        per_run = self.resources.get("num_gpus", self.resources["num_cpus"])
        self.parallel = max(1, int(slots // per_run))
        print(f"Ray: {self.parallel} runs at a time, each with {self.resources}",
              file=sweep.log, flush=True)

    def submit(self, config):
        self.futures[self.task.remote(config, self.recipe)] = config

    def results(self, timeout):
        """(config, record) of the tasks finished within `timeout` seconds."""
        if not self.futures:
            return []
        ready, _ = self.ray.wait(list(self.futures), num_returns=1, timeout=timeout)
        if ready:  # and whatever else is ready now
            ready, _ = self.ray.wait(list(self.futures), num_returns=len(self.futures), timeout=0)
        return [(self.futures.pop(future), self.ray.get(future)) for future in ready]

    def close(self):
        for future in self.futures:
            self.ray.cancel(future, force=True)
        if self.started_ray:
            self.ray.shutdown()


def _train_task(config, recipe):
    return train_record(config, log=sys.stdout, **recipe)
