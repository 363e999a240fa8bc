"""The claim checker (reproduce/claims.py): its statistics against scipy and
hand arithmetic, each figure's claims on small hand-made tables (where they
hold, fail and cannot tell), the grids' open edges that trigger follow-up
runs, and the command's output and exit status."""

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from reproduce import claims, figure
from reproduce.papers import (critical_batch, dont_decay, generalization_gap, lr_scaling,
                              mnist_batch_size, sharp_minima, small_batch)
from reproduce.tools import check_claims
from reproduce.claims import FAILS, HOLDS, INCONCLUSIVE, Claim, Side, difference


def n_test(n):
    return lambda network=None: n


def no_test_error(network=None):
    return None


# --- the statistics ---------------------------------------------------------------

def test_the_difference_interval_is_welchs_t_interval():
    a, b = [0.91, 0.93, 0.92, 0.95], [0.88, 0.90, 0.86]
    diff = difference(Side.of_values(a), Side.of_values(b))
    reference = scipy.stats.ttest_ind(a, b, equal_var=False)
    assert diff.dof() == pytest.approx(reference.df)
    low, high = reference.confidence_interval(0.95)
    assert diff.interval(0.95) == pytest.approx((low, high))
    # By hand: Welch-Satterthwaite from the two variances of the means.
    va, vb = np.var(a, ddof=1) / 4, np.var(b, ddof=1) / 3
    assert diff.dof() == pytest.approx((va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 2))


def test_the_test_sets_sampling_error_adds_to_the_seeds():
    a = Side.of_values([0.90, 0.92], n_test=1000)
    b = Side.of_values([0.80, 0.84], n_test=1000)
    diff = difference(a, b)
    seeds = 0.0002 / 2 + 0.0008 / 2  # sample variances (ddof 1) over 2 seeds each
    test = 0.91 * 0.09 / 1000 + 0.82 * 0.18 / 1000
    assert diff.se() == pytest.approx(math.sqrt(seeds + test))
    paired = difference(a, b, paired_test_variance=1e-6)
    assert paired.paired and paired.se() == pytest.approx(math.sqrt(seeds + 1e-6))


def test_one_seed_or_no_spread_is_never_a_verdict():
    one = Side.of_values([0.97])
    assert one.std is None and difference(one, Side.of_values([0.9, 0.91])) is None
    row = pd.Series({"test_accuracy": 0.95, "seeds": 3})  # seeds but no spread column
    a, b, diff = claims.compare_rows(row, row)
    assert diff is None
    verdict = claims.verdict_or_too_few(a, b, diff, ("a", "b"), claims.differs)
    assert verdict.outcome == INCONCLUSIVE and "no spread column" in verdict.power


def sides(mean_a, mean_b, spread, seeds=3):
    offsets = np.linspace(-1, 1, seeds) * spread
    return difference(Side.of_values(mean_a + offsets), Side.of_values(mean_b + offsets))


def test_sameness_needs_the_whole_90_interval_inside_the_margin():
    assert claims.same_within(sides(0.950, 0.951, 0.001), 0.01).outcome == HOLDS
    assert claims.same_within(sides(0.950, 0.990, 0.001), 0.01).outcome == FAILS
    # The same means with noisier seeds: never HOLDS, whatever the noise.
    for spread in (0.01, 0.05, 0.2):
        verdict = claims.same_within(sides(0.950, 0.951, spread), 0.01)
        assert verdict.outcome == INCONCLUSIVE and "seeds per cell" in verdict.power


def seeds_in(power):
    """The seeds per cell to train that a power line names."""
    return int(power.split()[0])


@pytest.mark.parametrize("judge,mean_b,spread", [
    (lambda d: claims.same_within(d, 0.01), 0.952, 0.01),     # sameness, to HOLD
    (lambda d: claims.same_within(d, 0.01), 0.965, 0.01),     # sameness, to FAIL
    (lambda d: claims.differs(d, direction=-1), 0.96, 0.02),  # a difference
    (lambda d: claims.not_worse(d, 0.01), 0.951, 0.01),       # non-inferiority
])
def test_the_seeds_to_train_reach_a_verdict_in_most_simulated_tables(judge, mean_b, spread):
    """The printed seeds per cell, drawn 400 times at the measured means and
    spread (Welch design, each side its own seeds): a verdict (HOLDS or FAILS)
    in at least 75% of them (the line aims at 80% power)."""
    a = np.array([0.95 - spread, 0.95, 0.95 + spread])
    diff = difference(Side.of_values(a), Side.of_values(a - 0.95 + mean_b))
    verdict = judge(diff)
    assert verdict.outcome == INCONCLUSIVE and "to train" in verdict.power
    n = seeds_in(verdict.power)
    rng = np.random.default_rng(0)
    decided = 0
    for _ in range(400):
        draw = [Side.of_values(rng.normal(mean, spread, n)) for mean in (0.95, mean_b)]
        decided += judge(difference(*draw)).outcome != INCONCLUSIVE
    assert decided >= 0.75 * 400
    # One seed fewer would fall short of the line's own criterion.
    assert n == 2 or "to train" in judge(difference(Side.of_values(a), Side.of_values(
        a - 0.95 + mean_b))).power


