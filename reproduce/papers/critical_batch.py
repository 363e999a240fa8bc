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

The adaptive schedule: start small (2 micro-batches a window) at a fixed
rate and grow the batch by accumulation whenever the measured B_simple
exceeds k x the batch (`callbacks.NoiseScaleBatchSize`, the runner's
`adaptive_batch`), compared on updates and examples to the target with the
sweep's tuned fixed batches.

    python -m reproduce.papers.critical_batch --preset quick     # the default

Writes figures/critical_batch{,_<preset>}{.csv,_summary.csv,_fit.csv,
_trace.csv,.png}.
"""

import math

import numpy as np
import pandas as pd

from batchsize.callbacks import UpdatesToTarget
from batchsize.optimizers import accumulator_of
from reproduce.claims import (INCONCLUSIVE, Claim, Verdict, combine, inconclusive,
                              interval_above, interval_within)
from reproduce.papers.critical_batch_plot import only_row, plot
from reproduce.scaling_model import (b_noise_interval, b_simple_late, fit_steps,
                                     log_mean_variances, loglog_slope, slope_interval,
                                     t_interval)
from reproduce.figure import Figure, max_extensions
from reproduce.runs.config import RunConfig
from reproduce.runs.datasets import data_of
from reproduce.runs.store import RunStore


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
        max_extensions=1,
        max_updates=200,
        noise=dict(batch_size=64, accumulation=4, lr=0.05, noise_scale_decay=0.9),
        adaptive=dict(batch_size=32, accumulation=2, lr=0.05, factor=1.0, max_batch_size=256,
                      noise_scale_decay=0.9), seeds=2)}),
    # A 2-core CPU in minutes: F1 without batch norm on all of MNIST.
    "quick": dict(workloads={"MNIST F1": dict(
        base=RunConfig(dataset="mnist", model="f1", norm="none", test_size=5000, epochs=30),
        target=0.96, batch_sizes=_powers(16, 4096), learning_rates=(0.05, 0.1, 0.2),
        per_decade=15, max_updates=6000,
        noise=dict(batch_size=256, accumulation=8, lr=0.1, noise_scale_decay=0.95),
        adaptive=dict(batch_size=32, accumulation=2, lr=0.1, factor=1.0, max_batch_size=4096,
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
            adaptive=dict(batch_size=32, accumulation=2, lr=0.1, factor=1.0, max_batch_size=65536,
                          noise_scale_decay=0.99), seeds=3),
        "CIFAR-10 ResNet-8": dict(
            base=RunConfig(dataset="cifar10", model="resnet8", norm="none", epochs=200,
                           augment=True),
            target=0.70, batch_sizes=_powers(16, 65536),
            learning_rates=tuple(0.0125 * 2 ** k for k in range(9)), per_decade=30,
            max_updates=100_000,
            noise=dict(batch_size=1024, accumulation=8, lr=0.1, noise_scale_decay=0.99),
            adaptive=dict(batch_size=32, accumulation=2, lr=0.1, factor=1.0, max_batch_size=65536,
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
        runs[(name, "adaptive", a["batch_size"], a["lr"], 0)] = base.replace(
            batch_size=a["batch_size"], accumulation=a["accumulation"], lr=a["lr"],
            noise_scale_decay=a["noise_scale_decay"], adaptive_batch=a["factor"],
            max_batch_size=a["max_batch_size"])
    return runs


def follow_up(sweep, runs, spec):
    """First the open edges of each batch's rate grid (the first seed's best
    rate on the edge: the next rate outward, x2 or /2, at most max_extensions
    steps; an outward rate that diverges or is slower closes the edge); once
    every edge is closed, each batch's best rate at seeds 1 .. seeds-1."""
    frame = run_rows(sweep, runs, spec)
    more = {}
    for name, w in spec["workloads"].items():
        for b, lr in open_edges(frame, name, w).items():
            if lr is not None:
                config = runs[next(k for k in runs if k[:3] == (name, "sweep", b) and k[4] == 0)]
                more[(name, "sweep", b, lr, 0)] = config.replace(lr=lr)
    if more:
        return more
    for name, w in spec["workloads"].items():
        for b, top in best_rates(frame, name).items():
            config = runs[(name, "sweep", b, top.lr, 0)]
            for i in range(1, w.get("seeds", 1)):
                more[(name, "sweep", b, top.lr, i)] = config.replace(seed=config.seed + i)
    return more


