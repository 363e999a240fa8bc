"""The claim checker (reproduce/claims.py) on small hand-made CSVs: each claim
where it holds and where it fails, the noise arithmetic, and the exit status."""

import math

import pandas as pd
import pytest

from reproduce import claims
from reproduce.claims import CLAIMS, Claim


def n_test(n):
    return lambda key=None: n


def verdict(check, frame, n=10_000):
    return check(pd.DataFrame(frame), n_test(n))


def test_standard_error_is_the_test_set_sampling_error_plus_the_seed_spread():
    row = pd.Series({"test_accuracy": 0.9})
    assert claims.standard_error(row, "test_accuracy", 1000) == pytest.approx(math.sqrt(0.09 / 1000))
    seeded = pd.Series({"test_accuracy": 0.9, "test_accuracy_std": 0.02, "seeds": 4})
    assert claims.standard_error(seeded, "test_accuracy", 1000) == pytest.approx(
        math.sqrt(0.09 / 1000 + 0.02 ** 2 / 4))
    # Two standard errors of the difference.
    assert claims.tolerance(row, seeded, "test_accuracy", 1000) == pytest.approx(
        2 * math.sqrt(0.09 / 1000 + 0.09 / 1000 + 0.0001))


def small_batch(best):
    """small_batch_summary.csv with the given best accuracy per m."""
    return {"m": list(best), "best_test_accuracy": list(best.values()),
            "converged_runs": [5, 5, 4, 0]}


def test_best_batch_is_small_holds_beats_and_ties_within_the_noise():
    holds = verdict(claims.best_batch_is_small, small_batch({4: 0.39, 16: 0.40, 64: 0.33, 256: 0.16}),
                    n=2000)
    assert holds.holds and "best m = 16" in holds.numbers
    fails = verdict(claims.best_batch_is_small, small_batch({4: 0.30, 16: 0.31, 64: 0.40, 256: 0.2}),
                    n=2000)
    assert not fails.holds
    # 0.2 points below m = 64 on 2,000 test images is within the noise (tolerance ~3 points).
    tie = verdict(claims.best_batch_is_small, small_batch({4: 0.30, 16: 0.398, 64: 0.40, 256: 0.2}),
                  n=2000)
    assert tie.holds


def test_converging_range_must_not_grow_with_m():
    frame = small_batch({4: 0.4, 16: 0.4, 64: 0.3, 256: 0.2})
    assert verdict(claims.converging_range_shrinks, frame).holds
    frame["converged_runs"] = [3, 5, 4, 0]
    assert not verdict(claims.converging_range_shrinks, frame).holds


def dont_decay_per_epoch(increasing_losses, jitter=0.02):
    """dont_decay.csv: the three schedules at 2 seeds, whose losses differ by
    +-`jitter` around each schedule's curve (seed sd = jitter * sqrt(2))."""
    rows = []
    for run, losses in (("decaying learning rate", [2.0, 1.6, 1.5]), ("hybrid", [2.0, 1.62, 1.52]),
                        ("increasing batch size", increasing_losses)):
        rows += [{"figure": "sgd", "run": run, "seed": seed, "epoch": e + 1,
                  "loss": v + (jitter if seed else -jitter)}
                 for seed in (0, 1) for e, v in enumerate(losses)]
    return rows


