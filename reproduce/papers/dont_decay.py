"""Smith, Kindermans, Ying & Le 2018, "Don't Decay the Learning Rate,
Increase the Batch Size" (arXiv:1711.00489).

Method: a wide ResNet on CIFAR-10 with ghost batch norm (ghost batch = the
initial batch, 128), SGD with momentum 0.9 (Fig 3b: Nesterov), weight decay
5e-4 and pad-crop-flip augmentation (the Zagoruyko & Komodakis defaults; the
paper does not state them). Three schedules step at 30%, 60% and 80% of
training (epochs 60/120/160 of 200), each step dividing the SGD noise scale
g = lr N / (B (1 - momentum)) by 5:

- decaying learning rate: lr / 5 at each step, batch fixed;
- hybrid: the batch x 5 at the first step, then lr / 5;
- increasing batch size: the batch x 5 at each step, lr fixed.

Fig 5 caps the batch at B_max = 5120 (past it the rate decays instead) and
adds two runs that start at a larger lr and batch (0.5, 640) and at a larger
momentum as well (0.98, B0 3200). `callbacks.BatchSizeSchedule` is all three
schedules (a cap equal to B0 is the decaying rate); batches above
--max-device-batch are accumulated (`optimizers.GradientAccumulator`).

Momentum is Keras's (v = m v - lr g; w += v): after a learning-rate drop the
velocity still carries the old rate for a few steps, unlike TF1's
MomentumOptimizer (A = m A + g; w -= lr A) that the paper used. The batch
schedules change no rate, so for them the two agree.

Seeds: the three schedules of Figs 1-3 (momentum), the cells the claims
compare, are trained with `seeds` seeds each (3 in the quick and paper
presets); the table gives their mean final test accuracy, its standard
deviation and the number of seeds, and the loss and accuracy figures the mean
per epoch with the seeds' range shaded. Fig 5's runs are one seed each.

    python -m reproduce.papers.dont_decay --preset quick     # the default

Writes figures/dont_decay{,_<preset>}{.csv,_table.csv,_schedules.csv,
_schedules.png,_loss.png,_accuracy.png,_updates.png}.
"""

import dataclasses
import itertools

import numpy as np
import pandas as pd

from batchsize.callbacks import milestones_at
from reproduce.claims import (CHANCE, FAILS, HOLDS, INCONCLUSIVE, Claim, Side, Verdict, bonferroni,
                              compare_rows, difference, inconclusive, same_within,
                              verdict_or_too_few)
from reproduce.figure import (Figure, evaluation_note, finish, int_from_env, panel,
                              paired_test_variance, plot_over_seeds, seed_summary, subplots)
from reproduce.runs.config import ConfigError, RunConfig
from reproduce.runs.datasets import data_of

STEPS = (0.3, 0.6, 0.8)  # fractions of training: 60/120/160 of 200 epochs
PAPER_FIG5 = {  # run: (updates, test accuracy) as published
    "original schedule": ("~80,000", 0.943), "increasing batch": ("~29,000", 0.944),
    "higher initial lr": ("<6,500", 0.945), "+ higher momentum": ("<2,500", 0.933)}


# Figs 1-3: the three schedules, as the batch cap (in multiples of B0; None: no cap).
SCHEDULES = {"decaying learning rate": 1, "hybrid": "factor", "increasing batch size": None}

# One declarative config per preset: model, data, epochs, B0 and the cap, and
# the seeds of each momentum schedule (the rest: one seed).
# Smaller presets shrink the batch sizes with the data, so N / B stays close to
# the paper's (50,000 / 128 at the start, 50,000 / 16,000 at the end) at quick;
# the table gives each phase's updates (`updates_per_phase`).
WRN = RunConfig(dataset="cifar10", model="wrn16_4", optimizer="sgd", momentum=0.9, lr=0.1,
                weight_decay=5e-4, augment=True, batch_factor=5)
