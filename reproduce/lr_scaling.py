"""Batch size and learning-rate scaling on MNIST: the "effect of batch size on
training dynamics" article (../shared/papers.md section 5b).

Method (the article gives neither model nor rates; ours): F1 (5 x 512 fully
connected, no batch norm) on MNIST, plain SGD, the same number of epochs at
batch 64, 256 and 1024, with four learning-rate rules from lr = 0.05 at
batch 64: fixed (0.05 everywhere), linear (lr * B / 64), linear with Goyal et
al.'s (2017) gradual warm-up (the rate ramps up linearly over the first 5/90 of
the updates, their 5 of 90 epochs) and square-root (lr * sqrt(B / 64)). The
article's claim: at a fixed rate batch 64 reaches ~98% and batch 1024 only
~96%; a larger rate for 1024 brings it back to ~98%.

Seeds: the cells the claims compare (batch 64, and every rule at the largest
batch) are trained with `seeds` seeds (3 in the quick and paper presets); the
tables give the mean test accuracy over the seeds that finished, its standard
deviation, and the number of seeds; the measures (distance, gradient norms)
are the first seed's.

After training we measure, per run, the distance travelled from the initial
weights (||w - w0|| per layer and the histogram of |w - w0| over all
weights) and the distribution of minibatch gradient norms at the final
weights (`GRADIENT_SAMPLES` minibatches of the run's batch size; the smoke
preset's `gradient_samples`, 8, only checks the plumbing).

    python -m reproduce.lr_scaling --preset quick     # the default

Writes figures/lr_scaling{,_<preset>}{.csv,_measures.csv,_accuracy.png,
_distributions.png}.
"""

import functools
import math

import numpy as np
import pandas as pd

from callbacks import linear_scaling, sqrt_scaling
from callbacks.measures import loss_and_gradient
from reproduce.figure import Figure, finish, panel, seed_summary, subplots
from reproduce.config import RunConfig
from reproduce.train import build_model

BASE_BATCH = 64
RULES = {
    "fixed": lambda lr, b: lr,
    "linear": lambda lr, b: linear_scaling(lr, b, BASE_BATCH),
    "linear + warm-up": lambda lr, b: linear_scaling(lr, b, BASE_BATCH),
    "sqrt": lambda lr, b: sqrt_scaling(lr, b, BASE_BATCH),
}
# Goyal et al. 2017: 5 warm-up epochs of 90, for the batches above the base
# one; RunConfig's warm-up starts from lr / 32 (theirs from lr / k, k = B / 256).
WARMUP = {"linear + warm-up": 5 / 90}
# The article's test accuracies (approximate, read from its text).
ARTICLE = {("fixed", 64): 0.98, ("fixed", 1024): 0.96, ("linear", 1024): 0.98,
           ("sqrt", 1024): 0.98, ("linear", 64): 0.98, ("sqrt", 64): 0.98}
GRADIENT_SAMPLES = 64
WEIGHT_BINS = np.logspace(-7, 0, 57)  # |w - w0| histogram bins

# One declarative config per preset.
PRESETS = {
    "smoke": dict(base=RunConfig(dataset="mnist", model="f1", norm="none", lr=0.05,
                                 train_size=512, test_size=256, epochs=2),
                  batch_sizes=(64, 256), seeds=2, gradient_samples=8),
    "quick": dict(base=RunConfig(dataset="mnist", model="f1", norm="none", lr=0.05, epochs=5),
                  batch_sizes=(64, 256, 1024), seeds=3),
    "paper": dict(base=RunConfig(dataset="mnist", model="f1", norm="none", lr=0.05, epochs=30),
                  batch_sizes=(64, 256, 1024), seeds=3),
}


def headline(spec, b):
    """Whether the claims compare the cells of batch `b`: the base batch and
    the largest one."""
    return b in (BASE_BATCH, max(spec["batch_sizes"]))


