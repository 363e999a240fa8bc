"""What the TensorBoard curves cost a run (`make bench-tensorboard`): time and disk.

    python -m reproduce.tools.bench tensorboard [--figures small_batch,dont_decay,lr_scaling]
                                          [--rounds 3]

Time. For each figure, the quick preset's run with the most updates (the most
writes) trains in this process with and without its curves
(`reproduce.runs.tensorboard`), the two taking turns `rounds` times (the order
swapped each round, so drift in the machine's speed hits both alike); the
table gives the median training time of each (the record's `wall_time`:
training and the per-epoch evaluation, not the data loading) and the
overhead. Target: under 3%.

Disk. The same quick run's log folder, measured. For the paper preset, the
run with the most updates: its event file written in full, with the same
tags and as many writes as its training would make (about one per compiled
call, `RunCurves.interval`, and one at every epoch end), without training it,
then measured.
"""

import argparse
import statistics
import tempfile
from pathlib import Path

from reproduce import registry
from reproduce.runs import plan
from reproduce.runs import tensorboard as board
from reproduce.runs.engine import BATCHES_PER_CALL
from reproduce.figure import parser


def preset_runs(name, preset):
    """{label: RunConfig} of a figure's preset, as its target would train them
    (the follow-ups aside)."""
    figure = registry.figure(name)
    args = parser(figure).parse_args(["--preset", preset])
    return figure.grid(figure.presets[preset], args)


def busiest(name, preset):
    """(label, config, updates) of the preset's run with the most updates;
    the label as the figure's progress lines name the run."""
    runs = preset_runs(name, preset)
    rows = plan.estimate(runs).sort_values("updates", ascending=False, kind="stable")
    top = rows.iloc[0]
    config = next(config for label, config in runs.items() if str(label) == top.run)
    return readable(name, config, top.run), config, int(top.updates)


def readable(name, config, fallback):
    """The figure's own words for a run (`Figure.describe`) and its seed."""
    describe = registry.figure(name).describe
    if describe is None:
        return fallback
    text = " ".join(describe(config).split())
    return text if "seed" in text else f"{text}, seed {config.seed}"


def trained_seconds(config, logs):
    """Training time of `config`, with its curves under `logs` (None: none)."""
    from reproduce.runs.train import train

    curves = board.SweepLogs(logs) if logs else None
    result = train(config, curves=curves)
    return result["wall_time"]


def timed(config, rounds):
    """({"without": [s], "with": [s]}, bytes of one run's logs)."""
    times, size = {"without": [], "with": []}, 0
    for round_ in range(rounds):
        for mode in (("without", "with") if round_ % 2 == 0 else ("with", "without")):
            with tempfile.TemporaryDirectory() as folder:
                times[mode].append(trained_seconds(config, folder if mode == "with" else None))
                size = max(size, board.folder_bytes(folder))
    return times, size


def written_bytes(config, updates):
    """Bytes of the event file a run of `updates` updates writes: every
    write it would make, made with the same tags (no training)."""
    n = plan._train_size(config)
    schedule = config.training_schedule(n)
    with tempfile.TemporaryDirectory() as folder:
        curves = board.RunCurves(Path(folder) / "run", None, None)
        curves.writer, curves.num_examples = board._writer(curves.log_dir), n
        running = {tag: 0.5 for tag in ("train/loss", "train/accuracy", "schedule/learning_rate",
                                         "schedule/batch_size", "schedule/accumulation_steps")}
        full = {**running, **{tag: 0.5 for tag in (
            "test/loss", "test/accuracy", "schedule/momentum", "schedule/physical_batch",
            "measures/weight_distance", "measures/noise_scale_simple")}}
        done = 0
        for epoch in schedule:
            end = epoch.cumulative_updates
            every = max(1, BATCHES_PER_CALL // epoch.accumulation_steps)  # RunCurves.interval
            for update in range((done // every + 1) * every, end, every):
                curves._curves(update, epoch.epoch * n + min(
                    n, (update - epoch.first_update) * epoch.batch_size), running)
            curves._curves(end, (epoch.epoch + 1) * n, full, epochs=epoch.epoch + 1)
            done = end
        curves.close()
        assert done == updates, (done, updates)
        return board.folder_bytes(folder)


def megabytes(size):
    return f"{size / 1e6:,.2f} MB" if size < 1e9 else f"{size / 1e9:,.2f} GB"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--figures", default="small_batch,dont_decay,lr_scaling")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    names = registry.NAMES if args.figures == "all" else args.figures.split(",")
    for name in names:
        registry.figure(name)  # an unknown name fails here, before any training
    print(f"TensorBoard curves (a write every {BATCHES_PER_CALL} micro-batches and at epoch ends): "
          f"each quick preset's run with the most updates, trained with and without them, "
          f"taking turns {args.rounds} times; median training seconds")
    print("| figure | quick run (its updates) | without | with | overhead | disk, quick run | "
          "paper run (its updates) | disk, paper run |")
    print("|---|---|---:|---:|---:|---:|---|---:|")
    for name in names:
        label, config, updates = busiest(name, "quick")
        times, size = timed(config, args.rounds)
        without, with_ = statistics.median(times["without"]), statistics.median(times["with"])
        paper_label, paper, paper_updates = busiest(name, "paper")
        print(f"| {name} | {label} ({updates:,}) | {without:.1f} s | {with_:.1f} s | "
              f"{with_ / without - 1:+.1%} | {megabytes(size)} | {paper_label} "
              f"({paper_updates:,}) | {megabytes(written_bytes(paper, paper_updates))} |",
              flush=True)


if __name__ == "__main__":
    main()
