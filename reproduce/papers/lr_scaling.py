"""Batch size and learning-rate scaling on MNIST: the "effect of batch size on
training dynamics" article (the papers and their numbers: figures/README.md).

Claim, as the article states it: the batch size has no significant effect on
the test accuracy "as long as the learning rate is adjusted accordingly"; at
a fixed rate batch 64 reaches ~98% and batch 1024 only ~96%.

Method (the article gives neither model nor rates; ours): F1 (5 x 512 fully
connected, no batch norm) on MNIST, plain SGD, the same number of epochs at
batch 64, 256 and 1024, and the rate tuned per batch over the grid
{0.0125, 0.025, ..., 0.8} (doubling), extended past its edge while the best
rate sits there (x2 above, /2 below, up to three times, or until the outer
rate diverges). The learning-rate rules are cells of that grid, from the
base rate 0.0125 at batch 64, whose x16 (0.2 at 1024) lies on it: fixed
(0.0125 everywhere), square-root (x sqrt(B / 64)) and linear (x B / 64);
linear with Goyal et al.'s (2017) gradual warm-up (the rate ramps up over the
first 5/90 of the updates, their 5 of 90 epochs) is trained beside them.
This design was fixed before its runs (issue #29): the base rate of the
earlier design, 0.05, put linear scaling past F1's stability edge at 1024.

Seeds: the fixed rate at batch 64 and 1024 (the cells the claims compare,
known before the run) at `seeds` seeds; the tuned best rate of batch 64 and
1024, chosen on the first seed, at `seeds` - 1 more (a follow-up), and
judged on those: the choosing seed's lead is selection bias. Tables give the
mean test accuracy over the seeds that finished, its standard deviation and
the count.

After training we measure, per run, the distance travelled from the initial
weights (||w - w0|| per layer and the histogram of |w - w0| over all
weights) and, for the first seed, the distribution of minibatch gradient
norms at the final weights (`GRADIENT_SAMPLES` minibatches of the run's batch
size; the smoke preset's `gradient_samples`, 8, only checks the plumbing).

    python -m reproduce.papers.lr_scaling --preset quick     # the default

Writes figures/lr_scaling{,_<preset>}{.csv,_rates.csv,_measures.csv,
_distributions.csv,_accuracy.png,_distributions.png}.
"""

import functools
import math

import numpy as np
import pandas as pd

from batchsize.callbacks import linear_scaling, sqrt_scaling
from batchsize.callbacks.measures import default_loss, loss_and_gradient
from reproduce.claims import (CHANCE, Claim, compare_rows, differs, inconclusive, same_within,
                              verdict_or_too_few)
from reproduce.runs.config import RunConfig
from reproduce.figure import (Figure, finish, max_extensions, panel, paired_test_variance,
                              seed_summary, subplots)
from reproduce.runs.train import build_model

BASE_BATCH = 64
RATES = tuple(0.0125 * 2 ** k for k in range(7))  # 0.0125 .. 0.8
# The rules, as rates of the grid: (base rate at batch 64, batch) -> rate.
VIEWS = {
    "fixed": lambda lr, b: lr,
    "sqrt": lambda lr, b: sqrt_scaling(lr, b, BASE_BATCH),
    "linear": lambda lr, b: linear_scaling(lr, b, BASE_BATCH),
}
WARMUP_RULE = "linear + warm-up"
# Goyal et al. 2017: 5 warm-up epochs of 90, for the batches above the base
# one; RunConfig's warm-up starts from lr / 32 (theirs from lr / k, k = B / 256).
WARMUP = 5 / 90
RULES = (*VIEWS, WARMUP_RULE, "tuned")
# The article's test accuracies (approximate, read from its text).
ARTICLE = {("fixed", 64): 0.98, ("fixed", 1024): 0.96, ("tuned", 1024): 0.98,
           ("tuned", 64): 0.98}
GRADIENT_SAMPLES = 64
WEIGHT_BINS = np.logspace(-7, 0, 57)  # |w - w0| histogram bins