PRESETS = {
    # smoke checks the schedules' arithmetic: the small F1 traces each new batch
    # shape faster than a ResNet, and every epoch here has a new one.
    "smoke": dict(base=WRN.replace(model="f1", batch_size=8, epochs=4, norm="ghost:8",
                                   train_size=256, test_size=256, batch_milestones=(1, 2, 3),
                                   max_device_batch=128),
                  b_max=320, nesterov=False, seeds={"decaying learning rate": 2}),
    # N / B0 = 400 updates an epoch (the paper's 391) and B_end / N = 1000 /
    # 3200 = 0.31 (the paper's 16,000 / 50,000 = 0.32); B_max = 40 B0 as the
    # paper's 5120 = 40 x 128. Three seeds: at the committed quick spread no
    # number of seeds decided the accuracy claim (the test set's floor), so
    # the test set grows to 5,000 images instead.
    "quick": dict(base=WRN.replace(model="resnet8", batch_size=8, epochs=10, norm="ghost:8",
                                   train_size=3200, test_size=5000,
                                   batch_milestones=milestones_at(STEPS, 10),
                                   max_device_batch=256),
                  b_max=320, nesterov=False, seeds=dict.fromkeys(SCHEDULES, 3)),
    # The claims decided on this CPU (#44): 10,000 images, N / B0 = 417 (the
    # paper's 391), B_end / N = 3000 / 10,000 = 0.30 (0.32), steps at 30/60/80%
    # of 30 epochs, ghost batch = B0 as the paper's; 4 seeds a schedule, fixed
    # before the run (the paired power line at the quick spread).
    "cpu": dict(base=WRN.replace(model="resnet8", batch_size=24, epochs=30, norm="ghost:24",
                                 train_size=10000, test_size=10000,
                                 batch_milestones=milestones_at(STEPS, 30),
                                 max_device_batch=512),
                b_max=960, nesterov=False, seeds=dict.fromkeys(SCHEDULES, 4)),
    "paper": dict(base=WRN.replace(batch_size=128, epochs=200, norm="ghost:128",
                                   batch_milestones=(60, 120, 160)),
                  b_max=5120, nesterov=True, seeds=dict.fromkeys(SCHEDULES, 3)),
}


# Fig 5: four runs capped at the preset's B_max ("b_max"), as multiples of the
# base run's lr and B0, and their momentum.
FIG5 = {
    "original schedule": dict(cap=1),
    "increasing batch": dict(cap="b_max"),
    "higher initial lr": dict(cap="b_max", lr_times=5, batch_times=5),
    "+ higher momentum": dict(cap="b_max", lr_times=5, batch_times=25, momentum=0.98),
}


def schedule_name(config):
    """Which of the three schedules a run follows, from its batch cap (the
    label of its progress line and its TensorBoard curves)."""
    cap, b0 = config.max_batch_size, config.batch_size
    if cap is None:
        return "increasing batch size"
    if cap == b0:
        return "decaying learning rate"
    if cap == b0 * config.batch_factor:
        return "hybrid"
    return f"batch capped at {cap}"


def grid(spec, args=None):
    """{(figure, run, seed index): config} for Figs 1-3 (three schedules,
    momentum and Nesterov; the momentum ones at `spec["seeds"]` seeds) and
    Fig 5 (four runs capped at B_max)."""
    base = spec["base"]
    if getattr(args, "max_device_batch", None):
        base = base.replace(max_device_batch=args.max_device_batch)
    b0 = base.batch_size
    caps = {1: b0, "factor": b0 * base.batch_factor, "b_max": spec["b_max"], None: None}

    runs = {}
    for optimizer in ("sgd", "nesterov") if spec["nesterov"] else ("sgd",):
        for name, times in SCHEDULES.items():
            config = base.replace(optimizer=optimizer, max_batch_size=caps[times])
            seeds = spec.get("seeds", {}).get(name, 1) if optimizer == "sgd" else 1
            for i in range(seeds):
                runs[(optimizer, name, i)] = config.replace(seed=base.seed + i)
    for name, run in FIG5.items():
        runs[("fig5", name, 0)] = base.replace(
            lr=base.lr * run.get("lr_times", 1), batch_size=b0 * run.get("batch_times", 1),
            momentum=run.get("momentum", base.momentum), max_batch_size=caps[run["cap"]])
    return runs


