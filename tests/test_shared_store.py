"""Sweeps that share one results store: claims that keep two sweeps from
training a run twice (taken over when stale, never seen half-written), and
a crashed or interrupted run releasing its claim."""

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Raise, needs_mnist, one_event_file_per_run

from reproduce.runs import store as store_module
from reproduce.runs.config import RunConfig
from reproduce.runs.sweep import Sweep
from reproduce.runs.store import HOST, LOCK_NAME, RunStore

ROOT = Path(__file__).resolve().parent.parent
TINY = RunConfig(dataset="mnist", model="f1", norm="none", train_size=256, test_size=128,
                 epochs=2, batch_size=64, lr=0.05)
METRICS = ["epoch", "updates", "batch_size", "lr", "loss", "accuracy", "test_loss",
           "test_accuracy"]



# -- claims ------------------------------------------------------------------
def write_claim(store, config, owner, age=0.0):
    path = store.claim_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(owner))
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_claim_is_exclusive_until_released(tmp_path):
    store = RunStore(tmp_path)
    first = store.claim(TINY)
    assert first is not None
    assert store.claim(TINY) is None  # held by a live owner (this process)
    first.release()
    assert not store.claim_path(TINY).exists()
    again = store.claim(TINY)
    assert again is not None
    again.release()


def test_a_dead_owners_claim_on_this_host_is_taken_over_at_once(tmp_path):
    store = RunStore(tmp_path)
    write_claim(store, TINY, dict(host=HOST, pid=dead_pid(), id="dead"))
    claim = store.claim(TINY)
    assert claim is not None
    assert json.loads(store.claim_path(TINY).read_text())["pid"] == os.getpid()
    claim.release()


def test_another_hosts_claim_is_taken_over_only_after_the_timeout(tmp_path):
    store = RunStore(tmp_path, heartbeat=1, stale_after=60)
    owner = dict(host="elsewhere", pid=1, id="x")
    write_claim(store, TINY, owner, age=30)  # touched 30 s ago: alive
    assert store.claim(TINY) is None
    write_claim(store, TINY, owner, age=90)  # silent for 90 s: stale
    claim = store.claim(TINY)
    assert claim is not None
    claim.release()
    assert [p.name for p in tmp_path.iterdir()] == [LOCK_NAME]  # nothing else left behind


def test_the_owner_touches_its_claim_while_it_holds_it(tmp_path):
    store = RunStore(tmp_path, heartbeat=0.05, stale_after=1)
    claim = store.claim(TINY)
    path = store.claim_path(TINY)
    os.utime(path, (time.time() - 100, time.time() - 100))
    time.sleep(0.3)
    assert time.time() - path.stat().st_mtime < 1
    claim.release()


def test_bad_heartbeat_settings_are_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="stale_after=10: expected more than twice heartbeat=30"):
        RunStore(tmp_path, heartbeat=30, stale_after=10)


def test_a_claim_is_never_seen_half_written(tmp_path, monkeypatch):
    """A process killed while writing its claim (here: the write raises
    half-way) leaves no claim file, so no other sweep waits on it; a claim
    file that cannot be read (no claim of ours writes one) is taken over at once."""
    store = RunStore(tmp_path)

    def killed_while_writing(token, file):
        file.write('{"host": "')
        raise KeyboardInterrupt

    monkeypatch.setattr(store_module.json, "dump", killed_while_writing)
    with pytest.raises(KeyboardInterrupt):
        store.claim(TINY)
    monkeypatch.undo()
    assert not store.claim_path(TINY).exists()
    assert [p.name for p in tmp_path.iterdir()] == [LOCK_NAME]  # no temp file either
    store.claim_path(TINY).write_text("")  # e.g. an empty file from an older version
    claim = store.claim(TINY)
    assert claim is not None and owner(store) == claim.token
    claim.release()


def owner(store):
    return json.loads(store.claim_path(TINY).read_text())


RACE = """
import os, sys, time
from reproduce.runs.store import RunStore

import random

random.seed(os.getpid())

def slowly(operation):  # every window between looking and moving made wide, at random
    def slow(*args, **kwargs):
        time.sleep(random.uniform(0, 0.1))
        result = operation(*args, **kwargs)
        time.sleep(random.uniform(0, 0.1))
        return result
    return slow

os.rename, os.replace, os.link = slowly(os.rename), slowly(os.replace), slowly(os.link)

class Config:  # all a store reads of a config
    key = sys.argv[2]

store = RunStore(sys.argv[1], heartbeat=0.2, stale_after=60)
start = float(sys.argv[3])
while time.time() < start:  # the racers start together
    pass
claim = store.claim(Config())
print("OWNER" if claim else "WAITER", flush=True)
time.sleep(1.0)  # hold it while the others look
if claim:
    print("LOST" if claim.lost else "KEPT", flush=True)
    claim.release()
"""