def test_smith_schedules_agree_within_the_seeds_noise_per_epoch():
    # Seed sd 0.0283 at every epoch, 2 seeds a schedule: two standard errors of a
    # difference of means = 2 * 0.0283 * sqrt(1/2 + 1/2) = 0.0566.
    holds = verdict(claims.three_schedules_agree_per_epoch, dont_decay_per_epoch([2.0, 1.65, 1.55]))
    assert holds.holds and "final losses 1.500 / 1.520 / 1.550" in holds.numbers
    assert "mean losses: 0.050 at epoch" in holds.numbers and "tolerance 0.057" in holds.numbers
    # A gap of 0.06 at epoch 3 is beyond it; with seeds 5x noisier it is not.
    late = verdict(claims.three_schedules_agree_per_epoch, dont_decay_per_epoch([2.0, 1.65, 1.56]))
    assert not late.holds and "0.060 at epoch 3" in late.numbers
    assert verdict(claims.three_schedules_agree_per_epoch,
                   dont_decay_per_epoch([2.0, 1.65, 1.56], jitter=0.1)).holds
    # A diverged schedule (NaN loss) does not agree.
    assert not verdict(claims.three_schedules_agree_per_epoch,
                       dont_decay_per_epoch([2.0, float("nan"), float("nan")])).holds
    # One seed of every schedule: no spread to set the tolerance, so no verdict of agreement.
    one = [r for r in dont_decay_per_epoch([2.0, 1.6, 1.5]) if r["seed"] == 0]
    alone = verdict(claims.three_schedules_agree_per_epoch, one)
    assert not alone.holds and "needs 2 or more seeds" in alone.numbers


def dont_decay_table(updates, accuracy):
    return {"figure": ["sgd", "sgd"], "run": ["decaying learning rate", "increasing batch size"],
            "updates": [1600, updates], "final_test_accuracy": [0.48, accuracy]}


def test_smith_updates_ratio_and_final_accuracy():
    assert verdict(claims.fewer_updates_when_batch_grows, dont_decay_table(800, 0.47)).holds
    assert not verdict(claims.fewer_updates_when_batch_grows, dont_decay_table(801, 0.47)).holds
    # 2,000 test images: two standard errors of the difference ~3.2 points.
    assert verdict(claims.same_final_accuracy, dont_decay_table(600, 0.46), n=2000).holds
    assert not verdict(claims.same_final_accuracy, dont_decay_table(600, 0.40), n=2000).holds


def hoffer_table(f1, resnet):
    """generalization_gap_table.csv (percent) for (SB, LB, +RA) per network."""
    rows = []
    for network, values in (("F1 / MNIST", f1), ("ResNet-8 / CIFAR-10", resnet)):
        rows += [{"network": network, "column": c, "test_accuracy": v}
                 for c, v in zip(("SB", "LB", "+RA"), values)]
    return rows


def test_hoffer_gap_and_regime_adaptation_per_network():
    table = hoffer_table((98.0, 96.0, 98.2), (36.0, 27.0, 50.0))
    assert verdict(claims.large_batch_generalizes_worse, table, n=5000).holds
    assert verdict(claims.regime_adaptation_closes_the_gap, table, n=5000).holds
    # F1's gap within the noise: the claim fails for F1, so for the figure.
    no_gap = verdict(claims.large_batch_generalizes_worse,
                     hoffer_table((95.7, 95.96, 97.3), (36.0, 27.0, 50.0)), n=5000)
    assert not no_gap.holds and "F1 / MNIST: SB 95.70% vs LB 95.96%" in no_gap.numbers
    assert not verdict(claims.regime_adaptation_closes_the_gap,
                       hoffer_table((98.0, 96.0, 96.5), (36.0, 27.0, 50.0)), n=5000).holds


def keskar_table(sharpness_lb, accuracy_lb):
    return {"network": ["F1 / MNIST"] * 2, "regime": ["SB", "LB"],
            "test_accuracy": [96.8, accuracy_lb], "sharpness_full": [150.0, sharpness_lb],
            "sharpness_subspace": [1.4, 18.0]}


def test_keskar_sharpness_ratio_and_accuracy():
    assert verdict(claims.large_batch_minimum_is_sharper, keskar_table(1700.0, 95.9)).holds
    assert not verdict(claims.large_batch_minimum_is_sharper, keskar_table(100.0, 95.9)).holds
    # With seeds: the difference must exceed two standard errors (here
    # 2 * sqrt(40^2 / 3 + 300^2 / 3) = 349).
    seeded = dict(keskar_table(450.0, 95.9), sharpness_full_std=[40.0, 300.0],
                  sharpness_subspace_std=[0.1, 1.0], seeds=[3, 3])
    near = verdict(claims.large_batch_minimum_is_sharper, seeded)
    assert not near.holds and "tolerance 349" in near.numbers
    seeded["sharpness_full"] = [150.0, 550.0]
    assert verdict(claims.large_batch_minimum_is_sharper, seeded).holds
    assert verdict(claims.sharp_minimum_generalizes_worse, keskar_table(1700.0, 95.9)).holds
    assert not verdict(claims.sharp_minimum_generalizes_worse, keskar_table(1700.0, 96.6)).holds


