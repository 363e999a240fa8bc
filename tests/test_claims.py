"""The claim checker (reproduce/claims.py): its statistics against scipy and
hand arithmetic, and the command's output and exit status (each figure's
claims on hand-made tables: test_paper_claims.py)."""

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from conftest import n_test
from test_paper_claims import small_batch_summary  # a Masters & Luschi table for the command

from reproduce import claims, figure
from reproduce.papers import lr_scaling, small_batch
from reproduce.tools import check_claims
from reproduce.claims import FAILS, HOLDS, INCONCLUSIVE, Claim, Side, difference


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


def test_the_pooled_spread_counts_each_set_of_runs_once_and_no_diverged_seed():
    """The pooled seed variance is training noise: a cell with a diverged seed
    (at chance, 0.098) stays out of it, and rows that are the same runs (the
    base rate's cell under several rules) count once (lr-scaling paper: the
    diverged linear 1024 cell and batch 64 four times made the tuned claim's
    90% interval +-34 points)."""
    table = pd.DataFrame(dict(
        rule=["fixed", "linear", "linear", "tuned", "tuned"], acc=[0.978, 0.978, 0.683, 0.983, 0.975],
        acc_std=[0.001, 0.001, 0.505, 0.0018, 0.0006], seeds=[3, 3, 3, 2, 2],
        diverged=[0, 0, 1, 0, 0],
        acc_by_seed=["0:0.979 1:0.978 2:0.977", "0:0.979 1:0.978 2:0.977",
                     "0:0.974 1:diverged 2:0.976", "1:0.9816 2:0.9841", "1:0.9758 2:0.9749"]))
    variance, dof = claims.pooled_variance(table, "acc")
    assert dof == 2 + 1 + 1
    assert variance == pytest.approx((2 * 0.001 ** 2 + 0.0018 ** 2 + 0.0006 ** 2) / 4)
    # As before, the diverged cell and the duplicate counted: a variance over
    # 1,000x (an interval over 30x) wider.
    naive = ((table.seeds - 1) * table.acc_std ** 2).sum() / (table.seeds - 1).sum()
    assert naive > 1000 * variance


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