def configured(runs):
    """The schedule each run is configured with, per epoch (Fig 1's data and the
    reference the recorded rows are checked against)."""
    rows, seen = [], set()
    for (figure, name, _), config in runs.items():
        if (figure, name) in seen:
            continue  # another seed of the same schedule
        seen.add((figure, name))
        n = len(data_of(config)[0])
        for planned in config.training_schedule(n):
            rows.append(dict(figure=figure, run=name, epoch=planned.epoch + 1,
                             batch_size=planned.batch_size, lr=planned.learning_rate,
                             momentum=planned.momentum, physical_batch=planned.physical_batch,
                             accumulation_steps=planned.accumulation_steps,
                             updates_in_epoch=planned.updates))
    return pd.DataFrame(rows)


def tables(sweep, runs, spec=None):
    """Per-epoch rows of every run and seed, the configured schedules, and the
    table: per run its updates (scheduled and made), the final test accuracy
    (mean, std and count over the seeds that finished), the largest batch and
    the accumulated epochs, beside the paper's Fig 5."""
    frames = [sweep.table([c]).assign(figure=f, run=r) for (f, r, _), c in runs.items()]
    frame = pd.concat(frames, ignore_index=True)
    frame = frame[["figure", "run", "seed", "optimizer", "epoch", "updates", "batch_size", "lr",
                   "momentum", "loss", "accuracy", "test_loss", "test_accuracy", "noise_scale",
                   "status", "wall_time"]]
    plan = configured(runs)
    cells = {}
    for (figure, name, _), config in runs.items():
        cells.setdefault((figure, name), []).append(config)
    reference = cells.get(("sgd", "decaying learning rate"), [])
    rows = []
    for (figure, name), group in frame.groupby(["figure", "run"], sort=False):
        last = group.groupby("seed", sort=False).tail(1)
        first = last.iloc[0]
        planned = plan[(plan.figure == figure) & (plan.run == name)]
        seeds = seed_summary(last.test_accuracy, digits=4, seeds=last.seed,
                             diverged=last.status == "diverged", diverged_value=CHANCE)
        milestones = cells[(figure, name)][0].batch_milestones
        before = group[group.epoch == milestones[0]] if milestones else group.iloc[:0]
        rows.append(dict(
            figure=figure, run=name, updates=int(first.updates),
            scheduled_updates=int(planned.updates_in_epoch.sum()),
            updates_per_phase=" + ".join(map(str, phase_updates(planned))),
            final_test_accuracy=seeds["mean"], final_test_accuracy_std=seeds["std"],
            seeds=seeds["seeds"], diverged=seeds["diverged"],
            final_test_accuracy_by_seed=seeds["by_seed"],
            test_accuracy_before_first_step=round(float(before.test_accuracy.mean()), 4)
            if len(before) else None, max_batch=int(planned.batch_size.max()),
            accumulated_epochs=int((planned.accumulation_steps > 1).sum()),
            paper_updates=PAPER_FIG5.get(name, ("", None))[0] if figure == "fig5" else "",
            paper_test_accuracy=PAPER_FIG5.get(name, ("", None))[1] if figure == "fig5" else None,
            final_test_accuracy_paired_var_vs_decaying=paired_test_variance(
                sweep, cells[(figure, name)], reference) if reference else None,
            status=first.status))
    return {"": frame, "schedules": plan, "table": pd.DataFrame(rows)}


