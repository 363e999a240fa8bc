"""Scaling out: a sweep's runs as Ray tasks (same records as the serial
sweep, a killed worker retried), runs side by side, a two-node cluster, and
the paper presets' dry runs (sweeps sharing a store: test_shared_store.py)."""

import io
import os
import signal
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import keras
import pandas as pd
import pytest
from conftest import Raise, needs_cifar10, needs_mnist, one_event_file_per_run, without_thread_budget

from reproduce.runs.config import RunConfig
from reproduce.runs.sweep import Sweep
from reproduce.runs.store import LOCK_NAME

ROOT = Path(__file__).resolve().parent.parent
TINY = RunConfig(dataset="mnist", model="f1", norm="none", train_size=256, test_size=128,
                 epochs=2, batch_size=64, lr=0.05)
METRICS = ["epoch", "updates", "batch_size", "lr", "loss", "accuracy", "test_loss",
           "test_accuracy"]



# -- Ray -----------------------------------------------------------------------
class KillOnce(keras.callbacks.Callback):
    """Kills its own process (the Ray worker) at the end of the first epoch,
    the first time only: `marker` records that it happened."""

    def __init__(self, marker):
        super().__init__()
        self.marker = str(marker)

    def on_epoch_end(self, epoch, logs=None):
        if not os.path.exists(self.marker):
            Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)


def worker_settings(config, model, data, callbacks):
    """What a Ray worker's run saw: DEVICES, and the logical CPUs it made of it."""
    import tensorflow as tf

    return dict(DEVICES=os.environ.get("DEVICES"),
                logical_cpus=len(tf.config.list_logical_devices("CPU")))


# The Ray tests share one pytest-xdist worker (`--dist loadgroup`, the
# Makefile): "auto" joins any Ray running on the machine, so the test that
# expects none must not run beside (or just after) the one that starts one.
@pytest.mark.xdist_group("ray")
def test_joining_a_ray_cluster_that_is_not_there_is_a_one_line_error(monkeypatch):
    pytest.importorskip("ray")
    from reproduce.runs.cli import UserError
    from reproduce.runs.cluster import connect

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if subprocess.run(["pgrep", "-f", "gcs_server"], capture_output=True).returncode == 0:
        pytest.skip("a Ray cluster runs on this machine (a sweep beside the tests): 'auto' "
                    "would join it")
    with pytest.raises(UserError, match="--ray auto: cannot connect .*expected 'local', 'auto'"):
        connect("auto")