def open_edges(frame, name, w):
    """{batch: the next rate outward, or None once max_extensions are used}
    for each batch whose first-seed best rate is the largest or smallest tried."""
    tried = frame[(frame.workload == name) & (frame.kind == "sweep") & (frame.seed_index == 0)]
    low, high = min(w["learning_rates"]), max(w["learning_rates"])
    out = {}
    for b, top in best_rates(frame, name).items():
        rates = sorted(tried[tried.batch_size == b].lr)
        if len(rates) < 2 or top.lr not in (rates[0], rates[-1]):
            continue
        outward = top.lr * 2 if top.lr == rates[-1] else top.lr / 2
        steps = round(abs(math.log2(outward / (high if outward > high else low))))
        out[b] = outward if steps <= max_extensions(w) else None
    return out


def rates_of(w):
    """The grid's rates and every extension the follow-up may add."""
    low, high = min(w["learning_rates"]), max(w["learning_rates"])
    steps = range(1, max_extensions(w) + 1)
    return sorted({*w["learning_rates"], *(high * 2 ** k for k in steps),
                   *(low / 2 ** k for k in steps)})


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
            done = [records.load(config.replace(lr=lr)) for lr in rates_of(w) if lr != config.lr]
            needed = [r.measures["updates_to_target"] for r in done if r and r.measures]
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


