"""Runs side by side: does a sweep gain by training n runs at once, each on its
own thread budget, over one run at a time on every core? (`make bench-sweep`)

    python -m reproduce.tools.bench sweep [--models resnet20,f1] [--batches 4,32,128] [--no-figure]
    python -m reproduce.tools.bench sweep --no-cells --figure all --keep   # every quick figure

Each cell trains the project's own fast engine on synthetic data in worker
processes: one worker with every core (`THREADS` = the cores), then as many
workers as cores at once with one thread each, all timing the same window of
wall time after their warm-up, so the runs at once really overlap. Their
samples/s are summed. A whole quick figure is then timed as a target, serially
(`JOBS=1`) and side by side (the default), each into a fresh results folder
(`--keep`: the side-by-side run into results/ and figures/, as `make fig-...`).
The crossover this prints is what `reproduce.runs.sweep.threads_for` is set from.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from reproduce import registry
from reproduce.runs import settings

SHAPES = {"resnet20": (32, 32, 3), "resnet8": (32, 32, 3), "f1": (28, 28, 1),
          "digit_cnn": (28, 28, 1)}
WINDOW_SECONDS = 20.0


def worker(model, batch, start_at, seconds):
    """In a worker process (THREADS set): warm up, wait for `start_at`, train
    for `seconds`; prints samples/s and whether the window started late."""
    import keras
    import numpy as np

    from batchsize import models
    from reproduce.runs.engine import FastEngine
    from reproduce.runs.train import compile_model

    shape = SHAPES[model]
    rng = np.random.default_rng(0)
    n = 4 * batch  # four steps per call
    x = rng.normal(size=(n, *shape)).astype("float32")
    y = rng.integers(0, 10, n).astype("int32")
    keras.utils.set_random_seed(0)
    net = compile_model(models.build(model, shape, 10, norm="batch"),
                        keras.optimizers.SGD(0.01, momentum=0.9))
    engine = FastEngine(net, x, y)
    engine.fit(1, batch)  # compiles
    late = time.time() > start_at
    while time.time() < start_at:
        time.sleep(0.01)
    examples, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        engine.fit(1, batch)
        examples += n
    print("RESULT", json.dumps(dict(rate=examples / (time.perf_counter() - started), late=late)),
          flush=True)


def at_once(model, batch, jobs, threads, warmup=45.0, seconds=WINDOW_SECONDS):
    """Samples/s of `jobs` workers of `threads` threads each, timed over the
    same window; returns ([rate per worker], any late)."""
    start_at = time.time() + warmup
    code = (f"from reproduce.tools.bench_sweep import worker; "
            f"worker({model!r}, {batch}, {start_at}, {seconds})")
    env = {**os.environ, **settings.thread_settings(threads), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(jobs)]
    results = []
    for proc in procs:
        out, err = proc.communicate()
        lines = [line for line in out.splitlines() if line.startswith("RESULT")]
        if not lines:
            raise SystemExit(f"bench-sweep worker {model} batch {batch} failed:\n{err[-2000:]}")
        results.append(json.loads(lines[0][6:]))
    return [r["rate"] for r in results], any(r["late"] for r in results)


def figure_time(name, jobs, keep=False):
    """Seconds of the whole quick target of figure `name` into a fresh results
    folder, with JOBS=`jobs` (None: the default). `keep`: into the project's
    own results/ and figures/ instead, exactly as `make fig-<name>` (the
    committed figures)."""
    with tempfile.TemporaryDirectory() as folder:
        env = {k: v for k, v in os.environ.items() if k not in ("JOBS", "THREADS")}
        if jobs is not None:
            env["JOBS"] = str(jobs)
        where = [] if keep else ["--results", f"{folder}/results", "--out", f"{folder}/figures"]
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", f"{registry.PACKAGE}.{name}", "--preset", "quick",
                              *where], env=env, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"fig {name} (JOBS={jobs}) failed:\n{out.stderr[-2000:]}")
        runs = [line for line in out.stdout.splitlines() if " runs: " in line]
        return time.perf_counter() - started, [line for line in out.stdout.splitlines()
                                                if "at a time" in line or "at once" in line], runs


def figures_table(names, keep):
    """Each quick figure serially (JOBS=1) and side by side (the default),
    whole targets, one after the other; prints a row per figure."""
    print("\n| quick figure | runs | serially (JOBS=1) | side by side | speed-up |")
    print("|---|---:|---:|---:|---:|")
    total_serial = total_side = 0.0
    for name in names:
        serial, _, runs = figure_time(name, 1)
        side, lines, _ = figure_time(name, None, keep=keep)
        total_serial, total_side = total_serial + serial, total_side + side
        trained = [re.search(r"(\d+) to train", line) for line in runs]
        count = sum(int(m.group(1)) for m in trained if m) if runs else "?"
        print(f"| make {name.replace('_', '-')} | {count} | {serial / 60:.1f} min | "
              f"{side / 60:.1f} min | {serial / side:.2f}x |", flush=True)
    if len(names) > 1:
        print(f"| all {len(names)} | | {total_serial / 60:.1f} min | {total_side / 60:.1f} min | "
              f"{total_serial / total_side:.2f}x |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet20,f1")
    p.add_argument("--batches", default="4,32,128,512,2048")
    p.add_argument("--figure", default="small_batch",
                   help="the quick figures timed serially and side by side: names, "
                        "comma-separated, or 'all'")
    p.add_argument("--no-figure", action="store_true")
    p.add_argument("--no-cells", action="store_true", help="only the whole figures")
    p.add_argument("--keep", action="store_true",
                   help="the side-by-side runs write results/ and figures/ (as make fig-...)")
    args = p.parse_args(argv)
    cores = settings.cores()
    print(f"Runs side by side on {cores} cores ({os.uname().machine})")
    if not args.no_cells:
        print(f"One run with {cores} threads against {cores} runs at once with 1 thread each; "
              f"samples/s, each run timed over the same {WINDOW_SECONDS:.0f} s window after "
              "its warm-up")
        print(f"| model | batch | one run, {cores} threads | {cores} runs x 1 thread (each) | "
              f"{cores} runs x 1 thread (sum) | sweep throughput |")
        print("|---|---:|---:|---:|---:|---:|")
    for model in [] if args.no_cells else args.models.split(","):
        for batch in map(int, args.batches.split(",")):
            (alone,), late_alone = at_once(model, batch, 1, cores)
            each, late = at_once(model, batch, cores, 1)
            note = " (a warm-up ran late: windows overlap less)" if late or late_alone else ""
            print(f"| {model} | {batch} | {alone:,.0f} | "
                  + " + ".join(f"{r:,.0f}" for r in each)
                  + f" | {sum(each):,.0f} | {sum(each) / alone:.2f}x{note} |", flush=True)
    if not args.no_figure:
        names = registry.NAMES if args.figure == "all" else args.figure.split(",")
        for name in names:
            registry.figure(name)  # an unknown name fails here, before any training
        figures_table(list(names), args.keep)

if __name__ == "__main__":
    main()