@pytest.mark.xdist_group("ray")
@pytest.mark.slow
@needs_mnist
def test_ray_sweep_on_two_workers_gives_the_serial_records_and_retries_a_killed_worker(
        tmp_path, monkeypatch):
    """The default for several runs on a machine of several cores: side by
    side on a local Ray, one thread each at this batch (the test process runs
    on one thread too, so the kernels, and the records, are the same)."""
    ray = pytest.importorskip("ray")
    # KillOnce (here) and Raise (conftest), for workers, which import neither module
    for module in (__name__, "conftest"):
        ray.cloudpickle.register_pickle_by_value(sys.modules[module])
    configs = [TINY.replace(seed=s) for s in range(4)]
    quiet = open(os.devnull, "w")
    serial = Sweep(tmp_path / "serial", log=quiet).run(configs)
    marker = tmp_path / "killed"
    victim, crash = configs[1], TINY.replace(seed=9)
    two_devices = TINY.replace(seed=5, devices=2)  # on 2 logical CPUs of a worker

    def callbacks(config):
        if config == victim:
            return [KillOnce(marker)]
        return [Raise(ValueError("a bug in one run"))] if config == crash else []

    monkeypatch.delenv("JOBS", raising=False)
    os.environ.update(RAY_NUM_CPUS="2", DEVICES="2")
    log = io.StringIO()
    try:
        sweep = Sweep(tmp_path / "ray", log=log, callbacks=callbacks, measure=worker_settings)
        on_ray = sweep.run(configs[:2] + [crash] + configs[2:] + [two_devices])
    finally:
        del os.environ["RAY_NUM_CPUS"], os.environ["DEVICES"]
    assert "Ray: up to 2 runs at once on 2 CPU cores (1 thread each for a small physical " \
           "batch" in log.getvalue(), log.getvalue()
    assert {sweep.load(c)["threads"] for c in configs + [two_devices]} == {1}
    assert marker.exists()  # the victim's worker was killed once, and retried
    # The failing run is reported with its error's last line; every other run is stored.
    assert [(f.config, f.error) for f in sweep.failures] == [(crash, "ValueError: a bug in one run")]
    assert sweep.load(two_devices)["status"] == "finished"
    for config in configs + [two_devices]:  # what each worker ran with
        assert sweep.load(config)["measures"] == dict(DEVICES="2", logical_cpus=2), config
    on_ray = on_ray[on_ray.key != two_devices.key].reset_index(drop=True)
    pd.testing.assert_frame_equal(serial[METRICS + ["key", "status"]],
                                  on_ray[METRICS + ["key", "status"]], rtol=1e-5)
    assert not ray.is_initialized()  # the sweep shut down the Ray it started
    assert sorted(p.suffix for p in (tmp_path / "ray").iterdir()
                  if p.name not in (LOCK_NAME, "tensorboard")) == [".json"] * 5
    # The workers wrote the curves into the sweep's folder: the killed run's
    # once (its retry starts the folder afresh), the crashed run's up to its crash.
    assert one_event_file_per_run(tmp_path / "ray" / "tensorboard") == 6


def test_the_workers_get_the_drivers_devices_and_backend_settings(monkeypatch):
    """A local Ray's workers inherit the driver's environment; a cluster's
    (`ray start` elsewhere) get what the driver's runtime_env passes on."""
    ray = pytest.importorskip("ray")
    from reproduce.runs.cluster import connect

    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: seen.update(kwargs))
    settings = dict(DEVICES="4", XLA_FLAGS="--xla_force_host_platform_device_count=4",
                    KERAS_BACKEND="jax", TF_ENABLE_ONEDNN_OPTS="0")
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    assert connect("auto")
    env = seen["runtime_env"]["env_vars"]
    assert {name: env.get(name) for name in settings} == settings
    assert str(ROOT) in env["PYTHONPATH"].split(os.pathsep)


# -- dry runs of the paper presets --------------------------------------------
# The dry run trains each distinct kind of run of a preset for 2 updates. Here
# it does so for the presets whose models train in seconds on this CPU
# (`Figure.cheap_paper_dry_run`: the Masters & Luschi sweep, 143 runs,
# included); for every paper preset the plan's arithmetic is checked and each
# model is built (ResNet-44 and WRN-16-4 traced for 2 updates take ~20 s each,
# and tests/test_layers.py trains every model with every norm).


@pytest.mark.slow
@needs_mnist
@needs_cifar10
def test_paper_presets_dry_runs_train_each_kind_of_run_and_state_the_cost(tmp_path, capsys,
                                                                          monkeypatch):
    from reproduce import registry
    from reproduce.runs import plan

    # One timed step per model and batch, not 4: the estimate's arithmetic is
    # tested below, here that every paper preset's steps are timed and printed.
    monkeypatch.setattr(plan, "TIMED_STEPS", 1)
    for figure in registry.figures():
        if not figure.cheap_paper_dry_run:
            continue
        figure.main(["--preset", "paper", "--dry-run", "--results", str(tmp_path / "r"),
                     "--out", str(tmp_path / "f")])
        out = capsys.readouterr().out
        runs = int(out.split("--preset paper: ")[1].split(" runs")[0])
        combos = int(out.split(" distinct combinations")[0].split(" runs in ")[-1])
        assert out.count("  ok  ") == combos >= 1, out
        assert f"plan: {runs} runs" in out and "GPU-hours" in out, out
        # This machine's hours from measured steps, for the presets that fit a CPU.
        assert ("CPU-hours, from step times measured here" in out) == (
            figure.name in registry.CPU_PAPER), out
        if figure.name == "small_batch":  # Masters & Luschi: 11 x 13 runs, 82 epochs
            assert "plan: 143 runs" in out
            assert f"{143 * 82 * 50_000:,} training examples" in out
    assert not (tmp_path / "r").exists() and not (tmp_path / "f").exists()  # writes nothing


