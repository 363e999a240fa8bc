"""Masters & Luschi 2018, "Revisiting Small Batch Training for Deep Neural Networks".

Method (their section 3, ../shared/papers.md section 1): plain SGD without
momentum; the learning rate is written per example, eta_tilde = eta / m, so
a run at batch m uses SGD(lr = m * eta_tilde). Batch sizes m and base rates
eta_tilde are powers of two; every run trains the same number of epochs; the
rate is divided by 10 at 50% and 75% of training; weight decay on kernels; He
initialisation; pad-4 crop and flip augmentation. The metric is the median
test accuracy of the last epochs. A run whose loss turns NaN is diverged.

Seeds: after the grid (one seed), the best cell of each m, the number their
Fig 15 plots, is trained at `seeds` - 1 more seeds (a follow-up chosen from
the results). The summary's best accuracy is that cell's mean over its seeds,
with the standard deviation and the count. The first seed was picked as the
row's best, so the mean leans high by up to a third of its lead over the other
seeds, alike for every m; the summary also gives the first seed's value.

    python -m reproduce.small_batch --preset quick            # the default
    python -m reproduce.small_batch --preset paper --variant no-bn

Writes figures/small_batch{,_<preset>}_{accuracy,summary,heatmap}.png and the
CSVs behind them.
"""

import math

import numpy as np
import pandas as pd

from callbacks import base_learning_rate, milestones_at
from reproduce.figure import Figure, finish, panel, seed_summary, subplots
from reproduce.config import ConfigError, RunConfig

# One declarative config per preset: model, data, epochs, the grid.
PRESETS = {
    # CI: seconds. Shows nothing about the paper; checks the machinery.
    "smoke": dict(
        base=RunConfig(dataset="cifar10", model="resnet8", norm="batch", train_size=256,
                       test_size=256, epochs=2, augment=True, weight_decay=1e-4),
        batch_sizes=(8, 64), eta_exponents=(-8, -4), last_epochs=1, seeds=2),
    # A 2-core CPU in minutes: ResNet-8 with batch norm on a CIFAR-10 subset.
    "quick": dict(
        base=RunConfig(dataset="cifar10", model="resnet8", norm="batch", train_size=2560,
                       test_size=2000, epochs=4, augment=True, weight_decay=1e-4),
        batch_sizes=(4, 16, 64, 256), eta_exponents=(-11, -9, -7, -5, -3), last_epochs=2, seeds=3),
    # Their Fig 8 set-up: ResNet-32, BN, augmentation, 82 epochs (a GPU job).
    "paper": dict(
        base=RunConfig(dataset="cifar10", model="resnet32", norm="batch", epochs=82,
                       augment=True, weight_decay=1e-4),
        batch_sizes=tuple(2 ** k for k in range(1, 12)),
        eta_exponents=tuple(range(-12, 1)), last_epochs=5, seeds=3),
}

# The paper's variants: no batch norm (Figs 1-3), warm-up (Figs 10-11), and
# the batch-norm batch decoupled from the SGD batch (Fig 13) via ghost BN.
VARIANTS = {"bn": {}, "no-bn": dict(norm="none"), "warmup": dict(warmup=0.05)}

CONVERGED_ACCURACY = 0.2  # twice chance on 10 classes: "the run learned"


def grid(spec, args=None):
    """The sweep: {(m, log2 eta_tilde, seed index 0): RunConfig}."""
    variant = getattr(args, "variant", "bn")
    base = spec["base"]
    changes = dict(VARIANTS.get(variant, {}))
    if variant.startswith("ghost:"):
        changes["norm"] = variant
    base = base.replace(lr_milestones=milestones_at((0.5, 0.75), base.epochs), **changes)
    return {(m, e, 0): base.replace(batch_size=m, lr=base_learning_rate(2.0 ** e, m))
            for m in spec["batch_sizes"] for e in spec["eta_exponents"]}


def more_seeds(sweep, runs, spec):
    """The follow-up: each m's best cell (first seed) at seeds 1 .. seeds-1."""
    frame = results_frame(list(runs.values()), sweep, spec["last_epochs"])
    more = {}
    for _, row in best_cells(frame).iterrows():
        config = runs[(row.m, row.log2_eta_tilde, 0)]
        for i in range(1, spec.get("seeds", 1)):
            more[(row.m, row.log2_eta_tilde, i)] = config.replace(seed=config.seed + i)
    return more