def accumulation_table(accumulated_near, seed_gap=None):
    """mnist_batch_size_accumulation.csv: gaps of the natives to 32 x 4
    accumulated, and (with seeds) the seed-to-seed gap of each case."""
    far, near = (0.2, 0.9), (0.01, 0.02)
    large, small = (near, far) if accumulated_near == "large" else (far, near)
    table = {"experiment": ["accumulation, group norm"] * 3,
             "case": ["32 x 4 accumulated", "native 128", "native 32"],
             "updates": [8, 8, 32],
             "mean_abs_test_accuracy_gap_to_accumulated": [0.0, large[0], small[0]],
             "mean_abs_loss_gap_to_accumulated": [0.0, large[1], small[1]]}
    if seed_gap is not None:
        table["seed_to_seed_test_accuracy_gap"] = [seed_gap] * 3
    return table


def test_accumulation_follows_the_native_batch_with_its_number_of_updates():
    holds = verdict(claims.accumulation_follows_the_large_batch, accumulation_table("large"))
    assert holds.holds and "to native 128 / to native 32" in holds.numbers
    assert "1 seed" in holds.numbers
    assert not verdict(claims.accumulation_follows_the_large_batch, accumulation_table("small")).holds
    # With seeds, native 32 must also be further away than two seeds of one case.
    seeded = verdict(claims.accumulation_follows_the_large_batch, accumulation_table("large", 0.1))
    assert seeded.holds and "differ by up to 0.100" in seeded.numbers
    assert not verdict(claims.accumulation_follows_the_large_batch,
                       accumulation_table("large", 0.25)).holds


def lr_scaling_measures(fixed_1024, sqrt_1024, sqrt_status="finished"):
    rows = [("fixed", 64, 0.05, 0.98, 7.1), ("fixed", 256, 0.05, 0.97, 4.0),
            ("fixed", 1024, 0.05, fixed_1024, 2.6), ("linear", 1024, 0.8, float("nan"), 0.0),
            ("sqrt", 1024, 0.2, sqrt_1024, 10.5)]
    return {"rule": [r[0] for r in rows], "batch_size": [r[1] for r in rows],
            "lr": [r[2] for r in rows], "test_accuracy": [r[3] for r in rows],
            "distance": [r[4] for r in rows],
            "status": ["finished", "finished", "finished", "diverged", sqrt_status]}


def test_lr_scaling_claims():
    assert verdict(claims.accuracy_falls_with_the_batch, lr_scaling_measures(0.96, 0.975)).holds
    assert not verdict(claims.accuracy_falls_with_the_batch, lr_scaling_measures(0.978, 0.975)).holds
    back = verdict(claims.a_larger_rate_brings_the_large_batch_back, lr_scaling_measures(0.96, 0.975))
    assert back.holds and "75%" in back.numbers and "linear (lr 0.8): diverged" in back.numbers
    # 0.975 is 0.5 points above half-way (0.97); the tolerance on 10,000 test
    # images is 2 * sqrt(se(0.975)^2 + (se(0.98)^2 + se(0.96)^2) / 4) = 0.39 points.
    assert "+0.50 points from half-way" in back.numbers and "tolerance 0.39%" in back.numbers
    # 55% recovered is above half-way, but within the noise: not brought back.
    within = verdict(claims.a_larger_rate_brings_the_large_batch_back,
                     lr_scaling_measures(0.96, 0.971))
    assert not within.holds and "55%" in within.numbers
    assert not verdict(claims.a_larger_rate_brings_the_large_batch_back,
                       lr_scaling_measures(0.96, 0.965)).holds
    assert not verdict(claims.a_larger_rate_brings_the_large_batch_back,
                       lr_scaling_measures(0.96, 0.975, sqrt_status="diverged")).holds
    assert verdict(claims.larger_batches_travel_less, lr_scaling_measures(0.96, 0.975)).holds


