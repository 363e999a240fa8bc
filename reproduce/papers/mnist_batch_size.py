"""The seed article's batch-size sweep on the Digit Recognizer CNN, and what
gradient accumulation does (the seed article; the papers and their numbers: figures/README.md).

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

Seeds: the experiments in `seeded` (quick and paper: the batch-size sweep and
the group-norm accumulation, the cells the claims compare) are trained with
`seeds` seeds. Tables give the mean over the seeds that finished, its standard
deviation and the number of seeds; the figures show the mean per epoch with
the seeds' range shaded. The accumulation summary compares the mean curves
and states the seed-to-seed gap (mean |difference| per epoch between two
seeds of the same run) as the noise floor the other gaps are read against.

    python -m reproduce.papers.mnist_batch_size --preset quick     # the default

Writes figures/mnist_batch_size{,_<preset>}{.csv,_table.csv,_accumulation.csv,
_curves.png,_accumulation.png}.
"""

import pandas as pd

from reproduce.claims import (CHANCE, FAILS, Claim, Side, Verdict, combine, compare_rows,
                              differs, difference,
                              same_within, too_few_seeds, verdict_or_too_few)
from reproduce.figure import (Figure, evaluation_note, finish, panel, paired_test_variance, plot_over_seeds,
                              seed_summary, subplots)
from reproduce.runs.config import RunConfig

# The article's validation accuracy at epoch 20 (dropout on during validation).
ARTICLE = {32: 0.9818, 64: 0.9854, 128: 0.9863, 256: 0.9871, 512: 0.9861, 1024: 0.9873}

ARTICLE_MODEL = RunConfig(dataset="mnist", model="digit_cnn", norm="batch", optimizer="adam",
                          lr=1e-3, he_init=False, epochs=20)

SWEEP = "batch size sweep"
GROUP_NORM = "accumulation, group norm"

# One declarative config per preset: data, epochs, the batch-size grid, the
# accumulation experiment (the update batch and its accumulation steps, as
# RunConfig writes them), and the experiments trained at `seeds` seeds (the
# rest: one).
PRESETS = {
    "smoke": dict(base=ARTICLE_MODEL.replace(train_size=512, test_size=256, epochs=2),
                  batch_sizes=(32, 128), accumulated=dict(batch_size=128, accumulation=4), seeds=2,
                  seeded=(GROUP_NORM,)),
    "quick": dict(base=ARTICLE_MODEL.replace(train_size=5000, epochs=6),
                  batch_sizes=(32, 64, 128, 256, 512, 1024),
                  accumulated=dict(batch_size=1024, accumulation=8),
                  seeds=3, seeded=(SWEEP, GROUP_NORM)),
    "paper": dict(base=ARTICLE_MODEL.replace(train_size=33600),
                  batch_sizes=(32, 64, 128, 256, 512, 1024),
                  accumulated=dict(batch_size=1024, accumulation=8),
                  seeds=3, seeded=(SWEEP, GROUP_NORM)),
}


def grid(spec, args=None):
    """{(experiment, case, seed index): config}: the batch-size sweep, then the
    accumulation experiment per normalisation."""
    base = spec["base"]
    cells = {(SWEEP, f"batch {b}"): base.replace(batch_size=b) for b in spec["batch_sizes"]}
    steps = spec["accumulated"]["accumulation"]
    micro = spec["accumulated"]["batch_size"] // steps
    for norm in ("batch", "group"):
        experiment = f"accumulation, {norm} norm"
        cells[(experiment, f"{micro} x {steps} accumulated")] = base.replace(
            norm=norm, batch_size=micro * steps, accumulation=steps)
        cells[(experiment, f"native {micro * steps}")] = base.replace(
            norm=norm, batch_size=micro * steps)
        cells[(experiment, f"native {micro}")] = base.replace(norm=norm, batch_size=micro)
    return {(experiment, case, i): config.replace(seed=base.seed + i)
            for (experiment, case), config in cells.items()
            for i in range(spec.get("seeds", 1) if experiment in spec.get("seeded", ()) else 1)}


