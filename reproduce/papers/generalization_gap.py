"""Hoffer, Hubara & Soudry 2017, "Train longer, generalize better: closing the
generalization gap in large batch training" (arXiv:1705.08741).

Method: the same network trained at a small batch (SB) and a large batch (LB),
then the large batch with the paper's three fixes, cumulatively (their
Table 1): +LR, the learning rate times sqrt(B_L / B_S); +GBN, ghost batch norm
with ghost batches of the small batch's size; +RA, regime adaptation: every
phase of the schedule and the epoch count times B_L / B_S, so the large batch
makes as many updates as the small one. SGD momentum 0.9, weight decay 1e-4,
the learning rate / 10 at the schedule's steps, and the gradient norm clipped
to 5 at every update, as in the official code (eladhoffer/bigBatch).

Seeds: SB, LB and +RA, the cells the claims compare, are trained with
`seeds` seeds (initial weights and data order); Table 1's entries for them
are the mean test accuracy with its standard deviation and the number of
seeds. The other columns and the figures are the first seed's.

Fig 1: training and validation error vs epochs for several batch sizes.
Fig 2: ||w_t - w_0|| vs iterations (log x), before and after +LR and GBN.
Fig 3: validation error vs iterations, SB against the adapted large batch.

    python -m reproduce.papers.generalization_gap --preset quick     # the default

Writes figures/generalization_gap{,_<preset>}{.csv,_table.csv,_distance.csv,
_error.png,_distance.png,_adapted.png}.
"""

import math

import numpy as np
import pandas as pd

from batchsize.callbacks import WeightDistance, milestones_at, regime_adaptation, sqrt_scaling
from reproduce.claims import (CHANCE, Claim, Side, combine, compare_rows, difference, differs,
                              inconclusive, not_worse, value_text, verdict_or_too_few)
from reproduce.figure import (Figure, evaluation_note, finish, panel, paired_test_variance, seed_summary,
                              subplots)
from reproduce.runs.config import RunConfig

COLUMNS = ("SB", "LB", "+LR", "+GBN", "+RA")
# The columns trained at `seeds` seeds (a preset's `seeded`): the cells the
# claims compare. The paper preset seeds every column, +RA included (#44), so
# its +RA claim is decided: F1's +RA is 1,280 epochs at batch 4096, ~1.9 h a
# seed on this 2-core CPU (the committed F1 paper CSVs are from before, +RA at
# one seed).
SEEDED = ("SB", "LB", "+RA")
PAPER_TABLE1 = {  # validation accuracy (%), paper
    "F1 / MNIST": (98.27, 97.05, 97.55, 97.60, 98.53),
    "C1 / CIFAR-10": (87.80, 83.95, 86.15, 86.4, 88.20),
    "ResNet-44 / CIFAR-10": (92.83, 86.10, 89.30, 90.50, 93.07),
}
STEPS = (0.25, 0.5, 0.75)  # F1: lr / 10 at epochs 10, 20, 30 of 40
RESNET_STEPS = (0.5, 0.75)  # ResNet-44: lr / 10 at epochs 81 and 122 of 164

F1 = RunConfig(dataset="mnist", model="f1", norm="batch", optimizer="sgd", lr=0.1, momentum=0.9,
               weight_decay=1e-4, clipnorm=5.0, he_init=False)
RESNET = RunConfig(dataset="cifar10", model="resnet44", norm="batch", optimizer="sgd", lr=0.1,
                   momentum=0.9, weight_decay=1e-4, clipnorm=5.0, augment=True)