def test_seeds_to_train_count_the_seed_that_chose_the_cell():
    a, b = Side.of_values([0.95, 0.96, 0.94]), Side.of_values([0.95, 0.962, 0.945])
    plain = claims.same_within(difference(a, b), 0.01)
    chosen = claims.same_within(difference(a, b, extra_seeds=1), 0.01)
    assert seeds_in(chosen.power) == seeds_in(plain.power) + 1
    assert "judged + 1 that chose the cell" in chosen.power


def test_paired_by_seed_is_the_interval_of_the_per_seed_differences():
    """Arms that share seeds: the per-seed differences' t interval (S - 1
    dof), by hand; narrower than Welch's on the same numbers, since the
    seeds' common part cancels."""
    a = {0: 0.4412, 1: 0.4550, 2: 0.4300}
    b = {0: 0.4547, 1: 0.4620, 2: 0.4435}
    diff = difference(Side.of_seeds(a), Side.of_seeds(b))
    d = np.array([a[s] - b[s] for s in a])
    half = scipy.stats.t.ppf(0.95, 2) * d.std(ddof=1) / math.sqrt(3)
    assert diff.design == "paired" and diff.dof() == pytest.approx(2)
    assert diff.interval(0.90) == pytest.approx((d.mean() - half, d.mean() + half))
    welch = difference(Side.of_values(a.values()), Side.of_values(b.values()))
    assert welch.design == "Welch"
    assert np.diff(diff.interval(0.90))[0] < np.diff(welch.interval(0.90))[0] / 3
    # The test set's term adds with finite degrees of freedom.
    with_test = difference(Side.of_seeds(a), Side.of_seeds(b), paired_test_variance=1e-5,
                           test_dof=1999)
    v = d.var(ddof=1) / 3
    assert with_test.se() == pytest.approx(math.sqrt(v + 1e-5))
    assert with_test.dof() == pytest.approx((v + 1e-5) ** 2 / (v ** 2 / 2 + 1e-10 / 1999))


def test_a_table_row_with_seeds_is_compared_paired():
    row_a = pd.Series({"acc": 0.44, "acc_std": 0.01, "seeds": 3,
                       "acc_by_seed": "0:0.4412 1:0.455 2:0.43"})
    row_b = pd.Series({"acc": 0.45, "acc_std": 0.01, "seeds": 3,
                       "acc_by_seed": "0:0.4547 1:0.462 2:0.4435"})
    _, _, diff = claims.compare_rows(row_a, row_b, "acc", n_test=2000)
    assert diff.design == "paired" and len(diff.differences) == 3
    assert "paired by seed, 3 shared seeds" in diff.describe(0.9)


def test_a_diverged_seed_counts_at_chance():
    row = pd.Series({"acc": 0.9, "acc_by_seed": "0:0.95 1:diverged 2:0.96"})
    side = Side.of(row, "acc", n_test=1000)
    assert side.diverged == 1 and dict(side.values)[1] == claims.CHANCE
    assert side.mean == pytest.approx((0.95 + 0.1 + 0.96) / 3)
    assert "1 diverged counted at chance" in claims.value_text(side)


def test_fails_over_many_parts_at_the_bonferroni_level():
    """A part just outside the margin at 90% fails one claim of one part, but
    not one of 27 (its 99.6% interval still reaches inside)."""
    diff = sides(0.95, 0.9725, 0.004)
    assert claims.same_within(diff, 0.01).outcome == FAILS
    assert claims.same_within(diff, 0.01, parts=27).outcome == INCONCLUSIVE


def test_the_de_biased_test_set_term_is_unbiased():
    """Simulated: per-example success probabilities p_j (a test set drawn
    from a population), S seeds of each arm scored on them. The de-biased
    term's mean over many draws matches the variance of the arms' difference
    that comes from drawing the test set alone; the raw term overstates it."""
    rng = np.random.default_rng(0)
    population, n, seeds = 50_000, 2000, 3
    pa = rng.beta(4, 2, population)
    pb = np.clip(pa - 0.05 + rng.normal(0, 0.1, population), 0, 1)
    truth = np.var(pa - pb) / n  # the test set's own sampling variance of the difference
    debiased, raw = [], []
    for _ in range(300):
        j = rng.choice(population, n, replace=False)
        a = {s: (rng.random(n) < pa[j]).astype(float) for s in range(seeds)}
        b = {s: (rng.random(n) < pb[j]).astype(float) for s in range(seeds)}
        debiased.append(figure.test_set_variance(a, b))
        mean = np.mean([a[s] - b[s] for s in range(seeds)], axis=0)
        raw.append(np.var(mean, ddof=1) / n)
    # Within 3 standard errors of the simulation's own mean.
    assert abs(np.mean(debiased) - truth) <= 3 * np.std(debiased) / math.sqrt(len(debiased))
    assert np.mean(raw) > 5 * truth


def test_claims_that_hold_by_construction_are_not_tallied():
    built = Claim("p", "arithmetic", ("",), None, by_construction=True)
    measured = Claim("p", "measured", ("",), None)
    verdict = claims.Verdict(HOLDS, "")
    text = check_claims.tally([(built, "quick", verdict, True), (measured, "quick", verdict, True)])
    assert text.startswith("1 claims: 1 hold") and "1 by construction, not counted" in text


