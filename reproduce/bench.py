"""Benchmarks that print tables (speed and memory claims live here, not in tests).

    python -m reproduce.bench pipeline      # input-pipeline overhead, ResNet-20
    python -m reproduce.bench accumulation  # accumulation time and peak memory

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


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 32, 32, 3)).astype("float32"), rng.integers(0, 10, n).astype("int32")


def _model(optimizer):
    import keras

    import models

    keras.utils.set_random_seed(0)
    model = models.build("resnet20", (32, 32, 3), 10, norm="batch")
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def case_pipeline(batch, n, real, repeats=3):
    """Seconds per example, median of `repeats` epochs of n examples:
    EpochBatches (shuffle + pad-crop-flip) or the same arrays handed to fit
    pre-shuffled and pre-augmented."""
    import keras

    from reproduce.pipeline import EpochBatches

    x, y = _data(n)
    model = _model(keras.optimizers.SGD(0.01))
    data = EpochBatches(x, y, batch, seed=0, augment=True)
    fit = (lambda: model.fit(data, verbose=0)) if real else (
        lambda: model.fit(data._epoch_x, data._epoch_y, batch_size=batch, shuffle=False, verbose=0))
    fit()  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fit()
        times.append((time.perf_counter() - start) / n)
    return dict(seconds_per_example=float(np.median(times)))


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


def _run_case(name, **kwargs):
    code = (f"import json, resource; from reproduce.bench import case_{name} as f; "
            f"r = f(**{kwargs!r}); r['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF)"
            f".ru_maxrss / 1024; print('RESULT', json.dumps(r))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT")]
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
    print("(median of 3 epochs per process, best of 2 interleaved processes)")
    print("| batch | pre-batched arrays (ms/example) | EpochBatches (ms/example) | overhead |")
    print("|---:|---:|---:|---:|")
    for batch, n in ((2, 256), (32, 1024), (1024, 2048)):
        # Interleave the two cases, twice, so machine load hits both alike.
        arrays, real = [], []
        for _ in range(2):
            arrays.append(_run_case("pipeline", batch=batch, n=n, real=False)["seconds_per_example"])
            real.append(_run_case("pipeline", batch=batch, n=n, real=True)["seconds_per_example"])
        arrays, real = min(arrays), min(real)
        print(f"| {batch} | {arrays * 1e3:.2f} | {real * 1e3:.2f} | {real / arrays - 1:+.1%} |",
              flush=True)


def bench_accumulation():
    print(f"Effective batch 1024, ResNet-20, SGD momentum 0.9, {_machine()}")
    print("| case | s per 1024 examples | peak RSS (MB) |")
    print("|---|---:|---:|")
    for kind in ("native 1024", "wrapper 8x128", "keras built-in 8x128", "native 128"):
        r = _run_case("accumulation", kind=kind)
        print(f"| {kind} | {r['seconds_per_1024']:.2f} | {r['peak_rss_mb']:.0f} |", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("which", choices=("pipeline", "accumulation"))
    args = p.parse_args(argv)
    {"pipeline": bench_pipeline, "accumulation": bench_accumulation}[args.which]()


if __name__ == "__main__":
    main()
