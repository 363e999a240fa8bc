"""Batch size and learning-rate scaling on MNIST: the "effect of batch size on
training dynamics" article (../shared/papers.md section 5b).

Method (the article gives neither model nor rates; ours): F1 (5 x 512 fully
connected, no batch norm) on MNIST, plain SGD, the same number of epochs at
batch 64, 256 and 1024, with three learning-rate rules from lr = 0.05 at
batch 64: fixed (0.05 everywhere), linear (lr * B / 64) and square-root
(lr * sqrt(B / 64)). The article's claim: at a fixed rate batch 64 reaches
~98% and batch 1024 only ~96%; a larger rate for 1024 brings it back to ~98%.

After training we measure, per run, the distance travelled from the initial
weights (||w - w0|| per layer and the histogram of |w - w0| over all
weights) and the distribution of minibatch gradient norms at the final
weights (`GRADIENT_SAMPLES` minibatches of the run's batch size).

    python -m reproduce.lr_scaling --preset quick     # the default

Writes figures/lr_scaling{,_<preset>}{.csv,_measures.csv,_accuracy.png,
_distributions.png}.
"""

import math

import numpy as np
import pandas as pd

from callbacks import linear_scaling, sqrt_scaling
from callbacks.measures import flatten, loss_and_gradient
from reproduce.figure import Figure
from reproduce.runner import RunConfig, build_model

BASE_BATCH = 64
RULES = {
    "fixed": lambda lr, b: lr,
    "linear": lambda lr, b: linear_scaling(lr, b, BASE_BATCH),
    "sqrt": lambda lr, b: sqrt_scaling(lr, b, BASE_BATCH),
}
# The article's test accuracies (approximate, read from its text).
ARTICLE = {("fixed", 64): 0.98, ("fixed", 1024): 0.96, ("linear", 1024): 0.98,
           ("sqrt", 1024): 0.98, ("linear", 64): 0.98, ("sqrt", 64): 0.98}
GRADIENT_SAMPLES = 64
WEIGHT_BINS = np.logspace(-7, 0, 57)  # |w - w0| histogram bins

# One declarative config per preset.
PRESETS = {
    "smoke": dict(base=RunConfig(dataset="mnist", model="f1", norm="none", lr=0.05,
                                 train_size=512, test_size=256, epochs=2),
                  batch_sizes=(64, 256)),
    "quick": dict(base=RunConfig(dataset="mnist", model="f1", norm="none", lr=0.05, epochs=5),
                  batch_sizes=(64, 256, 1024)),
    "paper": dict(base=RunConfig(dataset="mnist", model="f1", norm="none", lr=0.05, epochs=30),
                  batch_sizes=(64, 256, 1024)),
}


def grid(spec, args=None):
    """{(rule, batch): config}; at batch 64 all rules are the same run."""
    base = spec["base"]
    return {(rule, b): base.replace(batch_size=b, lr=scale(base.lr, b))
            for rule, scale in RULES.items() for b in spec["batch_sizes"]}


def measure(config, model, data, callbacks=()):
    """Distance from w0 (per layer, histogram over weights) and the norms of
    minibatch gradients at the final weights."""
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
    for _ in range(GRADIENT_SAMPLES):
        idx = rng.choice(len(x), size=min(config.batch_size, len(x)), replace=False)
        _, g = loss_and_gradient(model, loss, x[idx], y[idx], training=False)
        norms.append(float(np.linalg.norm(g)))
    return dict(
        distance=math.sqrt(sum(per_layer.values())),
        distance_per_layer={k: math.sqrt(s) for k, s in per_layer.items()},
        weight_change_histogram=np.histogram(deltas, bins=WEIGHT_BINS)[0].tolist(),
        gradient_norms=norms)


def tables(sweep, configs, spec=None):
    """Per-epoch rows; per-run measures beside the article; and the
    distributions behind the second figure in long form (per run: the
    |w - w0| histogram and each sampled minibatch gradient norm)."""
    rows, measures, distributions = [], [], []
    for (rule, b), config in configs.items():
        record = sweep.load(config)
        rows.append(sweep.table([config]).assign(rule=rule))
        m = record.get("measures") or {}
        if m:
            distributions.append(pd.DataFrame(dict(
                rule=rule, batch_size=b, quantity="weight_change_histogram",
                x=np.sqrt(WEIGHT_BINS[:-1] * WEIGHT_BINS[1:]), value=m["weight_change_histogram"])))
            distributions.append(pd.DataFrame(dict(
                rule=rule, batch_size=b, quantity="gradient_norm",
                x=np.arange(len(m["gradient_norms"])), value=m["gradient_norms"])))
        last = record["rows"][-1] if record["rows"] else {}
        measures.append(dict(
            rule=rule, batch_size=b, lr=config.lr, status=record["status"],
            test_accuracy=last.get("test_accuracy"), article_test_accuracy=ARTICLE.get((rule, b)),
            updates=last.get("updates"),
            distance=m.get("distance"),
            gradient_norm_median=float(np.median(m["gradient_norms"])) if m else None,
            gradient_norm_p95=float(np.percentile(m["gradient_norms"], 95)) if m else None,
            # Keras names layers per process (dense, dense_7, ...): label them by depth.
            **{f"distance_layer{i}": v for i, v in enumerate(
                (m.get("distance_per_layer") or {}).values(), start=1)}))
    frame = pd.concat(rows, ignore_index=True)
    frame = frame[["rule", "batch_size", "lr", "epoch", "updates", "loss", "accuracy",
                   "test_loss", "test_accuracy", "status", "wall_time"]]
    return {"": frame, "measures": pd.DataFrame(measures),
            "distributions": pd.concat(distributions, ignore_index=True)}