def test_no_number_of_seeds_beats_the_test_sets_own_error():
    a = Side.of_values([0.90, 0.9001, 0.9002], n_test=100)  # +-5 points from 100 images
    diff = difference(a, a)
    verdict = claims.same_within(diff, 0.01)
    assert verdict.outcome == INCONCLUSIVE and "no number of seeds" in verdict.power


def test_difference_and_non_inferiority():
    lower = sides(0.90, 0.95, 0.005)
    assert claims.differs(lower, direction=-1).outcome == HOLDS
    assert claims.differs(lower, direction=+1).outcome == FAILS
    assert claims.differs(sides(0.90, 0.901, 0.05)).outcome == INCONCLUSIVE
    assert claims.not_worse(sides(0.945, 0.95, 0.001), 0.01).outcome == HOLDS  # 0.5 below
    assert claims.not_worse(sides(0.93, 0.95, 0.001), 0.01).outcome == FAILS   # 2 below
    assert claims.not_worse(sides(0.945, 0.95, 0.02), 0.01).outcome == INCONCLUSIVE


def test_combine_fails_on_any_failure_and_holds_only_when_all_hold():
    h, f, i = (claims.Verdict(o, o.lower()) for o in (HOLDS, FAILS, INCONCLUSIVE))
    assert claims.combine([("a", h), ("b", h)]).outcome == HOLDS
    assert claims.combine([("a", h), ("b", i)]).outcome == INCONCLUSIVE
    assert claims.combine([("a", i), ("b", f)]).outcome == FAILS
    assert claims.combine([("a", h), ("b", f)]).numbers == "a: holds; b: fails"


def test_interval_against_bounds():
    assert claims.interval_within(1, 2, 0, 3) == HOLDS
    assert claims.interval_within(4, 5, 0, 3) == FAILS
    assert claims.interval_within(2, 5, 0, 3) == INCONCLUSIVE
    assert claims.interval_above(1, 2, 0) == HOLDS and claims.interval_above(-2, -1, 0) == FAILS


def test_the_slope_interval_with_two_seeds_is_the_hand_computed_t_interval():
    """Two judged seeds per batch: the delta-method t interval by hand (the
    seeds' variance of log S pooled over the batches, sum(n - 1) dof, plus
    the evaluation grid's width^2 / 12), not a bootstrap of two values."""
    from reproduce import scaling_model

    steps = {256: np.array([1000.0, 1200.0]), 2048: np.array([400.0, 300.0]),
             4096: np.array([380.0, 390.0])}
    batches, per_decade = [2048, 4096], 15
    slope, (low, high) = scaling_model.slope_interval(steps, batches, per_decade, 0.95)
    logs = {b: np.log(v) for b, v in steps.items()}
    pooled = sum(((v - v.mean()) ** 2).sum() for v in logs.values()) / 3  # 3 x (2 - 1) dof
    grid = (math.log(10) / 15) ** 2 / 12
    x = np.log(batches)
    w = (x - x.mean()) / ((x - x.mean()) ** 2).sum()
    means = np.log([steps[b].mean() for b in batches])
    variance = sum(wi ** 2 * (pooled + grid) / 2 for wi in w)
    half = scipy.stats.t.ppf(0.975, 3) * math.sqrt(variance)
    assert slope == pytest.approx(w @ means)
    assert (low, high) == pytest.approx((w @ means - half, w @ means + half))


# --- Masters & Luschi -------------------------------------------------------------

def small_batch_summary(best, judged_std=0.005, judged_seeds=2, edge_open=(), runs=None):
    """small_batch_summary.csv: per m the best cell's first-seed and judged accuracy."""
    ms = list(best)
    return {"summary": pd.DataFrame(dict(
        m=ms, best_first_seed_test_accuracy=[best[m] + 0.002 for m in ms],
        judged_test_accuracy=[best[m] for m in ms],
        judged_test_accuracy_std=[judged_std] * len(ms), judged_seeds=[judged_seeds] * len(ms),
        judged_paired_var_vs_other_best=[np.nan] * len(ms),
        edge_open=[m in edge_open for m in ms],
        converged_runs=runs or [5, 5, 4, 0]))}


def test_masters_best_batch_is_small():
    holds = small_batch.best_batch_is_small(
        small_batch_summary({4: 0.40, 16: 0.42, 64: 0.33, 256: 0.16}), n_test(10_000))
    assert holds.outcome == HOLDS and "m = 16" in holds.numbers and "m = 64" in holds.numbers
    fails = small_batch.best_batch_is_small(
        small_batch_summary({4: 0.30, 16: 0.31, 64: 0.40, 256: 0.2}), n_test(10_000))
    assert fails.outcome == FAILS
    # The same numbers with a best on an open edge of its grid: extend it first.
    edge = small_batch.best_batch_is_small(
        small_batch_summary({4: 0.40, 16: 0.42, 64: 0.33, 256: 0.16}, edge_open=(16,)),
        n_test(10_000))
    assert edge.outcome == INCONCLUSIVE and "open edge" in edge.power and "m = 16" in edge.power
    # One judged seed: no spread, no verdict.
    one = small_batch.best_batch_is_small(
        small_batch_summary({4: 0.40, 16: 0.42, 64: 0.33, 256: 0.16}, judged_seeds=1),
        n_test(10_000))
    assert one.outcome == INCONCLUSIVE