def tables(sweep, runs, spec=None):
    """Per-epoch rows of every run (one CSV), the final-epoch table beside the
    article's numbers, and the accumulation summary."""
    frame = pd.concat([sweep.table([config]).assign(experiment=experiment, case=case)
                       for (experiment, case, _), config in runs.items()], ignore_index=True)
    keep = ["experiment", "case", "norm", "batch_size", "accumulation", "seed", "epoch",
            "updates", "loss", "accuracy", "test_loss", "test_accuracy", "status", "wall_time"]
    frame = frame[keep]
    rows = []
    sweep_cells = {}
    for (experiment, case, _), config in runs.items():
        if experiment == SWEEP:
            sweep_cells.setdefault(config.batch_size, []).append(config)
    for b, run in frame[frame.experiment == SWEEP].groupby("batch_size"):
        last = run.groupby("seed").tail(1)
        seeds = seed_summary(last.test_accuracy, digits=4, seeds=last.seed,
                             diverged=last.status == "diverged", diverged_value=CHANCE)
        finished = int((last.status == "finished").sum())
        rows.append(dict(
            batch_size=b, epochs=int(last.epoch.max()), updates=int(last.updates.iloc[0]),
            test_accuracy=seeds["mean"], test_accuracy_std=seeds["std"],
            seeds=seeds["seeds"], diverged=seeds["diverged"],
            p_diverged=round(seeds["diverged"] / len(last), 3),
            test_accuracy_by_seed=seeds["by_seed"], article_val_accuracy_epoch20=ARTICLE.get(b),
            train_accuracy=round(float(last.accuracy.mean()), 4),
            status="finished" if finished else last.status.iloc[0]))
    table = pd.DataFrame(rows)
    if len(table):  # the paired test-set variance of each batch against the best one
        best = table.loc[table.test_accuracy.idxmax(), "batch_size"]
        table["best_batch"] = best
        table["test_accuracy_paired_var_vs_best"] = [
            paired_test_variance(sweep, sweep_cells[b], sweep_cells[best]) for b in table.batch_size]
    return {"": frame, "table": table, "accumulation": accumulation_summary(frame)}


def title(runs, spec):
    base = next(iter(runs.values()))
    return (f"digit_cnn, Adam 1e-3, MNIST ({base.train_size or 60000} training images), "
            f"{base.epochs} epochs{evaluation_note(base)}")


def accumulation_summary(frame):
    """Per normalisation: how far the accumulated run is from native large and
    native micro batches (mean |difference| of the per-epoch validation
    accuracy and training loss, the curves averaged over seeds), each case's
    final accuracy (mean, std, seeds), and the seed-to-seed gap of the same
    case (seeds 0 and 1), the noise the gaps are read against."""
    rows = []
    for experiment, group in frame[frame.experiment != SWEEP].groupby("experiment"):
        curves = {case: run.groupby("epoch")[["test_accuracy", "loss", "updates"]].mean()
                  for case, run in group.groupby("case")}
        accumulated = [c for c in curves if "accumulated" in c]
        if not accumulated:
            continue  # its accumulated run failed: nothing to compare with
        a = curves[accumulated[0]]
        for case, run in group.groupby("case"):
            curve = curves[case]
            finals = run.groupby("seed").tail(1)
            seeds = seed_summary(finals.test_accuracy, digits=4)
            rows.append(dict(
                experiment=experiment, case=case, final_test_accuracy=seeds["mean"],
                final_test_accuracy_std=seeds["std"], seeds=seeds["seeds"],
                final_loss=round(float(curve.loss.iloc[-1]), 4),
                updates=int(curve.updates.iloc[-1]),
                mean_abs_test_accuracy_gap_to_accumulated=float(
                    (curve.test_accuracy - a.test_accuracy).abs().mean()),
                mean_abs_loss_gap_to_accumulated=float((curve.loss - a.loss).abs().mean()),
                **_seed_to_seed_gaps(run)))
    return pd.DataFrame(rows)