def best_cells(frame):
    """Per m, the grid's row (first seed) with the best test accuracy, if any."""
    first = frame[frame.seed == frame.seed.min()].dropna(subset=["test_accuracy"])
    return first.loc[first.groupby("m").test_accuracy.idxmax()]


def results_frame(configs, sweep, last_epochs):
    """The grid CSV: m, eta_tilde, lr, status, metric, epochs run, run time."""
    records = []
    for config in configs:
        record = sweep.load(config)
        rows = pd.DataFrame(record["rows"])
        diverged = record["status"] == "diverged"
        accuracy = np.nan if diverged or rows.empty else float(
            np.median(rows["test_accuracy"].tail(last_epochs)))
        records.append(dict(
            m=config.batch_size, log2_eta_tilde=int(round(math.log2(config.lr / config.batch_size))),
            eta_tilde=config.lr / config.batch_size, lr=config.lr, seed=config.seed,
            status=record["status"],
            test_accuracy=accuracy, epochs_run=len(rows), run_time_s=round(record["wall_time"], 1),
            key=config.key))
    return pd.DataFrame(records)


def summary_frame(frame):
    """Per m: best accuracy (Fig 15; the best cell's mean over its seeds) and
    the range of eta_tilde that converges (Fig 16; the first seed's grid)."""
    rows = []
    best_of = {row.m: row for _, row in best_cells(frame).iterrows()}
    first_seed = frame[frame.seed == frame.seed.min()]
    for m, runs in first_seed.groupby("m"):
        ok = runs[(runs.status == "finished") & (runs.test_accuracy >= CONVERGED_ACCURACY)]
        best = best_of.get(m)
        seeds = seed_summary([] if best is None else frame[
            (frame.m == m) & (frame.log2_eta_tilde == best.log2_eta_tilde)].test_accuracy)
        rows.append(dict(
            m=m, best_test_accuracy=seeds["mean"], best_test_accuracy_std=seeds["std"],
            seeds=seeds["seeds"],
            best_first_seed_test_accuracy=None if best is None else best.test_accuracy,
            best_log2_eta_tilde=None if best is None else best.log2_eta_tilde,
            converged_min_log2_eta=ok.log2_eta_tilde.min() if len(ok) else None,
            converged_max_log2_eta=ok.log2_eta_tilde.max() if len(ok) else None,
            converged_runs=len(ok), diverged_runs=int((runs.status == "diverged").sum())))
    return pd.DataFrame(rows)


def tables(sweep, runs, spec):
    frame = results_frame(list(runs.values()), sweep, spec["last_epochs"])
    return {"": frame, "summary": summary_frame(frame)}


def title(runs, spec):
    base = next(iter(runs.values()))
    return (f"{base.model} norm={base.norm} on {base.dataset}"
            f"{'' if not base.train_size else f' ({base.train_size} examples)'}, "
            f"{base.epochs} epochs, SGD; median of last {spec['last_epochs']} epochs")


def plot(tables, runs, spec, title):
    frame, summary = tables[""], tables["summary"]
    import seaborn as sns

    colors = dict(zip(sorted(frame.m.unique()), sns.color_palette("viridis", frame.m.nunique())))
    grid = frame[frame.seed == frame.seed.min()]  # the grid; `frame` has every seed
    return {"accuracy": accuracy_against_rate(grid, colors, title),
            "summary": best_and_converging(summary, frame, title),
            "heatmap": heatmap(grid, title)}


def accuracy_against_rate(grid, colors, title):
    """Their Fig 8: test accuracy against log2 eta_tilde, one curve per m."""
    fig, axes = subplots(width=7, height=4.5)
    ax = axes[0, 0]
    for m, runs in grid.groupby("m"):
        runs = runs.sort_values("log2_eta_tilde")
        ax.plot(runs.log2_eta_tilde, runs.test_accuracy, "o-", color=colors[m], label=f"m = {m}")
        div = runs[runs.status == "diverged"]
        ax.plot(div.log2_eta_tilde, [0.0] * len(div), "x", color=colors[m], ms=9, mew=2)
    panel(ax, xlabel=r"$\log_2 \tilde\eta$  (SGD lr = m $\tilde\eta$)", ylabel="test accuracy",
          title=f"{title}\n(x on the axis: diverged)", ylim=(-0.02, None),
          legend_title="batch size")
    return fig