def test_masters_converging_range_does_not_grow():
    tables = small_batch_summary({4: 0.4, 16: 0.4, 64: 0.3, 256: 0.2})
    assert small_batch.converging_range_does_not_grow(tables, n_test(1)).outcome == HOLDS
    tables = small_batch_summary({4: 0.4, 16: 0.4, 64: 0.3, 256: 0.2}, runs=[3, 5, 4, 0])
    assert small_batch.converging_range_does_not_grow(tables, n_test(1)).outcome == FAILS


def small_batch_grid(accuracies, exponents=(-8, -6, -4)):
    """small_batch.csv, first seed: {m: accuracy per exponent}."""
    return pd.DataFrame([dict(m=m, log2_eta_tilde=e, seed=0, test_accuracy=acc, status="finished")
                         for m, row in accuracies.items() for e, acc in zip(exponents, row)])


def test_masters_edges_are_extended_outward_up_to_three_steps():
    spec = dict(eta_exponents=(-8, -6, -4))
    frame = small_batch_grid({4: [0.3, 0.4, 0.35], 64: [0.1, 0.2, 0.3], 256: [0.3, 0.2, 0.1]})
    assert small_batch.open_edges(frame, spec) == {64: -2, 256: -10}
    # m = 64 best at -4 + 3 steps of 2 (the grid's step): the next one is past the limit.
    extended = pd.concat([frame, small_batch_grid({64: [0.31, 0.32, 0.4]}, (-2, 0, 2))])
    assert small_batch.edges(extended, spec)[64] is None
    assert 64 not in small_batch.open_edges(extended, spec)


# --- Smith et al. -------------------------------------------------------------------

def dont_decay_runs(increasing_losses, jitter=0.01, shared=True):
    """dont_decay.csv: the three schedules at 3 seeds (-jitter, 0, +jitter:
    a seed's offset alike in every schedule where `shared`, else each
    schedule's own)."""
    rows = []
    for k, (run, losses) in enumerate((("decaying learning rate", [2.0, 1.6, 1.5]),
                                       ("hybrid", [2.0, 1.61, 1.51]),
                                       ("increasing batch size", increasing_losses))):
        order = [0, 1, 2] if shared else np.roll([0, 1, 2], k)
        rows += [dict(figure="sgd", run=run, seed=s, epoch=e + 1,
                      loss=v + jitter * (order[s] - 1))
                 for s in range(3) for e, v in enumerate(losses)]
    return {"": pd.DataFrame(rows)}


def test_smith_schedules_agree_within_ten_percent_per_epoch():
    holds = dont_decay.three_schedules_agree_per_epoch(dont_decay_runs([2.0, 1.62, 1.52]),
                                                       n_test(1))
    assert holds.outcome == HOLDS and "6 of 6 pairs" in holds.numbers
    # Epoch 3 apart by 0.3 (20% of 1.5): that pair's interval lies outside the margin.
    fails = dont_decay.three_schedules_agree_per_epoch(dont_decay_runs([2.0, 1.62, 1.8]),
                                                       n_test(1))
    assert fails.outcome == FAILS and "epoch 3" in fails.numbers
    # The same means, each schedule's seeds far noisier: INCONCLUSIVE, not HOLDS.
    noisy = dont_decay.three_schedules_agree_per_epoch(
        dont_decay_runs([2.0, 1.62, 1.52], jitter=0.3, shared=False), n_test(1))
    assert noisy.outcome == INCONCLUSIVE
    # Noise a seed shares across the schedules (its initial weights, its data
    # order) cancels in the per-seed differences: paired, that HOLDS.
    shared = dont_decay.three_schedules_agree_per_epoch(
        dont_decay_runs([2.0, 1.62, 1.52], jitter=0.3), n_test(1))
    assert shared.outcome == HOLDS and "paired by seed" in shared.numbers


def dont_decay_table(updates=(8000, 2900), accuracy=(0.943, 0.945), std=0.002):
    return {"table": pd.DataFrame(dict(
        figure="sgd", run=["decaying learning rate", "increasing batch size"],
        updates=list(updates), final_test_accuracy=list(accuracy),
        final_test_accuracy_std=[std, std], seeds=[3, 3],
        final_test_accuracy_paired_var_vs_decaying=[np.nan, 1e-6]))}


def test_smith_fewer_updates_and_the_same_final_accuracy():
    assert dont_decay.fewer_updates_when_the_batch_grows(dont_decay_table(), n_test(1)).holds
    assert dont_decay.fewer_updates_when_the_batch_grows(
        dont_decay_table(updates=(8000, 4100)), n_test(1)).outcome == FAILS
    assert dont_decay.same_final_accuracy(dont_decay_table(), n_test(10_000)).holds
    assert dont_decay.same_final_accuracy(dont_decay_table(accuracy=(0.94, 0.90)),
                                          n_test(10_000)).outcome == FAILS