# One declarative config per preset: the base run (its lr is the base rate at
# batch 64), the batches, the rate grid, the seeds of the compared cells.
F1_MNIST = RunConfig(dataset="mnist", model="f1", norm="none", lr=0.0125)
PRESETS = {
    "smoke": dict(base=F1_MNIST.replace(lr=0.05, train_size=512, test_size=256, epochs=2,
                                        validation_size=64),
                  batch_sizes=(64, 256), rates=(0.05, 0.2), seeds=2, gradient_samples=8,
                  max_extensions=1),
    # The rates are tuned on 10,000 held-out training images (the usual 50,000 /
    # 10,000 split of MNIST's 60,000); the test set only judges.
    "quick": dict(base=F1_MNIST.replace(epochs=5, validation_size=10_000),
                  batch_sizes=(64, 256, 1024), rates=RATES, seeds=3),
    "paper": dict(base=F1_MNIST.replace(epochs=30, validation_size=10_000),
                  batch_sizes=(64, 256, 1024), rates=RATES, seeds=3),
}


def headline(spec, b):
    """The batches the claims compare: the base batch and the largest."""
    return b in (BASE_BATCH, max(spec["batch_sizes"]))


def same_rate(a, b):
    return math.isclose(a, b, rel_tol=1e-9)


def grid(spec, args=None):
    """{(kind, batch, lr, seed index): config}: kind "rate" (the grid; the
    fixed rate of the headline batches at `seeds` seeds) or the warm-up rule."""
    base, runs = spec["base"], {}
    for b in spec["batch_sizes"]:
        for lr in spec["rates"]:
            seeds = spec.get("seeds", 1) if same_rate(lr, base.lr) and headline(spec, b) else 1
            for i in range(seeds):
                runs[("rate", b, lr, i)] = base.replace(batch_size=b, lr=lr, seed=base.seed + i)
        if b > BASE_BATCH:
            lr = linear_scaling(base.lr, b, BASE_BATCH)
            runs[(WARMUP_RULE, b, lr, 0)] = base.replace(batch_size=b, lr=lr, warmup=WARMUP)
    return runs


def final_accuracies(sweep, runs):
    """One row per stored run: kind, batch, lr, seed index, status, final test accuracy."""
    rows = []
    for (kind, b, lr, i), config in runs.items():
        record = sweep.load(config)
        if record is None:
            continue
        last = record.rows[-1] if record.rows else {}
        finished = record.status == "finished"
        rows.append(dict(kind=kind, batch_size=b, lr=lr, seed_index=i, status=record.status,
                         test_accuracy=last.get("test_accuracy") if finished else np.nan,
                         validation_accuracy=last.get("validation_accuracy", np.nan)
                         if finished else np.nan))
    return pd.DataFrame(rows)


def tuning(finals, b):
    """(best rate, rates tried, is the best on an open edge?) of batch `b`
    from its first seed's grid, chosen on the held-out validation accuracy
    (the test accuracy for runs stored without one); a rate where any seed
    diverged is never the best. The best is None if no rate finished."""
    rate = finals[(finals.kind == "rate") & (finals.batch_size == b)]
    first = rate[rate.seed_index == 0]
    tried = sorted(first.lr)
    lost = set(rate[rate.status == "diverged"].lr)
    column = "validation_accuracy" if "validation_accuracy" in first and \
        first.validation_accuracy.notna().any() else "test_accuracy"
    finished = first.dropna(subset=[column])
    finished = finished[~finished.lr.isin(lost)]
    if finished.empty:
        return None, tried, False
    best = finished.sort_values([column, "lr"], ascending=[False, True]).iloc[0].lr
    return best, tried, bool(same_rate(best, tried[0]) or same_rate(best, tried[-1]))


