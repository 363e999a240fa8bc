"""The seed article's batch-size sweep on the Digit Recognizer CNN, and what
gradient accumulation does (../shared/papers.md section 5a).

Method: the Digit Recognizer CNN, Adam lr 1e-3 at every batch size (no lr
scaling), batch 32 ... 1024, 20 epochs on 33,600 MNIST training images (the
article's 80% of Kaggle's 42,000), validated on MNIST's 10,000 test images in
inference mode (the article left dropout on during validation, so its numbers
are lower than they should be). The accumulation experiment trains batch 128
x 8 accumulation steps against native batch 1024 and batch 128, once with
batch norm and once with group norm: accumulation reproduces the large-batch
update, but batch norm still normalises over each micro-batch of 128, so only
the group-norm curves should coincide (up to dropout's random masks, which
are drawn per micro-batch).

    python -m reproduce.mnist_batch_size --preset quick     # the default

Writes figures/mnist_batch_size{,_<preset>}{.csv,_table.csv,_accumulation.csv,
_curves.png,_accumulation.png}.
"""

import pandas as pd

from reproduce.figure import Figure
from reproduce.runner import RunConfig

# The article's validation accuracy at epoch 20 (dropout on during validation).
ARTICLE = {32: 0.9818, 64: 0.9854, 128: 0.9863, 256: 0.9871, 512: 0.9861, 1024: 0.9873}

ARTICLE_MODEL = RunConfig(dataset="mnist", model="digit_cnn", norm="batch", optimizer="adam",
                          lr=1e-3, he_init=False, epochs=20)

# One declarative config per preset: data, epochs, the batch-size grid, and
# the accumulation experiment (micro-batch, steps).
PRESETS = {
    "smoke": dict(base=ARTICLE_MODEL.replace(train_size=512, test_size=256, epochs=2),
                  batch_sizes=(32, 128), accumulation=(32, 4)),
    "quick": dict(base=ARTICLE_MODEL.replace(train_size=5000, epochs=6),
                  batch_sizes=(32, 64, 128, 256, 512, 1024), accumulation=(128, 8)),
    "paper": dict(base=ARTICLE_MODEL.replace(train_size=33600),
                  batch_sizes=(32, 64, 128, 256, 512, 1024), accumulation=(128, 8)),
}


SWEEP = "batch size sweep"


def grid(spec, args=None):
    """{(experiment, case): config}: the batch-size sweep, then the
    accumulation experiment per normalisation."""
    base = spec["base"]
    runs = {(SWEEP, f"batch {b}"): base.replace(batch_size=b) for b in spec["batch_sizes"]}
    micro, steps = spec["accumulation"]
    for norm in ("batch", "group"):
        experiment = f"accumulation, {norm} norm"
        runs[(experiment, f"{micro} x {steps} accumulated")] = base.replace(
            norm=norm, batch_size=micro * steps, accumulation=steps)
        runs[(experiment, f"native {micro * steps}")] = base.replace(
            norm=norm, batch_size=micro * steps)
        runs[(experiment, f"native {micro}")] = base.replace(norm=norm, batch_size=micro)
    return runs


def tables(sweep, runs, spec=None):
    """Per-epoch rows of every run (one CSV), the final-epoch table beside the
    article's numbers, and the accumulation summary."""
    frame = pd.concat([sweep.table([config]).assign(experiment=experiment, case=case)
                       for (experiment, case), config in runs.items()], ignore_index=True)
    keep = ["experiment", "case", "norm", "batch_size", "accumulation", "epoch", "updates",
            "loss", "accuracy", "test_loss", "test_accuracy", "status", "wall_time"]
    frame = frame[keep]
    last = frame[frame.experiment == SWEEP].groupby("batch_size").tail(1)
    table = pd.DataFrame(dict(
        batch_size=last.batch_size, epochs=last.epoch, updates=last.updates,
        test_accuracy=last.test_accuracy.round(4),
        article_val_accuracy_epoch20=last.batch_size.map(ARTICLE),
        train_accuracy=last.accuracy.round(4), status=last.status))
    return {"": frame, "table": table.reset_index(drop=True),
            "accumulation": accumulation_summary(frame)}