# One declarative config per preset: per network, the base run, SB, LB, the
# ghost size, and the batch sizes of Fig 1.
PRESETS = {
    "smoke": {
        "F1 / MNIST": dict(base=F1.replace(train_size=512, test_size=256, epochs=4),
                           small=32, large=128, ghost=32, fig1=(32, 128), seeds=2,
                           seeded=("SB", "LB")),
    },
    "quick": {
        # The paper's batch ratio, 32 (SB 128, LB 4096), from SB 32: LB 1024
        # makes 4 updates an epoch on 4,096 images (the paper's 4096 on 60,000
        # make 15); batch norm is evaluated with recomputed statistics, so its
        # 64 updates measure the weights, not stale moving averages.
        # SB near convergence at its budget (the table reports training
        # accuracy): F1 16 epochs on 4,096 images (SB trains to 97.4%).
        # The CIFAR network is not here: at a quick budget (ResNet-8, 10
        # epochs on 1,280 images) its SB trained to 33% and so judged nothing
        # of the paper's; the `cpu` preset below is where it is judged.
        "F1 / MNIST": dict(base=F1.replace(train_size=4096, test_size=5000, epochs=16),
                           small=32, large=1024, ghost=32,
                           fig1=(32, 64, 128, 256, 512, 1024), seeds=3),
    },
    # The CIFAR arm decided on this CPU (#44): ResNet-8 at the ResNet paper's
    # batch ratio 16 (SB 128, LB 2048 there; 32 and 512 here), ghost batch 2x SB
    # as its 256 / 128; 5,000 images for 16 epochs (+RA: 256), the rate / 10
    # at the ResNet schedule's fractions; 4 seeds of SB, LB and +RA, fixed
    # before the run.
    "cpu": {
        "ResNet-8 / CIFAR-10": dict(
            base=RESNET.replace(model="resnet8", train_size=5000, test_size=5000, epochs=16,
                                lr_milestones=milestones_at(RESNET_STEPS, 16)),
            small=32, large=512, ghost=64, fig1=(32, 64, 128, 256, 512), seeds=4),
    },
    "paper": {
        "F1 / MNIST": dict(base=F1.replace(epochs=40), small=128, large=4096, ghost=128,
                           fig1=(128, 256, 512, 1024, 2048, 4096), seeds=3, seeded=COLUMNS),
        "ResNet-44 / CIFAR-10": dict(
            base=RESNET.replace(epochs=164, lr_milestones=(81, 122)),
            small=128, large=2048, ghost=256, fig1=(64, 128, 256, 512, 1024, 2048), seeds=3),
    },
}


def columns(spec):
    """Table 1's cumulative columns: {column: config}."""
    base = spec["base"]
    if not base.lr_milestones:
        base = base.replace(lr_milestones=milestones_at(STEPS, base.epochs))
    small, large = spec["small"], spec["large"]
    sb = base.replace(batch_size=small)
    lb = base.replace(batch_size=large)
    lr = lb.replace(lr=sqrt_scaling(base.lr, large, small))
    gbn = lr.replace(norm=f"ghost:{spec['ghost']}")
    epochs, milestones = regime_adaptation(base.epochs, base.lr_milestones, large, small)
    ra = gbn.replace(epochs=epochs, lr_milestones=milestones)
    return dict(zip(COLUMNS, (sb, lb, lr, gbn, ra)))


def seed_label(column, i):
    """The run label of `column`'s seed i (0: the column itself)."""
    return column if i == 0 else f"{column} seed {i}"


def grid(preset, args=None):
    """{(network, run label): config}: Table 1's columns, their SB and LB at
    more seeds, and Fig 1's batch sizes."""
    runs = {}
    for network, spec in preset.items():
        table = columns(spec)
        for column, config in table.items():
            runs[(network, column)] = config
        for column in spec.get("seeded", SEEDED):
            for i in range(1, spec.get("seeds", 1)):
                runs[(network, seed_label(column, i))] = table[column].replace(
                    seed=table[column].seed + i)
        for b in spec["fig1"]:
            runs.setdefault((network, f"batch {b}"), table["SB"].replace(batch_size=b))
    return runs


def weight_distance(config):
    return [WeightDistance(per_decade=10)]


def callbacks(spec, store):
    return weight_distance


def measure(spec, store):
    return distance_history