# --- Hoffer et al., Keskar et al. -----------------------------------------------------

def hoffer_table(network_accuracies, std=0.001, seeds=3, paired=1e-7):
    rows = [dict(network=network, column=column, test_accuracy=100 * acc,
                 test_accuracy_std=100 * std, seeds=seeds,
                 test_accuracy_paired_var_vs_SB=paired * 100 ** 2)
            for network, columns in network_accuracies.items() for column, acc in columns.items()]
    return {"table": pd.DataFrame(rows)}


def test_hoffer_large_batch_worse_and_regime_adaptation_per_network():
    tables = hoffer_table({"F1": {"SB": 0.982, "LB": 0.970, "+RA": 0.982}})
    assert generalization_gap.large_batch_generalizes_worse(tables, n_test(10_000)).holds
    assert generalization_gap.regime_adaptation_reaches_the_small_batch(
        tables, n_test(10_000)).holds
    # A second network where +RA falls 3 points short: the claim fails as a whole.
    tables = hoffer_table({"F1": {"SB": 0.982, "LB": 0.970, "+RA": 0.980},
                           "C1": {"SB": 0.90, "LB": 0.85, "+RA": 0.87}})
    verdict = generalization_gap.regime_adaptation_reaches_the_small_batch(tables, n_test(10_000))
    assert verdict.outcome == FAILS and "C1" in verdict.numbers
    # +RA at one seed: too few, not a pass.
    one = hoffer_table({"F1": {"SB": 0.982, "LB": 0.970, "+RA": 0.985}}, seeds=1)
    assert generalization_gap.regime_adaptation_reaches_the_small_batch(
        one, n_test(10_000)).outcome == INCONCLUSIVE


def test_regime_adaptation_closing_a_third_of_the_gap_does_not_hold():
    """The paper CSVs' F1 numbers with +RA given +LR's (98.15 +- 0.08, 3
    seeds: a third of the 0.87-point gap closed): not a HOLD under the margin
    of a quarter of the gap, though it was one under the old 1-point margin."""
    rows = [dict(network="F1 / MNIST", column=c, test_accuracy=a, test_accuracy_std=sd, seeds=3,
                 test_accuracy_paired_var_vs_SB=0.0004)
            for c, a, sd in (("SB", 98.73, 0.03), ("LB", 97.86, 0.09), ("+RA", 98.15, 0.08))]
    verdict = generalization_gap.regime_adaptation_reaches_the_small_batch(
        {"table": pd.DataFrame(rows)}, n_test(10_000))
    assert verdict.outcome != HOLDS
    ra, sb = (Side.of(rows[i], "test_accuracy", 10_000, 100) for i in (2, 0))
    assert claims.not_worse(difference(ra, sb, 4e-8), 0.01).outcome == HOLDS  # the old margin


def keskar_table(lb_sharpness, sb_sharpness, lb_acc=0.975, sb_acc=0.980):
    rows = [dict(network="F1", regime=regime, test_accuracy=100 * acc, test_accuracy_std=0.1,
                 seeds=3, test_accuracy_paired_var_vs_SB=np.nan,
                 sharpness_full=s, sharpness_full_std=0.1 * s + 0.01,
                 sharpness_subspace=s / 10, sharpness_subspace_std=0.01 * s + 0.001)
            for regime, s, acc in (("LB", lb_sharpness, lb_acc), ("SB", sb_sharpness, sb_acc))]
    return {"table": pd.DataFrame(rows)}


def test_keskar_sharper_and_lower_accuracy():
    assert sharp_minima.large_batch_minimum_is_sharper(keskar_table(200, 1.2), n_test(1)).holds
    flat = sharp_minima.large_batch_minimum_is_sharper(keskar_table(1.0, 1.2), n_test(1))
    assert flat.outcome != HOLDS
    assert sharp_minima.large_batch_reaches_a_lower_accuracy(keskar_table(200, 1.2),
                                                             n_test(10_000)).holds
    assert sharp_minima.large_batch_reaches_a_lower_accuracy(
        keskar_table(200, 1.2, lb_acc=0.99), n_test(10_000)).outcome == FAILS


# --- the seed article -------------------------------------------------------------------

def test_seed_article_every_batch_within_a_point_of_the_best():
    table = pd.DataFrame(dict(batch_size=[32, 256, 1024], status="finished",
                              test_accuracy=[0.9830, 0.9840, 0.9835], test_accuracy_std=0.0005,
                              seeds=3, test_accuracy_paired_var_vs_best=1e-7))
    tables = {"table": table}
    assert mnist_batch_size.every_batch_reaches_the_same_accuracy(tables, n_test(10_000)).holds
    table.loc[2, "test_accuracy"] = 0.95
    assert mnist_batch_size.every_batch_reaches_the_same_accuracy(
        tables, n_test(10_000)).outcome == FAILS


def test_a_batch_that_never_trained_fails_every_batch():
    """Batch 512's three seeds diverged: the claim FAILS, it does not drop the batch."""
    table = pd.DataFrame(dict(batch_size=[32, 256, 512], test_accuracy=[0.9830, 0.9840, 0.1],
                              test_accuracy_std=0.0005, seeds=3,
                              test_accuracy_paired_var_vs_best=1e-7,
                              status=["finished", "finished", "diverged"]))
    verdict = mnist_batch_size.every_batch_reaches_the_same_accuracy({"table": table},
                                                                      n_test(10_000))
    assert verdict.outcome == FAILS and "512" in verdict.numbers