def title(runs, spec):
    base = next(iter(runs.values()))
    return (f"digit_cnn, Adam 1e-3, MNIST ({base.train_size or 60000} training images), "
            f"{base.epochs} epochs")


def accumulation_summary(frame):
    """Per normalisation: how far the accumulated run is from native large and
    native micro batches (mean |difference| of per-epoch validation accuracy
    and training loss), and each case's final accuracy."""
    rows = []
    for experiment, group in frame[frame.experiment != SWEEP].groupby("experiment"):
        curves = {case: run.set_index("epoch") for case, run in group.groupby("case")}
        accumulated = next(c for c in curves if "accumulated" in c)
        for case, run in curves.items():
            a = curves[accumulated]
            rows.append(dict(
                experiment=experiment, case=case,
                final_test_accuracy=round(float(run.test_accuracy.iloc[-1]), 4),
                final_loss=round(float(run.loss.iloc[-1]), 4),
                updates=int(run.updates.iloc[-1]),
                mean_abs_test_accuracy_gap_to_accumulated=float(
                    (run.test_accuracy - a.test_accuracy).abs().mean()),
                mean_abs_loss_gap_to_accumulated=float((run.loss - a.loss).abs().mean())))
    return pd.DataFrame(rows)


def plot(tables, runs, spec, title):
    frame = tables[""]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    runs = frame[frame.experiment == SWEEP]
    sizes = sorted(runs.batch_size.unique())
    colors = dict(zip(sizes, sns.color_palette("viridis", len(sizes))))
    # The article's epoch-20 values sit just right of the last epoch, so a short
    # run's curves are not squeezed into the left of the axis.
    article_x = runs.epoch.max() + 0.6
    fig1, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for b, run in runs.groupby("batch_size"):
        axes[0].plot(run.epoch, run.test_accuracy, "o-", ms=3, color=colors[b], label=f"{b}")
        axes[1].plot(run.epoch, run.accuracy, "o-", ms=3, color=colors[b], label=f"{b}")
        if b in ARTICLE:
            axes[0].plot([article_x], [ARTICLE[b]], "*", ms=10, color=colors[b])
    axes[0].set(title="validation accuracy (inference mode)\n* the article's at epoch 20 "
                "(33,600 images, dropout on)",
                xlabel="epoch", ylabel="accuracy")
    axes[1].set(title="training accuracy (running mean over the epoch, dropout on)",
                xlabel="epoch")
    low = min(runs.test_accuracy.min(), runs.accuracy.min())
    for ax in axes:
        ax.set_ylim(max(low - 0.01, 0.9 if low > 0.9 else 0), 1.0)
        ax.grid(alpha=0.3)
    axes[0].legend(title="batch size", fontsize=8)
    fig1.suptitle(title)
    fig1.tight_layout()

    acc = frame[frame.experiment != SWEEP]
    fig2, axes = plt.subplots(2, 2, figsize=(12, 8))
    styles = {case: style for case, style in zip(
        sorted(acc.case.unique(), key=lambda c: ("accumulated" not in c, c)), ("o-", "s--", "^:"))}
    for col, (experiment, group) in enumerate(acc.groupby("experiment")):
        for case, run in group.groupby("case"):
            axes[0, col].plot(run.epoch, run.test_accuracy, styles[case], ms=4, label=case)
            axes[1, col].plot(run.updates, run.loss, styles[case], ms=4, label=case)
        axes[0, col].set(title=experiment, xlabel="epoch", ylabel="validation accuracy")
        axes[1, col].set(xlabel="parameter updates", ylabel="training loss", xscale="log",
                         yscale="log")
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig2.suptitle("gradient accumulation vs native batches: batch norm sees the micro-batch, "
                  "group norm does not\n" + title)
    fig2.tight_layout()
    return {"curves": fig1, "accumulation": fig2}


FIGURE = Figure(
    name="mnist_batch_size", description=__doc__.splitlines()[0], presets=PRESETS, grid=grid,
    tables=tables, plots=plot, title=title, printed=("table", "accumulation"),
    describe=lambda c: f"batch {c.batch_size:<4d} norm={c.norm:<5s} accumulation {c.accumulation}",
    report=(("Seed article: validation accuracy per batch size", "table"),
            ("Seed article: accumulation vs native batches", "accumulation")))


main = FIGURE.main


if __name__ == "__main__":
    main()
