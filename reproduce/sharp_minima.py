"""Keskar, Mudigere, Nocedal, Smelyanskiy & Tang 2017, "On Large-Batch
Training for Deep Learning: Generalization Gap and Sharp Minima"
(../shared/papers.md section 4).

Method: Adam (lr 1e-3) at a small batch (SB, 256) and a large batch (LB, 10%
of the training set), from the same initial weights (the same seed). Then:

- Fig 3: the loss and accuracy on the line alpha * w_LB + (1 - alpha) * w_SB,
  alpha in [-1, 2] (25 points), train solid, test dashed;
- Fig 4: test accuracy and sharpness vs batch size;
- Table 2: test accuracy SB / LB; Table 3: sharpness (Metric 2.1, eps 1e-3,
  10 L-BFGS-B iterations) in the full space; Table 4: in a random
  100-dimensional subspace.

Batch norm at evaluation: inference mode (moving statistics) for the test
accuracy and the sharpness; on the line, batch statistics of each evaluation
batch of 1,000, as Keskar et al.'s plotting code (interpolating the moving
statistics instead extrapolates some variances below zero past alpha = 1,
which makes the loss NaN). `callbacks.sharpness(..., bn_mode="batch")` gives
the sharpness in their mode too. The sharpness is measured on `SHARPNESS_EXAMPLES` training
examples.

Seeds: SB and LB are also trained from `seeds` - 1 further initial weights
(each pair from the same weights); Tables 2-4 give the mean, the standard
deviation and the number of seeds; the line is the first seed's pair.

    python -m reproduce.sharp_minima --preset quick     # the default

Writes figures/sharp_minima{,_<preset>}{.csv,_table.csv,_line.csv,_line.png,
_batch_size.png}.
"""

import numpy as np
import pandas as pd

from callbacks import interpolate, sharpness
from reproduce.cli import save_atomic
from reproduce.figure import Figure, seed_summary
from reproduce.runner import RunConfig, build_model, data_of

PAPER = {  # network: (Table 2 test acc % SB, LB; Table 3 sharpness SB, LB; Table 4 SB, LB)
    "F1 / MNIST": ((98.03, 97.81), (1.23, 205.14), (0.11, 9.22)),
    "C1 / CIFAR-10": ((80.04, 77.26), (28.58, 707.23), (2.18, 137.25)),
}
ALPHAS = np.linspace(-1, 2, 25)
EPSILON = 1e-3
SUBSPACE = 100
SHARPNESS_EXAMPLES = 2000
ITERATIONS = 10  # L-BFGS-B iterations of Metric 2.1, as the paper

F1 = RunConfig(dataset="mnist", model="f1", norm="batch", optimizer="adam", lr=1e-3,
               he_init=False)
C1 = RunConfig(dataset="cifar10", model="c1", norm="batch", optimizer="adam", lr=1e-3,
               he_init=False)

# One declarative config per preset: per network, the base run, SB, and the
# batch sizes of Fig 4 (the last one is LB, 10% of the training set).
PRESETS = {
    # smoke: 2 L-BFGS-B iterations, not the paper's 10; each costs ~1 s on F1's
    # 1.4M weights here, and smoke checks the plumbing, not the values.
    "smoke": {"F1 / MNIST": dict(base=F1.replace(train_size=512, test_size=256, epochs=2),
                                 batch_sizes=(32, 52), examples=256, iterations=2, seeds=2)},
    "quick": {"F1 / MNIST": dict(base=F1.replace(train_size=30000, epochs=10),
                                 batch_sizes=(64, 256, 1024, 3000), examples=2000, seeds=3)},
    "paper": {"F1 / MNIST": dict(base=F1.replace(epochs=20),
                                 batch_sizes=(256, 512, 1024, 2048, 6000), examples=SHARPNESS_EXAMPLES,
                                 seeds=3),
              "C1 / CIFAR-10": dict(base=C1.replace(epochs=20),
                                    batch_sizes=(256, 500, 1000, 2000, 5000),
                                    examples=SHARPNESS_EXAMPLES, seeds=3)},
}