def phase_updates(planned):
    """The updates each phase of a schedule makes (a phase: epochs of one batch
    and rate), e.g. [1600, 400, 80, 12]."""
    phases = ((planned.batch_size != planned.batch_size.shift()) |
              (planned.lr != planned.lr.shift())).cumsum()
    return [int(u) for u in planned.groupby(phases).updates_in_epoch.sum()]


def title(runs, spec):
    base = next(iter(runs.values()))
    n = len(data_of(base)[0])
    return (f"{base.model} {base.norm} on CIFAR-10 ({n} images), {base.epochs} epochs, "
            f"steps at {', '.join(map(str, base.batch_milestones))}; "
            f"max device batch {base.max_device_batch}{evaluation_note(base)}")


STYLES = {"decaying learning rate": "o-", "hybrid": "s--", "increasing batch size": "^:",
          "original schedule": "o-", "increasing batch": "^:", "higher initial lr": "d-.",
          "+ higher momentum": "v-"}


def plot(tables, runs, spec, title):
    frame, plan, table = tables[""], tables["schedules"], tables["table"]
    sgd = table[table.figure == "sgd"]
    phases = {row.run: f"{row.updates} updates ({row.updates_per_phase})"
              for row in sgd.itertuples()} if "updates_per_phase" in table else {}
    return dict(schedules=schedules_figure(plan, title), loss=loss_figure(frame, title, phases),
                accuracy=accuracy_figure(frame, title), updates=capped_figure(frame, title))


def schedules_figure(plan, title):
    """Fig 1: the learning rate and the batch size of the three schedules."""
    fig, axes = subplots(1, 2)
    a, b = axes[0]
    for name, run in plan[plan.figure == "sgd"].groupby("run", sort=False):
        a.step(run.epoch, run.lr, where="post", label=name)
        b.step(run.epoch, run.batch_size, where="post", label=name)
    panel(a, xlabel="epoch", ylabel="learning rate", yscale="log", title="learning rate (Fig 1a)")
    panel(b, xlabel="epoch", ylabel="batch size", yscale="log", title="batch size (Fig 1b)")
    return finish(fig, title)


def loss_figure(frame, title, phases=None):
    """Fig 2: training cross-entropy against epochs and against updates (each
    schedule's updates per phase in the legend)."""
    fig, axes = subplots(1, 2)
    a, b = axes[0]
    for name, run in frame[frame.figure == "sgd"].groupby("run", sort=False):
        line = plot_over_seeds(a, run, "epoch", "loss", STYLES[name], name)
        plot_over_seeds(b, run, "updates", "loss", STYLES[name],
                        f"{name}: {(phases or {}).get(name, '')}".rstrip(": "),
                        color=line.get_color())
    panel(a, xlabel="epoch", ylabel="training cross-entropy",
          title=f"vs epochs (Fig 2a){_seeds_note(frame)}")
    panel(b, xlabel="parameter updates", xscale="log", title="vs parameter updates (Fig 2b)")
    return finish(fig, title)


def accuracy_figure(frame, title):
    """Fig 3: test accuracy against epochs, momentum and (paper preset) Nesterov."""
    optimizers = [o for o in ("sgd", "nesterov") if o in set(frame.figure)]
    fig, axes = subplots(1, len(optimizers))
    for ax, optimizer in zip(axes[0], optimizers):
        for name, run in frame[frame.figure == optimizer].groupby("run", sort=False):
            plot_over_seeds(ax, run, "epoch", "test_accuracy", STYLES[name], name)
        panel(ax, xlabel="epoch", ylabel="test accuracy",
              title=f"{'momentum 0.9' if optimizer == 'sgd' else 'Nesterov momentum 0.9'} (Fig 3)")
    return finish(fig, title)


