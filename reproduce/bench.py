"""Benchmarks that print tables (speed and memory claims live here, not in tests).

    python -m reproduce.bench pipeline      # input-pipeline overhead, ResNet-20
    python -m reproduce.bench accumulation  # accumulation time and peak memory
    python -m reproduce.bench throughput    # fit vs the fast engine, samples/s

Each case runs in its own subprocess so peak memory (max RSS) is its own.
Synthetic CIFAR-sized data: the numbers are about the loop, not the data.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


def _data(n, seed=0, shape=(32, 32, 3)):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)).astype("float32"), rng.integers(0, 10, n).astype("int32")


def _model(optimizer, name="resnet20", shape=(32, 32, 3), metrics=None):
    import keras

    import models

    keras.utils.set_random_seed(0)
    model = models.build(name, shape, 10, norm="batch")
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=metrics)
    return model


PIPELINE_KINDS = ("arrays", "runner", "EpochBatches")


def case_pipeline(batch, n, rounds=5):
    """Seconds per example of one training epoch of n examples, per kind
    (median over `rounds`; the kinds take turns, epoch by epoch, in one
    process, so machine load hits all alike; each kind trains its own model,
    so no kind runs a step function another kind traced):

    "arrays" — one fixed pre-shuffled, pre-augmented epoch handed to fit (no
    pipeline work at all: the floor); "runner" — what reproduce.runner does,
    a fresh epoch_arrays (shuffle + pad-crop-flip) and one fit per epoch;
    "EpochBatches" — the same batches through a keras.utils.PyDataset.
    """
    import keras

    from reproduce.pipeline import EpochBatches, epoch_arrays

    x, y = _data(n)
    model = {kind: _model(keras.optimizers.SGD(0.01)) for kind in PIPELINE_KINDS}
    fixed = epoch_arrays(x, y, 0, augment=True)
    data = EpochBatches(x, y, batch, seed=0, augment=True)
    epoch = iter(range(10**6))
    fit = {
        "arrays": lambda: model["arrays"].fit(*fixed, batch_size=batch, shuffle=False, verbose=0),
        "runner": lambda: model["runner"].fit(*epoch_arrays(x, y, next(epoch), augment=True),
                                              batch_size=batch, shuffle=False, verbose=0),
        "EpochBatches": lambda: model["EpochBatches"].fit(data, verbose=0),
    }
    for kind in PIPELINE_KINDS:
        fit[kind]()  # compile, warm up
    times = {kind: [] for kind in PIPELINE_KINDS + ("epoch_arrays alone",)}
    for r in range(rounds):
        for kind in PIPELINE_KINDS:
            start = time.perf_counter()
            fit[kind]()
            times[kind].append((time.perf_counter() - start) / n)
        # The runner's only work beyond the pre-batched case, timed on its own:
        # a difference of two noisy epoch times cannot resolve a few percent.
        start = time.perf_counter()
        epoch_arrays(x, y, 10**6 + r, augment=True)
        times["epoch_arrays alone"].append((time.perf_counter() - start) / n)
    return {kind: float(np.median(t)) for kind, t in times.items()}


def case_accumulation(kind, n=2048):
    import keras

    from optimizers import EpochAlignedAccumulation, GradientAccumulator

    x, y = _data(n)
    sgd = lambda **kw: keras.optimizers.SGD(0.01, momentum=0.9, **kw)  # noqa: E731
    batch, callbacks = {"native 1024": 1024, "native 128": 128}.get(kind, 128), []
    if kind == "wrapper 8x128":
        model = _model(GradientAccumulator(sgd(), 8))
        callbacks = [EpochAlignedAccumulation(n, 128)]
    elif kind == "keras built-in 8x128":
        model = _model(sgd(gradient_accumulation_steps=8))
    else:
        model = _model(sgd())
    model.fit(x, y, batch_size=batch, shuffle=False, verbose=0, callbacks=callbacks)
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, shuffle=False, verbose=0, callbacks=callbacks)
    return dict(seconds_per_1024=(time.perf_counter() - start) / n * 1024)


THROUGHPUT_MODELS = {"ResNet-20": ("resnet20", (32, 32, 3), True),
                     "MNIST CNN": ("digit_cnn", (28, 28, 1), "shift")}


def case_throughput(model, batch, n, rounds=3):
    """Training samples/s of one epoch of n examples (median of `rounds`), for
    the runner's two engines on the same model, data and augmentation: "fit"
    (epoch_arrays + model.fit, one fit per epoch), "fast"
    (reproduce.engine.FastEngine, 100 steps per call) and "fast1" (the same
    with one step per call: what device-resident data alone buys). They take
    turns epoch by epoch, each on its own model; the first epoch of each
    (compilation) is not timed."""
    import keras

    from reproduce.engine import FastEngine
    from reproduce.pipeline import epoch_arrays

    name, shape, augment = THROUGHPUT_MODELS[model]
    x, y = _data(n, shape=shape)
    models = {kind: _model(keras.optimizers.SGD(0.01, momentum=0.9), name, shape, ["accuracy"])
              for kind in ("fit", "fast", "fast1")}
    engines = {"fast": FastEngine(models["fast"], x, y),
               "fast1": FastEngine(models["fast1"], x, y, steps_per_call=1)}
    epoch = dict.fromkeys(models, 0)

    def fit():
        models["fit"].fit(*epoch_arrays(x, y, epoch["fit"], augment=augment), batch_size=batch,
                          shuffle=False, verbose=0)

    def fast(kind):
        engines[kind].fit(epoch[kind] + 1, batch, augment=augment, initial_epoch=epoch[kind])

    run = {"fit": fit, "fast": lambda: fast("fast"), "fast1": lambda: fast("fast1")}
    times = {kind: [] for kind in run}
    for r in range(rounds + 1):
        for kind in run:
            start = time.perf_counter()
            run[kind]()
            epoch[kind] += 1
            if r:
                times[kind].append(time.perf_counter() - start)
    return {kind: n / float(np.median(t)) for kind, t in times.items()}


def case_torch_reference(batch, n, rounds=3):
    """Samples/s of a plain PyTorch loop training the same ResNet-20 (option-A
    shortcuts, batch norm, SGD momentum 0.9) on batches gathered from tensors
    already in memory, without augmentation: the reference the fast engine's
    targets are set against. Needs `pip install torch` (not a requirement)."""
    import torch
    from torch import nn

    def conv_bn(cin, cout, stride):
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)]

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.body = nn.Sequential(*conv_bn(cin, cout, stride), nn.ReLU(),
                                      *conv_bn(cout, cout, 1))
            self.pad = (cout - cin) // 2 if stride == 2 else 0

        def forward(self, x):
            shortcut = x[:, :, ::2, ::2] if self.pad else x
            if self.pad:
                shortcut = nn.functional.pad(shortcut, (0, 0, 0, 0, self.pad, self.pad))
            return torch.relu(shortcut + self.body(x))

    blocks, cin = [], 16
    for stage, width in enumerate((16, 32, 64)):
        for block in range(3):
            blocks.append(Block(cin, width, 2 if stage and not block else 1))
            cin = width
    torch.manual_seed(0)
    model = nn.Sequential(*conv_bn(3, 16, 1), nn.ReLU(), *blocks, nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = _data(n)
    x, y = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y).long()
    times = []
    for r in range(rounds + 1):
        start = time.perf_counter()
        order = torch.randperm(n)
        for i in range(0, n, batch):
            index = order[i:i + batch]
            loss = nn.functional.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if r:
            times.append(time.perf_counter() - start)
    return {"torch": n / float(np.median(times))}


def _run_case(name, optional=False, **kwargs):
    code = (f"import json, resource; from reproduce.bench import case_{name} as f; "
            f"r = f(**{kwargs!r}); r['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF)"
            f".ru_maxrss / 1024; print('RESULT', json.dumps(r))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT")]
    if not lines and optional and "ModuleNotFoundError" in out.stderr:
        return None
    if not lines:
        raise SystemExit(f"benchmark case {name} {kwargs} failed:\n{out.stderr[-2000:]}")
    return json.loads(lines[0][6:])


def _machine():
    import keras

    return f"backend {keras.backend.backend()}, {os.cpu_count()} CPU cores ({_cpu_name()})"


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(l.split(":")[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def bench_pipeline():
    print(f"Input-pipeline overhead, ResNet-20 training step, {_machine()}")
    print("(ms per example, median of 5 epochs; the three kinds take turns epoch by epoch")
    print(" in one process, each on its own model; overhead relative to one fixed")
    print(" pre-batched epoch; the last two columns time the runner's extra work,")
    print(" shuffle + pad-crop-flip of the epoch, on its own)")
    print("| batch | pre-batched arrays | runner (epoch_arrays + fit) | overhead "
          "| EpochBatches (PyDataset) | overhead | epoch_arrays alone | share of the step |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for batch, n in ((2, 256), (32, 1024), (1024, 2048)):
        r = _run_case("pipeline", batch=batch, n=n)
        a, e, p = (r[k] for k in PIPELINE_KINDS)
        prep = r["epoch_arrays alone"]
        print(f"| {batch} | {a * 1e3:.2f} | {e * 1e3:.2f} | {e / a - 1:+.1%} "
              f"| {p * 1e3:.2f} | {p / a - 1:+.1%} | {prep * 1e3:.3f} | {prep / a:.2%} |",
              flush=True)


def bench_accumulation():
    print(f"Effective batch 1024, ResNet-20, SGD momentum 0.9, {_machine()}")
    print("| case | s per 1024 examples | peak RSS (MB) |")
    print("|---|---:|---:|")
    for kind in ("native 1024", "wrapper 8x128", "keras built-in 8x128", "native 128"):
        r = _run_case("accumulation", kind=kind)
        print(f"| {kind} | {r['seconds_per_1024']:.2f} | {r['peak_rss_mb']:.0f} |", flush=True)


# Examples per timed epoch: enough steps at small batches, a few at large.
THROUGHPUT_EPOCH = {2: 256, 32: 1024, 128: 2048, 1024: 2048}


def bench_throughput():
    print(f"Training throughput, samples/s (higher is better), {_machine()}")
    print("(median of 3 epochs after a compiling one; synthetic data, SGD momentum 0.9,")
    print(" batch norm, the models' augmentation; both engines see the same batches)")
    print(" the PyTorch column: a plain loop on the same ResNet-20, no augmentation,")
    print(" where torch is installed)")
    print("| model | batch | fit (epoch_arrays + model.fit) | fast engine | fast / fit "
          "| fast engine, 1 step per call | its / fit | PyTorch loop | fast / PyTorch |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for model in THROUGHPUT_MODELS:
        for batch, n in THROUGHPUT_EPOCH.items():
            r = _run_case("throughput", model=model, batch=batch, n=n)
            torch = "| n/a | |"
            if model == "ResNet-20":
                ref = _run_case("torch_reference", optional=True, batch=batch, n=n)
                torch = ("| torch not installed | |" if ref is None else
                         f"| {ref['torch']:,.0f} | {r['fast'] / ref['torch']:.2f}x |")
            print(f"| {model} | {batch} | {r['fit']:,.0f} | {r['fast']:,.0f} "
                  f"| {r['fast'] / r['fit']:.2f}x | {r['fast1']:,.0f} "
                  f"| {r['fast1'] / r['fit']:.2f}x {torch}", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("which", choices=("pipeline", "accumulation", "throughput"))
    args = p.parse_args(argv)
    {"pipeline": bench_pipeline, "accumulation": bench_accumulation,
     "throughput": bench_throughput}[args.which]()


if __name__ == "__main__":
    main()