def grid(preset, args=None):
    """{(network, batch size, seed index): config}; the first size is SB, the
    last LB, and those two have `seeds` seeds (the others one)."""
    runs = {}
    for network, spec in preset.items():
        sizes = spec["batch_sizes"]
        for b in sizes:
            base = spec["base"].replace(batch_size=b)
            for i in range(spec.get("seeds", 1) if b in (sizes[0], sizes[-1]) else 1):
                runs[(network, b, i)] = base.replace(seed=base.seed + i)
    return runs


class Measure:
    """After training: sharpness (full space and a random subspace) on the
    first `examples[(dataset, model)]` training examples, with
    `iterations[(dataset, model)]` L-BFGS-B iterations (the paper's 10 by
    default), and the final weights saved beside the run (for the line between
    SB and LB)."""

    def __init__(self, store, examples, iterations=None):
        self.store, self.examples, self.iterations = store, examples, iterations or {}

    def __call__(self, config, model, data, callbacks=()):
        examples = self.examples[(config.dataset, config.model)]
        maxiter = self.iterations.get((config.dataset, config.model), ITERATIONS)
        x, y = data[0][:examples], data[1][:examples]
        save_atomic(self.store / f"{config.key}.weights.npz",
                    lambda tmp: np.savez(tmp, *model.get_weights()))
        return dict(sharpness_full=sharpness(model, x, y, epsilon=EPSILON, maxiter=maxiter),
                    sharpness_subspace=sharpness(model, x, y, epsilon=EPSILON, subspace=SUBSPACE,
                                                 maxiter=maxiter))


def load_weights(store, config):
    with np.load(store / f"{config.key}.weights.npz") as f:
        return [f[f"arr_{i}"] for i in range(len(f.files))]


def line(store, small, large):
    """Fig 3's data: loss and accuracy along alpha * LB + (1 - alpha) * SB."""
    import keras

    x, y, x_test, y_test = data_of(small)
    model = build_model(small, x.shape[1:], int(y.max()) + 1)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    # Batch statistics on the line, as Keskar et al.'s code: interpolating the
    # moving variances extrapolates them below zero for some alpha > 1.
    return interpolate(model, load_weights(store, large), load_weights(store, small), ALPHAS,
                       {"train": (x, y), "test": (x_test, y_test)}, bn_mode="batch")


def measure(preset, store):
    return Measure(store, {(s["base"].dataset, s["base"].model): s["examples"]
                           for s in preset.values()},
                   {(s["base"].dataset, s["base"].model): s.get("iterations", ITERATIONS)
                    for s in preset.values()})


def tables(sweep, runs, preset):
    lines = pd.concat([
        line(sweep.store, runs[(network, spec["batch_sizes"][0], 0)],
             runs[(network, spec["batch_sizes"][-1], 0)]).assign(network=network)
        for network, spec in preset.items()], ignore_index=True)
    rows = []
    for (network, b, i), config in runs.items():
        record = sweep.load(config)
        last = record["rows"][-1]
        m = record.get("measures", {})
        rows.append(dict(network=network, batch_size=b, seed=config.seed, epochs=last["epoch"],
                         train_accuracy=last["accuracy"], test_accuracy=last["test_accuracy"],
                         sharpness_full=m.get("sharpness_full"),
                         sharpness_subspace=m.get("sharpness_subspace"), status=record["status"]))
    per_run = pd.DataFrame(rows)
    table = []
    for network, group in per_run.groupby("network", sort=False):
        paper = PAPER.get(network, ((None,) * 2,) * 3)
        sizes = preset[network]["batch_sizes"]
        for i, (regime, b) in enumerate((("SB", sizes[0]), ("LB", sizes[-1]))):
            seeds = group[group.batch_size == b]
            row = dict(network=network, regime=regime, batch_size=b)
            for column, scale, published in (("test_accuracy", 100, paper[0][i]),
                                             ("sharpness_full", 1, paper[1][i]),
                                             ("sharpness_subspace", 1, paper[2][i])):
                summary = seed_summary(seeds[column])
                row[column] = None if summary["mean"] is None else summary["mean"] * scale
                row[f"{column}_std"] = None if summary["std"] is None else summary["std"] * scale
                row[f"paper_{column}"] = published
            row["seeds"] = len(seeds)
            table.append(row)
    table = pd.DataFrame(table).round({"test_accuracy": 2, "test_accuracy_std": 2})
    return {"": per_run, "table": table, "line": lines}