def follow_up(sweep, runs, spec):
    """First the grid's open edges (a best rate on the edge: the next rate
    outward, at most max_extensions steps); once every edge is closed, the
    headline batches' tuned best at more seeds."""
    finals, base, more = final_accuracies(sweep, runs), spec["base"], {}
    low, high = min(spec["rates"]), max(spec["rates"])
    for b in spec["batch_sizes"]:
        best, tried, edge = tuning(finals, b)
        if not edge:
            continue
        outward = best * 2 if same_rate(best, tried[-1]) else best / 2
        steps = abs(round(math.log2(outward / (high if outward > high else low))))
        if steps <= max_extensions(spec) and not (low <= outward <= high):
            more[("rate", b, outward, 0)] = base.replace(batch_size=b, lr=outward)
    if more:
        return more
    for b in spec["batch_sizes"]:
        best, _, _ = tuning(finals, b)
        if best is not None and headline(spec, b):
            for i in range(1, spec.get("seeds", 1)):
                label = next((k for k in runs if k[0] == "rate" and k[1] == b and k[3] == i
                              and same_rate(k[2], best)), ("rate", b, best, i))
                more[label] = base.replace(batch_size=b, lr=best, seed=base.seed + i)
    return more


def measure(config, model, data, callbacks=(), gradient_samples=GRADIENT_SAMPLES, first_seed=0):
    """Distance from w0 (per layer, histogram over weights) and the norms of
    `gradient_samples` minibatch gradients at the final weights (the first
    seed's only: the figure draws that seed's distributions)."""
    import keras

    x, y, _, _ = data
    initial = build_model(config, x.shape[1:], int(y.max()) + 1)  # same seed, same w0
    per_layer, deltas = {}, []
    for v, v0 in zip(model.trainable_variables, initial.trainable_variables):
        d = keras.ops.convert_to_numpy(v).ravel() - keras.ops.convert_to_numpy(v0).ravel()
        layer = v.path.split("/")[0]
        per_layer[layer] = per_layer.get(layer, 0.0) + float(np.sum(d.astype(np.float64) ** 2))
        deltas.append(np.abs(d))
    deltas = np.clip(np.concatenate(deltas), WEIGHT_BINS[0], WEIGHT_BINS[-1])  # edge bins hold the tails
    loss = default_loss()
    rng = np.random.default_rng(config.seed)
    norms = []
    for _ in range(gradient_samples if config.seed == first_seed else 0):
        idx = rng.choice(len(x), size=min(config.batch_size, len(x)), replace=False)
        _, g = loss_and_gradient(model, loss, x[idx], y[idx], training=False)
        norms.append(float(np.linalg.norm(g)))
    return dict(
        distance=math.sqrt(sum(per_layer.values())),
        distance_per_layer={k: math.sqrt(s) for k, s in per_layer.items()},
        weight_change_histogram=np.histogram(deltas, bins=WEIGHT_BINS)[0].tolist(),
        gradient_norms=norms)


def cells_of(runs, spec):
    """{(rule, batch): [config per seed]}: the views of the grid (each rule's
    rate at each batch, where it lies on the grid), the warm-up runs, and the
    tuned best per batch (all its seeds; `tuned` judges on seeds 1..)."""
    base, cells = spec["base"], {}
    for (kind, b, lr, i), config in runs.items():
        if kind == WARMUP_RULE:
            cells.setdefault((WARMUP_RULE, b), []).append(config)
            continue
        for rule, scale in VIEWS.items():
            if same_rate(lr, scale(base.lr, b)):
                cells.setdefault((rule, b), []).append(config)
        if b == BASE_BATCH and same_rate(lr, base.lr):
            cells.setdefault((WARMUP_RULE, b), []).append(config)  # every rule's rate at 64
    return cells