def accumulation_runs(accumulated_offset):
    """mnist_batch_size.csv, group norm: native 64, native 256, 64 x 4 accumulated;
    the accumulated curve `accumulated_offset` of the way from native 256 to native 64."""
    rows = []
    for seed in range(3):
        small = np.array([1.0, 0.6, 0.4]) + 0.01 * seed
        large = np.array([1.2, 0.9, 0.7]) + 0.01 * seed
        curves = {"native 64": small, "native 256": large,
                  "64 x 4 accumulated": large + accumulated_offset * (small - large)
                  + 0.002 * (seed - 1)}
        rows += [dict(experiment="group norm", case=case, seed=seed, epoch=e + 1, loss=v)
                 for case, curve in curves.items() for e, v in enumerate(curve)]
    return {"": pd.DataFrame(rows)}


def test_seed_article_accumulation_follows_the_large_batch():
    assert mnist_batch_size.accumulation_follows_the_large_batch(accumulation_runs(0.1),
                                                                 n_test(1)).holds
    assert mnist_batch_size.accumulation_follows_the_large_batch(
        accumulation_runs(0.9), n_test(1)).outcome == FAILS


# --- the lr-scaling article ------------------------------------------------------------------

def lr_measures(fixed=(0.98, 0.96), tuned=(0.9805, 0.9800), distance=(10.0, 3.0), std=0.001,
                edge_open=False, judged_seeds=2):
    rows = []
    for rule, (small, large) in (("fixed", fixed), ("tuned", tuned)):
        for b, acc, dist in ((64, small, distance[0]), (1024, large, distance[1])):
            rows.append(dict(rule=rule, batch_size=b, lr=0.1, test_accuracy=acc,
                             test_accuracy_std=std, seeds=3, judged_test_accuracy=acc,
                             judged_test_accuracy_std=std, judged_seeds=judged_seeds,
                             edge_open=edge_open and b == 1024,
                             test_accuracy_paired_var_vs_64=np.nan,
                             judged_test_accuracy_paired_var_vs_64=1e-7,
                             distance=dist, distance_std=0.1))
    return {"measures": pd.DataFrame(rows)}


def test_lr_scaling_claims_hold_fail_and_wait_for_the_grids_edge():
    tables, n = lr_measures(), n_test(10_000)
    assert lr_scaling.accuracy_falls_with_the_batch(tables, n).holds
    assert lr_scaling.a_tuned_rate_brings_the_large_batch_back(tables, n).holds
    assert lr_scaling.larger_batches_travel_less(tables, n).holds
    assert lr_scaling.accuracy_falls_with_the_batch(lr_measures(fixed=(0.96, 0.98)),
                                                    n).outcome == FAILS
    assert lr_scaling.a_tuned_rate_brings_the_large_batch_back(
        lr_measures(tuned=(0.98, 0.95)), n).outcome == FAILS
    edge = lr_scaling.a_tuned_rate_brings_the_large_batch_back(lr_measures(edge_open=True), n)
    assert edge.outcome == INCONCLUSIVE and "open edge" in edge.power
    assert lr_scaling.a_tuned_rate_brings_the_large_batch_back(
        lr_measures(judged_seeds=1), n).outcome == INCONCLUSIVE


class StoredRuns:
    """A stand-in for a Sweep: `load(config)` from {config: record}."""

    def __init__(self, records):
        self.records = records

    def load(self, config):
        from reproduce.runs.store import RunRecord

        record = self.records.get(config)
        return None if record is None else RunRecord.of(record)


def finished(accuracy):
    return {"status": "finished", "rows": [{"test_accuracy": accuracy, "updates": 1}]}


def test_lr_scaling_follow_up_extends_the_edge_then_seeds_the_tuned_best():
    spec = dict(lr_scaling.PRESETS["smoke"], rates=(0.05, 0.1, 0.2), seeds=3)
    runs = lr_scaling.grid(spec)
    # Batch 64 best in the middle, batch 256 best at the top rate.
    accuracy = {(64, 0.05): 0.90, (64, 0.1): 0.95, (64, 0.2): 0.92,
                (256, 0.05): 0.80, (256, 0.1): 0.85, (256, 0.2): 0.90}
    records = {c: finished(accuracy.get((b, lr), 0.5)) for (kind, b, lr, i), c in runs.items()}
    more = lr_scaling.follow_up(StoredRuns(records), runs, spec)
    assert list(more) == [("rate", 256, 0.4, 0)]
    assert more[("rate", 256, 0.4, 0)].lr == 0.4
    # The outward rate is worse: the edge closes, and the tuned bests get seeds 1, 2.
    runs.update(more)
    records[more[("rate", 256, 0.4, 0)]] = finished(0.7)
    seeded = lr_scaling.follow_up(StoredRuns(records), runs, spec)
    assert {(b, lr, i) for _, b, lr, i in seeded} == {(64, 0.1, 1), (64, 0.1, 2),
                                                      (256, 0.2, 1), (256, 0.2, 2)}
    assert {c.seed for c in seeded.values()} == {spec["base"].seed + 1, spec["base"].seed + 2}