def test_the_cpu_estimate_is_measured_step_times_times_the_micro_batches():
    from reproduce.runs import plan
    from reproduce.runs.config import RunConfig

    # 1,000 examples: batch 100 for 2 epochs, then 200 as 2 x 100 accumulated (epoch 3).
    grows = RunConfig(dataset="mnist", model="f1", train_size=1000, test_size=300, epochs=3,
                      batch_size=100, batch_milestones=(2,), batch_factor=2,
                      max_device_batch=100)
    assert plan.micro_batches(grows) == {100: 30}
    big = RunConfig(dataset="mnist", model="f1", train_size=1000, test_size=300, epochs=1,
                    batch_size=1000)
    assert plan.micro_batches(big) == {1000: 1}
    seconds = {100: 0.01, 512: 0.04}  # a stand-in for the timed steps
    asked = []

    def time_step(config, batch):
        asked.append(batch)
        return seconds[batch]

    hours, timed = plan.cpu_estimate({"a": grows, "b": big}, time_step=time_step)
    assert sorted(asked) == [100, 512]  # batch 1000 is timed at 512 and scaled
    train = 30 * 0.01 + 1 * 0.04 * 1000 / 512
    evaluate = (300 * 3 + 300 * 1) / 1000 * (0.04 * 1000 / 512) / 3  # at the largest batch
    assert hours * 3600 == pytest.approx(train + evaluate)
    assert [(b, n) for _, b, _, n in timed] == [(100, 30), (1000, 1)]


@pytest.mark.slow  # builds every model of every paper preset
@needs_mnist
@needs_cifar10
def test_every_paper_preset_has_a_plan_and_two_update_dry_runs():
    from reproduce import registry
    from reproduce.runs import plan

    for figure in registry.figures():
        runs = figure.grid(figure.presets["paper"])
        table = plan.estimate(runs)  # builds every model of the preset
        assert len(table) == len(runs) and (table.gpu_hours > 0).all(), figure.name
        # Updates per run from the schedule: at least one per epoch.
        assert (table.updates >= table.epochs).all(), figure.name
        for config in {plan.combination(c): c for c in runs.values()}.values():
            small = plan.shrunk(config)
            trained = small.train_size - (small.validation_size or 0)  # less those held out
            assert small.training_schedule(trained).total_updates() == 2, config
            first = small.training_schedule(trained)[0]
            assert first.physical_batch <= max(32, config.devices), config


# -- runs side by side -------------------------------------------------------------
BUDGET_SCRIPT = """
import sys
import numpy as np
import reproduce
from reproduce.runs import settings
from reproduce.runs.config import RunConfig
from reproduce.runs.train import train
from tests.roundoff import examples_reordered, smooth_model_registered

with smooth_model_registered() as model:
    config = RunConfig(dataset="mnist", model=model, norm="batch", train_size=256, test_size=64,
                       epochs=2, batch_size=32, lr=0.05, momentum=0.9)
    block = 32 if sys.argv[2] == "reordered" else None
    if block:
        with examples_reordered(block):
            _, trained = train(config, return_model=True)
    else:
        _, trained = train(config, return_model=True)
np.savez(sys.argv[1], *[np.asarray(w) for w in trained.get_weights()])
print("THREADS", settings.requested_threads())
"""


