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


def dont_decay_per_epoch(increasing_losses):
    rows = []
    for run, losses in (("decaying learning rate", [2.0, 1.6, 1.5]), ("hybrid", [2.0, 1.62, 1.52]),
                        ("increasing batch size", increasing_losses)):
        rows += [{"figure": "sgd", "run": run, "epoch": e + 1, "loss": v}
                 for e, v in enumerate(losses)]
    return rows


def test_smith_schedules_agree_within_ten_percent_per_epoch():
    assert verdict(claims.three_schedules_agree_per_epoch, dont_decay_per_epoch([2.0, 1.65, 1.55])).holds
    late = verdict(claims.three_schedules_agree_per_epoch, dont_decay_per_epoch([2.0, 1.65, 1.9]))
    assert not late.holds and "epoch 3" in late.numbers
    # A diverged schedule (NaN loss) does not agree.
    assert not verdict(claims.three_schedules_agree_per_epoch,
                       dont_decay_per_epoch([2.0, float("nan"), float("nan")])).holds
    # Several seeds: the schedules' means are compared, and the seeds' own
    # spread is printed for scale (here 2 seeds of hybrid, 1.52 and 1.68 at epoch 3).
    rows = [dict(r, seed=0) for r in dont_decay_per_epoch([2.0, 1.65, 1.55])]
    rows += [dict(r, seed=1, loss=r["loss"] + (0.16 if r["epoch"] == 3 else 0.0))
             for r in rows if r["run"] == "hybrid"]
    seeded = verdict(claims.three_schedules_agree_per_epoch, rows)
    assert seeded.holds and "final losses 1.500 / 1.600 / 1.550" in seeded.numbers
    assert "2 seeds; between the seeds of one schedule up to 10.0%" in seeded.numbers


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
    assert not verdict(claims.a_larger_rate_brings_the_large_batch_back,
                       lr_scaling_measures(0.96, 0.965)).holds
    assert not verdict(claims.a_larger_rate_brings_the_large_batch_back,
                       lr_scaling_measures(0.96, 0.975, sqrt_status="diverged")).holds
    assert verdict(claims.larger_batches_travel_less, lr_scaling_measures(0.96, 0.975)).holds


def critical_batch_fit(**changes):
    """critical_batch_fit.csv of a workload with the model's own numbers: S_min 100,
    B_noise 200, so S(16, 32, 64) falls with slope ~-0.9 and S(2048, 4096) ~-0.05."""
    row = dict(workload="MNIST F1", slope_smallest_three=-0.9, slope_largest_two=-0.05,
               r2=0.97, s_min=100.0, b_noise=200.0, b_simple_near_target=600.0,
               b_simple_over_b_noise=3.0)
    row.update(changes)
    return [row]


def test_critical_batch_claims_hold_and_fail_on_the_stated_bounds():
    holds = {check: verdict(check, critical_batch_fit()) for check in (
        claims.perfect_scaling_at_small_batches, claims.diminishing_returns_at_large_batches,
        claims.mccandlish_model_fits, claims.noise_scale_predicts_the_critical_batch)}
    assert all(v.holds for v in holds.values())
    assert "3.0x" in holds[claims.noise_scale_predicts_the_critical_batch].numbers
    assert not verdict(claims.perfect_scaling_at_small_batches,
                       critical_batch_fit(slope_smallest_three=-0.5)).holds
    assert not verdict(claims.diminishing_returns_at_large_batches,
                       critical_batch_fit(slope_largest_two=-0.8)).holds
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


def test_no_csvs_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        claims.main(["--out", str(tmp_path)])
    assert exit.value.code == 2
    assert f"no figure CSVs in {tmp_path}" in capsys.readouterr().err
