"""Masters & Luschi 2018, "Revisiting Small Batch Training for Deep Neural Networks".

Method (their section 3; arXiv:1804.07612): plain SGD without
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

    python -m reproduce.papers.small_batch --preset quick            # the default
    python -m reproduce.papers.small_batch --preset paper --variant no-bn

Writes figures/small_batch{,_<preset>}_{accuracy,summary,heatmap}.png and the
CSVs behind them.
"""

import math

import numpy as np
import pandas as pd

from batchsize.callbacks import base_learning_rate, milestones_at
from reproduce.claims import (CHANCE, FAILS, HOLDS, Claim, Verdict, compare_rows, differs,
                              inconclusive, verdict_or_too_few)
from reproduce.figure import (Figure, evaluation_note, finish, max_extensions, panel, paired_test_variance,
                              seed_summary, subplots)
from reproduce.runs.config import ConfigError, RunConfig

# One declarative config per preset: model, data, epochs, the grid.
PRESETS = {
    # CI: seconds. Shows nothing about the paper; checks the machinery.
    "smoke": dict(
        base=RunConfig(dataset="cifar10", model="resnet8", norm="batch", train_size=256,
                       test_size=256, validation_size=64, epochs=2, augment=True,
                       weight_decay=1e-4),
        batch_sizes=(8, 64), eta_exponents=(-8, -4), last_epochs=1, seeds=2, max_extensions=1,
        score_read_epochs_only=True),
    # A 2-core CPU in minutes: ResNet-8 with batch norm on a CIFAR-10 subset.
    # m includes 8 and 32, where the paper's optimum lies; the grid steps eta~
    # by 4x, then 2x beside each m's best (`refine`); equal epochs for every m.
    # Bests are chosen on 512 held-out training images, the test set judges.
    # Seeds: the two cells the headline claim compares, at the count the power
    # line asked for at the spread of the committed quick CSVs (6: 5 judged + 1
    # that chose; fixed before the run); the other cells' bests at one seed.
    "quick": dict(
        base=RunConfig(dataset="cifar10", model="resnet8", norm="batch", train_size=2560,
                       test_size=2000, validation_size=512, epochs=4, augment=True,
                       weight_decay=1e-4),
        batch_sizes=(4, 8, 16, 32, 64, 256), eta_exponents=(-11, -9, -7, -5, -3), refine=True,
        last_epochs=2, seeds=1, claim_seeds=6, score_read_epochs_only=True),
    # The claims decided on this CPU (#44): 8,000 training images (2,000 more
    # held out to choose on), 8 epochs, m = 4..256 with 8, 32 and 128, a wide
    # eta~ grid in 4x steps (its top ends every m's converging range; its
    # bottom, 2^-14, still converges at every m, so the range's count is cut
    # off there alike for every m), 2x steps beside each best, the compared
    # cells at 6 seeds. Every epoch is scored: its runs were stored before
    # `score_read_epochs_only`.
    "cpu": dict(
        base=RunConfig(dataset="cifar10", model="resnet8", norm="batch", train_size=10000,
                       test_size=5000, validation_size=2000, epochs=8, augment=True,
                       weight_decay=1e-4),
        batch_sizes=(4, 8, 16, 32, 64, 128, 256), eta_exponents=(-14, -12, -10, -8, -6, -4, -2, 0),
        refine=True, last_epochs=2, seeds=1, claim_seeds=6),
    # Their Fig 8 set-up: ResNet-32, BN, augmentation, 82 epochs (a GPU job).
    "paper": dict(
        base=RunConfig(dataset="cifar10", model="resnet32", norm="batch", epochs=82,
                       augment=True, weight_decay=1e-4),
        batch_sizes=tuple(2 ** k for k in range(1, 12)),
        eta_exponents=tuple(range(-12, 1)), last_epochs=5, seeds=3, score_read_epochs_only=True),
}

# The paper's variants: no batch norm (Figs 1-3), warm-up (Figs 10-11), and
# the batch-norm batch decoupled from the SGD batch (Fig 13) via ghost BN.
VARIANTS = {"bn": {}, "no-bn": dict(norm="none"), "warmup": dict(warmup=0.05)}

# A run converges when it finished and its training loss ended below the loss
# of a guess (ln 10 on 10 classes): a slow but stable run reaches it, whatever m.
CONVERGED_LOSS = math.log(10)
SMALL = 32  # the paper's "small batch": m <= 32