def tables(sweep, runs, spec):
    """Per-epoch rows of every run; the rate grid per batch (first seed) with
    its best and open edges; one row per rule and batch (test accuracy over
    its seeds, the tuned rate's judged on the seeds that did not choose it,
    distance from w0, gradient norms), beside the article; and the first
    seed's distributions behind the second figure."""
    finals = final_accuracies(sweep, runs)
    cells = cells_of(runs, spec)
    rates = finals[(finals.kind == "rate") & (finals.seed_index == 0)].copy()
    tuned = {b: tuning(finals, b) for b in spec["batch_sizes"]}
    rates["best"] = [t[0] is not None and same_rate(lr, t[0])
                     for lr, t in zip(rates.lr, (tuned[b] for b in rates.batch_size))]
    rates["edge_open"] = [tuned[b][2] for b in rates.batch_size]
    for b, (best, _, _) in tuned.items():
        if best is not None:
            cells[("tuned", b)] = [c for (kind, size, lr, _), c in runs.items()
                                   if kind == "rate" and size == b and same_rate(lr, best)]
    measures = [rule_row(sweep, rule, b, configs, cells, tuned)
                for (rule, b), configs in sorted(cells.items(), key=lambda kv: (
                    RULES.index(kv[0][0]), kv[0][1]))]
    frame = pd.concat([sweep.table([c]).assign(kind=kind) for (kind, *_), c in runs.items()
                       if sweep.load(c) is not None], ignore_index=True)
    frame = frame[["kind", "batch_size", "lr", "warmup", "seed", "epoch", "updates", "loss",
                   "accuracy", "test_loss", "test_accuracy", "status", "wall_time"]]
    return {"": frame, "rates": rates.sort_values(["batch_size", "lr"]),
            "measures": pd.DataFrame(measures),
            "distributions": distributions(sweep, cells)}


def finals_over_seeds(configs, records):
    """The final test accuracy over the runs' seeds, a diverged seed at chance."""
    return seed_summary([r.rows[-1]["test_accuracy"] if r.rows else None for r in records],
                        seeds=[c.seed for c in configs],
                        diverged=[r.status == "diverged" for r in records],
                        diverged_value=CHANCE)


def rule_row(sweep, rule, b, configs, cells, tuned):
    """One rule at one batch: its seeds' test accuracy and distance, the tuned
    rate's judged seeds, the paired test-set variance against batch 64."""
    records = [sweep.load(config) for config in configs]
    m = records[0].measures or {}
    seeds = finals_over_seeds(configs, records)
    judged = configs[1:] if rule == "tuned" else configs
    judged_seeds = finals_over_seeds(judged, [sweep.load(config) for config in judged])
    distance = seed_summary((r.measures or {}).get("distance") for r in records)
    reference = cells.get((rule, BASE_BATCH), [])
    paired = paired_test_variance(sweep, configs, reference) if b != BASE_BATCH else None
    paired_judged = (paired_test_variance(sweep, judged, reference[1:] if rule == "tuned"
                                          else reference) if b != BASE_BATCH else None)
    return dict(
        rule=rule, batch_size=b, lr=configs[0].lr, warmup=configs[0].warmup,
        status="finished" if seeds["seeds"] > seeds["diverged"] else records[0].status,
        diverged=seeds["diverged"], test_accuracy_by_seed=seeds["by_seed"],
        judged_test_accuracy_by_seed=judged_seeds["by_seed"],
        test_accuracy=seeds["mean"], test_accuracy_std=seeds["std"], seeds=seeds["seeds"],
        seeds_trained=len(records),
        judged_test_accuracy=judged_seeds["mean"], judged_test_accuracy_std=judged_seeds["std"],
        judged_seeds=judged_seeds["seeds"],
        edge_open=tuned[b][2] if rule == "tuned" else False,
        test_accuracy_paired_var_vs_64=paired,
        judged_test_accuracy_paired_var_vs_64=paired_judged,
        article_test_accuracy=ARTICLE.get((rule, b)),
        updates=records[0].rows[-1]["updates"] if records[0].rows else None,
        distance=distance["mean"], distance_std=distance["std"],
        gradient_norm_median=float(np.median(m["gradient_norms"])) if m.get("gradient_norms")
        else None,
        gradient_norm_p95=float(np.percentile(m["gradient_norms"], 95))
        if m.get("gradient_norms") else None,
        # Keras names layers per process (dense, dense_7, ...): label them by depth.
        **{f"distance_layer{i}": v for i, v in enumerate(
            (m.get("distance_per_layer") or {}).values(), start=1)})