# -- tables ----------------------------------------------------------------------
def _status(record, budget):
    m = record.measures
    if record.status == "diverged":
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
        m = record.measures
        rows.append(dict(workload=name, kind=kind, batch_size=b, lr=lr, seed=config.seed,
                         seed_index=i,
                         status=_status(record, spec["workloads"][name]["max_updates"]),
                         updates_to_target=m["updates_to_target"],
                         examples_to_target=m["examples_to_target"],
                         evaluations=len(m["evaluations"]),
                         final_batch_size=record.rows[-1]["batch_size"] if record.rows
                         else None, wall_time=record.wall_time))
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
             for e in sweep.load(config).measures["evaluations"]]
    summary, fits = [], []
    for name, w in spec["workloads"].items():
        sweep_runs = runs[(runs.workload == name) & (runs.kind == "sweep")]
        tops, best = best_rates(runs, name), []
        edges = open_edges(runs, name, w)
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
                           edge_open=b in edges)
                best.append((b, row["updates_to_target"]))
            summary.append(row)
        fit = fit_steps(*zip(*best)) if len(best) >= 3 else fit_steps([], [])
        noise_trace = [e for e in trace if e["workload"] == name and e["kind"] == "noise"]
        b_simple = _near_target(noise_trace, w["target"])
        adaptive = only_row(runs[(runs.workload == name) & (runs.kind == "adaptive")])
        sizes, steps = zip(*best) if best else ((), ())
        fits.append(dict(
            workload=name, target=w["target"], learning_rates=" ".join(map(str, w["learning_rates"])),
            runs_per_batch=len(w["learning_rates"]),
            # the rates the follow-up tried past the grid's edges (first seed)
            extended_rates=" ".join(map(str, sorted(set(sweep_runs.lr) - set(w["learning_rates"])))),
            seeds=w.get("seeds", 1), **fit,
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


def _near_target(evaluations, target):
    """B_simple at the first evaluation that reached `target` (the last one if
    none did); NaN without measurements."""
    measured = [e for e in evaluations if np.isfinite(e.get("noise_scale_simple", np.nan))]
    if not measured:
        return np.nan
    hit = next((e for e in measured if e["accuracy"] >= target), measured[-1])
    return float(hit["noise_scale_simple"])


def title(runs, spec):
    names = ", ".join(f"{n} to {w['target']:.3g} test accuracy"
                      for n, w in spec["workloads"].items())
    return f"Updates to target against the batch size: {names}; plain SGD, rate tuned per batch"


# -- the claims (reproduce.claims): S(B) judged on the seeds that did not choose its rate
def judged_steps(tables, name):
    """{batch: the judged seeds' updates to target} at each batch's best rate
    (seed 0 chose it; seeds 1.. are judged), the evaluations per decade, and
    the batches whose best rate sits on an open edge."""
    runs, summary = tables[""], tables["summary"]
    summary = summary[(summary.workload == name) & summary.best_lr.notna()]
    edge = summary.get("edge_open", summary.get("best_lr_at_grid_edge"))
    steps = {}
    for _, row in summary.iterrows():
        judged = runs[(runs.workload == name) & (runs.kind == "sweep")
                      & (runs.batch_size == row.batch_size) & (runs.lr == row.best_lr)
                      & (runs.seed_index > 0) & (runs.status == "reached")]
        steps[int(row.batch_size)] = judged.updates_to_target.to_numpy(float)
    open_edges = sorted(int(b) for b, e in zip(summary.batch_size, edge) if e)
    return steps, int(summary.evaluations_per_decade.iloc[0]), open_edges


def _slope_claim(tables, pick, judge, level):
    parts = []
    for name in dict.fromkeys(tables["summary"].workload):
        steps, per_decade, open_edges = judged_steps(tables, name)
        batches = pick(sorted(steps))
        few = [b for b in batches if len(steps[b]) < 2]
        if len(batches) < 2 or few:
            parts.append((name, inconclusive(f"batches {batches}", "needs 2 or more judged "
                          f"seeds (beyond the one that chose the rate) reaching the target at "
                          f"each batch; short: {few}")))
            continue
        slope, (low, high) = slope_interval(steps, batches, per_decade, level)
        outcome, text = judge(low, high)
        _, dof = log_mean_variances(steps, batches, per_decade)
        text = (f"log-log slope over batch {', '.join(map(str, batches))}: {slope:.2f}, {text} "
                f"(delta-method t, {dof} dof: the judged seeds' variance of log S pooled over "
                f"the batches, {min(len(steps[b]) for b in batches)}+ seeds per batch, and each "
                f"evaluation interval's)")
        blocked = [b for b in batches if b in open_edges]
        if blocked:
            outcome, power = INCONCLUSIVE, (f"the best rate sits on an open edge of the grid "
                                            f"at batch {blocked}: extend the rates")
        else:
            power = "" if outcome != INCONCLUSIVE else \
                "more judged seeds per batch would narrow the interval"
        parts.append((name, Verdict(outcome, text, power)))
    return combine(parts)


def perfect_scaling_at_small_batches(tables, n_test):
    def judge(low, high):
        return (interval_within(low, high, -1.25, -0.75),
                f"90% interval [{low:.2f}, {high:.2f}]; margin -1 +- 0.25")
    return _slope_claim(tables, lambda batches: batches[:3], judge, 0.90)


def diminishing_returns_at_large_batches(tables, n_test):
    def judge(low, high):
        return interval_above(low, high, -0.5), f"95% interval [{low:.2f}, {high:.2f}]; bound -0.5"
    return _slope_claim(tables, lambda batches: batches[-2:], judge, 0.95)


def noise_fit(tables, name):
    """(the fit of the judged means, B_noise's 90% delta-method t interval, the
    variance of log B_noise and its dof, the batches, the open edges), or None
    with fewer than 3 batches that have 2 judged seeds."""
    steps, per_decade, open_edges = judged_steps(tables, name)
    batches = [b for b in sorted(steps) if len(steps[b]) >= 2]
    if len(batches) < 3:
        return None
    fit, interval, variance, dof = b_noise_interval(steps, batches, per_decade, 0.90)
    return fit, interval, (variance, dof), batches, open_edges


def _fit_claim(tables, judge):
    parts = []
    for name in dict.fromkeys(tables["summary"].workload):
        fitted = noise_fit(tables, name)
        if fitted is None:
            parts.append((name, inconclusive("fewer than 3 batches with 2 judged seeds",
                                              "more seeds per batch")))
            continue
        fit, (low, high), log_variance, batches, open_edges = fitted
        outcome, text = judge(tables, name, fit, low, high, batches, log_variance)
        text += (f"; fit of the judged means: B_noise {fit['b_noise']:.0f}, S_min "
                 f"{fit['s_min']:.0f}, R^2 {fit['r2']:.3f} (reported, not a bar)")
        if open_edges:
            parts.append((name, Verdict(INCONCLUSIVE, text, "the best rate sits on an open "
                                        f"edge of the grid at batch {open_edges}")))
        else:
            parts.append((name, Verdict(outcome, text, "more seeds per batch would narrow "
                                        "the interval" if outcome == INCONCLUSIVE else "")))
    return combine(parts)


def critical_batch_is_identified(tables, n_test):
    def judge(tables, name, fit, low, high, batches, log_variance):
        return (interval_within(low, high, min(batches), max(batches)),
                f"B_noise 90% interval [{low:.0f}, {high:.0f}] (delta-method t in log B_noise, "
                f"{log_variance[1]} dof) within the batches swept, {min(batches)} .. "
                f"{max(batches)}")
    return _fit_claim(tables, judge)


def noise_scale_predicts_the_critical_batch(tables, n_test):
    def judge(tables, name, fit, low, high, batches, log_variance):
        row = tables["fit"][tables["fit"].workload == name].iloc[0]
        target = float(row["target"]) if "target" in row else 0.0
        late = b_simple_late(tables["trace"], name, target)
        if late is None:
            return INCONCLUSIVE, "B_simple: fewer than 2 measured evaluations"
        mean, variance, dof, count = late
        ratio = mean - math.log(fit["b_noise"])
        total = variance + log_variance[0]
        welch = total ** 2 / (variance ** 2 / dof + log_variance[0] ** 2 / log_variance[1])
        ratio_low, ratio_high = (math.exp(v) for v in t_interval(ratio, total, welch, 0.90))
        return (interval_within(ratio_low, ratio_high, 0.1, 10.0),
                f"B_simple {math.exp(mean):.0f} (geometric mean of the noise run's last {count} "
                f"evaluations up to the target, their spread its error) / B_noise: 90% interval [{ratio_low:.2f}, "
                f"{ratio_high:.2f}] (t, {welch:.1f} dof, both errors); margin [0.1, 10]")
    return _fit_claim(tables, judge)


CLAIMS = (
    Claim("Shallue et al. 2018", "at small batches the updates to the target fall as 1/B "
          "(perfect scaling)", ("", "summary"), perfect_scaling_at_small_batches,
          margin="sameness: the slope over the 3 smallest batches within -1 +- 0.25 (their "
                 "Fig 1: perfect scaling)"),
    Claim("Shallue et al. 2018", "at large batches the updates to the target stop falling "
          "(diminishing returns)", ("", "summary"), diminishing_returns_at_large_batches,
          margin="a bound: the slope over the 2 largest batches above -0.5 (their Fig 1: "
                 "diminishing returns, then none)"),
    Claim("McCandlish et al. 2018", "S = S_min (1 + B_noise / B) identifies a critical batch "
          "B_noise", ("", "summary"), critical_batch_is_identified,
          margin="the 90% interval of B_noise (delta-method t) within the batches swept (their "
                 "Fig 7)"),
    Claim("McCandlish et al. 2018", "the simple noise scale predicts the critical batch B_noise "
          "within an order of magnitude", ("", "summary", "fit", "trace"),
          noise_scale_predicts_the_critical_batch,
          margin="B_simple / B_noise within [0.1, 10], its 90% interval carrying both "
                 "B_simple's and B_noise's errors (their Fig 7: within a factor of a few)"),
)


FIGURE = Figure(
    claims=CLAIMS,
    name="critical_batch", description=__doc__.splitlines()[0], presets=PRESETS, grid=grid,
    tables=tables, plots=plot, title=title, callbacks=callbacks_factory, measure=measure,
    follow_up=follow_up, printed=("summary", "fit"),
    describe=lambda c: (f"batch {c.batch_size:<5d} lr {c.lr:<6g}"
                        + (f" ({c.accumulation} x {c.batch_size // c.accumulation}, B_simple)"
                           if c.noise_scale_decay is not None and not c.adaptive_batch else "")
                        + (f" adaptive k={c.adaptive_batch:g}" if c.adaptive_batch else "")),
    report=(("Critical batch: the fit and the noise scale", "fit"),
            ("Critical batch: updates to target per batch (best rate)", "summary")))


main = FIGURE.main


if __name__ == "__main__":
    main()