def grid(spec, args=None):
    """The sweep: {(m, log2 eta_tilde, seed index 0): RunConfig}."""
    variant = getattr(args, "variant", "bn")
    base = spec["base"]
    changes = dict(VARIANTS.get(variant, {}))
    if variant.startswith("ghost:"):
        changes["norm"] = variant
    if spec.get("score_read_epochs_only"):
        # The figure reads the last epochs alone: the test and held-out sets
        # are scored there only (the training is the same run's).
        changes["evaluated_epochs"] = spec["last_epochs"]
    base = base.replace(lr_milestones=milestones_at((0.5, 0.75), base.epochs), **changes)
    return {(m, e, 0): base.replace(batch_size=m, lr=base_learning_rate(2.0 ** e, m))
            for m in spec["batch_sizes"] for e in spec["eta_exponents"]}


def follow_up(sweep, runs, spec):
    """First the open edges of each m's eta_tilde grid (the first seed's best
    on the edge: the next eta_tilde outward, at most max_extensions steps);
    once every edge is closed, each m's best cell at seeds 1 .. seeds-1."""
    frame = results_frame(list(runs.values()), sweep, spec["last_epochs"])
    more = {}
    for m, e in open_edges(frame, spec).items():
        more[(m, e, 0)] = cell(runs, m, e)
    if more:
        return more
    if spec.get("refine"):  # 2x steps beside each m's best
        tried = set(zip(frame.m, frame.log2_eta_tilde))
        for _, row in best_cells(frame).iterrows():
            for e in (row.log2_eta_tilde - 1, row.log2_eta_tilde + 1):
                if (row.m, e) not in tried:
                    more[(row.m, e, 0)] = cell(runs, row.m, e)
        if more:
            return more
    compared = set(claim_cells(best_cells(frame)))
    for _, row in best_cells(frame).iterrows():
        config = runs.get((row.m, row.log2_eta_tilde, 0)) or cell(runs, row.m, row.log2_eta_tilde)
        seeds = spec.get("claim_seeds", spec.get("seeds", 1)) if row.m in compared \
            else spec.get("seeds", 1)
        for i in range(1, seeds):
            more[(row.m, row.log2_eta_tilde, i)] = config.replace(seed=config.seed + i)
    return more


def cell(runs, m, e):
    """The first seed's config of batch m at log2 eta~ = e."""
    base = next(config for (size, _, i), config in runs.items() if size == m and i == 0)
    return base.replace(lr=base_learning_rate(2.0 ** e, m))


def claim_cells(best):
    """The two batch sizes the headline claim compares: the best of m <= 32
    and the best of m > 32 (each chosen on its first seed)."""
    sides = [best[(best.m <= SMALL) == small] for small in (True, False)]
    column = choice_column(best)
    return [int(rows.loc[rows[column].idxmax()].m) for rows in sides if len(rows)]


def grid_step(spec):
    exponents = sorted(spec["eta_exponents"])
    return min(b - a for a, b in zip(exponents, exponents[1:])) if len(exponents) > 1 else 1


def edges(frame, spec):
    """{m: (the next log2 eta_tilde outward, or None once max_extensions are
    used)} for each m whose first-seed best sits on the edge of what was tried."""
    step, low, high = grid_step(spec), min(spec["eta_exponents"]), max(spec["eta_exponents"])
    out = {}
    first = frame[frame.seed == frame.seed.min()]
    for _, best in best_cells(frame).iterrows():
        tried = sorted(first[first.m == best.m].log2_eta_tilde)
        if best.log2_eta_tilde not in (tried[0], tried[-1]) or len(tried) < 2:
            continue
        outward = best.log2_eta_tilde + (step if best.log2_eta_tilde == tried[-1] else -step)
        used = max(outward - high, low - outward) / step
        out[best.m] = outward if used <= max_extensions(spec) else None
    return out


def open_edges(frame, spec):
    """{m: the next log2 eta_tilde to try} (edges that can still be extended)."""
    return {m: e for m, e in edges(frame, spec).items() if e is not None}


def choice_column(frame):
    """What a best is chosen on: the held-out validation accuracy where the
    runs have it, else (runs stored without it) the test accuracy."""
    has = "validation_accuracy" in frame and frame.validation_accuracy.notna().any()
    return "validation_accuracy" if has else "test_accuracy"


def best_cells(frame):
    """Per m, the grid's row (first seed) with the best validation accuracy
    (`choice_column`), if any. A cell where any seed diverged cannot be the
    best: the choice moves to the next cell (a rate at the edge of stability
    is not a best)."""
    lost = set(zip(*[frame[frame.status == "diverged"][c] for c in ("m", "log2_eta_tilde")]))
    column = choice_column(frame)
    first = frame[frame.seed == frame.seed.min()].dropna(subset=[column])
    first = first[[(m, e) not in lost for m, e in zip(first.m, first.log2_eta_tilde)]]
    return first.loc[first.groupby("m")[column].idxmax()]