def capped_figure(frame, title):
    """Fig 5: test accuracy against parameter updates, the batch capped at B_max."""
    fig, axes = subplots(width=7, height=4.5)
    ax = axes[0, 0]
    for name, run in frame[frame.figure == "fig5"].groupby("run", sort=False):
        ax.plot(run.updates, run.test_accuracy, STYLES[name], ms=3,
                label=f"{name}: {run.updates.iloc[-1]} updates")
    panel(ax, xlabel="parameter updates", xscale="log", ylabel="test accuracy",
          title=f"batch capped at B_max (Fig 5)\n{title}")
    return finish(fig)


def _seeds_note(frame):
    return "\nmean over seeds, shaded: their range" if frame.seed.nunique() > 1 else ""


def options(parser):
    parser.add_argument("--max-device-batch", type=int,
                        default=int_from_env("MAX_DEVICE_BATCH", None, 1),
                        help="largest batch one forward pass may take; larger ones are "
                             "accumulated (default: $MAX_DEVICE_BATCH, else the preset's)")


def check(args):
    if args.max_device_batch is not None and args.max_device_batch < 1:
        raise ConfigError(f"--max-device-batch {args.max_device_batch}: expected an integer >= 1")


# -- the claims (reproduce.claims) --------------------------------------------------
# Margins, declared before the runs they judge. Sameness is judged at most at a
# quarter of the effect under test: what the schedule's steps do to the test
# accuracy, measured as the decaying rate's final accuracy minus its accuracy
# at the first step (30% of training), so a margin never exceeds a quarter of
# what decaying achieves; and never above 1 point (their Fig 5 table: 94.3 /
# 94.4 / 94.5%).
LOSS_MARGIN = 0.10  # of the schedules' mean loss at that epoch
ACCURACY_MARGIN = 0.01
EFFECT_SHARE = 0.25


def three_schedules_agree_per_epoch(tables, n_test):
    """Every pair of the three schedules, at every epoch after the first: the
    90% interval of their mean losses' difference (paired by seed) inside
    +-10% of the mean. It FAILS only where a pair's Bonferroni-adjusted
    interval (one of all the pairs x epochs) lies outside."""
    runs = tables[""][tables[""].figure == "sgd"]
    if runs.run.nunique() < 3:
        return inconclusive(f"has the schedules {sorted(runs.run.unique())}", "train all three")
    at_epochs = list(runs[runs.epoch > 1].groupby("epoch"))
    count = len(at_epochs) * 3
    parts = []
    for epoch, at in at_epochs:
        sides = {name: Side.of_seeds(dict(zip(group.seed, group.loss.where(
            group.status != "diverged") if "status" in group else group.loss)))
            for name, group in at.groupby("run", sort=False)}
        margin = LOSS_MARGIN * float(np.mean([side.mean for side in sides.values()]))
        for (name_a, a), (name_b, b) in itertools.combinations(sides.items(), 2):
            diff = difference(a, b)
            verdict = inconclusive("", "needs 2 or more seeds of each schedule") if diff is None \
                else same_within(diff, margin, scale=1, unit="", parts=count)
            if a.diverged or b.diverged:
                verdict = Verdict(FAILS, f"{a.diverged + b.diverged} seeds diverged")
            low, high = diff.interval(0.90) if diff else (np.nan, np.nan)
            parts.append((epoch, name_a, name_b, verdict, max(abs(low), abs(high)) / margin))
    outcomes = [v.outcome for *_, v, _ in parts]
    outcome = FAILS if FAILS in outcomes else HOLDS if set(outcomes) == {HOLDS} else INCONCLUSIVE
    epoch, name_a, name_b, worst, reach = max(parts, key=lambda p: np.nan_to_num(p[-1], nan=np.inf))
    text = (f"{outcomes.count(HOLDS)} of {len(parts)} pairs of schedules x epochs 2-"
            f"{runs.epoch.max()} hold, {outcomes.count(FAILS)} fail (at the Bonferroni level "
            f"{bonferroni(0.90, count):.2%} for {count} parts); the widest, epoch {epoch}, "
            f"{name_a} - {name_b}: {worst.numbers or 'no spread'} (its interval reaches "
            f"{reach:.2f} of the margin)")
    return Verdict(outcome, text, worst.power)