def critical_batch_fit(**changes):
    """critical_batch_fit.csv of a workload with the model's own numbers."""
    row = dict(workload="MNIST F1", r2=0.97, s_min=100.0, b_noise=200.0,
               b_simple_near_target=600.0, b_simple_over_b_noise=3.0)
    row.update(changes)
    return [row]


def critical_batch_summary(updates, relative_std=0.1, seeds=3, per_decade=None,
                           workload="MNIST F1"):
    """critical_batch_summary.csv: S(B) at batch 16, 32, ... (x2 each), each
    with a seed std of `relative_std` x the mean."""
    sizes = [16 * 2 ** k for k in range(len(updates))]
    row = {"workload": [workload] * len(sizes), "batch_size": sizes,
           "updates_to_target": list(updates),
           "updates_to_target_std": [relative_std * u for u in updates],
           "seeds_reached": [seeds] * len(sizes)}
    if per_decade:
        row["evaluations_per_decade"] = [per_decade] * len(sizes)
    return row


# McCandlish's model, S(B) = 100 (1 + 500 / B), at batch 16 .. 4096: slope
# log(881.25 / 3225) / log 4 = -0.94 over 16, 32, 64 and -0.15 over 2048, 4096.
MODEL = [100 * (1 + 500 / (16 * 2 ** k)) for k in range(9)]


def test_slope_error_by_hand():
    # Two points one octave apart: slope = log(S2 / S1) / log 2; each log S has
    # variance 0.1^2 / 4, so the slope's error is sqrt(2 * 0.0025) / log 2.
    slope, error = claims.slope_with_error([64, 128], [400, 200], [40, 20], [4, 4])
    assert slope == pytest.approx(-1.0)
    assert error == pytest.approx(math.sqrt(2 * 0.1 ** 2 / 4) / math.log(2))
    # Seeds that agree exactly still leave the evaluation grid's resolution:
    # 15 per decade, a first hit uniform in log over log(10) / 15.
    _, floor = claims.slope_with_error([64, 128], [400, 200], [0, 0], [4, 4], per_decade=15)
    assert floor == pytest.approx(math.sqrt(2 * (math.log(10) / 15) ** 2 / 12 / 4) / math.log(2))


def test_critical_batch_slopes_are_judged_by_the_seeds_spread():
    holds = verdict(claims.perfect_scaling_at_small_batches, critical_batch_summary(MODEL))
    assert holds.holds and "batch 16, 32, 64: -0.94" in holds.numbers
    # The same slope is several standard errors from -1 with a 1% seed spread...
    tight = verdict(claims.perfect_scaling_at_small_batches,
                    critical_batch_summary(MODEL, relative_std=0.01))
    assert not tight.holds and "standard errors away" in tight.numbers
    # ...but not once a coarse evaluation grid (3 per decade) bounds the resolution.
    assert verdict(claims.perfect_scaling_at_small_batches,
                   critical_batch_summary(MODEL, relative_std=0.01, per_decade=3)).holds
    # A slope of -0.5 at small batches is not perfect scaling.
    half = [1000 / (16 * 2 ** k) ** 0.5 for k in range(9)]
    assert not verdict(claims.perfect_scaling_at_small_batches, critical_batch_summary(half)).holds

    flat = verdict(claims.diminishing_returns_at_large_batches, critical_batch_summary(MODEL))
    assert flat.holds and "batch 2048, 4096: -0.15" in flat.numbers
    assert "flat within the noise" in flat.numbers
    # Still halving the updates at the largest batches: no diminishing returns.
    perfect = [10 ** 5 / (16 * 2 ** k) for k in range(9)]
    assert not verdict(claims.diminishing_returns_at_large_batches,
                       critical_batch_summary(perfect)).holds
    # One seed: no spread, no verdict.
    alone = critical_batch_summary(MODEL, seeds=1)
    alone["updates_to_target_std"] = [float("nan")] * 9
    one_seed = verdict(claims.diminishing_returns_at_large_batches, alone)
    assert not one_seed.holds and "no spread" in one_seed.numbers
    # Every workload must hold (the paper preset has two).
    two = pd.concat([pd.DataFrame(critical_batch_summary(MODEL)),
                     pd.DataFrame(critical_batch_summary(half, workload="CIFAR-10 ResNet-8"))])
    assert not claims.perfect_scaling_at_small_batches(two, n_test(10_000)).holds