def title(runs, preset):
    return ("Adam 1e-3, same initial weights; batch norm: moving statistics for accuracy and "
            "sharpness, batch statistics on the line\n") + "; ".join(
        f"{n}: {s['base'].train_size or 'all'} images, {s['base'].epochs} epochs"
        for n, s in preset.items())


def plot(tables, runs, preset, title):
    lines, per_batch = tables["line"], tables[""]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    networks = list(dict.fromkeys(per_batch.network))
    fig1, axes = plt.subplots(1, len(networks), figsize=(6.5 * len(networks), 5.2), squeeze=False)
    for ax, network in zip(axes[0], networks):
        d = lines[lines.network == network]
        right = ax.twinx()
        for split, style in (("train", "-"), ("test", "--")):
            s = d[d.split == split]
            ax.plot(s.alpha, s.loss, style, color="tab:blue", label=f"cross-entropy ({split})")
            right.plot(s.alpha, s.accuracy, style, color="tab:red", label=f"accuracy ({split})")
        ax.set(xlabel=r"$\alpha$  (0: small batch, 1: large batch)", ylabel="cross-entropy",
               yscale="log", title=f"{network} (Fig 3)")
        right.set_ylabel("accuracy", color="tab:red")
        ax.set_ylabel("cross-entropy", color="tab:blue")
        ax.grid(alpha=0.3)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = right.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=8, ncol=2, loc="upper center",
                  bbox_to_anchor=(0.5, -0.15))
    fig1.suptitle(title)
    fig1.tight_layout()

    fig2, axes = plt.subplots(1, len(networks), figsize=(6.5 * len(networks), 5.2), squeeze=False)
    for ax, network in zip(axes[0], networks):
        runs = per_batch[per_batch.network == network]
        d = runs.groupby("batch_size").mean(numeric_only=True).reset_index()  # over seeds
        right = ax.twinx()
        ax.plot(d.batch_size, 100 * d.test_accuracy, "o-", color="tab:blue",
                label="test accuracy (mean over seeds)")
        ax.scatter(runs.batch_size, 100 * runs.test_accuracy, s=10, color="tab:blue", alpha=0.4,
                   label="each seed")
        right.plot(d.batch_size, d.sharpness_full, "s--", color="tab:red",
                   label=f"sharpness (full space, eps {EPSILON:g})")
        right.scatter(runs.batch_size, runs.sharpness_full, s=10, color="tab:red", alpha=0.4)
        right.plot(d.batch_size, d.sharpness_subspace, "^:", color="tab:orange",
                   label=f"sharpness ({SUBSPACE}-dim subspace)")
        right.scatter(runs.batch_size, runs.sharpness_subspace, s=10, color="tab:orange",
                      alpha=0.4)
        ax.set(xscale="log", xlabel="batch size", title=f"{network} (Fig 4)")
        ax.set_xticks(d.batch_size, [str(b) for b in d.batch_size])
        ax.set_ylabel("test accuracy (%)", color="tab:blue")
        right.set(ylabel="sharpness", yscale="log")
        ax.grid(alpha=0.3)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = right.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=8, ncol=2, loc="upper center",
                  bbox_to_anchor=(0.5, -0.15))
    fig2.suptitle(title)
    fig2.tight_layout()
    return {"line": fig1, "batch_size": fig2}


FIGURE = Figure(
    name="sharp_minima", description=__doc__.splitlines()[0], presets=PRESETS, grid=grid,
    tables=tables, plots=plot, title=title, measure=measure, printed=("table",),
    describe=lambda c: f"{c.model} batch {c.batch_size}",
    report=(("Keskar et al.: Tables 2-4 (accuracy, sharpness)", "table"),))


main = FIGURE.main


if __name__ == "__main__":
    main()
