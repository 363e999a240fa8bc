"""How large can the batch be before it stops paying? Updates to a target
against the batch size (Shallue et al. 2018), and the critical batch the
gradient noise scale predicts (McCandlish et al. 2018).

Method (Shallue et al., "Measuring the Effects of Data Parallelism on Neural
Network Training", JMLR 20): for each batch size B (powers of two), train
with plain SGD at every learning rate of a stated grid, and count the
updates until the held-out accuracy first reaches the target
(`callbacks.UpdatesToTarget`, evaluated at log-spaced update counts). The
best rate per batch gives S(B), the updates to target; E(B) = B S(B) is the
examples to target. The grid is the tuning budget: Shallue et al. show that
a smaller one changes the conclusions, so it is printed on the figure.

McCandlish et al., "An Empirical Model of Large-Batch Training": S and E
trade off as S = S_min (1 + B_noise / B) and E = E_min (1 + B / B_noise),
with E_min = S_min B_noise; B_noise is the critical batch, where both cost
twice their minimum. We fit S_min and B_noise to the S(B) points (least
squares in log S, `scipy.optimize.curve_fit`) and give R^2. Their
prediction of B_noise without any sweep is the simple noise scale
B_simple = tr(Sigma) / |G|^2, which a `GradientAccumulator` with
`noise_scale_decay` measures from its windows at no extra gradient cost
(micro-batches are the small batches, the window the large one, all at the
same weights). One run per workload trains with accumulation and records
B_simple at each evaluation; the figure draws its value at the first
evaluation that reached the target, beside the fitted B_noise.

Seeds: after the sweep (one seed), each batch's best rate is trained at
`seeds` - 1 more seeds (a follow-up chosen from the results); S(B) is the
mean over the seeds that reached the target, with its standard deviation,
and the fit and slopes use the means. The rate was picked on the first seed,
so S(B) leans low by up to a third of its lead, alike for every batch.

The adaptive schedule: start small (micro-batch x 2 windows) at a fixed
rate and grow the batch by accumulation whenever the measured B_simple
exceeds k x the batch (`callbacks.NoiseScaleBatchSize`, the runner's
`adaptive_batch`), compared on updates and examples to the target with the
sweep's tuned fixed batches.

    python -m reproduce.critical_batch --preset quick     # the default

Writes figures/critical_batch{,_<preset>}{.csv,_summary.csv,_fit.csv,
_trace.csv,.png}.
"""

import math

import numpy as np
import pandas as pd
import scipy.optimize

from callbacks import UpdatesToTarget
from optimizers import accumulator_of
from reproduce.figure import Figure, finish, panel, subplots
from reproduce.config import RunConfig
from reproduce.datasets import data_of
from reproduce.store import RunStore


def _powers(low, high):
    return tuple(2 ** k for k in range(int(math.log2(low)), int(math.log2(high)) + 1))