def results_frame(configs, sweep, last_epochs):
    """The grid CSV: m, eta_tilde, lr, status, metric, epochs run, run time."""
    records = []
    for config in configs:
        record = sweep.load(config)
        rows = pd.DataFrame(record.rows)
        diverged = record.status == "diverged"
        def metric(column):
            if diverged or rows.empty or column not in rows:
                return np.nan
            return float(np.median(rows[column].tail(last_epochs)))
        accuracy = metric("test_accuracy")
        records.append(dict(
            m=config.batch_size, log2_eta_tilde=int(round(math.log2(config.lr / config.batch_size))),
            eta_tilde=config.lr / config.batch_size, lr=config.lr, seed=config.seed,
            status=record.status, train_loss=np.nan if rows.empty else float(rows.loss.iloc[-1]),
            test_accuracy=accuracy, validation_accuracy=metric("validation_accuracy"),
            epochs_run=len(rows), run_time_s=round(record.wall_time, 1),
            key=config.key))
    return pd.DataFrame(records)


def summary_frame(frame, spec, sweep=None, runs=None):
    """Per m: best accuracy (Fig 15; the best cell's mean over its seeds, and
    over the seeds that did not choose it, which the claim judges), whether
    the best sits on an open edge of the grid, and the range of eta_tilde that
    converges (Fig 16; the first seed's grid, its original exponents)."""
    rows = []
    best_of = {row.m: row for _, row in best_cells(frame).iterrows()}
    at_edge = edges(frame, spec)
    first_seed = frame[frame.seed == frame.seed.min()]
    for m, cells in first_seed.groupby("m"):
        grid = cells[cells.log2_eta_tilde.isin(spec["eta_exponents"])]
        ok = grid[(grid.status == "finished") & (grid.train_loss < CONVERGED_LOSS)]
        best = best_of.get(m)
        chosen = frame[(frame.m == m) & (frame.log2_eta_tilde == best.log2_eta_tilde)] \
            if best is not None else frame.iloc[:0]
        judged_rows = chosen[chosen.seed != frame.seed.min()]
        seeds = seed_summary(chosen.test_accuracy, diverged=chosen.status == "diverged",
                             diverged_value=CHANCE)
        judged = seed_summary(judged_rows.test_accuracy, seeds=judged_rows.seed,
                              diverged=judged_rows.status == "diverged", diverged_value=CHANCE)
        rows.append(dict(
            m=m, best_test_accuracy=seeds["mean"], best_test_accuracy_std=seeds["std"],
            seeds=seeds["seeds"],
            judged_test_accuracy=judged["mean"], judged_test_accuracy_std=judged["std"],
            judged_seeds=judged["seeds"], judged_test_accuracy_by_seed=judged["by_seed"],
            diverged_seeds=seeds["diverged"],
            best_first_seed_test_accuracy=None if best is None else best.test_accuracy,
            chosen_on=choice_column(frame),
            best_first_seed_choice_accuracy=None if best is None else best[choice_column(frame)],
            best_log2_eta_tilde=None if best is None else best.log2_eta_tilde,
            edge_open=m in at_edge,
            converged_min_log2_eta=ok.log2_eta_tilde.min() if len(ok) else None,
            converged_max_log2_eta=ok.log2_eta_tilde.max() if len(ok) else None,
            converged_runs=len(ok), diverged_runs=int((grid.status == "diverged").sum())))
    summary = pd.DataFrame(rows)
    if sweep is not None and len(summary):
        summary["judged_paired_var_vs_other_best"] = paired_against_other_best(
            summary, sweep, runs, frame.seed.min())
    return summary


def paired_against_other_best(summary, sweep, runs, first_seed):
    """Per m, the paired test-set variance of its best cell's judged seeds
    against the other side's best (m <= 32 against m > 32, and back)."""
    def judged(m):
        row = summary[summary.m == m].iloc[0]
        return [c for (size, e, _), c in runs.items() if size == m
                and e == row.best_log2_eta_tilde and c.seed != first_seed]

    ranked = summary.dropna(subset=["best_first_seed_choice_accuracy"])
    best = {small: ranked[(ranked.m <= SMALL) == small].nlargest(
        1, "best_first_seed_choice_accuracy").m.tolist() for small in (True, False)}
    out = []
    for m in summary.m:
        other = best[not m <= SMALL]
        out.append(paired_test_variance(sweep, judged(m), judged(other[0]))
                   if other and m in ranked.m.values else None)
    return out


