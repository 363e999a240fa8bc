"""Keskar, Mudigere, Nocedal, Smelyanskiy & Tang 2017, "On Large-Batch
Training for Deep Learning: Generalization Gap and Sharp Minima"
(arXiv:1609.04836).

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

    python -m reproduce.papers.sharp_minima --preset quick     # the default

Writes figures/sharp_minima{,_<preset>}{.csv,_table.csv,_line.csv,_line.png,
_batch_size.png}.
"""

import numpy as np
import pandas as pd

from batchsize.callbacks import interpolate, sharpness
from reproduce.runs.cli import save_atomic
from reproduce.claims import CHANCE, Claim, combine, compare_rows, differs, verdict_or_too_few
from reproduce.figure import (Figure, finish, panel, paired_test_variance, seed_summary,
                              shared_legend, subplots)
from reproduce.runs.config import RunConfig
from reproduce.runs.datasets import data_of
from reproduce.runs.train import build_model, compile_model

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
    # smoke: 2 L-BFGS-B iterations, not the paper's 10, and a 10-dimensional
    # subspace, not 100: on F1's 1.4M weights each iteration costs ~1 s here and
    # drawing the 1.4M x 100 matrix ~5 s, and smoke checks the plumbing, not the values.
    "smoke": {"F1 / MNIST": dict(base=F1.replace(train_size=512, test_size=256, epochs=2),
                                 batch_sizes=(32, 52), examples=256, iterations=2, subspace=10,
                                 seeds=2)},
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


def subspace(spec):
    """The dimension of a preset network's random subspace (Table 4)."""
    return spec.get("subspace", SUBSPACE)


class Measure:
    """After training: sharpness (full space and a random subspace) on the
    first `examples` training examples of the run's network (`specs[(dataset,
    model)]`, a preset's entry: `examples`, `iterations` of L-BFGS-B, the
    paper's 10 by default, and the `subspace` dimension, the paper's 100 by
    default), and the final weights saved beside the run (for the line between
    SB and LB)."""

    def __init__(self, folder, specs):
        self.folder, self.specs = folder, specs

    def __call__(self, config, model, data, callbacks=()):
        spec = self.specs[(config.dataset, config.model)]
        maxiter = spec.get("iterations", ITERATIONS)
        x, y = data[0][:spec["examples"]], data[1][:spec["examples"]]
        save_atomic(self.folder / f"{config.key}.weights.npz",
                    lambda tmp: np.savez(tmp, *model.get_weights()))
        return dict(sharpness_full=sharpness(model, x, y, epsilon=EPSILON, maxiter=maxiter),
                    sharpness_subspace=sharpness(model, x, y, epsilon=EPSILON,
                                                 subspace=subspace(spec), maxiter=maxiter))


def load_weights(folder, config):
    with np.load(folder / f"{config.key}.weights.npz") as f:
        return [f[f"arr_{i}"] for i in range(len(f.files))]


def line(folder, small, large):
    """Fig 3's data: loss and accuracy along alpha * LB + (1 - alpha) * SB."""
    x, y, x_test, y_test = data_of(small)
    model = compile_model(build_model(small, x.shape[1:], int(y.max()) + 1))
    # Batch statistics on the line, as Keskar et al.'s code: interpolating the
    # moving variances extrapolates them below zero for some alpha > 1.
    return interpolate(model, load_weights(folder, large), load_weights(folder, small), ALPHAS,
                       {"train": (x, y), "test": (x_test, y_test)}, bn_mode="batch")


def measure(preset, folder):
    return Measure(folder, {(s["base"].dataset, s["base"].model): s for s in preset.values()})