def distance_history(config, model, data, callbacks):
    """Fig 2's data: ||w_t - w_0|| (all weights, and the first layer as the
    official code) at log-spaced iterations."""
    history = callbacks[0].history
    first = [c for c in history.columns if c not in ("iteration", "total")][0]
    return dict(iteration=history.iteration.tolist(), total=history.total.tolist(),
                first_layer=history[first].tolist(), first_layer_name=first)


def tables(sweep, runs, spec=None):
    frames, distances = [], []
    for (network, label), config in runs.items():
        record = sweep.load(config)
        frames.append(sweep.table([config]).assign(network=network, run=label))
        m = record.measures or {}
        if m:
            distances.append(pd.DataFrame(dict(
                network=network, run=label, iteration=m["iteration"], distance=m["total"],
                first_layer_distance=m["first_layer"])))
    frame = pd.concat(frames, ignore_index=True)
    frame = frame[["network", "run", "batch_size", "lr", "norm", "seed", "epoch", "updates",
                   "loss", "accuracy", "test_loss", "test_accuracy", "status", "wall_time"]]
    table = [row for network in dict.fromkeys(n for n, _ in runs)
             for row in table1_rows(sweep, frame, runs, network)]
    return {"": frame, "distance": pd.concat(distances, ignore_index=True),
            "table": pd.DataFrame(table)}


def table1_rows(sweep, frame, runs, network):
    """Table 1's columns of `network` that have runs: the last epoch, the test
    accuracy over the column's seeds (percent), beside the paper's, and the
    paired test-set variance of its difference from SB (percent squared)."""
    paper = PAPER_TABLE1.get(network) or PAPER_TABLE1.get(
        network.replace("ResNet-8", "ResNet-44"), (None,) * 5)
    ours = frame[frame.network == network]
    rows = []
    for column, paper_value in zip(COLUMNS, paper):
        labels = [label for (n, label) in runs if n == network
                  and (label == column or label.startswith(f"{column} seed "))]
        if column not in labels:
            continue  # its first run failed; the table says so by leaving it out
        sb = [runs[(network, label)] for (n, label) in runs if n == network
              and (label == "SB" or label.startswith("SB seed "))]
        paired = paired_test_variance(sweep, [runs[(network, label)] for label in labels], sb)
        row, config = ours[ours.run == column].iloc[-1], runs[(network, column)]
        lasts = [ours[ours.run == label].iloc[-1] for label in labels]
        seeds = seed_summary([last.test_accuracy for last in lasts], seeds=[
            runs[(network, label)].seed for label in labels], diverged=[
            last.status == "diverged" for last in lasts], diverged_value=CHANCE, scale=100,
            digits=4)
        percent = lambda v: None if v is None else round(100 * v, 2)  # noqa: E731
        two = lambda v: None if v is None else round(v, 2)  # noqa: E731
        rows.append(dict(network=network, column=column, batch_size=config.batch_size,
                         initial_lr=config.lr, lr_milestones=config.lr_milestones,
                         norm=config.norm, epochs=int(row.epoch), updates=int(row.updates),
                         test_accuracy=two(seeds["mean"]),
                         test_accuracy_std=two(seeds["std"]), seeds=seeds["seeds"],
                         diverged=seeds["diverged"], test_accuracy_by_seed=seeds["by_seed"],
                         train_accuracy=percent(float(np.mean([last.accuracy for last in lasts]))),
                         test_accuracy_paired_var_vs_SB=None if paired is None or column == "SB"
                         else paired * 100 ** 2,
                         paper_validation_accuracy=paper_value, status=row.status))
    return rows


def title(runs, preset):
    first = next(iter(runs.values()))
    return ("SGD momentum 0.9, wd 1e-4, gradient norm clipped at 5"
            + evaluation_note(first) + "; "
            + "; ".join(f"{n}: {s['base'].train_size or 'all'} images, {s['base'].epochs} "
                        f"epochs, SB {s['small']}, LB {s['large']}" for n, s in preset.items()))