# One workload: a model and data, the target, the batch sizes, the rate grid,
# the noise-scale run, the adaptive run, and the seeds of each batch's best
# rate. A run stops at the target; its budget is `epochs` and `max_updates`,
# whichever comes first.
PRESETS = {
    # CI: seconds; checks the machinery, shows nothing.
    "smoke": dict(workloads={"MNIST F1": dict(
        base=RunConfig(dataset="mnist", model="f1", norm="none", train_size=1024,
                       test_size=256, epochs=4),
        target=0.8, batch_sizes=(16, 32, 64), learning_rates=(0.05, 0.2), per_decade=10,
        max_updates=200,
        noise=dict(batch_size=64, accumulation=4, lr=0.05, noise_scale_decay=0.9),
        adaptive=dict(micro_batch=16, lr=0.05, factor=1.0, max_batch_size=256,
                      noise_scale_decay=0.9), seeds=2)}),
    # A 2-core CPU in minutes: F1 without batch norm on all of MNIST.
    "quick": dict(workloads={"MNIST F1": dict(
        base=RunConfig(dataset="mnist", model="f1", norm="none", test_size=5000, epochs=30),
        target=0.96, batch_sizes=_powers(16, 4096), learning_rates=(0.05, 0.1, 0.2),
        per_decade=15, max_updates=6000,
        noise=dict(batch_size=256, accumulation=8, lr=0.1, noise_scale_decay=0.95),
        adaptive=dict(micro_batch=16, lr=0.1, factor=1.0, max_batch_size=4096,
                      noise_scale_decay=0.95), seeds=3)}),
    # Shallue et al.'s workloads (a GPU job): MNIST Simple CNN to 0.01
    # validation error, CIFAR-10 ResNet-8 to 0.3.
    "paper": dict(workloads={
        "MNIST Simple CNN": dict(
            base=RunConfig(dataset="mnist", model="simple_cnn", norm="none", epochs=100),
            target=0.99, batch_sizes=_powers(16, 65536),
            learning_rates=tuple(0.0125 * 2 ** k for k in range(9)), per_decade=30,
            max_updates=100_000,
            noise=dict(batch_size=1024, accumulation=8, lr=0.1, noise_scale_decay=0.99),
            adaptive=dict(micro_batch=16, lr=0.1, factor=1.0, max_batch_size=65536,
                          noise_scale_decay=0.99), seeds=3),
        "CIFAR-10 ResNet-8": dict(
            base=RunConfig(dataset="cifar10", model="resnet8", norm="none", epochs=200,
                           augment=True),
            target=0.70, batch_sizes=_powers(16, 65536),
            learning_rates=tuple(0.0125 * 2 ** k for k in range(9)), per_decade=30,
            max_updates=100_000,
            noise=dict(batch_size=1024, accumulation=8, lr=0.1, noise_scale_decay=0.99),
            adaptive=dict(micro_batch=16, lr=0.1, factor=1.0, max_batch_size=65536,
                          noise_scale_decay=0.99), seeds=3)}),
}


def grid(spec, args=None):
    """{(workload, kind, batch, lr, seed index 0): config}; kind "sweep"
    (every batch x rate), "noise" (accumulated, measuring B_simple) or
    "adaptive" (batch is the starting one)."""
    runs = {}
    for name, w in spec["workloads"].items():
        base = w["base"]
        for b in w["batch_sizes"]:
            # Largest rate first: at large batches it is the fastest, and the
            # slower rates then stop where it reached the target.
            for lr in sorted(w["learning_rates"], reverse=True):
                runs[(name, "sweep", b, lr, 0)] = base.replace(batch_size=b, lr=lr)
        n = w["noise"]
        runs[(name, "noise", n["batch_size"], n["lr"], 0)] = base.replace(
            batch_size=n["batch_size"], accumulation=n["accumulation"], lr=n["lr"],
            noise_scale_decay=n["noise_scale_decay"])
        a = w["adaptive"]
        runs[(name, "adaptive", 2 * a["micro_batch"], a["lr"], 0)] = base.replace(
            batch_size=2 * a["micro_batch"], accumulation=2, lr=a["lr"],
            noise_scale_decay=a["noise_scale_decay"], adaptive_batch=a["factor"],
            max_batch_size=a["max_batch_size"])
    return runs


def more_seeds(sweep, runs, spec):
    """The follow-up: each batch's best rate (first seed) at seeds 1 .. seeds-1."""
    frame = run_rows(sweep, runs, spec)
    more = {}
    for name, w in spec["workloads"].items():
        for b, top in best_rates(frame, name).items():
            config = runs[(name, "sweep", b, top.lr, 0)]
            for i in range(1, w.get("seeds", 1)):
                more[(name, "sweep", b, top.lr, i)] = config.replace(seed=config.seed + i)
    return more


def _workload_of(spec, config):
    """The workload that trains `config` (workloads differ in data or model;
    a dry run shrinks the rest)."""
    for w in spec["workloads"].values():
        if (w["base"].dataset, w["base"].model) == (config.dataset, config.model):
            return w
    raise ValueError(f"no workload of this preset trains {config.model} on {config.dataset}")


