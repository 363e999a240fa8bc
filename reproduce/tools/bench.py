"""Benchmarks that print tables (speed and memory claims live here, not in tests).

    python -m reproduce.tools.bench pipeline      # input-pipeline overhead, ResNet-20
    python -m reproduce.tools.bench accumulation  # accumulation time and peak memory
    python -m reproduce.tools.bench throughput    # fit vs the fast engine, samples/s
    python -m reproduce.tools.bench sweep         # runs side by side (reproduce.tools.bench_sweep)
    python -m reproduce.tools.bench tensorboard   # the curves' cost (reproduce.tools.bench_tensorboard)

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

    from batchsize import models

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

    from reproduce.runs.pipeline import EpochBatches, epoch_arrays

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


def case_accumulation(kind, n=2048, rounds=3):
    import keras

    from batchsize.callbacks import AccumulatedNoiseScale, EpochAlignedAccumulation
    from batchsize.optimizers import GradientAccumulator

    x, y = _data(n)
    sgd = lambda **kw: keras.optimizers.SGD(0.01, momentum=0.9, **kw)  # noqa: E731
    batch, callbacks = {"native 1024": 1024, "native 128": 128}.get(kind, 128), []
    if kind == "wrapper 8x128":
        model = _model(GradientAccumulator(sgd(), 8))
        callbacks = [EpochAlignedAccumulation(n, 128)]
    elif kind == "wrapper 8x128 + noise scale":
        model = _model(GradientAccumulator(sgd(), 8, noise_scale_decay=0.99))
        callbacks = [EpochAlignedAccumulation(n, 128), AccumulatedNoiseScale()]
    elif kind == "keras built-in 8x128":
        model = _model(sgd(gradient_accumulation_steps=8))
    else:
        model = _model(sgd())
    model.fit(x, y, batch_size=batch, shuffle=False, verbose=0, callbacks=callbacks)
    seconds = []
    for _ in range(rounds):  # the median of `rounds` timed epochs
        start = time.perf_counter()
        model.fit(x, y, batch_size=batch, shuffle=False, verbose=0, callbacks=callbacks)
        seconds.append((time.perf_counter() - start) / n * 1024)
    return dict(seconds_per_1024=float(np.median(seconds)))


def case_noise_scale_cost(n=2048, rounds=5):
    """The wrapper with and without the noise scale in one process, taking
    turns epoch by epoch, so the machine's drifts hit both alike. Wall time
    and the process's CPU time: this machine's epochs often sit at a wall-clock
    plateau that hides small differences, while CPU time counts the work."""
    import keras

    from batchsize.callbacks import AccumulatedNoiseScale, EpochAlignedAccumulation
    from batchsize.optimizers import GradientAccumulator

    x, y = _data(n)
    runs = []
    for decay in (None, 0.99):
        model = _model(GradientAccumulator(keras.optimizers.SGD(0.01, momentum=0.9), 8,
                                           noise_scale_decay=decay))
        callbacks = [EpochAlignedAccumulation(n, 128)] + ([AccumulatedNoiseScale()] if decay
                                                          else [])
        model.fit(x, y, batch_size=128, shuffle=False, verbose=0, callbacks=callbacks)
        runs.append((model, callbacks, [], []))
    for _ in range(rounds):
        for model, callbacks, seconds, cpu_seconds in runs:
            start, cpu_start = time.perf_counter(), time.process_time()
            model.fit(x, y, batch_size=128, shuffle=False, verbose=0, callbacks=callbacks)
            seconds.append((time.perf_counter() - start) / n * 1024)
            cpu_seconds.append((time.process_time() - cpu_start) / n * 1024)
    plain, noise = (float(np.median(run[2])) for run in runs)
    cpu_plain, cpu_noise = (float(np.median(run[3])) for run in runs)
    return dict(plain=plain, noise=noise, ratio=noise / plain, cpu_plain=cpu_plain,
                cpu_noise=cpu_noise, cpu_ratio=cpu_noise / cpu_plain,
                epochs=[[round(t, 2) for t in run[2]] for run in runs])


THROUGHPUT_MODELS = {"ResNet-20": ("resnet20", (32, 32, 3), True),
                     "MNIST CNN": ("digit_cnn", (28, 28, 1), "shift")}

# The columns of `make bench-throughput`: {kind: (environment, what it is)}.
# Each kind is one long-lived worker process (a backend and oneDNN are fixed
# when a process starts), and the workers take turns, one epoch each.
_TF = {"KERAS_BACKEND": "tensorflow"}
THROUGHPUT_KINDS = {
    "TF default": ({**_TF, "TF_ENABLE_ONEDNN_OPTS": "0"},
                   "TensorFlow as shipped (oneDNN off on CPUs without AVX-512), fast engine"),
    "TF + oneDNN": ({**_TF, "TF_ENABLE_ONEDNN_OPTS": "1"},
                    "TF_ENABLE_ONEDNN_OPTS=1 (this suite's default on x86), fast engine"),
    "TF + oneDNN + XLA": ({**_TF, "TF_ENABLE_ONEDNN_OPTS": "1"},
                          "the same, model compiled with jit_compile=True; XLA:CPU trains at a "
                          "few samples/s here, so it is timed at batch 128 only, on epochs of "
                          "256 examples"),
    "JAX": ({"KERAS_BACKEND": "jax"}, "KERAS_BACKEND=jax, fast engine (jitted steps)"),
    "PyTorch": ({}, "a plain PyTorch loop on the same network, batches indexed from "
                    "tensors in memory, no augmentation"),
}


class _KerasEpochs:
    """One worker's training: the fast engine on one of the models, epoch by epoch."""

    def __init__(self, kind, model, batch, n):
        import keras

        from batchsize import models
        from reproduce.runs.engine import FastEngine

        name, shape, self.augment = THROUGHPUT_MODELS[model]
        x, y = _data(n, shape=shape)
        keras.utils.set_random_seed(0)
        net = models.build(name, shape, 10, norm="batch")
        net.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                    keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=["accuracy"], jit_compile=kind.endswith("XLA"))
        self.engine, self.batch, self.epoch = FastEngine(net, x, y), batch, 0

    def __call__(self):
        self.engine.fit(self.epoch + 1, self.batch, augment=self.augment,
                        initial_epoch=self.epoch)
        self.epoch += 1