def test_mccandlish_claims_hold_and_fail_on_the_stated_bounds():
    assert verdict(claims.mccandlish_model_fits, critical_batch_fit()).holds
    noise = verdict(claims.noise_scale_predicts_the_critical_batch, critical_batch_fit())
    assert noise.holds and "3.0x" in noise.numbers
    assert not verdict(claims.mccandlish_model_fits, critical_batch_fit(r2=0.6)).holds
    assert not verdict(claims.noise_scale_predicts_the_critical_batch,
                       critical_batch_fit(b_simple_over_b_noise=12.0)).holds
    # Every workload must hold (the paper preset has two).
    two = critical_batch_fit() + critical_batch_fit(workload="CIFAR-10 ResNet-8", r2=0.5)
    assert not verdict(claims.mccandlish_model_fits, two).holds


def test_command_prints_every_claim_and_fails_only_on_expected_claims(tmp_path, capsys):
    holds = Claim("A", "holds", "small_batch", "summary", claims.best_batch_is_small,
                  {"quick": True})
    expected = Claim("A", "expected", "small_batch", "summary", claims.converging_range_shrinks,
                     {"quick": True})
    allowed = Claim("B", "may fail", "small_batch", "summary", claims.converging_range_shrinks,
                    {"quick": "at quick scale (too few updates)"})
    missing = Claim("C", "missing", "lr_scaling", "measures", claims.larger_batches_travel_less,
                    {"quick": True})
    frame = pd.DataFrame(small_batch({4: 0.39, 16: 0.40, 64: 0.33, 256: 0.16}))
    frame["converged_runs"] = [3, 5, 4, 0]  # the range grows from m = 4 to 16: fails
    frame.to_csv(tmp_path / "small_batch_summary.csv", index=False)
    sizes = lambda figure, preset: n_test(2000)  # noqa: E731
    outcomes = claims.check([holds, expected, allowed, missing], tmp_path, ["smoke", "quick"],
                            test_size=sizes)
    printed = capsys.readouterr().out
    assert "preset smoke" not in printed  # no smoke CSVs
    assert "PASS  A: holds" in printed and "FAIL  A: expected" in printed
    assert "fail  B: may fail" in printed and "not expected to hold at quick scale" in printed
    assert "no lr_scaling_measures.csv" in printed
    assert claims.unexpected_failures(outcomes) == [(expected, "quick")]
    assert claims.unexpected_failures(outcomes[:1] + outcomes[2:]) == []


def test_check_claims_on_the_committed_quick_figures_exits_zero(capsys):
    # The committed quick CSVs: the claims marked as expected to hold do.
    assert claims.main(["--preset", "quick"]) == 0
    printed = capsys.readouterr().out
    marks = [line.split()[0] for line in printed.splitlines() if line.startswith("  ") and
             line.split()[0] in ("PASS", "FAIL", "fail")]
    assert len(marks) == len(CLAIMS) and "FAIL" not in marks


def test_check_claims_on_every_committed_preset_exits_zero(capsys):
    # make check-claims: every preset whose CSVs are committed (quick, and the
    # lr-scaling paper preset run on a CPU), each claim with its expectation.
    assert claims.main([]) == 0
    printed = capsys.readouterr().out
    assert "== preset quick" in printed and "== preset paper" in printed
    assert "not expected to hold at the paper preset either, as measured" in printed


def test_no_csvs_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        claims.main(["--out", str(tmp_path)])
    assert exit.value.code == 2
    assert f"no figure CSVs in {tmp_path}" in capsys.readouterr().err