def current_batch(model):
    """Examples per update now (the adaptive run's batch grows)."""
    return accumulator_of(model.optimizer).batch_size


def callbacks_factory(spec, folder):
    """Each run's `UpdatesToTarget`. A sweep run gives up at the workload's
    update budget, or at the fewest updates a rate of its batch already
    needed (it cannot be that batch's best: pruning, which changes no S(B))."""
    records = RunStore(folder)

    def callbacks(config):
        w = _workload_of(spec, config)
        x_test, y_test = data_of(config)[2:]
        batch = current_batch if config.adaptive_batch else config.batch_size
        limit = w["max_updates"]
        if config.noise_scale_decay is None:
            done = [records.load(config.replace(lr=lr)) for lr in w["learning_rates"]
                    if lr != config.lr]
            needed = [r["measures"]["updates_to_target"] for r in done if r and r.get("measures")]
            limit = min([limit] + [u for u in needed if u is not None])
        return [UpdatesToTarget(x_test, y_test, w["target"], per_decade=w["per_decade"],
                                batch_size=batch, max_updates=limit)]
    return callbacks


def measure(spec, store):
    def record(config, model, data, callbacks):
        hit = next(c for c in callbacks if isinstance(c, UpdatesToTarget))
        return dict(updates_to_target=hit.updates_to_target,
                    examples_to_target=hit.examples_to_target, gave_up_at=hit.gave_up_at,
                    max_updates=hit.max_updates, evaluations=hit.records)
    return record


# -- McCandlish et al.'s model --------------------------------------------------
def fit_steps(batch_sizes, updates):
    """S = S_min (1 + B_noise / B), least squares in log S.

    Returns dict(s_min, b_noise, e_min, r2) (r2 of log S), or NaNs for fewer
    than 3 points.
    """
    b, s = np.asarray(batch_sizes, float), np.asarray(updates, float)
    keep = np.isfinite(s) & (s > 0)
    b, s = b[keep], s[keep]
    if len(b) < 3:
        return dict(s_min=np.nan, b_noise=np.nan, e_min=np.nan, r2=np.nan)

    def log_steps(b, log_s_min, log_b_noise):
        return log_s_min + np.log1p(np.exp(log_b_noise) / b)

    start = (np.log(s.min()), np.log(np.median(b)))
    (log_s_min, log_b_noise), _ = scipy.optimize.curve_fit(log_steps, b, np.log(s), p0=start,
                                                          maxfev=20000)
    residual = np.log(s) - log_steps(b, log_s_min, log_b_noise)
    total = np.sum((np.log(s) - np.log(s).mean()) ** 2)
    s_min, b_noise = float(np.exp(log_s_min)), float(np.exp(log_b_noise))
    return dict(s_min=s_min, b_noise=b_noise, e_min=s_min * b_noise,
                r2=float(1 - np.sum(residual ** 2) / total) if total > 0 else np.nan)


def loglog_slope(batch_sizes, updates):
    """The least-squares slope of log S against log B (perfect scaling: -1)."""
    if len(batch_sizes) < 2:
        return np.nan
    return float(np.polyfit(np.log(batch_sizes), np.log(updates), 1)[0])


# -- tables ----------------------------------------------------------------------
def _status(record, budget):
    m = record["measures"]
    if record["status"] == "diverged":
        return "diverged"
    if m["updates_to_target"] is not None:
        return "reached"
    if m.get("gave_up_at") is not None and m["max_updates"] < budget:
        return "slower than another rate"  # pruned
    return "not reached"


def run_rows(sweep, configs, spec):
    """One row per stored run: updates and examples to target, or why not."""
    rows = []
    for (name, kind, b, lr, i), config in configs.items():
        record = sweep.load(config)
        m = record["measures"]
        rows.append(dict(workload=name, kind=kind, batch_size=b, lr=lr, seed=config.seed,
                         seed_index=i,
                         status=_status(record, spec["workloads"][name]["max_updates"]),
                         updates_to_target=m["updates_to_target"],
                         examples_to_target=m["examples_to_target"],
                         evaluations=len(m["evaluations"]),
                         final_batch_size=record["rows"][-1]["batch_size"] if record["rows"]
                         else None, wall_time=record["wall_time"]))
    return pd.DataFrame(rows)