def tables(sweep, runs, preset):
    """Every run (accuracy, sharpness), Tables 2-4 (SB and LB over their
    seeds, beside the paper's) and Fig 3's line between the first seed's SB
    and LB (for a network whose two ends are both stored)."""
    lines = [line(sweep.folder, runs[(network, spec["batch_sizes"][0], 0)],
                  runs[(network, spec["batch_sizes"][-1], 0)]).assign(network=network)
             for network, spec in preset.items()
             if (network, spec["batch_sizes"][0], 0) in runs
             and (network, spec["batch_sizes"][-1], 0) in runs]
    rows = []
    for (network, b, i), config in runs.items():
        record = sweep.load(config)
        last = record.rows[-1]
        m = record.get("measures", {})
        rows.append(dict(network=network, batch_size=b, seed=config.seed, epochs=last["epoch"],
                         train_accuracy=last["accuracy"], test_accuracy=last["test_accuracy"],
                         sharpness_full=m.get("sharpness_full"),
                         sharpness_subspace=m.get("sharpness_subspace"), status=record.status))
    per_run = pd.DataFrame(rows)
    table = []
    for network, group in per_run.groupby("network", sort=False):
        sizes = preset[network]["batch_sizes"]
        rows = [dict(row, subspace_dimension=subspace(preset[network]))
                for row in regime_rows(group, network, sizes)]
        seeds = {b: [c for (n, size, _), c in runs.items() if n == network and size == b]
                 for b in (sizes[0], sizes[-1])}
        paired = paired_test_variance(sweep, seeds[sizes[-1]], seeds[sizes[0]])
        rows[-1]["test_accuracy_paired_var_vs_SB"] = None if paired is None else paired * 1e4
        table += rows
    table = pd.DataFrame(table).round({"test_accuracy": 2, "test_accuracy_std": 2})
    empty = pd.DataFrame(columns=["alpha", "split", "loss", "accuracy", "network"])
    return {"": per_run, "table": table,
            "line": pd.concat(lines, ignore_index=True) if lines else empty}


def regime_rows(group, network, sizes):
    """Tables 2-4 for one network: SB (the first batch size) and LB (the last),
    each measure's mean, std and seeds, beside the paper's value."""
    paper = PAPER.get(network, ((None,) * 2,) * 3)
    rows = []
    for i, (regime, b) in enumerate((("SB", sizes[0]), ("LB", sizes[-1]))):
        seeds = group[group.batch_size == b]
        row = dict(network=network, regime=regime, batch_size=b)
        for column, scale, published in (("test_accuracy", 100, paper[0][i]),
                                         ("sharpness_full", 1, paper[1][i]),
                                         ("sharpness_subspace", 1, paper[2][i])):
            summary = seed_summary(seeds[column], seeds=seeds.seed, scale=scale,
                                   diverged=seeds.status == "diverged",
                                   diverged_value=CHANCE if column == "test_accuracy" else None)
            row[f"{column}_by_seed"] = summary["by_seed"]
            row[column], row[f"{column}_std"] = summary["mean"], summary["std"]
            row[f"paper_{column}"] = published
        row["seeds"] = len(seeds)
        rows.append(row)
    return rows


def title(runs, preset):
    first = next(iter(runs.values()))
    statistics = ("statistics recomputed over training batches" if first.eval_statistics ==
                  "recomputed" else "moving statistics")
    return ("Adam 1e-3, same initial weights; batch norm: " + statistics + " for accuracy and "
            "sharpness, batch statistics on the line\n") + "; ".join(
        f"{n}: {s['base'].train_size or 'all'} images, {s['base'].epochs} epochs"
        for n, s in preset.items())


def plot(tables, runs, preset, title):
    networks = list(dict.fromkeys(tables[""].network))
    return {"line": line_figure(tables["line"], networks, title),
            "batch_size": batch_size_figure(tables[""], networks, title,
                                            {n: subspace(preset[n]) for n in networks})}


def line_figure(lines, networks, title):
    """Fig 3: cross-entropy and accuracy on the line from SB (0) to LB (1)."""
    fig, axes = subplots(1, len(networks), width=6.5, height=5.2)
    for ax, network in zip(axes[0], networks):
        d, right = lines[lines.network == network], ax.twinx()
        for split, style in (("train", "-"), ("test", "--")):
            s = d[d.split == split]
            ax.plot(s.alpha, s.loss, style, color="tab:blue", label=f"cross-entropy ({split})")
            right.plot(s.alpha, s.accuracy, style, color="tab:red", label=f"accuracy ({split})")
        panel(ax, legend=False, xlabel=r"$\alpha$  (0: small batch, 1: large batch)",
              yscale="log", title=f"{network} (Fig 3)"
              + ("" if len(d) else "\n(not drawn: an end of the line is missing)"))
        right.set_ylabel("accuracy", color="tab:red")
        ax.set_ylabel("cross-entropy", color="tab:blue")
        shared_legend(ax, right)
    return finish(fig, title)