# --- Shallue et al., McCandlish et al. -----------------------------------------------------

BATCHES = (16, 32, 64, 128, 256, 512)


def critical_tables(b_noise=100.0, s_min=200.0, seeds=3, spread=0.03, edge=(), b_simple=120.0):
    """critical_batch.csv, _summary, _fit: S = S_min (1 + B_noise / B) per batch,
    seed 0 choosing the rate and seeds 1.. judged, each within +-spread."""
    rows, summary = [], []
    for b in BATCHES:
        s = s_min * (1 + b_noise / b)
        for i in range(seeds):
            rows.append(dict(workload="w", kind="sweep", batch_size=b, lr=0.1, seed_index=i,
                             status="reached",
                             updates_to_target=s * (1 + spread * (i - (seeds - 1) / 2))))
        summary.append(dict(workload="w", batch_size=b, best_lr=0.1, edge_open=b in edge,
                            evaluations_per_decade=40))
    # The noise run: B_simple within +-10% over its last evaluations, target at the end.
    trace = [dict(workload="w", kind="noise", updates=u, accuracy=0.5 + 0.01 * k,
                  noise_scale_simple=b_simple * (1 + 0.1 * (-1) ** k))
             for k, u in enumerate(range(10, 130, 10))]
    return {"": pd.DataFrame(rows), "summary": pd.DataFrame(summary),
            "fit": pd.DataFrame([dict(workload="w", target=0.6, b_simple_near_target=b_simple)]),
            "trace": pd.DataFrame(trace)}


def test_shallue_perfect_scaling_then_diminishing_returns():
    # B_noise far above the batches: S falls as 1/B throughout.
    perfect = critical_tables(b_noise=1e5)
    assert critical_batch.perfect_scaling_at_small_batches(perfect, n_test(1)).holds
    assert critical_batch.diminishing_returns_at_large_batches(perfect,
                                                               n_test(1)).outcome == FAILS
    # B_noise far below: S flat from the start.
    flat = critical_tables(b_noise=1.0)
    assert critical_batch.perfect_scaling_at_small_batches(flat, n_test(1)).outcome == FAILS
    assert critical_batch.diminishing_returns_at_large_batches(flat, n_test(1)).holds
    # One judged seed (seed 0 chose the rate): no verdict.
    few = critical_batch.perfect_scaling_at_small_batches(critical_tables(1e5, seeds=2),
                                                          n_test(1))
    assert few.outcome == INCONCLUSIVE and "judged" in few.power
    edge = critical_batch.perfect_scaling_at_small_batches(critical_tables(1e5, edge=(16,)),
                                                           n_test(1))
    assert edge.outcome == INCONCLUSIVE and "open edge" in edge.power


def test_mccandlish_critical_batch_and_noise_scale():
    tables = critical_tables(b_noise=100.0)
    assert critical_batch.critical_batch_is_identified(tables, n_test(1)).holds
    assert critical_batch.noise_scale_predicts_the_critical_batch(tables, n_test(1)).holds
    far = critical_tables(b_noise=100.0, b_simple=5000.0)
    assert critical_batch.noise_scale_predicts_the_critical_batch(far, n_test(1)).outcome == FAILS
    outside = critical_tables(b_noise=1e5)  # the curve never bends inside the batches
    assert critical_batch.critical_batch_is_identified(outside, n_test(1)).outcome != HOLDS


def test_critical_batch_open_edges():
    w = dict(learning_rates=(0.1, 0.2, 0.4))
    frame = pd.DataFrame([dict(workload="w", kind="sweep", batch_size=b, lr=lr, seed_index=0,
                               status="reached", updates_to_target=s)
                          for b, row in {16: (300, 200, 250), 64: (300, 200, 100)}.items()
                          for lr, s in zip(w["learning_rates"], row)])
    assert critical_batch.open_edges(frame, "w", w) == {64: 0.8}
    assert critical_batch.rates_of(w) == [0.0125, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2]


# --- the command ------------------------------------------------------------------------------

def test_command_prints_verdicts_and_fails_only_on_expected_claims(tmp_path, capsys):
    holds = Claim("A", "holds", ("summary",), small_batch.best_batch_is_small,
                  figure="small_batch")
    expected = Claim("A", "expected", ("summary",), small_batch.converging_range_does_not_grow,
                     figure="small_batch")
    allowed = Claim("B", "may fail", ("summary",), small_batch.converging_range_does_not_grow,
                    expected={"quick": "at quick scale (too few updates)"}, figure="small_batch")
    lucky = Claim("B", "lucky", ("summary",), small_batch.best_batch_is_small,
                  expected={"quick": "at quick scale"}, figure="small_batch")
    missing = Claim("C", "missing", ("measures",), lr_scaling.larger_batches_travel_less,
                    figure="lr_scaling")
    tables = small_batch_summary({4: 0.40, 16: 0.42, 64: 0.33, 256: 0.16}, runs=[3, 5, 4, 0])
    tables["summary"].to_csv(tmp_path / "small_batch_summary.csv", index=False)
    sizes = lambda figure, preset: n_test(10_000)  # noqa: E731
    outcomes = check_claims.check([holds, expected, allowed, lucky, missing], tmp_path,
                            ["smoke", "quick"], test_size=sizes)
    printed = capsys.readouterr().out
    assert "preset smoke" not in printed  # no smoke CSVs
    assert "HOLDS: m = 16" in printed and "FAILS: converging" in printed
    assert "unexpected HOLD" in printed and "not expected to hold at quick scale" in printed
    assert "not run: no lr_scaling_measures.csv (make fig-lr-scaling PRESET=quick)" in printed
    assert "5 claims: 2 hold, 2 fail, 0 inconclusive, 1 not run" in printed
    assert check_claims.unexpected_failures(outcomes) == [(expected, "quick")]