def plot(tables, runs, preset, title):
    frame, distances = tables[""], tables["distance"]
    networks = list(dict.fromkeys(frame.network))
    return dict(error=error_figure(frame, networks, title),
                distance=distance_figure(distances, networks, title),
                adapted=adapted_figure(frame, networks, title))


def error_figure(frame, networks, title):
    """Fig 1: training and validation error against epochs, per batch size."""
    import seaborn as sns

    fig, axes = subplots(len(networks), 2)
    for row, network in zip(axes, networks):
        runs = frame[(frame.network == network) & frame.run.str.startswith("batch ")]
        sizes = sorted(runs.batch_size.unique())
        colors = dict(zip(sizes, sns.color_palette("viridis", len(sizes))))
        for b, run in runs.groupby("batch_size"):
            row[0].plot(run.epoch, 1 - run.accuracy, "-", color=colors[b], label=f"b = {b}")
            row[1].plot(run.epoch, 1 - run.test_accuracy, "-", color=colors[b], label=f"b = {b}")
        panel(row[0], title=f"{network}: training error (Fig 1)", xlabel="epoch", ylabel="error")
        panel(row[1], title=f"{network}: validation error", xlabel="epoch")
    return finish(fig, title)


def distance_figure(distances, networks, title):
    """Fig 2: the distance from w0 against iterations (log x), before and after the fixes."""
    fig, axes = subplots(len(networks), 2)
    for row, network in zip(axes, networks):
        d = distances[distances.network == network]
        panels = (("before the fixes (Fig 2a)", ["SB", "LB"]),
                  ("after +LR and GBN (Fig 2b)", ["SB", "+LR", "+GBN", "+RA"]))
        for ax, (name, labels) in zip(row, panels):
            for label in labels:
                run = d[d.run == label]
                ax.plot(run.iteration.clip(lower=1), run.distance, label=label)
            panel(ax, xscale="log", xlabel="iteration", ylabel=r"$\|w_t - w_0\|$",
                  title=f"{network}: {name}")
    return finish(fig, title)


def adapted_figure(frame, networks, title):
    """Fig 3: validation error against iterations, SB against the adapted large batch."""
    import seaborn as sns

    fig, axes = subplots(1, len(networks))
    for ax, network in zip(axes[0], networks):
        for k, label in enumerate(("SB", "LB", "+RA")):
            runs = frame[(frame.network == network)
                         & ((frame.run == label) | frame.run.str.startswith(f"{label} seed "))]
            name = {"+RA": "LB +LR +GBN +RA (adapted)"}.get(label, label)
            seeds, color = runs.seed.nunique(), sns.color_palette("tab10")[k]
            for i, (seed, run) in enumerate(runs.groupby("seed")):
                ax.plot(run.updates, 1 - run.test_accuracy, "o-", ms=3 if i == 0 else 2,
                        lw=1.5 if i == 0 else 0.8, alpha=1.0 if i == 0 else 0.5, color=color,
                        label=None if i else f"{name}, b = {run.batch_size.iloc[0]}"
                        + (f" ({seeds} seeds)" if seeds > 1 else ""))
        panel(ax, xlabel="iterations (updates)", ylabel="validation error",
              title=f"{network} (Fig 3)")
    return finish(fig, title)


# -- the claims (reproduce.claims) --------------------------------------------------
def _against_sb(tables, n_test, column, judge):
    """`judge` of column - SB, per network, from Table 1 (percents)."""
    table, verdicts = tables["table"], []
    for network, rows in table.groupby("network", sort=False):
        rows = rows.set_index("column")
        if column not in rows.index or "SB" not in rows.index:
            verdicts.append((network, _missing(column)))
            continue
        a, b, diff = compare_rows(rows.loc[column], rows.loc["SB"], n_test=n_test(network),
                                  table=rows,
                                  scale=100, paired="test_accuracy_paired_var_vs_SB")
        verdicts.append((network, verdict_or_too_few(a, b, diff, (column, "SB"), judge)))
    return combine(verdicts)