class _TorchEpochs:
    """A plain PyTorch loop training the same network (ResNet-20: option-A
    shortcuts, batch norm; the MNIST CNN: the digit_cnn layout), SGD momentum
    0.9, on batches gathered from tensors already in memory, no augmentation:
    the reference the fast engine's targets are set against."""

    def __init__(self, kind, model, batch, n):
        import torch
        from torch import nn

        torch.manual_seed(0)
        self.torch, self.nn = torch, nn
        name, shape, _ = THROUGHPUT_MODELS[model]
        self.net = self._resnet20() if name == "resnet20" else self._digit_cnn()
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=0.01, momentum=0.9)
        x, y = _data(n, shape=shape)
        self.x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
        self.y = torch.from_numpy(y).long()
        self.batch, self.n = batch, n

    def _resnet20(self):
        torch, nn = self.torch, self.nn

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
        return nn.Sequential(*conv_bn(3, 16, 1), nn.ReLU(), *blocks, nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(64, 10))

    def _digit_cnn(self):
        nn = self.nn
        layers, cin = [], 1
        for width in (32, 64, 128):
            layers += [nn.Conv2d(cin, width, 3, padding=1), nn.Conv2d(width, width, 3, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.4)]
            cin = width
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(128, 256), nn.BatchNorm1d(256),
                             nn.ReLU(), nn.Dropout(0.4), nn.Linear(256, 10))

    def __call__(self):
        order = self.torch.randperm(self.n)
        for i in range(0, self.n, self.batch):
            index = order[i:i + self.batch]
            loss = self.nn.functional.cross_entropy(self.net(self.x[index]), self.y[index])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()