def test_a_table_missing_a_column_is_inconclusive_not_a_crash(tmp_path, capsys):
    pd.DataFrame(dict(m=[4, 64])).to_csv(tmp_path / "small_batch_summary.csv", index=False)
    claim = Claim("A", "holds", ("summary",), small_batch.best_batch_is_small,
                  figure="small_batch")
    [(_, _, verdict, _)] = check_claims.check([claim], tmp_path, ["quick"],
                                        test_size=lambda f, p: n_test(10))
    assert verdict.outcome == INCONCLUSIVE and verdict.power == "regenerate the figure"


def test_every_figures_claims_are_checked_in_the_registrys_order():
    found = check_claims.claims_of()
    assert {c.figure for c in found} >= {"small_batch", "dont_decay", "generalization_gap",
                                         "sharp_minima", "mnist_batch_size", "lr_scaling",
                                         "critical_batch"}
    assert all(c.margin for c in found)  # every claim states its margin and its source


def test_check_claims_on_the_committed_figures_exits_zero(capsys):
    # The committed CSVs: no claim expected to hold fails.
    assert check_claims.main([]) == 0
    printed = capsys.readouterr().out
    assert "== preset quick" in printed and "claims expected to hold failed" in printed
    evidence = [c for c in check_claims.claims_of() if not c.by_construction]
    assert f"{len(evidence)} claims:" in printed


def test_the_markdown_table_has_a_row_per_claim_and_preset(tmp_path):
    out = tmp_path / "claims.md"
    assert check_claims.main(["--preset", "quick", "--markdown", str(out)]) == 0
    rows = out.read_text().splitlines()[2:]
    assert len(rows) == len(check_claims.claims_of())
    assert all(any(f"**{mark}" in row for mark in (HOLDS, FAILS, INCONCLUSIVE, "not run"))
               for row in rows)


def test_no_csvs_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        check_claims.main(["--out", str(tmp_path)])
    assert exit.value.code == 2
    assert f"no figure CSVs in {tmp_path}" in capsys.readouterr().err


def test_the_readme_blocks_are_written_from_the_csvs(tmp_path):
    """figures/README's numbers come from the CSVs: a table block gets the
    named columns, a missing column is a one-line error naming it."""
    from reproduce.runs import cli
    from reproduce.tools import report

    pd.DataFrame(dict(m=[4, 16], best=[0.41234, 0.3], other=["a", "b"])).to_csv(
        tmp_path / "t.csv", index=False)
    text = ("intro\n<!-- table: t.csv m best -->\nstale 0.99\n<!-- end table -->\nafter\n")
    filled = report.fill_readme(text, tmp_path)
    assert "stale" not in filled and "| m | best |" in filled and "| 4 | 0.4123 |" in filled
    assert filled.startswith("intro\n") and filled.endswith("<!-- end table -->\nafter\n")
    assert report.fill_readme(filled, tmp_path) == filled  # idempotent
    with pytest.raises(cli.UserError, match="t.csv has no column nope"):
        report.fill_readme(text.replace("m best", "m nope"), tmp_path)


def test_a_two_seed_tie_cannot_shrink_an_interval():
    """Cells of 2 seeds take the spread pooled over the table's cells of the
    metric (lr-scaling paper: tuned 1024 at 97.71 +- 0.00 from a tie)."""
    table = pd.DataFrame(dict(cell=["a", "b", "c"], acc=[0.9771, 0.9838, 0.95],
                              acc_std=[0.0, 0.004, 0.006], seeds=[2, 2, 4]))
    a, b, tied = claims.compare_rows(table.iloc[0], table.iloc[1], "acc")
    _, _, pooled = claims.compare_rows(table.iloc[0], table.iloc[1], "acc", table=table)
    variance = (1 * 0.0 + 1 * 0.004 ** 2 + 3 * 0.006 ** 2) / 5
    assert pooled.se() == pytest.approx(math.sqrt(variance / 2 + variance / 2))
    assert pooled.dof() == pytest.approx(5)  # the pooled estimate's own, counted once
    half = scipy.stats.t.ppf(0.95, 5) * math.sqrt(variance)
    assert pooled.interval(0.9) == pytest.approx((a.mean - b.mean - half, a.mean - b.mean + half))
    assert tied.se() == pytest.approx(0.004 / math.sqrt(2))  # the tie's own, without the table