@pytest.mark.slow
def test_three_sweeps_racing_to_take_over_a_stale_claim_leave_one_owner(tmp_path):
    store = RunStore(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for round in range(3):
        write_claim(store, TINY, dict(host=HOST, pid=dead_pid(), id="dead"))
        start = time.time() + 1.5  # after the three have started Python
        procs = [subprocess.Popen([sys.executable, "-c", RACE, str(tmp_path), TINY.key,
                                   str(start)], env=env, stdout=subprocess.PIPE, text=True)
                 for _ in range(3)]
        outputs = [proc.communicate(timeout=60)[0].split() for proc in procs]
        assert sorted(o[0] for o in outputs) == ["OWNER", "WAITER", "WAITER"], (round, outputs)
        assert [o for o in outputs if o[0] == "OWNER"][0][1] == "KEPT", outputs
        assert not store.claim_path(TINY).exists()


@needs_mnist
def test_a_sweep_waits_for_a_run_another_sweep_holds_and_takes_it_over_when_stale(tmp_path):
    sweep = Sweep(tmp_path, heartbeat=0.1, stale_after=1.5, poll=0.2, log=open(os.devnull, "w"))
    write_claim(sweep.store, TINY, dict(host="elsewhere", pid=1, id="x"))
    started = time.time()
    table = sweep.run([TINY])
    assert time.time() - started > 1.0  # it waited for the claim to go stale
    assert len(table) == TINY.epochs
    assert not sweep.store.claim_path(TINY).exists()


TWO_SWEEPS = """
import sys
from reproduce.runs.config import RunConfig
from reproduce.runs.sweep import Sweep
base = RunConfig(dataset="mnist", model="f1", norm="none", train_size=256, test_size=128,
                 epochs=2, batch_size=64, lr=0.05)
Sweep(sys.argv[1], describe=lambda c: "TRAINED " + c.key, poll=0.2).run(
    [base.replace(seed=s) for s in range(6)])
"""


@pytest.mark.slow
@needs_mnist
def test_two_sweeps_on_one_store_train_every_run_exactly_once(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", TWO_SWEEPS, str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for _ in range(2)]
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    trained = [{line.split("TRAINED ")[1].split(":")[0] for line in out.splitlines()
                if "TRAINED " in line} for out in outputs]
    assert trained[0].isdisjoint(trained[1])
    assert len(trained[0] | trained[1]) == 6
    assert sorted(p.suffix for p in tmp_path.iterdir()
                  if p.name not in (LOCK_NAME, "tensorboard")) == [".json"] * 6
    for path in tmp_path.glob("*.json"):
        assert json.loads(path.read_text())["status"] == "finished"
    # Each run's curves, written once, by the sweep that trained it.
    assert one_event_file_per_run(tmp_path / "tensorboard") == 6


# -- faults ----------------------------------------------------------------------
@pytest.mark.slow
@needs_mnist
def test_a_crashed_run_releases_its_claim_is_listed_and_the_other_runs_are_stored(tmp_path):
    crash = TINY.replace(seed=1)
    log = io.StringIO()
    sweep = Sweep(tmp_path, log=log, callbacks=lambda c: [Raise(ValueError(
        "no such layer"))] if c == crash else [])
    table = sweep.run([TINY, crash, TINY.replace(seed=2)])
    assert [(f.config, f.error) for f in sweep.failures] == [(crash, "ValueError: no such layer")]
    assert set(table.key) == {TINY.key, TINY.replace(seed=2).key}
    assert sweep.load(crash) is None and not sweep.store.claim_path(crash).exists()
    assert "1 of 3 runs failed" in log.getvalue() and crash.key in log.getvalue()
    # The same sweep object again, in the same process: the run is trained, not
    # waited for (its claim was released).
    sweep.callbacks = None
    again = sweep.run([crash])
    assert sweep.failures == [] and set(again.key) == {crash.key}


@needs_mnist
def test_an_interrupted_sweep_releases_its_claim_and_stops(tmp_path):
    sweep = Sweep(tmp_path, log=io.StringIO(),
                  callbacks=lambda c: [Raise(KeyboardInterrupt())])
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C is not a failed run: it stops the sweep
        sweep.run([TINY, TINY.replace(seed=1)])
    assert not list(tmp_path.glob("*.claim")) and not list(tmp_path.glob("*.json"))


def test_a_run_on_n_devices_asks_ray_for_n_gpus():
    pytest.importorskip("ray")
    from reproduce.runs.cluster import resources_per_run

    gpus = {"GPU": 8.0, "CPU": 32.0}
    assert resources_per_run(1, gpus) == dict(num_gpus=1, num_cpus=1)
    assert resources_per_run(4, gpus) == dict(num_gpus=4, num_cpus=1)
    assert resources_per_run(4, {"CPU": 32.0}) == dict(num_cpus=1.0)