def fewer_updates_when_the_batch_grows(tables, n_test, factor=2):
    """The schedule's own arithmetic: no noise to judge."""
    table = tables["table"].set_index(["figure", "run"])
    decaying = table.loc[("sgd", "decaying learning rate")]
    increasing = table.loc[("sgd", "increasing batch size")]
    ratio = decaying.updates / increasing.updates
    return Verdict(HOLDS if ratio >= factor else FAILS,
                   f"{int(decaying.updates)} updates (decaying lr) / {int(increasing.updates)} "
                   f"(increasing batch) = {ratio:.2f}x (the schedules' arithmetic, no noise)")


def accuracy_margin(decaying):
    """The sameness margin of the final accuracy: a quarter of what decaying
    the rate adds after its first step, at most 1 point. Returns (margin, text)."""
    before = decaying.get("test_accuracy_before_first_step")
    if before is None or pd.isna(before):
        return ACCURACY_MARGIN, "1 point (this CSV has no accuracy at the first step)"
    effect = float(decaying.final_test_accuracy) - float(before)
    margin = min(ACCURACY_MARGIN, max(EFFECT_SHARE * effect, 0.0))
    return margin, (f"{100 * margin:.2f} points: min(1 point, a quarter of the "
                    f"{100 * effect:+.2f} points decaying adds after its first step)")


def same_final_accuracy(tables, n_test):
    table = tables["table"].set_index(["figure", "run"])
    decaying = table.loc[("sgd", "decaying learning rate")]
    margin, why = accuracy_margin(decaying)
    a, b, diff = compare_rows(table.loc[("sgd", "increasing batch size")], decaying,
                              "final_test_accuracy", n_test=n_test(),
                              paired="final_test_accuracy_paired_var_vs_decaying")
    if margin <= 0:
        return inconclusive(f"decaying the rate added nothing after its first step ({why}): "
                            "no effect to be the same as", "a scale where the steps matter")
    verdict = verdict_or_too_few(a, b, diff, ("increasing batch", "decaying lr"),
                                 lambda d: same_within(d, margin=margin))
    return dataclasses.replace(verdict, numbers=f"{verdict.numbers}; margin {why}")


CLAIMS = (
    Claim("Smith et al. 2018", "decaying the rate, the hybrid and increasing the batch give the "
          "same training loss per epoch", ("",), three_schedules_agree_per_epoch,
          margin="sameness: every pair within +-10% of the mean loss at every epoch after the "
                 "first (their Fig 2a: the curves coincide)"),
    Claim("Smith et al. 2018", "increasing the batch takes at least 2x fewer updates", ("table",),
          fewer_updates_when_the_batch_grows, by_construction=True,
          margin="a bound: >= 2x (their Fig 5 table: ~80,000 vs ~29,000 updates)"),
    Claim("Smith et al. 2018", "decaying the rate and increasing the batch reach the same test "
          "accuracy", ("table",), same_final_accuracy,
          margin="sameness, paired by seed: within +-min(1 point, a quarter of what decaying "
                 "the rate adds after its first step) (their Fig 5 table: 94.3 / 94.4 / "
                 "94.5%)"),
)


FIGURE = Figure(
    claims=CLAIMS,
    name="dont_decay", description=__doc__.splitlines()[0], presets=PRESETS, grid=grid,
    tables=tables, plots=plot, title=title, options=options, check=check, printed=("table",),
    describe=lambda c: f"{c.optimizer} {schedule_name(c)}: lr {c.lr:g} m {c.momentum:g} "
                       f"B0 {c.batch_size}",
    report=(("Smith et al.: updates and final test accuracy per schedule", "table"),))


main = FIGURE.main


if __name__ == "__main__":
    main()