@pytest.mark.slow
@needs_mnist
def test_a_run_keeps_its_weights_at_one_and_two_threads(tmp_path):
    """A thread budget changes no result beyond round-off: the same run at
    THREADS=1 lies within 10x the round-off measured at THREADS=2 (the run
    against itself with every batch's examples in another order)."""
    import numpy as np
    from conftest import without_thread_budget
    from roundoff import RoundOff

    def weights(threads, order="as is"):
        path = tmp_path / f"{threads}-{order}.npz"
        env = {**without_thread_budget(os.environ), "THREADS": str(threads),
               "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-c", BUDGET_SCRIPT, str(path), order], env=env,
                             cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        assert f"THREADS {threads}" in out.stdout
        with np.load(path) as f:
            return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]

    noise = RoundOff(weights(2), weights(2, "reordered"))
    noise.assert_agrees(weights(1), "THREADS=1 vs THREADS=2")


def test_a_runs_budget_follows_its_physical_batch_and_jobs_is_checked(monkeypatch):
    from reproduce.runs import sweep as sweeps
    from reproduce.runs.cli import UserError

    small = TINY.replace(batch_size=sweeps.SIDE_BY_SIDE_BATCH)
    assert sweeps.threads_for(small, cores=8) == 1
    assert sweeps.threads_for(small.replace(batch_size=2 * sweeps.SIDE_BY_SIDE_BATCH),
                              cores=8) == 8
    # Accumulated: the physical batch is what a step computes.
    assert sweeps.threads_for(TINY.replace(batch_size=4 * sweeps.SIDE_BY_SIDE_BATCH,
                                           accumulation=4), cores=8) == 1
    # Growing past the bound in a later epoch counts too.
    assert sweeps.threads_for(small.replace(batch_milestones=(1,), batch_factor=2),
                              cores=8) == 8
    monkeypatch.setenv("JOBS", "many")
    with pytest.raises(UserError, match="JOBS='many': expected an integer >= 1"):
        Sweep("unused")
    monkeypatch.setenv("JOBS", "1")
    assert Sweep("unused")._runs([TINY, TINY.replace(seed=1)]).__class__.__name__ == "LocalRuns"


def test_runs_share_a_gpu_with_runs_per_gpu():
    pytest.importorskip("ray")
    from reproduce.runs.cluster import resources_per_run

    one_gpu = {"GPU": 1.0, "CPU": 16.0}
    assert resources_per_run(1, one_gpu, runs_per_gpu=4) == dict(num_gpus=0.25, num_cpus=1)
    assert resources_per_run(2, one_gpu, runs_per_gpu=2) == dict(num_gpus=1.0, num_cpus=1)


@pytest.mark.xdist_group("ray")
@pytest.mark.slow
@needs_mnist
def test_runs_share_one_logical_gpu_on_ray(tmp_path, monkeypatch):
    """RUNS_PER_GPU=2 on a Ray with one (logical) GPU: two runs at once, each
    asking for half of it. Not measured on a real GPU."""
    ray = pytest.importorskip("ray")
    from reproduce.runs.cluster import RayRuns

    monkeypatch.setenv("RUNS_PER_GPU", "2")
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        sweep = Sweep(tmp_path, log=open(os.devnull, "w"), ray="local")
        runs = RayRuns(sweep, "local")
        assert runs.parallel == 2 and "2 runs sharing each" in runs.describe()
        runs.close()
        table = sweep.run([TINY, TINY.replace(seed=1)])
        assert set(table.key) == {TINY.key, TINY.replace(seed=1).key}
    finally:
        ray.shutdown()


def test_the_plan_counts_runs_sharing_a_gpu():
    from reproduce.runs.plan import shared_gpu_hours

    # Two runs of 1,000 updates each and 1 TFLOP: bound by the per-update floor
    # (2,000 x 5 ms = 10 s) alone, by 5 s when two share a GPU, never below the
    # FLOPs' 1e12 / 6e12 s.
    plan = pd.DataFrame(dict(updates=[1000, 1000], flops=[0.5e12, 0.5e12]))
    assert shared_gpu_hours(plan, 1) * 3600 == pytest.approx(10.0)
    assert shared_gpu_hours(plan, 2) * 3600 == pytest.approx(5.0)
    assert shared_gpu_hours(plan, 10 ** 6) * 3600 == pytest.approx(1 / 6)


