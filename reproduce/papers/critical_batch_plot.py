"""The critical-batch figure's drawing (`reproduce.papers.critical_batch`): updates and
examples to the target against the batch, with McCandlish et al.'s fit, and
the updates / examples trade-off with the adaptive run."""

import numpy as np

from reproduce.figure import finish, panel, subplots


def only_row(rows):
    """The one row of `rows`, or a row of NaNs where its run is missing (failed)."""
    import pandas as pd

    if len(rows):
        return rows.iloc[0]
    return pd.Series(dict(status="missing", updates_to_target=np.nan,
                          examples_to_target=np.nan, final_batch_size=np.nan))


def _seed_count(best, seeds):
    """'3 seeds', or '2-3 of 3 seeds' where some seeds missed the target."""
    reached = best.seeds_reached.astype(int)
    if reached.min() == reached.max() == seeds:
        return f"{seeds} seeds"
    low, high = reached.min(), reached.max()
    return f"{low}{'' if low == high else f'-{high}'} of {seeds} seeds that reached the target"


def _extended(fit):
    """', past an edge also 0.025, 0.4' where the follow-up extended the grid."""
    rates = str(fit.get("extended_rates", "") or "")
    if rates in ("", "nan"):
        return ""
    return f", past an edge also {rates.replace(' ', ', ')}"


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
                        only_row(runs[(runs.workload == name) & (runs.kind == "adaptive")]))
    return {"": finish(fig, title)}


def to_target_panel(ax, column, name, w, fit, best, sweep_runs):
    """Updates (or examples) to the target against the batch: every rate that
    reached it, the best rate's seeds, McCandlish's fit, B_noise and B_simple."""
    import seaborn as sns
    from matplotlib.ticker import NullFormatter

    updates = column == "updates_to_target"
    label = "updates to target S" if updates else "examples to target E = B S"
    rates = sorted({*w["learning_rates"], *sweep_runs.lr})  # the grid and its extensions
    colors = dict(zip(rates, sns.color_palette("viridis", len(rates))))
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
                f" ({fit.runs_per_batch} runs per batch){_extended(fit)};\n{len(failed)} of "
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
                   label=f"adaptive: batch {a['batch_size']} -> "
                         f"{adaptive.final_batch_size} while B_simple > {a['factor']:g} B, "
                         f"lr {a['lr']:g}")
    else:
        ax.text(0.02, 0.02, f"adaptive run: {adaptive.status}", transform=ax.transAxes)
    panel(ax, legend_size=7, minor_grid=True, xscale="log", yscale="log",
          xlabel="updates to target",
          ylabel="examples to target", title=f"{name}: the updates / examples trade-off")
    ax.xaxis.set_minor_formatter(NullFormatter())