def grid(spec, args=None):
    """{(rule, batch, seed): config}; at batch 64 all rules are the same run,
    and the headline cells have `spec["seeds"]` seeds (base seed + 0, 1, ...)."""
    base, runs = spec["base"], {}
    for rule, scale in RULES.items():
        for b in spec["batch_sizes"]:
            config = base.replace(batch_size=b, lr=scale(base.lr, b),
                                  warmup=WARMUP.get(rule, 0.0) if b > BASE_BATCH else 0.0)
            for i in range(spec.get("seeds", 1) if headline(spec, b) else 1):
                runs[(rule, b, i)] = config.replace(seed=base.seed + i)
    return runs


def measure(config, model, data, callbacks=(), gradient_samples=GRADIENT_SAMPLES):
    """Distance from w0 (per layer, histogram over weights) and the norms of
    `gradient_samples` minibatch gradients at the final weights."""
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
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    rng = np.random.default_rng(config.seed)
    norms = []
    for _ in range(gradient_samples):
        idx = rng.choice(len(x), size=min(config.batch_size, len(x)), replace=False)
        _, g = loss_and_gradient(model, loss, x[idx], y[idx], training=False)
        norms.append(float(np.linalg.norm(g)))
    return dict(
        distance=math.sqrt(sum(per_layer.values())),
        distance_per_layer={k: math.sqrt(s) for k, s in per_layer.items()},
        weight_change_histogram=np.histogram(deltas, bins=WEIGHT_BINS)[0].tolist(),
        gradient_norms=norms)


def tables(sweep, configs, spec=None):
    """Per-epoch rows (every seed); per-cell measures beside the article (test
    accuracy: mean, std and count over the seeds that finished; the rest the
    first seed's); and the first seed's distributions behind the second
    figure in long form (per run: the |w - w0| histogram and each sampled
    minibatch gradient norm)."""
    rows, measures, distributions = [], [], []
    cells = {}
    for (rule, b, i), config in configs.items():
        cells.setdefault((rule, b), []).append(config)
        rows.append(sweep.table([config]).assign(rule=rule))
    for (rule, b), seeds in cells.items():
        records = [sweep.load(config) for config in seeds]
        record, config = records[0], seeds[0]
        m = record.get("measures") or {}
        if m:
            distributions.append(pd.DataFrame(dict(
                rule=rule, batch_size=b, quantity="weight_change_histogram",
                x=np.sqrt(WEIGHT_BINS[:-1] * WEIGHT_BINS[1:]), value=m["weight_change_histogram"])))
            distributions.append(pd.DataFrame(dict(
                rule=rule, batch_size=b, quantity="gradient_norm",
                x=np.arange(len(m["gradient_norms"])), value=m["gradient_norms"])))
        last = record["rows"][-1] if record["rows"] else {}
        seeds = seed_summary(r["rows"][-1]["test_accuracy"] for r in records
                             if r["status"] == "finished")
        measures.append(dict(
            rule=rule, batch_size=b, lr=config.lr, warmup=config.warmup,
            status="finished" if seeds["seeds"] else record["status"],
            test_accuracy=seeds["mean"] if seeds["seeds"] else last.get("test_accuracy"),
            test_accuracy_std=seeds["std"], seeds=seeds["seeds"], seeds_trained=len(records),
            article_test_accuracy=ARTICLE.get((rule, b)),
            updates=last.get("updates"),
            distance=m.get("distance"),
            gradient_norm_median=float(np.median(m["gradient_norms"])) if m else None,
            gradient_norm_p95=float(np.percentile(m["gradient_norms"], 95)) if m else None,
            # Keras names layers per process (dense, dense_7, ...): label them by depth.
            **{f"distance_layer{i}": v for i, v in enumerate(
                (m.get("distance_per_layer") or {}).values(), start=1)}))
    frame = pd.concat(rows, ignore_index=True)
    frame = frame[["rule", "batch_size", "lr", "seed", "epoch", "updates", "loss", "accuracy",
                   "test_loss", "test_accuracy", "status", "wall_time"]]
    return {"": frame, "measures": pd.DataFrame(measures),
            "distributions": pd.concat(distributions, ignore_index=True)}