def worker_pid(config, model, data, callbacks):
    return dict(pid=os.getpid())


@pytest.mark.xdist_group("ray")
@pytest.mark.slow
@needs_mnist
def test_a_figures_rounds_share_one_local_ray_and_its_warm_workers(tmp_path, monkeypatch):
    """`Sweep.kept_open` (what every figure target trains in): the second
    round's runs go to the workers the first round started, and the Ray is
    shut down when the figure is done, not before."""
    ray = pytest.importorskip("ray")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # worker_pid, for workers
    monkeypatch.delenv("JOBS", raising=False)
    monkeypatch.setenv("RAY_NUM_CPUS", "2")
    sweep = Sweep(tmp_path, log=io.StringIO(), measure=worker_pid)
    first, second = [TINY.replace(seed=s) for s in (0, 1)], [TINY.replace(seed=s) for s in (2, 3)]
    with sweep.kept_open():
        sweep.run(first)
        assert ray.is_initialized()  # kept for the next round
        sweep.run(second)
    assert not ray.is_initialized()
    pids = [{sweep.load(c)["measures"]["pid"] for c in round_} for round_ in (first, second)]
    assert len(pids[0]) == 2 and pids[1] <= pids[0], pids  # the same two workers
    assert sweep.log.getvalue().count("Ray: up to 2 runs at once") == 1


def test_a_sweep_starts_its_longest_runs_first():
    """The order runs go to Ray: micro-batches x (physical batch + 64), by hand."""
    from reproduce.runs.plan import relative_cost, training_work

    # 256 examples: batch 64 is 4 micro-batches an epoch, 2 epochs.
    plain = TINY.replace(train_size=256, batch_size=64, epochs=2)
    assert relative_cost(training_work(plain)) == 2 * 4 * 128
    # batch 64 as 4 micro-batches of 16: 16 an epoch.
    accumulated = TINY.replace(train_size=256, batch_size=64, epochs=2, max_device_batch=16)
    assert relative_cost(training_work(accumulated)) == 2 * 16 * (16 + 64)
    # 100 examples at batch 32: 3 full batches and one of 4, counted as 4 of 32.
    short_last = TINY.replace(train_size=100, batch_size=32, epochs=1)
    assert relative_cost(training_work(short_last)) == 4 * 96
    # The two parts the ETA fits: examples and micro-batches.
    assert training_work(accumulated) == (2 * 16 * 16, 2 * 16)


def test_the_eta_weights_the_runs_left_by_their_cost():
    """A long run first must not make every short run after it look as long.
    Runs are (seconds, (examples, micro-batches)); all values by hand."""
    from reproduce.runs.sweep import eta_seconds

    # One physical batch finished so far: seconds per unit of relative cost
    # (examples + 64 per micro-batch). 600 s for 1,000 + 640 units, then 4
    # runs of 100 + 64 on 2 at once: 600 / 1640 * 656 / 2 = 120 s (the mean
    # per run would say 1,200 s).
    assert eta_seconds([(600.0, (1000, 10))], [(100, 1)] * 4, parallel=2) == pytest.approx(120.0)
    # Two physical batches finished: the fit. A network whose steps cost
    # 0.001 s an example + 0.05 s a step (F1-like): 6,400 examples in 100
    # steps took 11.4 s, in 25 steps 7.65 s; a run of 1,000 examples in 1,000
    # steps left takes 1 + 50 = 51 s (relative cost's weighting: 59.5 s).
    spent = [(11.4, (6400, 100)), (7.65, (6400, 25))]
    assert eta_seconds(spent, [(1000, 1000)], parallel=1) == pytest.approx(51.0)
    # A convolutional network, time by examples alone (the seed article's
    # paper sweep: its batch 32 and 128 runs of 672,000 examples took the same
    # time): 20 runs of 672,000 examples left, 2 at once, 20 x 672 / 2 =
    # 6,720 s (relative cost's weighting: 3,733 s).
    spent = [(672.0, (672000, 21000)), (672.0, (672000, 5250))]
    assert eta_seconds(spent, [(672000, 2625)] * 20, parallel=2) == pytest.approx(6720.0)
    assert eta_seconds([], [(1, 1)] * 2, parallel=1) == 0.0  # nothing finished: no estimate yet
    assert eta_seconds([(5.0, (1, 1))], [], parallel=2) == 0.0