def _seed_to_seed_gaps(run):
    """Mean |difference| per epoch between the first two seeds of one case."""
    seeds = sorted(run.seed.unique())
    if len(seeds) < 2:
        return dict(seed_to_seed_test_accuracy_gap=None, seed_to_seed_loss_gap=None)
    first, second = (run[run.seed == s].set_index("epoch") for s in seeds[:2])
    return dict(
        seed_to_seed_test_accuracy_gap=float((first.test_accuracy - second.test_accuracy)
                                             .abs().mean()),
        seed_to_seed_loss_gap=float((first.loss - second.loss).abs().mean()))


def plot(tables, runs, spec, title):
    frame = tables[""]
    return {"curves": sweep_figure(frame[frame.experiment == SWEEP], title),
            "accumulation": accumulation_figure(frame, title)}


def sweep_figure(runs, title):
    """Validation and training accuracy per epoch for every batch size, with
    the article's epoch-20 values."""
    import seaborn as sns

    sizes = sorted(runs.batch_size.unique())
    colors = dict(zip(sizes, sns.color_palette("viridis", len(sizes))))
    # The article's epoch-20 values sit just right of the last epoch, so a short
    # run's curves are not squeezed into the left of the axis.
    article_x = runs.epoch.max() + 0.6
    fig, axes = subplots(1, 2, width=6, height=4.5, sharey=True)
    a, b = axes[0]
    for size, run in runs.groupby("batch_size"):
        plot_over_seeds(a, run, "epoch", "test_accuracy", "o-", f"{size}", color=colors[size])
        plot_over_seeds(b, run, "epoch", "accuracy", "o-", f"{size}", color=colors[size])
        if size in ARTICLE:
            a.plot([article_x], [ARTICLE[size]], "*", ms=10, color=colors[size])
    low = min(runs.test_accuracy.min(), runs.accuracy.min())
    for ax in (a, b):
        ax.set_ylim(max(low - 0.01, 0.9 if low > 0.9 else 0), 1.0)
    panel(a, title="validation accuracy (inference mode)\n* the article's at epoch 20 "
                   "(33,600 images, dropout on)", xlabel="epoch", ylabel="accuracy",
          legend_title="batch size")
    panel(b, legend=False, title="training accuracy (running mean over the epoch, dropout on)",
          xlabel="epoch")
    return finish(fig, title)


def accumulation_figure(frame, title):
    """Accumulated b x k against native b * k and native b, per normalisation:
    validation accuracy per epoch, training loss per update."""
    acc = frame[frame.experiment != SWEEP]
    experiments = sorted(acc.experiment.unique())
    fig, axes = subplots(2, max(len(experiments), 1), width=6)
    styles = {case: style for case, style in zip(
        sorted(acc.case.unique(), key=lambda c: ("accumulated" not in c, c)), ("o-", "s--", "^:"))}
    for col, experiment in enumerate(experiments):
        for case, run in acc[acc.experiment == experiment].groupby("case"):
            line = plot_over_seeds(axes[0, col], run, "epoch", "test_accuracy", styles[case],
                                   case)
            plot_over_seeds(axes[1, col], run, "updates", "loss", styles[case], case,
                            color=line.get_color())
        panel(axes[0, col], title=experiment, xlabel="epoch", ylabel="validation accuracy")
        panel(axes[1, col], xlabel="parameter updates", ylabel="training loss", xscale="log",
              yscale="log")
    return finish(fig, "gradient accumulation vs native batches: batch norm sees the "
                       "micro-batch, group norm does not\n" + title
                  + ("; several seeds: their mean, the range shaded"
                     if frame.seed.nunique() > 1 else ""))


# -- the claims (reproduce.claims) --------------------------------------------------
# Declared before the runs: a quarter of the article's own spread over batch
# sizes (98.18 .. 98.73%: 0.55 points), rounded to 0.25 points (a sameness
# margin at most a quarter of the effect it would hide).
SAME_MARGIN = 0.0025