def best_and_converging(summary, every, title):
    """Their Figs 15 and 16: the best accuracy and the converging range against m."""
    fig, axes = subplots(1, 2, width=5.5)
    a, b = axes[0]
    a.errorbar(summary.m, summary.best_test_accuracy, yerr=summary.best_test_accuracy_std,
               fmt="o-", capsize=4, label="best cell: mean ± std over its seeds")
    for _, row in summary.dropna(subset=["best_log2_eta_tilde"]).iterrows():
        cell = every[(every.m == row.m) & (every.log2_eta_tilde == row.best_log2_eta_tilde)]
        a.plot([row.m] * len(cell), cell.test_accuracy, ".", color="gray", alpha=0.7,
               label="each seed" if row.m == summary.m.min() else None)
    ok = summary.dropna(subset=["converged_min_log2_eta"])
    b.vlines(ok.m, ok.converged_min_log2_eta - 0.5, ok.converged_max_log2_eta + 0.5, lw=10,
             color="tab:green", alpha=0.6)
    panel(a, xscale="log", xlabel="batch size m", ylabel="best test accuracy",
          title=f"best accuracy over the eta sweep (Fig 15)\nbest cell at "
                f"{int(summary.seeds.max())} seeds (chosen on the first)")
    panel(b, xscale="log", xlabel="batch size m", ylabel=r"$\log_2 \tilde\eta$",
          title=f"range of eta that converges (Fig 16)\n(test acc >= {CONVERGED_ACCURACY:.0%})")
    for ax in (a, b):  # after the log scale, which resets the ticks
        ax.set_xticks(summary.m, [str(m) for m in summary.m])
    return finish(fig, title)


def heatmap(grid, title):
    """The whole sweep at a glance: accuracy per (m, eta_tilde), "div" where diverged."""
    import seaborn as sns

    table = grid.pivot(index="m", columns="log2_eta_tilde", values="test_accuracy")
    status = grid.pivot(index="m", columns="log2_eta_tilde", values="status")
    labels = table.map(lambda v: "" if np.isnan(v) else f"{v:.2f}")
    labels = labels.where(status != "diverged", "div")
    fig, axes = subplots(width=1.0 + 0.9 * table.shape[1], height=1.0 + 0.6 * table.shape[0])
    sns.heatmap(table, annot=labels, fmt="", cmap="viridis", ax=axes[0, 0], vmin=0,
                cbar_kws=dict(label="test accuracy"))
    axes[0, 0].set(xlabel=r"$\log_2 \tilde\eta$", ylabel="batch size m", title=title)
    return fig


def options(parser):
    parser.add_argument("--variant", default="bn",
                        help="bn (default), no-bn, warmup, or ghost:<g> (BN batch decoupled)")


def check(args):
    ghost = args.variant.startswith("ghost:") and args.variant[6:].isdigit() \
        and int(args.variant[6:]) >= 1
    if args.variant not in VARIANTS and not ghost:
        raise ConfigError(f"unknown --variant {args.variant!r}: expected bn, no-bn, warmup "
                          "or ghost:<g>")


FIGURE = Figure(
    cheap_paper_dry_run=True, name="small_batch", description=__doc__.splitlines()[1], presets=PRESETS, grid=grid,
    tables=tables, plots=plot, title=title, options=options, check=check, follow_up=more_seeds,
    stem=lambda args: "small_batch" + ("" if args.variant == "bn"
                                       else "_" + args.variant.replace(":", "")),
    describe=lambda c: f"m={c.batch_size:<5d} log2(eta~)={math.log2(c.lr / c.batch_size):+.0f}",
    printed=("summary",),
    report=(("Masters & Luschi: best accuracy and converging range per batch size", "summary"),))


main = FIGURE.main


if __name__ == "__main__":
    main()