def best_rates(runs, name):
    """{batch: row} of the first seed's best rate per batch of workload
    `name`: the fewest updates to target (the smaller rate on a tie)."""
    sweep = runs[(runs.workload == name) & (runs.kind == "sweep") & (runs.seed_index == 0)
                 & (runs.status == "reached")]
    return {b: group.sort_values(["updates_to_target", "lr"]).iloc[0]
            for b, group in sweep.groupby("batch_size")}


def tables(sweep, configs, spec=None):
    """Every run (updates and examples to target, or why not); the best rate
    per batch with its seeds' mean and spread; the fit and the noise scales
    per workload; and the evaluations of the noise and adaptive runs (the
    trace)."""
    runs = run_rows(sweep, configs, spec)
    trace = [dict(workload=name, kind=kind, **e)
             for (name, kind, *_), config in configs.items() if kind != "sweep"
             for e in sweep.load(config)["measures"]["evaluations"]]
    summary, fits = [], []
    for name, w in spec["workloads"].items():
        sweep_runs = runs[(runs.workload == name) & (runs.kind == "sweep")]
        tops, best = best_rates(runs, name), []
        lrs = sorted(w["learning_rates"])
        for b, group in sweep_runs[sweep_runs.seed_index == 0].groupby("batch_size"):
            # The evaluations' spacing bounds how exactly a first hit is known
            # (the claims' slope errors: reproduce.claims.slope_with_error).
            row = dict(workload=name, batch_size=b, runs=len(group),
                       reached=int((group.status == "reached").sum()),
                       evaluations_per_decade=w["per_decade"])
            if b in tops:
                top = tops[b]
                seeds = sweep_runs[(sweep_runs.batch_size == b) & (sweep_runs.lr == top.lr)]
                hit = seeds[seeds.status == "reached"]
                row.update(best_lr=top.lr, updates_to_target=hit.updates_to_target.mean(),
                           updates_to_target_std=hit.updates_to_target.std(),
                           examples_to_target=hit.examples_to_target.mean(),
                           seeds=len(seeds), seeds_reached=len(hit),
                           first_seed_updates_to_target=top.updates_to_target,
                           best_lr_at_grid_edge=bool(top.lr in (lrs[0], lrs[-1])))
                best.append((b, row["updates_to_target"]))
            summary.append(row)
        fit = fit_steps(*zip(*best)) if len(best) >= 3 else fit_steps([], [])
        noise_trace = [e for e in trace if e["workload"] == name and e["kind"] == "noise"]
        b_simple = _near_target(noise_trace, w["target"])
        adaptive = _only(runs[(runs.workload == name) & (runs.kind == "adaptive")])
        sizes, steps = zip(*best) if best else ((), ())
        fits.append(dict(
            workload=name, target=w["target"], learning_rates=" ".join(map(str, w["learning_rates"])),
            runs_per_batch=len(w["learning_rates"]), seeds=w.get("seeds", 1), **fit,
            b_simple_near_target=b_simple, b_simple_over_b_noise=b_simple / fit["b_noise"]
            if fit["b_noise"] else np.nan,
            noise_run=f"{w['noise']['batch_size']} = {w['noise']['accumulation']} x "
                      f"{w['noise']['batch_size'] // w['noise']['accumulation']}, "
                      f"lr {w['noise']['lr']}",
            slope_smallest_three=loglog_slope(sizes[:3], steps[:3]) if len(sizes) >= 3 else np.nan,
            slope_largest_two=loglog_slope(sizes[-2:], steps[-2:]) if len(sizes) >= 2 else np.nan,
            adaptive_updates=adaptive.updates_to_target,
            adaptive_examples=adaptive.examples_to_target,
            adaptive_final_batch=adaptive.final_batch_size))
    return {"": runs, "summary": pd.DataFrame(summary), "fit": pd.DataFrame(fits),
            "trace": pd.DataFrame(trace)}