def title(runs, spec):
    base = next(iter(runs.values()))
    return (f"{base.model} (no BN) on MNIST ({base.train_size or 60000} images), SGD, "
            f"{base.epochs} epochs; lr {base.lr} at batch {BASE_BATCH}")


def measure_factory(spec, store):
    return measure


def plot(tables, configs, spec, title):
    frame, measures, dist = tables[""], tables["measures"], tables["distributions"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sizes = sorted(frame.batch_size.unique())
    colors = dict(zip(sizes, sns.color_palette("viridis", len(sizes))))
    fig1, axes = plt.subplots(1, len(RULES), figsize=(5 * len(RULES), 4.2), sharey=True)
    for ax, (rule, group) in zip(axes, frame.groupby("rule", sort=False)):
        for b, run in group.groupby("batch_size"):
            diverged = " (diverged: NaN loss)" if (run.status == "diverged").any() else ""
            ax.plot(run.epoch, run.test_accuracy, "o-", ms=3, color=colors[b],
                    label=f"batch {b}, lr {run.lr.iloc[0]:.3g}{diverged}")
        ax.set(title=f"{rule} learning rate", xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("test accuracy")
    low = frame.test_accuracy.quantile(0.05) if frame.test_accuracy.notna().any() else 0.0
    axes[0].set_ylim(max(0.0, low - 0.02), 1.0)
    fig1.suptitle(title)
    fig1.tight_layout()

    fig2, axes = plt.subplots(2, len(RULES), figsize=(5 * len(RULES), 7.5))
    # One set of log-spaced gradient-norm bins for every panel, so bars compare.
    all_norms = dist[dist.quantity == "gradient_norm"].value.to_numpy(float)
    all_norms = all_norms[np.isfinite(all_norms) & (all_norms > 0)]
    norm_bins = (np.logspace(np.log10(all_norms.min()), np.log10(all_norms.max()), 30)
                 if len(all_norms) else 20)
    for col, rule in enumerate(RULES):
        diverged = []
        for _, m in measures[measures.rule == rule].iterrows():
            b = m.batch_size
            run = dist[(dist.rule == rule) & (dist.batch_size == b)]
            if run.empty:
                continue
            if not np.isfinite(m.distance):
                diverged.append(str(b))  # nothing to draw
                continue
            histogram = run[run.quantity == "weight_change_histogram"]
            counts = histogram.value.to_numpy(float)
            axes[0, col].plot(histogram.x, counts / counts.sum(), color=colors[b],
                              label=f"batch {b}: ||w-w0|| = {m.distance:.2f}")
            norms = run[run.quantity == "gradient_norm"].value.to_numpy(float)
            axes[1, col].hist(norms[np.isfinite(norms)], bins=norm_bins, alpha=0.5, color=colors[b],
                              label=f"batch {b}: median {np.median(norms):.3g}")
        axes[0, col].set(xscale="log", xlabel="|w - w0| per weight", ylabel="fraction of weights",
                         title=f"{rule} lr: distance from the initial weights"
                         + (f"\n(diverged, not drawn: batch {', '.join(diverged)})" if diverged else ""))
        axes[1, col].set(xscale="log", xlabel="minibatch gradient norm at the final weights",
                         ylabel=f"count of {GRADIENT_SAMPLES} minibatches")
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig2.suptitle(title)
    fig2.tight_layout()
    return {"accuracy": fig1, "distributions": fig2}


FIGURE = Figure(
    name="lr_scaling", description=__doc__.splitlines()[0], presets=PRESETS, grid=grid,
    tables=tables, plots=plot, title=title, measure=measure_factory, printed=("measures",),
    describe=lambda c: f"batch {c.batch_size:<4d} lr {c.lr:.4g}",
    report=(("lr-scaling article: accuracy and measures per rule and batch size", "measures"),))


main = FIGURE.main


if __name__ == "__main__":
    main()