CLUSTER_CHECK = """
import ray
ray.init(address="{address}")
print("ALIVE", sum(node["Alive"] for node in ray.nodes()))
"""


@pytest.mark.xdist_group("ray")
@pytest.mark.slow
@needs_cifar10
def test_a_two_node_cluster_with_token_authentication(tmp_path):
    """README's cluster recipe with the locked Ray (token authentication on
    by default since 2.52): a head and a second node on this machine, both
    with RAY_AUTH_MODE=token and the head's token, and a smoke figure trained
    with RAY_ADDRESS set to the head. `ray start --block` keeps each node in
    its own process, stopped at the end without touching other Rays here."""
    import secrets
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {**without_thread_budget(os.environ), "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": str(token), "PYTHONPATH": str(ROOT),
           "RAY_USAGE_STATS_ENABLED": "0"}
    ray = str(Path(sys.executable).parent / "ray")
    common = ["--num-cpus=1", "--block", "--disable-usage-stats"]
    # Its own temp folder (short: Ray's socket paths must fit 107 characters), so
    # the cluster's address file does not outlive it where `ray.init("auto")` looks.
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    nodes = [subprocess.Popen([ray, "start", "--head", f"--port={port}", f"--temp-dir={temp}",
                               "--include-dashboard=false", *common], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    def alive_nodes():
        try:
            out = subprocess.run([sys.executable, "-c", CLUSTER_CHECK.format(address=address)],
                                 env=env, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            return 0, "timed out"
        return (int(out.stdout.split("ALIVE")[-1]) if "ALIVE" in out.stdout else 0), out.stderr

    def wait_for(count, deadline=240):
        # Under a loaded test run Ray takes its time: poll, don't guess a sleep.
        end, (alive, err) = time.time() + deadline, (0, "")
        while time.time() < end:
            alive, err = alive_nodes()
            if alive >= count:
                break
            if count == 2 and nodes[-1].poll() is not None:  # the node gave up: again
                nodes[-1] = subprocess.Popen([ray, "start", f"--address={address}", *common],
                                             env=env, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL)
            time.sleep(3)
        assert alive >= count, err[-2000:]

    try:
        wait_for(1)
        nodes.append(subprocess.Popen([ray, "start", f"--address={address}", *common], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(2)
        # One epoch a run: the recipe is under test, not the figure (tests/test_runner.py).
        run = subprocess.run([sys.executable, "-m", "reproduce.papers.small_batch", "--preset", "smoke",
                              "--set", "epochs=1", "--ray", address, "--results", str(tmp_path / "r"),
                              "--out", str(tmp_path / "f")], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        assert (tmp_path / "f" / "small_batch_smoke_summary.csv").is_file()
        # Without the mode on the joining side, the head refuses it (the recipe's warning).
        bare = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
        out = subprocess.run([sys.executable, "-c", CLUSTER_CHECK.format(address=address)],
                             env=bare, capture_output=True, text=True, timeout=60)
        assert "ALIVE 2" not in out.stdout
    finally:
        for node in nodes:
            node.terminate()
        for node in nodes:
            try:
                node.wait(timeout=60)
            except subprocess.TimeoutExpired:
                node.kill()
        shutil.rmtree(temp, ignore_errors=True)
        default = Path("/tmp/ray/ray_current_cluster")  # in case Ray wrote it there too
        if default.exists() and default.read_text().strip().endswith(f":{port}"):
            default.unlink()