def title(runs, spec):
    base = next(iter(runs.values()))
    return (f"{base.model} (no BN) on MNIST ({base.train_size or 60000} images), SGD, "
            f"{base.epochs} epochs; lr {base.lr} at batch {BASE_BATCH}")


def measure_factory(spec, store):
    return functools.partial(
        measure, gradient_samples=spec.get("gradient_samples", GRADIENT_SAMPLES))


def plot(tables, configs, spec, title):
    import seaborn as sns

    frame, measures = tables[""], tables["measures"]
    sizes = sorted(frame.batch_size.unique())
    colors = dict(zip(sizes, sns.color_palette("viridis", len(sizes))))
    return {"accuracy": accuracy_figure(frame, measures, colors, title),
            "distributions": distributions_figure(measures, tables["distributions"], colors,
                                                  title)}


def accuracy_figure(frame, measures, colors, title):
    """Test accuracy per epoch for each rule (mean ± std over seeds), and the
    final accuracy of every seed against the batch size."""
    fig, axes = subplots(1, len(RULES) + 1, width=4.6, height=4.2, sharey=True)
    for ax, (rule, group) in zip(axes[0], frame.groupby("rule", sort=False)):
        for b, run in group.groupby("batch_size"):
            per_epoch = run.groupby("epoch").test_accuracy
            mean, std, seeds = per_epoch.mean(), per_epoch.std(), run.seed.nunique()
            diverged = run[run.status == "diverged"].seed.nunique()
            parts = ([f"{seeds} seeds, mean ± std"] if seeds > 1 else []) + (
                [f"{diverged} diverged: NaN loss"] if diverged else [])
            note = f" ({', '.join(parts)})" if parts else ""
            lr = measures[(measures.rule == rule) & (measures.batch_size == b)].lr.iloc[0]
            ax.plot(mean.index, mean, "o-", ms=3, color=colors[b],
                    label=f"batch {b}, lr {lr:.3g}{note}")
            if seeds > 1:
                ax.fill_between(mean.index, mean - std.fillna(0), mean + std.fillna(0),
                                color=colors[b], alpha=0.2)
        panel(ax, legend_size=7, title=f"{rule} learning rate", xlabel="epoch")
    axes[0, 0].set_ylabel("test accuracy")
    final_accuracy_panel(axes[0, -1], frame, sorted(colors))
    low = frame.test_accuracy.quantile(0.05) if frame.test_accuracy.notna().any() else 0.0
    axes[0, 0].set_ylim(max(0.0, low - 0.02), 1.0)
    return finish(fig, title)


def final_accuracy_panel(ax, frame, sizes):
    """Every finished seed's final test accuracy (points), the mean per rule (lines)."""
    import seaborn as sns

    final = frame.sort_values("epoch").groupby(["rule", "batch_size", "seed"], sort=False).last()
    final = final.reset_index()
    final = final[final.status == "finished"]  # diverged runs: in the legends of the panels
    for k, (rule, group) in enumerate(final.groupby("rule", sort=False)):
        color = sns.color_palette("tab10")[k]
        ax.scatter(group.batch_size * (1 + 0.04 * (k - 1.5)), group.test_accuracy, s=14,
                   color=color, alpha=0.7)
        ax.plot(*zip(*group.groupby("batch_size").test_accuracy.mean().items()), "-",
                color=color, label=rule)
    panel(ax, xscale="log", xlabel="batch size",
          title="final test accuracy, every finished seed\n(lines: mean over seeds)")
    ax.set_xticks(sizes, [str(b) for b in sizes])


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


FIGURE = Figure(
    cheap_paper_dry_run=True, name="lr_scaling", description=__doc__.splitlines()[0], presets=PRESETS, grid=grid,
    tables=tables, plots=plot, title=title, measure=measure_factory, printed=("measures",),
    describe=lambda c: (f"batch {c.batch_size:<4d} lr {c.lr:.4g}"
                        + (f" warm-up {c.warmup:.3f}" if c.warmup else "") + f" seed {c.seed}"),
    report=(("lr-scaling article: accuracy and measures per rule and batch size", "measures"),))


main = FIGURE.main


if __name__ == "__main__":
    main()