def _missing(column):
    return inconclusive(f"no {column} in the table", f"train {column}")


def large_batch_generalizes_worse(tables, n_test):
    return _against_sb(tables, n_test, "LB", lambda diff: differs(diff, direction=-1))


# +RA is judged against the gap it must close: its deficit to SB at most a
# quarter of the LB - SB gap measured beside it (declared before the runs:
# +RA - SB >= -(SB - LB) / 4, i.e. +RA - (3 SB + LB) / 4 >= 0, one contrast
# whose interval carries the gap's own noise).
GAP_SHARE = 0.25


def regime_adaptation_reaches_the_small_batch(tables, n_test):
    verdicts = []
    for network, rows in tables["table"].groupby("network", sort=False):
        rows = rows.set_index("column")
        missing = [c for c in ("+RA", "SB", "LB") if c not in rows.index]
        if missing:
            verdicts.append((network, _missing(missing[0])))
            continue
        ra, sb, lb = (Side.of(rows.loc[c], "test_accuracy", n_test(network), 100)
                      for c in ("+RA", "SB", "LB"))
        target = weighted_sides({sb: 1 - GAP_SHARE, lb: GAP_SHARE})
        paired = rows.loc["+RA"].get("test_accuracy_paired_var_vs_SB")
        diff = difference(ra, target, None if paired is None or pd.isna(paired)
                          else float(paired) / 100 ** 2, test_dof=n_test(network) - 1)
        names = ("+RA", f"SB - (SB - LB) / 4 (SB {value_text(sb)}, LB {value_text(lb)})")
        verdicts.append((network, verdict_or_too_few(ra, target, diff, names,
                                                     lambda d: not_worse(d, margin=0.0))))
    return combine(verdicts)


def weighted_sides(weights):
    """The side of sum(w x side) for {Side: w}: per shared seed where every
    side names its seeds, else the mean with the variance of the weighted sum
    of independent means."""
    sides = list(weights)
    shared = set.intersection(*(set(dict(side.values)) for side in sides))
    if len(shared) >= 2:
        values = {seed: sum(w * dict(side.values)[seed] for side, w in weights.items())
                  for seed in sorted(shared)}
        return Side.of_seeds(values)
    if any(side.std is None for side in sides):
        return Side(sum(w * side.mean for side, w in weights.items()), None, 1)
    seeds = min(side.seeds for side in sides)
    variance = sum(w ** 2 * side.std ** 2 / side.seeds for side, w in weights.items())
    return Side(sum(w * side.mean for side, w in weights.items()), math.sqrt(variance * seeds),
                seeds)


CLAIMS = (
    Claim("Hoffer et al. 2017", "at equal epochs the large batch generalizes worse (Table 1)",
          ("table",), large_batch_generalizes_worse,
          margin="a difference: LB - SB below 0 (Table 1, F1: 97.05 vs 98.27%)"),
    Claim("Hoffer et al. 2017", "regime adaptation (+RA: the small batch's number of updates) "
          "reaches the small batch's accuracy", ("table",),
          regime_adaptation_reaches_the_small_batch,
          margin="non-inferiority, paired by seed: +RA's deficit to SB at most a quarter of the "
                 "LB - SB gap measured beside it (+RA - (3 SB + LB) / 4 above 0; Table 1, F1: "
                 "+RA 98.53 vs SB 98.27%, gap 1.22 points)"),
)


FIGURE = Figure(
    claims=CLAIMS, networks=True,
    name="generalization_gap", description=__doc__.splitlines()[0], presets=PRESETS, grid=grid,
    tables=tables, plots=plot, title=title, callbacks=callbacks, measure=measure,
    printed=("table",),
    describe=lambda c: f"{c.model} b={c.batch_size} lr={c.lr:.3g} {c.norm} {c.epochs} epochs",
    report=(("Hoffer et al.: Table 1 columns", "table"),))


main = FIGURE.main


if __name__ == "__main__":
    main()
