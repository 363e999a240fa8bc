"""A sweep's plan before it runs: its size and cost, and a dry run proving
that every kind of run in it starts (`--dry-run`, `DRY_RUN=1`).

The dry run groups the runs by what could make one crash where another does
not (dataset, model, normalization, optimizer, augmentation, how the batch
and the rate are scheduled, devices) and trains one run of each group for 2
updates on a slice of the data, on this machine, with the figure's own
callbacks and measurements. The batch is shrunk to at most 32 examples per
micro-batch, keeping the accumulation steps, the ghost batches per device
and the growth factor; the schedule's milestones move to the second update,
so each change of batch and rate happens once. The figure's callbacks run;
its measurements after training (e.g. sharpness) do not: at the dry run's
size they cost more than all the training, and the smoke presets run them. The plan counts the full
sweep: runs, training examples, FLOPs (`models.flops`, 3 forward passes per
training example plus one per test example per epoch) and the hours that is
at an assumed GPU throughput, which is an assumption, not a measurement.
"""

import functools
import math
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from models.flops import forward_flops, training_flops
from reproduce import datasets
from reproduce.config import RunConfig
from reproduce.train import build_model, train_record

# Assumptions for one GPU, stated, not measured here: sustained fp32
# training throughput for these small convnets, about a third of an A100's
# 19.5 TFLOP/s fp32 peak (small kernels, batch norm, the input pipeline);
# and the least time one update takes however small the batch (kernel
# launches of a ResNet's forward and backward pass), which is what the
# small-batch runs of a sweep pay.
GPU_TFLOPS = 6.0
GPU_STEP_SECONDS = 0.005
DRY_MICRO_BATCH = 32


def combination(config):
    """What, besides sizes, makes runs of a sweep different programs."""
    return (config.dataset, config.model, config.norm, config.optimizer, config.augment,
            config.accumulates,
            bool(config.batch_milestones), bool(config.lr_milestones), config.warmup > 0,
            config.clipnorm is not None, config.weight_decay > 0, config.devices)


def shrunk(config):
    """`config` for 2 updates on a slice: micro-batches of <= 32 examples,
    the same number of them per update, milestones at the second update."""
    schedule = config.training_schedule(_train_size(config))
    first = schedule[0]
    steps = first.accumulation_steps
    micro = min(first.physical_batch, max(DRY_MICRO_BATCH, config.devices))
    micro -= micro % config.devices
    batch = steps * micro
    changes = dict(batch_size=batch, epochs=2, train_size=batch, test_size=64,
                   accumulation=steps if config.accumulation > 1 else 1,
                   max_device_batch=micro if config.max_device_batch is not None else None,
                   lr_milestones=(1,) if config.lr_milestones else (),
                   batch_milestones=(1,) if config.batch_milestones else ())
    if config.max_batch_size is not None:
        changes["max_batch_size"] = max(batch, config.max_batch_size * batch // config.batch_size)
    return config.replace(**changes)


@functools.lru_cache(maxsize=None)
def _sizes(dataset):
    """(training examples, test examples, input shape, classes) of the raw dataset;
    the plan needs no standardized copy (which costs seconds for CIFAR-10)."""
    (x, y), (x_test, y_test) = datasets.load(dataset)
    return len(x), len(x_test), x.shape[1:], int(max(y.max(), y_test.max()) + 1)


def _train_size(config):
    return min(config.train_size or math.inf, _sizes(config.dataset)[0])


def _test_size(config):
    return min(config.test_size or math.inf, _sizes(config.dataset)[1])


@functools.lru_cache(maxsize=None)
def _flops(config):
    """(training FLOPs, forward FLOPs) per example, from the built model."""
    _, _, shape, classes = _sizes(config.dataset)
    built = build_model(config, shape, classes)
    return training_flops(built), forward_flops(built)


def estimate(runs, gpu_tflops=GPU_TFLOPS, step_seconds=GPU_STEP_SECONDS):
    """One row per run: examples trained, updates, FLOPs, and GPU hours: the
    larger of FLOPs at `gpu_tflops` and updates at `step_seconds` each."""
    rows = []
    for label, config in runs.items():
        n = _train_size(config)
        schedule = config.training_schedule(n)
        train_f, forward_f = _flops(RunConfig(dataset=config.dataset, model=config.model,
                                              norm=config.norm))
        examples = n * config.epochs
        updates = schedule.total_updates()
        flops = examples * train_f + _test_size(config) * config.epochs * forward_f
        rows.append(dict(run=str(label), model=config.model, batch_size=config.batch_size,
                         epochs=config.epochs, updates=updates, examples=examples, flops=flops,
                         gpu_hours=max(flops / (gpu_tflops * 1e12), updates * step_seconds)
                         / 3600))
    return pd.DataFrame(rows)


def dry_run(runs, hooks=None, log=None, gpu_tflops=GPU_TFLOPS,
            step_seconds=GPU_STEP_SECONDS):
    """Trains one run of each combination for 2 updates, then prints the plan.

    Args:
        runs: {label: RunConfig}, the sweep.
        hooks: optional `store folder -> (callbacks, measure)`, as `Sweep`
            takes them; given a temporary folder. The measure is not run.
    Returns (the plan's per-run table, the dry runs' table)."""
    log = log or sys.stdout
    groups = {}
    for label, config in runs.items():
        groups.setdefault(combination(config), (label, config))
    print(f"dry run: {len(runs)} runs in {len(groups)} distinct combinations; "
          f"each trains 2 updates on a slice here", file=log, flush=True)
    tried = []
    with tempfile.TemporaryDirectory() as store:
        callbacks = hooks(Path(store))[0] if hooks else None
        for label, config in groups.values():
            small = shrunk(config)
            started = time.perf_counter()
            record = train_record(small, callbacks=callbacks, log=log)
            seconds = time.perf_counter() - started
            loss = record["rows"][-1]["loss"] if record["rows"] else math.nan
            tried.append(dict(run=str(label), model=config.model, norm=config.norm,
                              optimizer=config.optimizer, batch=small.batch_size,
                              updates=record["rows"][-1]["updates"] if record["rows"] else 0,
                              status=record["status"], loss=loss, seconds=round(seconds, 1)))
            print(f"  ok  {label}: {config.model}, norm {config.norm}, {config.optimizer}, "
                  f"batch {config.batch_size} -> {small.batch_size}, "
                  f"{tried[-1]['updates']} updates, loss {loss:.3f}, {seconds:.1f}s",
                  file=log, flush=True)
    plan = estimate(runs, gpu_tflops, step_seconds)
    hours = plan["gpu_hours"].sum()
    print(f"plan: {len(plan)} runs, {plan['updates'].sum():,} updates, "
          f"{plan['examples'].sum():,} training examples, {plan['flops'].sum() / 1e15:,.1f} "
          f"PFLOP; about {hours:,.1f} GPU-hours on one GPU ({hours / 8:,.1f} h on 8), "
          f"assuming {gpu_tflops:g} TFLOP/s sustained and >= {step_seconds * 1e3:g} ms per "
          f"update (not measured); spread over a Ray cluster: RAY_ADDRESS=auto",
          file=log, flush=True)
    return plan, pd.DataFrame(tried)