def distributions(sweep, cells):
    """Per rule and batch, the first seed's |w - w0| histogram and sampled
    minibatch gradient norms, in long form."""
    parts = []
    for (rule, b), configs in cells.items():
        m = sweep.load(configs[0]).measures or {}
        if not m:
            continue
        parts.append(pd.DataFrame(dict(
            rule=rule, batch_size=b, quantity="weight_change_histogram",
            x=np.sqrt(WEIGHT_BINS[:-1] * WEIGHT_BINS[1:]), value=m["weight_change_histogram"])))
        parts.append(pd.DataFrame(dict(
            rule=rule, batch_size=b, quantity="gradient_norm",
            x=np.arange(len(m["gradient_norms"])), value=m["gradient_norms"])))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["rule", "batch_size", "quantity", "x", "value"])


def title(runs, spec):
    base = next(iter(runs.values()))
    return (f"{base.model} (no BN) on MNIST ({base.train_size or 60000} images), SGD, "
            f"{base.epochs} epochs; base rate {spec['base'].lr} at batch {BASE_BATCH}")


def measure_factory(spec, folder):
    return functools.partial(measure, first_seed=spec["base"].seed,
                             gradient_samples=spec.get("gradient_samples", GRADIENT_SAMPLES))


def plot(tables, configs, spec, title):
    import seaborn as sns

    measures = tables["measures"]
    sizes = sorted(spec["batch_sizes"])
    colors = dict(zip(sizes, sns.color_palette("viridis", len(sizes))))
    return {"accuracy": accuracy_figure(tables[""], tables["rates"], measures, colors, title),
            "distributions": distributions_figure(measures, tables["distributions"], colors,
                                                  title)}


def accuracy_figure(frame, rates, measures, colors, title):
    """Test accuracy per epoch for each rule (mean ± std over its seeds), and
    the tuning: final accuracy against the rate, per batch (first seed)."""
    fig, axes = subplots(1, len(RULES) + 1, width=4.3, height=4.2)
    for ax, rule in zip(axes[0], RULES):
        for _, row in measures[measures.rule == rule].iterrows():
            run = frame[(frame.batch_size == row.batch_size) & np.isclose(frame.lr, row.lr)
                        & np.isclose(frame.warmup, row.warmup)]
            per_epoch = run.groupby("epoch").test_accuracy
            mean, std, seeds = per_epoch.mean(), per_epoch.std(), run.seed.nunique()
            diverged = run[run.status == "diverged"].seed.nunique()
            parts = ([f"{seeds} seeds"] if seeds > 1 else []) + (
                [f"{diverged} diverged"] if diverged else [])
            note = f" ({', '.join(parts)})" if parts else ""
            ax.plot(mean.index, mean, "o-", ms=3, color=colors[row.batch_size],
                    label=f"batch {row.batch_size}, lr {row.lr:.3g}{note}")
            if seeds > 1:
                ax.fill_between(mean.index, mean - std.fillna(0), mean + std.fillna(0),
                                color=colors[row.batch_size], alpha=0.2)
        panel(ax, legend_size=7, title=f"{rule} learning rate", xlabel="epoch",
              ylim=(max(0.0, frame.test_accuracy.quantile(0.05) - 0.02), 1.0)
              if frame.test_accuracy.notna().any() else None)
    axes[0, 0].set_ylabel("test accuracy")
    tuning_panel(axes[0, -1], rates, colors)
    return finish(fig, title)


