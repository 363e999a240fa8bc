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

It also estimates this machine's time, from measurements: for every model
and physical batch in the plan it times a few training steps here (the fast
engine, synthetic data, after a compiling step), and multiplies by the
micro-batches the runs train at that batch; the test set's forward passes
each epoch count a third of a training step per example. That is one run at
a time on every core: side by side (`JOBS`) is faster by what `make
bench-sweep` measures, and the figure's measurements after training
(sharpness, noise scale) are not counted.
"""

import functools
import io
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from batchsize.models.flops import forward_flops, training_flops
from reproduce.runs import datasets, settings
from reproduce.runs.config import RunConfig, program_shape
from reproduce.runs.train import build_model, train_record

# Assumptions for one GPU, stated, not measured here: sustained fp32
# training throughput for these small convnets, about a third of an A100's
# 19.5 TFLOP/s fp32 peak (small kernels, batch norm, the input pipeline);
# and the least time one update takes however small the batch (kernel
# launches of a ResNet's forward and backward pass), which is what the
# small-batch runs of a sweep pay.
GPU_TFLOPS = 6.0
GPU_STEP_SECONDS = 0.005
DRY_MICRO_BATCH = 32
TIMED_STEPS = 4  # per model and physical batch, for the CPU estimate
# Above this physical batch the estimate times this one and scales by the
# examples (a CPU step's time grows in proportion to the batch there).
TIMED_MAX_BATCH = 512


def combination(config):
    """What, besides sizes, makes runs of a sweep different programs: the
    fields `RunConfig` marks as program-shaping (`config.program_shape`)."""
    return program_shape(config)


def shrunk(config):
    """`config` for 2 updates on a slice: micro-batches of <= 32 examples,
    the same number of them per update, milestones at the second update."""
    schedule = config.training_schedule(_train_size(config))
    first = schedule[0]
    steps = first.accumulation_steps
    micro = min(first.physical_batch, max(DRY_MICRO_BATCH, config.devices))
    micro -= micro % config.devices
    batch = steps * micro
    held = 8 if config.validation_size else None
    changes = dict(batch_size=batch, epochs=2, train_size=batch + (held or 0), test_size=64,
                   validation_size=held,
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
    """The examples a run trains on (its subset less those held out)."""
    return min(config.train_size or math.inf, _sizes(config.dataset)[0]) - (
        config.validation_size or 0)


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


def micro_batches(config):
    """{physical batch: micro-batches the run trains at it} over its schedule."""
    n, out = _train_size(config), {}
    for epoch in config.training_schedule(_train_size(config)):
        out[epoch.physical_batch] = out.get(epoch.physical_batch, 0) + math.ceil(
            n / epoch.physical_batch)
    return out


def training_work(config):
    """(examples, micro-batches) that a run trains: every micro-batch counted
    at its full physical batch (a short last one as a full one). Where the
    dataset's size is unknown (not on this machine), the config's
    `train_size`, else 50,000."""
    try:
        n = _train_size(config)
    except datasets.DatasetError:
        n = config.train_size or 50_000
    steps = [(math.ceil(n / epoch.physical_batch), epoch.physical_batch)
             for epoch in config.training_schedule(n)]
    return sum(k * b for k, b in steps), sum(k for k, _ in steps)


# A step's fixed cost in examples' worth: about right for F1 and the ResNets on
# a CPU by the dry run's step times; the Digit Recognizer CNN's is nearer 5.
STEP_COST_EXAMPLES = 64


def relative_cost(work, fixed_examples=STEP_COST_EXAMPLES):
    """A run's training time in arbitrary units, for starting the longest
    runs of a sweep first: of its `training_work` (examples, micro-batches),
    the examples plus a step's fixed cost, `fixed_examples` examples' worth,
    per micro-batch. The sweep's ETA fits the real split from the runs that
    finish (`sweep.eta_seconds`)."""
    examples, micro_batches = work
    return examples + fixed_examples * micro_batches


def step_seconds_here(config, physical_batch, steps=None):
    """Measured seconds of one training step of `config`'s model on
    `physical_batch` examples on this machine (the fast engine, synthetic data;
    the first, compiling call is not timed), over `steps` steps (default
    TIMED_STEPS)."""
    import keras
    import numpy as np

    from reproduce.runs.engine import FastEngine
    from reproduce.runs.train import compile_model

    steps = steps or TIMED_STEPS  # read at call time: a test sets it

    _, _, shape, classes = _sizes(config.dataset)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(physical_batch * steps, *shape)).astype("float32")
    y = rng.integers(0, classes, len(x)).astype("int32")
    model = compile_model(build_model(config, shape, classes),
                          keras.optimizers.SGD(0.01, momentum=0.9))
    engine = FastEngine(model, x, y, log=io.StringIO())
    engine.fit(1, physical_batch)  # compiles
    started = time.perf_counter()
    engine.fit(1, physical_batch)
    return (time.perf_counter() - started) / steps


def cpu_estimate(runs, time_step=step_seconds_here):
    """(hours on this machine, one run at a time, [(model, physical batch,
    seconds per step, micro-batches)]): measured step times x the plan's
    micro-batches, plus the test set's forward passes (a third of a training
    step per example, each epoch)."""
    counts, evaluated = {}, {}
    for config in runs.values():
        group = (config.dataset, config.model, config.norm)
        for batch, count in micro_batches(config).items():
            counts[(*group, batch)] = counts.get((*group, batch), 0) + count
        evaluated[group] = evaluated.get(group, 0) + _test_size(config) * config.epochs
    timed, seconds, measured, steps = [], 0.0, {}, {}
    for (dataset, model, norm, batch), count in sorted(counts.items()):
        at = min(batch, TIMED_MAX_BATCH)
        if (dataset, model, norm, at) not in measured:
            measured[(dataset, model, norm, at)] = time_step(
                RunConfig(dataset=dataset, model=model, norm=norm), at)
        step = steps[(dataset, model, norm, batch)] = \
            measured[(dataset, model, norm, at)] * batch / at
        timed.append((model, batch, step, count))
        seconds += step * count
    for group, examples in evaluated.items():
        # Evaluated at the group's largest physical batch.
        batch = max(b for (*g, b) in counts if tuple(g) == group)
        seconds += examples / batch * steps[(*group, batch)] / 3
    return seconds / 3600, timed


def dry_run(runs, hooks=None, log=None, gpu_tflops=GPU_TFLOPS,
            step_seconds=GPU_STEP_SECONDS, estimate_here=True):
    """Trains one run of each combination for 2 updates, then prints the plan.

    Args:
        runs: {label: RunConfig}, the sweep.
        hooks: optional `store folder -> (callbacks, measure)`, as `Sweep`
            takes them; given a temporary folder. The measure is not run.
        estimate_here: time steps here for this machine's estimate (False
            for a GPU-sized preset, whose CPU hours would be days).
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
            loss = record.rows[-1]["loss"] if record.rows else math.nan
            tried.append(dict(run=str(label), model=config.model, norm=config.norm,
                              optimizer=config.optimizer, batch=small.batch_size,
                              updates=record.rows[-1]["updates"] if record.rows else 0,
                              status=record.status, loss=loss, seconds=round(seconds, 1)))
            print(f"  ok  {label}: {config.model}, norm {config.norm}, {config.optimizer}, "
                  f"batch {config.batch_size} -> {small.batch_size}, "
                  f"{tried[-1]['updates']} updates, loss {loss:.3f}, {seconds:.1f}s",
                  file=log, flush=True)
    plan = estimate(runs, gpu_tflops, step_seconds)
    hours = plan["gpu_hours"].sum()
    share = settings.env_number("RUNS_PER_GPU", 1)
    print(f"plan: {len(plan)} runs, {plan['updates'].sum():,} updates, "
          f"{plan['examples'].sum():,} training examples, {plan['flops'].sum() / 1e15:,.1f} "
          f"PFLOP; about {hours:,.1f} GPU-hours on one GPU ({hours / 8:,.1f} h on 8), "
          f"assuming {gpu_tflops:g} TFLOP/s sustained and >= {step_seconds * 1e3:g} ms per "
          f"update (not measured); spread over a Ray cluster: RAY_ADDRESS=auto",
          file=log, flush=True)
    if not estimate_here:
        print("this machine: not estimated (a GPU-sized preset; reproduce/registry.py "
              "CPU_PAPER lists the paper presets that fit a CPU)", file=log, flush=True)
    else:
        _print_cpu_estimate(runs, log)
    if share > 1:
        shared = shared_gpu_hours(plan, share, gpu_tflops, step_seconds)
        print(f"with RUNS_PER_GPU={share}: about {shared:,.1f} GPU-hours, assuming the runs "
              f"sharing a GPU overlap their fixed cost per update ({step_seconds * 1e3:g} ms) "
              "but not their FLOPs (an assumption, not measured on a GPU)", file=log, flush=True)
    return plan, pd.DataFrame(tried)


def _print_cpu_estimate(runs, log):
    hours, timed = cpu_estimate(runs)
    print(f"this machine ({os.cpu_count()} cores), one run at a time: about {hours:,.2f} "
          "CPU-hours, from step times measured here (" + ", ".join(
              f"{model} batch {batch}: {1e3 * step:.3g} ms x {count:,}"
              for model, batch, step, count in timed) + f"; batches above {TIMED_MAX_BATCH} "
          f"scaled from {TIMED_MAX_BATCH}), plus evaluation; measurements after training not "
          "counted; side by side faster by what make bench-sweep measures",
          file=log, flush=True)


def shared_gpu_hours(plan, runs_per_gpu, gpu_tflops=GPU_TFLOPS, step_seconds=GPU_STEP_SECONDS):
    """GPU-hours of `plan` with `runs_per_gpu` runs sharing each GPU: the FLOPs
    add up, the per-update floor is paid once for every `runs_per_gpu` runs."""
    flops_seconds = plan["flops"].sum() / (gpu_tflops * 1e12)
    floor_seconds = plan["updates"].sum() * step_seconds / runs_per_gpu
    return max(flops_seconds, floor_seconds) / 3600