def batch_size_figure(per_batch, networks, title, dimensions):
    """Fig 4: test accuracy and sharpness against the batch size, every seed;
    `dimensions`: {network: its random subspace's dimension}."""
    fig, axes = subplots(1, len(networks), width=6.5, height=5.2)
    for ax, network in zip(axes[0], networks):
        runs = per_batch[per_batch.network == network]
        d = runs.groupby("batch_size").mean(numeric_only=True).reset_index()  # over seeds
        right = ax.twinx()
        ax.plot(d.batch_size, 100 * d.test_accuracy, "o-", color="tab:blue",
                label="test accuracy (mean over seeds)")
        ax.scatter(runs.batch_size, 100 * runs.test_accuracy, s=10, color="tab:blue", alpha=0.4,
                   label="each seed")
        for column, style, color, name in (
                ("sharpness_full", "s--", "tab:red", f"full space, eps {EPSILON:g}"),
                ("sharpness_subspace", "^:", "tab:orange",
                 f"{dimensions[network]}-dim subspace")):
            right.plot(d.batch_size, d[column], style, color=color, label=f"sharpness ({name})")
            right.scatter(runs.batch_size, runs[column], s=10, color=color, alpha=0.4)
        panel(ax, legend=False, xscale="log", xlabel="batch size", title=f"{network} (Fig 4)")
        ax.set_xticks(d.batch_size, [str(b) for b in d.batch_size])
        ax.set_ylabel("test accuracy (%)", color="tab:blue")
        right.set(ylabel="sharpness", yscale="log")
        shared_legend(ax, right)
    return finish(fig, title)


# -- the claims (reproduce.claims) --------------------------------------------------
def _lb_against_sb(tables, judge):
    """`judge(LB row, SB row, network)` per network of Tables 2-4."""
    verdicts = []
    for network, rows in tables["table"].groupby("network", sort=False):
        rows = rows.set_index("regime")
        verdicts.append((network, judge(rows.loc["LB"], rows.loc["SB"], network)))
    return combine(verdicts)


def large_batch_minimum_is_sharper(tables, n_test):
    def judge(lb, sb, network):
        parts = []
        for column, name in (("sharpness_full", "full space"),
                             ("sharpness_subspace",
                              f"{lb.get('subspace_dimension', SUBSPACE)}-dim subspace")):
            a, b, diff = compare_rows(lb, sb, column)
            parts.append((name, verdict_or_too_few(a, b, diff, ("LB", "SB"),
                                                   lambda d: differs(d, scale=1, unit=""),
                                                   percent=False)))
        return combine(parts, ", ")
    return _lb_against_sb(tables, judge)


def large_batch_reaches_a_lower_accuracy(tables, n_test):
    def judge(lb, sb, network):
        a, b, diff = compare_rows(lb, sb, n_test=n_test(network), scale=100,
                                  paired="test_accuracy_paired_var_vs_SB")
        return verdict_or_too_few(a, b, diff, ("LB", "SB"), lambda d: differs(d, direction=-1))
    return _lb_against_sb(tables, judge)


CLAIMS = (
    Claim("Keskar et al. 2017", "the large-batch minimum is sharper, in the full space and in a "
          "random subspace (Tables 3, 4)", ("table",), large_batch_minimum_is_sharper,
          margin="a difference: LB - SB sharpness above 0 (Tables 3, 4, F1: 205.14 vs 1.23, "
                 "9.22 vs 0.11)"),
    Claim("Keskar et al. 2017", "the large batch reaches a lower test accuracy (Table 2)",
          ("table",), large_batch_reaches_a_lower_accuracy,
          margin="a difference: LB - SB below 0 (Table 2, F1: 97.81 vs 98.03%)"),
)


FIGURE = Figure(
    claims=CLAIMS, networks=True,
    cheap_paper_dry_run=True, name="sharp_minima", description=__doc__.splitlines()[0], presets=PRESETS, grid=grid,
    tables=tables, plots=plot, title=title, measure=measure, printed=("table",),
    describe=lambda c: f"{c.model} batch {c.batch_size}",
    report=(("Keskar et al.: Tables 2-4 (accuracy, sharpness)", "table"),))


main = FIGURE.main


if __name__ == "__main__":
    main()