def _only(rows):
    """The one row of `rows`, or a row of NaNs where its run is missing (failed)."""
    if len(rows):
        return rows.iloc[0]
    return pd.Series(dict(status="missing", updates_to_target=np.nan,
                          examples_to_target=np.nan, final_batch_size=np.nan))


def _near_target(evaluations, target):
    """B_simple at the first evaluation that reached `target` (the last one if
    none did); NaN without measurements."""
    measured = [e for e in evaluations if np.isfinite(e.get("noise_scale_simple", np.nan))]
    if not measured:
        return np.nan
    hit = next((e for e in measured if e["accuracy"] >= target), measured[-1])
    return float(hit["noise_scale_simple"])


def _seed_count(best, seeds):
    """'3 seeds', or '2-3 of 3 seeds' where some seeds missed the target."""
    reached = best.seeds_reached.astype(int)
    if reached.min() == reached.max() == seeds:
        return f"{seeds} seeds"
    low, high = reached.min(), reached.max()
    return f"{low}{'' if low == high else f'-{high}'} of {seeds} seeds that reached the target"


def title(runs, spec):
    names = ", ".join(f"{n} to {w['target']:.3g} test accuracy"
                      for n, w in spec["workloads"].items())
    return f"Updates to target against the batch size: {names}; plain SGD, rate tuned per batch"


def plot(tables, configs, spec, title):
    runs, summary, fits = tables[""], tables["summary"], tables["fit"]
    names = list(spec["workloads"])
    fig, axes = subplots(len(names), 3, width=6, height=5.5)
    for row, name in zip(axes, names):
        w, fit = spec["workloads"][name], fits[fits.workload == name].iloc[0]
        best = summary[(summary.workload == name) & summary.updates_to_target.notna()]
        sweep_runs = runs[(runs.workload == name) & (runs.kind == "sweep")
                          & (runs.seed_index == 0)]
        for ax, column in zip(row, ("updates_to_target", "examples_to_target")):
            to_target_panel(ax, column, name, w, fit, best, sweep_runs)
        trade_off_panel(row[2], name, w, fit, best,
                        _only(runs[(runs.workload == name) & (runs.kind == "adaptive")]))
    return {"": finish(fig, title)}


def to_target_panel(ax, column, name, w, fit, best, sweep_runs):
    """Updates (or examples) to the target against the batch: every rate that
    reached it, the best rate's seeds, McCandlish's fit, B_noise and B_simple."""
    import seaborn as sns
    from matplotlib.ticker import NullFormatter

    updates = column == "updates_to_target"
    label = "updates to target S" if updates else "examples to target E = B S"
    colors = dict(zip(w["learning_rates"], sns.color_palette("viridis", len(w["learning_rates"]))))
    b_grid = np.logspace(np.log10(min(w["batch_sizes"])), np.log10(max(w["batch_sizes"])), 100)
    for lr, group in sweep_runs[sweep_runs.status == "reached"].groupby("lr"):
        ax.scatter(group.batch_size, group[column], s=18, alpha=0.5, color=colors[lr],
                   label=f"lr {lr:g}")
    spread = best.updates_to_target_std * (1 if updates else best.batch_size)
    ax.errorbar(best.batch_size, best[column], yerr=spread.fillna(0), fmt="k-", lw=1, alpha=0.6,
                capsize=3, label=f"best rate per batch (mean ± std over "
                                 f"{_seed_count(best, fit.seeds)})")
    if np.isfinite(fit.b_noise):
        curve = fit.s_min * (1 + fit.b_noise / b_grid) if updates else \
            fit.e_min * (1 + b_grid / fit.b_noise)
        ax.plot(b_grid, curve, "r--", label=f"McCandlish fit: S_min {fit.s_min:.0f}, B_noise "
                                           f"{fit.b_noise:.0f}, R² {fit.r2:.3f}")
        ax.axvline(fit.b_noise, color="r", lw=1, alpha=0.6)
    if np.isfinite(fit.b_simple_near_target):
        ax.axvline(fit.b_simple_near_target, color="tab:blue", ls=":",
                   label=f"B_simple near the target: {fit.b_simple_near_target:.0f}")
    if updates and len(best):
        first = best.iloc[0]
        b_data = b_grid[b_grid <= best.batch_size.max()]
        ax.plot(b_data, first.updates_to_target * first.batch_size / b_data, color="0.6",
                lw=0.8, ls="-.", label="perfect scaling (slope -1)")
    failed = sweep_runs[sweep_runs.status != "reached"]
    panel(ax, legend_size=7, minor_grid=True, xscale="log", yscale="log", xlabel="batch size B",
          ylabel=label,
          title=f"{name}: {label}\nlr tuned over {{{fit.learning_rates.replace(' ', ', ')}}}"
                f" ({fit.runs_per_batch} runs per batch);\n{len(failed)} of "
                f"{len(sweep_runs)} runs did not reach the target (or were slower)")
    ax.set_xticks(w["batch_sizes"], [str(b) for b in w["batch_sizes"]], fontsize=7)
    ax.xaxis.set_minor_formatter(NullFormatter())