def every_batch_reaches_the_same_accuracy(tables, n_test):
    """Each batch size within +-0.25 points of the best one (TOST, paired by
    seed); a batch with no finished seed FAILS the claim, and a diverged seed
    counts at chance in its batch."""
    table = tables["table"]
    never = table[table.status != "finished"]
    if len(never):
        return Verdict(FAILS, "no seed finished at batch " + ", ".join(
            str(int(b)) for b in never.batch_size) + " (diverged: it did not reach any accuracy)")
    best = table.loc[table.test_accuracy.idxmax()]
    others = table[table.batch_size != best.batch_size]
    parts = []
    for _, row in others.iterrows():
        a, b, diff = compare_rows(row, best, n_test=n_test(),
                                  paired="test_accuracy_paired_var_vs_best", table=table)
        parts.append((f"batch {int(row.batch_size)}", verdict_or_too_few(
            a, b, diff, (str(int(row.batch_size)), f"best {int(best.batch_size)}"),
            lambda d: same_within(d, margin=SAME_MARGIN, parts=len(others)))))
    return combine(parts)


def accumulation_follows_the_large_batch(tables, n_test):
    """With group norm, b x k accumulated is nearer native b * k than native b:
    per seed, the mean |training-loss gap| per epoch to native b less that to
    native b * k (the same seed: the same initial weights), above 0."""
    frame = tables[""]
    rows = frame[frame.experiment.str.contains("group")]
    cases = {case: run for case, run in rows.groupby("case")}
    accumulated = next(c for c in cases if "accumulated" in c)
    natives = sorted((c for c in cases if c.startswith("native")),
                     key=lambda c: int(c.split()[-1]))
    small, large = natives[0], natives[-1]
    gaps = []
    for seed, acc in cases[accumulated].groupby("seed"):
        curves = {c: cases[c][cases[c].seed == seed].set_index("epoch").loss
                  for c in (small, large)}
        if any(curve.empty for curve in curves.values()):
            continue
        loss = acc.set_index("epoch").loss
        gaps.append(float((loss - curves[small]).abs().mean() - (loss - curves[large]).abs().mean()))
    observed, zero = Side.of_values(gaps), Side(0.0, 0.0, max(len(gaps), 2))
    diff = difference(observed, zero)
    names = (f"gap to {small} - gap to {large}", "0")
    if diff is None:
        return too_few_seeds(observed, zero, names, percent=False)
    verdict = differs(diff, scale=1, unit="")
    return type(verdict)(verdict.outcome, f"{accumulated}: mean |loss gap| per epoch, to {small} "
                         f"less to {large}, per seed: {verdict.numbers}", verdict.power)


CLAIMS = (
    Claim("seed article", "every batch size from 32 to 1024 reaches the same accuracy after 20 "
          "epochs", ("table",), every_batch_reaches_the_same_accuracy,
          margin="sameness, paired by seed: every batch within +-0.25 points of the best "
                 "batch, a quarter of the article's own spread (98.18 .. 98.73%, 0.55 points "
                 "apart); a batch with no finished seed fails it",
          expected={"quick": "at quick scale (6 epochs on 5,000 images: batch 1024 makes 30 "
                             "updates, the article's 20 epochs on 33,600 make 660); the paper "
                             "preset is the article's setting",
                    "paper": True}),
    Claim("seed article", "with group norm, b x k accumulated follows native b * k, not native b",
          ("",), accumulation_follows_the_large_batch,
          margin="a difference: per seed, the accumulated run's mean |loss gap| to native b "
                 "less that to native b * k, above 0 (the article: accumulation reproduces the "
                 "large-batch update)"),
)


FIGURE = Figure(
    claims=CLAIMS,
    name="mnist_batch_size", description=__doc__.splitlines()[0], presets=PRESETS, grid=grid,
    tables=tables, plots=plot, title=title, printed=("table", "accumulation"),
    describe=lambda c: f"batch {c.batch_size:<4d} norm={c.norm:<5s} accumulation {c.accumulation}",
    report=(("Seed article: validation accuracy per batch size", "table"),
            ("Seed article: accumulation vs native batches", "accumulation")))


main = FIGURE.main


if __name__ == "__main__":
    main()