def tuning_panel(ax, rates, colors):
    """The rate grid per batch (first seed): final test accuracy against the
    rate, zoomed on the runs that finished (the differences between rates are
    tenths of a point), diverged runs as x on the panel's floor, the best rate
    ringed, the grid's rates as the ticks."""
    finished = rates.test_accuracy.dropna()
    low = finished.min() - 0.1 * (finished.max() - finished.min()) - 0.002 if len(finished) \
        else 0.0
    floor = low + 0.002
    for b, run in rates.groupby("batch_size"):
        ax.plot(run.lr, run.test_accuracy, "o-", ms=4, color=colors[b], label=f"batch {b}"
                + (" (best on an open edge)" if run.edge_open.any() else ""))
        failed = run[run.test_accuracy.isna()]
        ax.plot(failed.lr, [floor] * len(failed), "x", ms=8, color=colors[b])
        best = run[run.best]
        ax.plot(best.lr, best.test_accuracy, "o", ms=11, mfc="none", color=colors[b])
    grid = sorted(rates.lr.unique())
    panel(ax, xscale="log", xlabel="learning rate", ylabel="final test accuracy",
          title="the rate tuned per batch (first seed)\nring: best; x on the floor: diverged",
          ylim=(low, min(1.0, finished.max() + 0.003) if len(finished) else 1.0))
    ax.set_xticks(grid, [f"{lr:g}" for lr in grid], rotation=45)
    ax.minorticks_off()


def distributions_figure(measures, dist, colors, title):
    """Per rule: the distribution of |w - w0| over the weights, and of the
    minibatch gradient norms at the final weights (one set of bins for all)."""
    fig, axes = subplots(2, len(RULES), width=4.6, height=3.75)
    norms = dist[dist.quantity == "gradient_norm"].value.to_numpy(float)
    norms = norms[np.isfinite(norms) & (norms > 0)]
    bins = np.logspace(np.log10(norms.min()), np.log10(norms.max()), 30) if len(norms) else 20
    for col, rule in enumerate(RULES):
        diverged = []
        for _, m in measures[measures.rule == rule].iterrows():
            run = dist[(dist.rule == rule) & (dist.batch_size == m.batch_size)]
            if run.empty:
                continue
            if not np.isfinite(m.distance):
                diverged.append(str(m.batch_size))  # nothing to draw
                continue
            histogram = run[run.quantity == "weight_change_histogram"]
            counts = histogram.value.to_numpy(float)
            axes[0, col].plot(histogram.x, counts / counts.sum(), color=colors[m.batch_size],
                              label=f"batch {m.batch_size}: ||w-w0|| = {m.distance:.2f}")
            gradient = run[run.quantity == "gradient_norm"].value.to_numpy(float)
            axes[1, col].hist(gradient[np.isfinite(gradient)], bins=bins, alpha=0.5,
                              color=colors[m.batch_size],
                              label=f"batch {m.batch_size}: median {np.median(gradient):.3g}")
        panel(axes[0, col], xscale="log", xlabel="|w - w0| per weight",
              ylabel="fraction of weights", title=f"{rule} lr: distance from the initial weights"
              + (f"\n(diverged, not drawn: batch {', '.join(diverged)})" if diverged else ""))
        panel(axes[1, col], xscale="log", xlabel="minibatch gradient norm at the final weights",
              ylabel="count of minibatches")
    return finish(fig, title)


# -- the claims (reproduce.claims) --------------------------------------------------
def _rows(tables, rule):
    """(batch 64's row, the largest batch's row) of `rule` in the measures table."""
    rows = tables["measures"][tables["measures"].rule == rule].set_index("batch_size")
    return rows.loc[BASE_BATCH], rows.loc[rows.index.max()]


def accuracy_falls_with_the_batch(tables, n_test):
    small, large = _rows(tables, "fixed")
    a, b, diff = compare_rows(large, small, n_test=n_test(),
                              paired="test_accuracy_paired_var_vs_64")
    return verdict_or_too_few(a, b, diff, (f"batch {large.name}", f"batch {small.name}"),
                              lambda d: differs(d, direction=-1))


# Declared before the runs: a quarter of the effect the tuned rate must undo,
# the article's fixed-rate fall from ~98% (batch 64) to ~96% (batch 1024).
TUNED_MARGIN = 0.005