def trade_off_panel(ax, name, w, fit, best, adaptive):
    """The trade-off McCandlish et al. draw: examples against updates, with the
    adaptive run."""
    from matplotlib.ticker import NullFormatter

    ax.plot(best.updates_to_target, best.examples_to_target, "ko-", ms=4,
            label="fixed batch, best rate")
    for _, point in best.iterrows():
        ax.annotate(str(point.batch_size), (point.updates_to_target, point.examples_to_target),
                    fontsize=7, xytext=(3, 3), textcoords="offset points")
    if np.isfinite(fit.b_noise) and len(best):
        s = np.logspace(np.log10(fit.s_min * 1.001), np.log10(best.updates_to_target.max() * 2),
                        100)
        ax.plot(s, fit.e_min / (1 - fit.s_min / s), "r--",
                label="fit: (S/S_min - 1)(E/E_min - 1) = 1")
    a = w["adaptive"]
    if adaptive.status == "reached":
        ax.scatter([adaptive.updates_to_target], [adaptive.examples_to_target], marker="*",
                   s=200, color="tab:orange", zorder=5,
                   label=f"adaptive: batch {2 * a['micro_batch']} -> "
                         f"{adaptive.final_batch_size} while B_simple > {a['factor']:g} B, "
                         f"lr {a['lr']:g}")
    else:
        ax.text(0.02, 0.02, f"adaptive run: {adaptive.status}", transform=ax.transAxes)
    panel(ax, legend_size=7, minor_grid=True, xscale="log", yscale="log",
          xlabel="updates to target",
          ylabel="examples to target", title=f"{name}: the updates / examples trade-off")
    ax.xaxis.set_minor_formatter(NullFormatter())


FIGURE = Figure(
    name="critical_batch", description=__doc__.splitlines()[0], presets=PRESETS, grid=grid,
    tables=tables, plots=plot, title=title, callbacks=callbacks_factory, measure=measure,
    follow_up=more_seeds, printed=("summary", "fit"),
    describe=lambda c: (f"batch {c.batch_size:<5d} lr {c.lr:<6g}"
                        + (f" ({c.accumulation} x {c.batch_size // c.accumulation}, B_simple)"
                           if c.noise_scale_decay is not None and not c.adaptive_batch else "")
                        + (f" adaptive k={c.adaptive_batch:g}" if c.adaptive_batch else "")),
    report=(("Critical batch: the fit and the noise scale", "fit"),
            ("Critical batch: updates to target per batch (best rate)", "summary")))


main = FIGURE.main


if __name__ == "__main__":
    main()