def throughput_worker(kind, model, batch, n):
    """A worker process: trains one epoch (the first compiles, untimed) per
    line read from stdin and answers with its seconds."""
    make = _TorchEpochs if kind == "PyTorch" else _KerasEpochs
    epoch = make(kind, model, batch, n)
    epoch()
    print("READY", flush=True)
    for _ in sys.stdin:
        start = time.perf_counter()
        epoch()
        print(f"{time.perf_counter() - start:.6f}", flush=True)


def _run_case(name, **kwargs):
    code = (f"import json, resource; from reproduce.tools.bench import case_{name} as f; "
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
            return next(line.split(":")[1].strip() for line in f if line.startswith("model name"))
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
    print(f"Effective batch 1024, ResNet-20, SGD momentum 0.9, {_machine()}; median of 3 "
          "timed epochs of 2,048 examples per case")
    print("| case | s per 1024 examples | / wrapper 8x128 | peak RSS (MB) |")
    print("|---|---:|---:|---:|")
    wrapper = None
    for kind in ("native 1024", "wrapper 8x128", "wrapper 8x128 + noise scale",
                 "keras built-in 8x128", "native 128"):
        r = _run_case("accumulation", kind=kind)
        wrapper = r["seconds_per_1024"] if kind == "wrapper 8x128" else wrapper
        ratio = f"{r['seconds_per_1024'] / wrapper:.3f}" if wrapper else ""
        print(f"| {kind} | {r['seconds_per_1024']:.2f} | {ratio} | {r['peak_rss_mb']:.0f} |",
              flush=True)
    r = _run_case("noise_scale_cost", rounds=9)
    print(f"\nNoise scale, in one process taking turns (median of 9 epochs each): wrapper "
          f"{r['plain']:.2f} s, + noise scale {r['noise']:.2f} s per 1024 examples, ratio "
          f"{r['ratio']:.3f}; CPU time {r['cpu_plain']:.2f} s vs {r['cpu_noise']:.2f} s, "
          f"ratio {r['cpu_ratio']:.3f} (issue #19 target: <= 1.05); each epoch's wall time, "
          f"in turn: wrapper {r['epochs'][0]}, + noise scale {r['epochs'][1]}.")


# Examples per timed epoch: enough steps at small batches, a few at large.
THROUGHPUT_EPOCH = {2: 256, 32: 1024, 128: 2048, 1024: 4096}
# The targets the fast engine (with this suite's default settings) is held to,
# as a multiple of the PyTorch loop, per batch size.
THROUGHPUT_TARGETS = {2: 1.0, 32: 1.2, 128: 1.2, 1024: 1.2}
DEFAULT_KIND = "TF + oneDNN"


def _start_worker(kind, model, batch, n):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **THROUGHPUT_KINDS[kind][0]}
    code = ("from reproduce.tools.bench import throughput_worker as w; "
            f"w({kind!r}, {model!r}, {batch}, {n})")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if proc.stdout.readline().strip() != "READY":
        error = proc.stderr.read()
        if "No module named 'torch'" in error:
            return None
        raise SystemExit(f"benchmark worker {kind} ({model}, batch {batch}) failed:\n"
                         f"{error[-2000:]}")
    return proc


# Kinds too slow to time everywhere: {kind: (the batch sizes timed, examples per epoch)}.
SLOW_KINDS = {"TF + oneDNN + XLA": ((128,), 256)}


def throughput_row(model, batch, n, rounds=3):
    """{kind: samples/s; None where torch is missing; "" where not timed}: the
    median of `rounds` epochs per kind, the kinds taking turns epoch by epoch
    so the machine's noise hits all alike."""
    sizes = {kind: SLOW_KINDS.get(kind, ((batch,), n)) for kind in THROUGHPUT_KINDS}
    workers = {kind: _start_worker(kind, model, batch, size)
               for kind, (batches, size) in sizes.items() if batch in batches}
    times = {kind: [] for kind in workers}
    for _ in range(rounds):
        for kind, proc in workers.items():
            if proc is not None:
                proc.stdin.write("epoch\n")
                proc.stdin.flush()
                times[kind].append(float(proc.stdout.readline()))
    for proc in workers.values():
        if proc is not None:
            proc.stdin.close()
            proc.wait()
    return {kind: "" if kind not in workers else sizes[kind][1] / float(np.median(times[kind]))
            if times[kind] else None for kind in THROUGHPUT_KINDS}