def a_tuned_rate_brings_the_large_batch_back(tables, n_test):
    """The tuned largest batch within +-0.5 points of the tuned batch 64, each
    judged on the seeds that did not choose its rate; INCONCLUSIVE while a
    best rate sits on an open edge of its grid."""
    small, large = _rows(tables, "tuned")
    open_edges = [f"batch {int(r.name)} (lr {r.lr:g})" for r in (small, large) if r.edge_open]
    a, b, diff = compare_rows(large, small, "judged_test_accuracy", n_test=n_test(),
                              paired="judged_test_accuracy_paired_var_vs_64",
                              seeds="judged_seeds", extra_seeds=1,
                              table=tables["measures"])
    verdict = verdict_or_too_few(a, b, diff, (f"tuned {large.name} (lr {large.lr:g})",
                                              f"tuned {small.name} (lr {small.lr:g})"),
                                 lambda d: same_within(d, margin=TUNED_MARGIN))
    note = " (judged on the seeds that did not choose the rates)"
    if open_edges:
        return inconclusive(verdict.numbers + note, "the best rate sits on an open edge of the "
                            f"grid at {', '.join(open_edges)}: extend the grid")
    return type(verdict)(verdict.outcome, verdict.numbers + note, verdict.power)


def larger_batches_travel_less(tables, n_test):
    small, large = _rows(tables, "fixed")
    a, b, diff = compare_rows(large, small, "distance")
    return verdict_or_too_few(a, b, diff, (f"||w - w0|| at batch {large.name}",
                                           f"at {small.name}"),
                              lambda d: differs(d, direction=-1, scale=1, unit=""), percent=False)


CLAIMS = (
    Claim("lr-scaling article", "with a fixed rate the test accuracy falls with the batch",
          ("measures",), accuracy_falls_with_the_batch,
          margin="a difference: batch 1024 - batch 64 below 0 at the fixed rate (the article: "
                 "~96% vs ~98%)"),
    Claim("lr-scaling article", "with the rate adjusted (tuned per batch), batch 1024 reaches "
          "batch 64's accuracy", ("measures",), a_tuned_rate_brings_the_large_batch_back,
          margin="sameness, paired by seed: the tuned batch 1024 within +-0.5 points of the "
                 "tuned batch 64, a quarter of the fixed-rate fall it must undo (the article: "
                 "~98% vs ~96% fixed, ~98% at both tuned)",
          # Changed after a result, so not evidence: the committed quick CSV
          # (lr_scaling_measures.csv, 5 epochs on all of MNIST) measures the
          # tuned 1024 1.16 points below the tuned 64, [-1.65, -0.66] at 90%,
          # outside the +-0.5 margin that #42 set after that run. The paper
          # run (#44, under the divergence rule, the margin unchanged) failed
          # it too: the FAIL is its result; the entry only keeps `make
          # check-claims` for claims expected to hold.
          expected={"quick": "at quick scale (5 epochs: the tuned batch 1024 makes 295 updates "
                             "in all, batch 64 4,690); set after the committed quick run failed "
                             "the +-0.5 margin, so not evidence", "cpu": True,
                    "paper": "at 30 epochs (batch 1024 makes 1,470 updates, batch 64 23,460; "
                             "0.2, the linear rule's rate, diverged at one of 3 seeds at both "
                             "batches, so the tuned rate is 0.1 at both); set after the paper "
                             "run failed the +-0.5 margin fixed before it: the failure is the "
                             "result"}),
    Claim("lr-scaling article", "at a fixed rate larger batches travel less far from the "
          "initial weights", ("measures",), larger_batches_travel_less,
          margin="a difference: ||w - w0|| at batch 1024 less than at 64 (the article's weight "
                 "distance distributions)"),
)


FIGURE = Figure(
    claims=CLAIMS, cheap_paper_dry_run=True, name="lr_scaling",
    description=__doc__.splitlines()[0], presets=PRESETS, grid=grid, tables=tables, plots=plot,
    title=title, measure=measure_factory, follow_up=follow_up, printed=("measures",),
    describe=lambda c: (f"batch {c.batch_size:<4d} lr {c.lr:.4g}"
                        + (f" warm-up {c.warmup:.3f}" if c.warmup else "") + f" seed {c.seed}"),
    report=(("lr-scaling article: accuracy and measures per rule and batch size", "measures"),))


main = FIGURE.main


if __name__ == "__main__":
    main()