def tables(sweep, runs, spec):
    frame = results_frame(list(runs.values()), sweep, spec["last_epochs"])
    return {"": frame, "summary": summary_frame(frame, spec, sweep, runs)}


def title(runs, spec):
    base = next(iter(runs.values()))
    return (f"{base.model} norm={base.norm} on {base.dataset}"
            f"{'' if not base.train_size else f' ({base.train_size} examples)'}, "
            f"{base.epochs} epochs, SGD; median of last {spec['last_epochs']} epochs"
            f"{evaluation_note(base)}")


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
          title="range of eta that converges (Fig 16)\n(finished, final training loss < ln 10)")
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


# -- the claims (reproduce.claims) --------------------------------------------------
def best_batch_is_small(tables, n_test):
    """The best cell of m <= 32 beats the best of m > 32 (each chosen on its
    first seed, judged on the others); INCONCLUSIVE while a best sits on an
    open edge of its eta_tilde grid."""
    summary = tables["summary"]
    choice = "best_first_seed_choice_accuracy" if "best_first_seed_choice_accuracy" in summary \
        else "best_first_seed_test_accuracy"  # a CSV from before the validation split
    summary = summary.dropna(subset=[choice])
    sides = {small: summary[(summary.m <= SMALL) == small] for small in (True, False)}
    if any(rows.empty for rows in sides.values()):
        return inconclusive(f"needs m <= {SMALL} and m > {SMALL}, has m = {list(summary.m)}",
                            "train both")
    small, large = (rows.loc[rows[choice].idxmax()]
                    for rows in (sides[True], sides[False]))
    a, b, diff = compare_rows(small, large, "judged_test_accuracy", n_test=n_test(),
                              paired="judged_paired_var_vs_other_best", seeds="judged_seeds",
                              extra_seeds=1, table=summary)
    verdict = verdict_or_too_few(a, b, diff, (f"m = {int(small.m)}", f"m = {int(large.m)}"),
                                 differs)
    chosen = summary.chosen_on.iloc[0] if "chosen_on" in summary else "test_accuracy"
    note = (" (each cell chosen on its first seed's "
            f"{'held-out validation' if chosen == 'validation_accuracy' else 'test'} accuracy, "
            "judged on the other seeds' test accuracy)")
    open_edges = [f"m = {int(m)}" for m in summary[summary.edge_open].m]
    if open_edges:
        return inconclusive(verdict.numbers + note, "a best eta_tilde sits on an open edge of "
                            f"its grid at {', '.join(open_edges)}: extend the grid")
    return Verdict(verdict.outcome, verdict.numbers + note, verdict.power)


def converging_range_does_not_grow(tables, n_test):
    """A count per m over the first seed's grid: no noise to judge."""
    summary = tables["summary"].sort_values("m")
    runs = list(summary.converged_runs.astype(int))
    holds = all(later <= earlier for earlier, later in zip(runs, runs[1:]))
    return Verdict(HOLDS if holds else FAILS, "converging eta_tilde per m (first seed, the "
                   "grid's exponents): " + ", ".join(f"m={int(m)}: {n}"
                                                     for m, n in zip(summary.m, runs)))


CLAIMS = (
    Claim("Masters & Luschi 2018", "the best test accuracy is reached with a small batch, "
          "m <= 32", ("summary",), best_batch_is_small,
          margin="a difference: the best cell of m <= 32 above the best of m > 32 (their Figs "
                 "8, 15: best at m = 4..8)"),
    Claim("Masters & Luschi 2018", "the range of eta_tilde = eta/m that converges does not grow "
          "with m", ("summary",), converging_range_does_not_grow,
          margin="a count: converging cells per m (finished, training loss below ln 10) never "
                 "more than at a smaller m (their Fig 16)"),
)


FIGURE = Figure(
    claims=CLAIMS,
    cheap_paper_dry_run=True, name="small_batch", description=__doc__.splitlines()[1], presets=PRESETS, grid=grid,
    tables=tables, plots=plot, title=title, options=options, check=check, follow_up=follow_up,
    stem=lambda args: "small_batch" + ("" if args.variant == "bn"
                                       else "_" + args.variant.replace(":", "")),
    describe=lambda c: f"m={c.batch_size:<5d} log2(eta~)={math.log2(c.lr / c.batch_size):+.0f}",
    printed=("summary",),
    report=(("Masters & Luschi: best accuracy and converging range per batch size", "summary"),))


main = FIGURE.main


if __name__ == "__main__":
    main()