def peak_flops():
    """(FLOP/s, how it was worked out): this CPU's fp32 vector peak, from its
    flags and clock. An assumption, not a measurement."""
    flags, mhz = set(), None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags") and not flags:
                    flags = set(line.split(":")[1].split())
                if line.startswith("cpu MHz") and mhz is None:
                    mhz = float(line.split(":")[1])
    except OSError:
        pass
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    fma = 2 if "fma" in flags or lanes == 16 else 1  # a fused multiply-add is 2 FLOPs
    per_cycle = 2 * lanes * fma  # 2 vector pipes per core
    cores, ghz = os.cpu_count(), (mhz or 2000.0) / 1000
    how = (f"{cores} cores x {ghz:.2f} GHz ('cpu MHz' in /proc/cpuinfo) x {per_cycle} fp32 "
           f"FLOP/cycle ({'AVX-512' if lanes == 16 else 'AVX2' if lanes == 8 else 'SSE'}: "
           f"2 vector pipes x {lanes} lanes{' x 2 (FMA)' if fma == 2 else ''})")
    return cores * ghz * 1e9 * per_cycle, how


def bench_throughput():
    import keras

    from batchsize import models
    from batchsize.models.flops import training_flops

    peak, how = peak_flops()
    flops = {m: training_flops(models.build(name, shape, 10))
             for m, (name, shape, _) in THROUGHPUT_MODELS.items()}
    print(f"Training throughput, samples/s (higher is better); {os.cpu_count()} CPU cores "
          f"({_cpu_name()}), keras {keras.__version__}")
    print("Each column is one worker process; the workers take turns, one epoch each, and a")
    print("figure is the median of 3 timed epochs after an untimed, compiling one. Synthetic")
    print("data, SGD momentum 0.9, batch norm; the Keras columns train with the fast engine")
    print("and the models' augmentation (pad-crop-flip, shifts), PyTorch without any.")
    for kind, (_, what) in THROUGHPUT_KINDS.items():
        print(f"  {kind}: {what}")
    print(f"Peak assumed: {peak / 1e9:.0f} GFLOP/s = {how}; an assumption, not a measurement.")
    print("Training FLOPs per example (3 x forward, a multiply-add = 2 FLOPs; models/flops.py): "
          + ", ".join(f"{m} {f / 1e9:.3f} GFLOP" for m, f in flops.items()))
    kinds = list(THROUGHPUT_KINDS)
    print("| model | batch | " + " | ".join(kinds) + f" | {DEFAULT_KIND} / PyTorch (target) "
          f"| {DEFAULT_KIND}: share of peak |")
    print("|---|---:|" + "---:|" * (len(kinds) + 2))
    for model in THROUGHPUT_MODELS:
        for batch, n in THROUGHPUT_EPOCH.items():
            r = throughput_row(model, batch, n)
            cells = ["torch not installed" if r[k] is None else "not timed" if r[k] == ""
                     else f"{r[k]:,.1f}" if r[k] < 10 else f"{r[k]:,.0f}" for k in kinds]
            ours, ref, target = r[DEFAULT_KIND], r["PyTorch"], THROUGHPUT_TARGETS[batch]
            ratio = "n/a" if ref is None else (
                f"{ours / ref:.2f}x (>= {target:.1f}x: {'met' if ours / ref >= target else 'NOT met'})")
            print(f"| {model} | {batch} | " + " | ".join(cells)
                  + f" | {ratio} | {ours * flops[model] / peak:.1%} |", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("which", choices=("pipeline", "accumulation", "throughput", "sweep",
                                     "tensorboard"))
    args, rest = p.parse_known_args(argv)
    if args.which == "sweep":
        from reproduce.tools import bench_sweep

        return bench_sweep.main(rest)
    if args.which == "tensorboard":
        from reproduce.tools import bench_tensorboard

        return bench_tensorboard.main(rest)
    {"pipeline": bench_pipeline, "accumulation": bench_accumulation,
     "throughput": bench_throughput}[args.which]()


if __name__ == "__main__":
    main()
