"""Smoke presets of the figure targets, checked against hand-computed schedules."""

import math

import numpy as np
import pandas as pd
import pytest
from conftest import needs_cifar10, needs_mnist

pytestmark = pytest.mark.slow  # every test here trains a figure's smoke preset


def _run(module, tmp_path, *extra):
    module.main(["--preset", "smoke", "--out", str(tmp_path / "fig"),
                 "--results", str(tmp_path / "res"), *extra])
    return tmp_path / "fig"


@needs_cifar10
def test_dont_decay_records_the_configured_schedules_and_their_update_counts(tmp_path):
    from reproduce.papers import dont_decay

    fig = _run(dont_decay, tmp_path)
    frame = pd.read_csv(fig / "dont_decay_smoke.csv")
    # Hand-written: N = 256, B0 = 8, x5 at epochs 1, 2, 3, lr 0.1, cap 40 x B0 = 320.
    expected = {
        ("sgd", "decaying learning rate"): ([8, 8, 8, 8], [0.1, 0.02, 0.004, 0.0008]),
        ("sgd", "hybrid"): ([8, 40, 40, 40], [0.1, 0.1, 0.02, 0.004]),
        ("sgd", "increasing batch size"): ([8, 40, 200, 1000], [0.1] * 4),
        ("fig5", "original schedule"): ([8, 8, 8, 8], [0.1, 0.02, 0.004, 0.0008]),
        ("fig5", "increasing batch"): ([8, 40, 200, 320], [0.1, 0.1, 0.1, 0.1 * 320 / 1000]),
        ("fig5", "higher initial lr"): ([40, 200, 320, 320],
                                        [0.5, 0.5, 0.5 * 320 / 1000, 0.5 * 320 / 5000]),
        ("fig5", "+ higher momentum"): ([200, 320, 320, 320],
                                        [0.5, 0.5 * 320 / 1000, 0.5 * 320 / 5000,
                                         0.5 * 320 / 25000]),
    }
    assert set(zip(frame.figure, frame.run)) == set(expected)
    # The smoke preset trains the decaying rate at 2 seeds (the rest at 1): the
    # same schedule, other numbers, and the table's accuracy is their mean.
    seeds = frame.groupby(["figure", "run"]).seed.nunique()
    assert seeds[("sgd", "decaying learning rate")] == 2 and seeds.drop(
        ("sgd", "decaying learning rate")).eq(1).all()
    for (figure, name), (batches, lrs) in expected.items():
        for _, run in frame[(frame.figure == figure) & (frame.run == name)].groupby("seed"):
            _check_schedule(run.sort_values("epoch"), figure, name, batches, lrs)
    decaying = frame[(frame.figure == "sgd") & (frame.run == "decaying learning rate")]
    finals = decaying.sort_values("epoch").groupby("seed").test_accuracy.last()
    assert decaying.groupby("seed").loss.first().nunique() == 2
    table = pd.read_csv(fig / "dont_decay_smoke_table.csv")
    row = table[(table.figure == "sgd") & (table.run == "decaying learning rate")].iloc[0]
    assert row.seeds == 2 and row.final_test_accuracy == pytest.approx(finals.mean(), abs=1e-4)
    assert row.final_test_accuracy_std == pytest.approx(finals.std(), abs=1e-4)
    assert (table.updates == table.scheduled_updates).all()
    assert table.loc[table.run == "increasing batch size", "accumulated_epochs"].item() == 2
    for suffix in ("schedules", "loss", "accuracy", "updates"):
        assert (fig / f"dont_decay_smoke_{suffix}.png").stat().st_size > 1000


def _check_schedule(run, figure, name, batches, lrs):
    assert list(run.batch_size) == batches, (figure, name)
    np.testing.assert_allclose(run.lr, lrs, rtol=1e-6, err_msg=str((figure, name)))
    # Updates: ceil(N / B) per epoch, counted by the optimizer (accumulated
    # batches above max_device_batch = 128 still count one update each).
    assert list(run.updates) == list(np.cumsum([math.ceil(256 / b) for b in batches]))
    assert (run.momentum == (0.98 if name == "+ higher momentum" else 0.9)).all()


@needs_mnist
def test_mnist_batch_size_accumulated_run_makes_the_large_batch_updates(tmp_path):
    from reproduce.papers import mnist_batch_size

    fig = _run(mnist_batch_size, tmp_path)
    table = pd.read_csv(fig / "mnist_batch_size_smoke_table.csv")
    assert list(table.batch_size) == [32, 128]
    assert list(table.article_val_accuracy_epoch20) == [0.9818, 0.9863]
    assert list(table.updates) == [2 * 16, 2 * 4]  # 512 examples, 2 epochs
    summary = pd.read_csv(fig / "mnist_batch_size_smoke_accumulation.csv")
    updates = dict(zip(summary.experiment + "/" + summary.case, summary.updates))
    for norm in ("batch", "group"):
        # 32 x 4 accumulated = one update per 128 examples, like native 128.
        assert updates[f"accumulation, {norm} norm/32 x 4 accumulated"] == 8
        assert updates[f"accumulation, {norm} norm/native 128"] == 8
        assert updates[f"accumulation, {norm} norm/native 32"] == 32
    frame = pd.read_csv(fig / "mnist_batch_size_smoke.csv")
    assert set(frame[frame.case.str.contains("accumulated")].accumulation) == {4}
    # Group norm's three cases at 2 seeds (the smoke preset's `seeded`), the rest
    # at 1; the summary's final accuracy is the seeds' mean, and the seed-to-seed
    # gap is the mean |difference| per epoch of the two seeds' curves.
    seeds = frame.groupby(["experiment", "case"]).seed.nunique()
    assert (seeds[seeds.index.get_level_values(0) == "accumulation, group norm"] == 2).all()
    assert (seeds[seeds.index.get_level_values(0) != "accumulation, group norm"] == 1).all()
    native = frame[(frame.case == "native 128") & (frame.experiment == "accumulation, group norm")]
    curves = native.pivot(index="epoch", columns="seed", values="test_accuracy")
    row = summary[(summary.experiment == "accumulation, group norm")
                  & (summary.case == "native 128")].iloc[0]
    assert row.seeds == 2
    assert row.final_test_accuracy == pytest.approx(curves.iloc[-1].mean(), abs=1e-4)
    assert row.seed_to_seed_test_accuracy_gap == pytest.approx(
        (curves.iloc[:, 0] - curves.iloc[:, 1]).abs().mean())
    assert summary[summary.experiment == "accumulation, batch norm"].seeds.eq(1).all()
    for suffix in ("curves", "accumulation"):
        assert (fig / f"mnist_batch_size_smoke_{suffix}.png").stat().st_size > 1000


@needs_mnist
def test_lr_scaling_rules_and_measures(tmp_path, monkeypatch, capsys):
    import json

    from batchsize import models
    from reproduce.runs import sweep
    from reproduce.papers import lr_scaling

    spec = lr_scaling.PRESETS["smoke"]
    # First with one run crashing: the figure is drawn from the others, says
    # how many are missing, and the command exits 1; the rerun retrains only it.
    crash = lr_scaling.grid(spec)[("rate", 256, 0.2, 0)]
    trained = sweep.train_record

    def train_record(config, *args, **kwargs):
        if config == crash:
            raise RuntimeError("out of memory (simulated)")
        return trained(config, *args, **kwargs)

    monkeypatch.setattr(sweep, "train_record", train_record)
    with pytest.raises(SystemExit) as exit:
        _run(lr_scaling, tmp_path)
    assert exit.value.code == 1
    out = capsys.readouterr().out
    assert "runs: 1 failed" in out and "RuntimeError: out of memory (simulated)" in out
    assert (tmp_path / "fig" / "lr_scaling_smoke_accuracy.png").exists()
    stored = {p: p.stat().st_mtime_ns for p in (tmp_path / "res" / "lr_scaling").glob("*.json")}
    monkeypatch.undo()
    fig = _run(lr_scaling, tmp_path)
    assert all(p.stat().st_mtime_ns == t for p, t in stored.items())  # none retrained
    rates = pd.read_csv(fig / "lr_scaling_smoke_rates.csv")
    measures = pd.read_csv(fig / "lr_scaling_smoke_measures.csv")
    lr = {(r, b): v for r, b, v in zip(measures.rule, measures.batch_size, measures.lr)}
    # The rules are views of the rate grid (base 0.05 at batch 64), where their rate lies on it.
    assert lr[("fixed", 256)] == pytest.approx(0.05)
    assert lr[("linear", 256)] == pytest.approx(0.2)  # 0.05 x 256/64
    assert ("sqrt", 256) not in lr  # 0.1 is not on the grid
    assert lr[("linear", 64)] == lr[("sqrt", 64)] == lr[("fixed", 64)] == pytest.approx(0.05)
    assert lr[("linear + warm-up", 256)] == lr[("linear", 256)]
    warmup = dict(zip(zip(measures.rule, measures.batch_size), measures.warmup))
    assert warmup[("linear + warm-up", 256)] == pytest.approx(5 / 90)  # Goyal: 5 of 90 epochs
    assert warmup[("linear + warm-up", 64)] == warmup[("linear", 256)] == 0
    # Both rates are edges of a 2-rate grid: each batch got the next rate
    # outward (one step in smoke); the tuned rate is the first seed's best of all tried.
    for b, tried in rates.groupby("batch_size"):
        assert len(tried) == 3 and set(np.round(tried.lr, 4)) - {0.05, 0.2} <= {0.025, 0.4}
        finished = tried.dropna(subset=["test_accuracy"])
        best = finished.sort_values(["test_accuracy", "lr"], ascending=[False, True]).iloc[0]
        assert tried.best.sum() == 1 and tried[tried.best].lr.item() == best.lr
        tuned = measures[(measures.rule == "tuned") & (measures.batch_size == b)].iloc[0]
        assert tuned.lr == pytest.approx(best.lr)
        # Seed 0 chose the rate; the claim is judged on seed 1 alone.
        assert tuned.seeds_trained == 2 and tuned.judged_seeds <= 1
    # Seeds: the fixed rate at both batches twice; the table's accuracy is the mean of
    # the seeds' last epochs, its spread their sample standard deviation.
    frame = pd.read_csv(fig / "lr_scaling_smoke.csv")
    last = frame.sort_values("epoch").groupby(["kind", "batch_size", "lr", "seed"]).last()
    last = last.reset_index()
    for row in measures[measures.rule == "fixed"].itertuples():
        # The per-epoch rows log the optimizer's float32 rate.
        seeds = last[(last.kind == "rate") & (last.batch_size == row.batch_size)
                     & np.isclose(last.lr, row.lr, rtol=1e-6)]
        assert sorted(seeds.seed) == [0, 1] and row.seeds == 2
        assert row.test_accuracy == pytest.approx(seeds.test_accuracy.mean())
        assert row.test_accuracy_std == pytest.approx(seeds.test_accuracy.std(ddof=1))
    assert (measures[measures.status == "finished"].distance > 0).all()
    # A larger rate at the same batch moves the weights further.
    d = {(r, b): v for r, b, v in zip(measures.rule, measures.batch_size, measures.distance)}
    assert d[("linear", 256)] > d[("fixed", 256)]
    # Every weight is in the |w - w0| histogram; gradient norms sampled on the first seed.
    params = models.build("f1", (28, 28, 1), 10, norm="none").count_params()
    for path in (tmp_path / "res" / "lr_scaling").glob("*.json"):
        record = json.loads(path.read_text())
        m = record["measures"]
        if record["status"] != "finished":
            continue  # a diverged run's weights are NaN
        assert sum(m["weight_change_histogram"]) == params
        assert m["distance"] == pytest.approx(math.sqrt(sum(
            v ** 2 for v in m["distance_per_layer"].values())), rel=1e-6)
        first = record["config"]["seed"] == spec["base"].seed
        assert len(record["measures"]["gradient_norms"]) == (spec["gradient_samples"] * first)
    for suffix in ("accuracy", "distributions"):
        assert (fig / f"lr_scaling_smoke_{suffix}.png").stat().st_size > 1000


@needs_mnist
def test_generalization_gap_regime_adaptation_matches_the_small_batch_updates(tmp_path):
    from reproduce.papers import generalization_gap

    fig = _run(generalization_gap, tmp_path)
    table = pd.read_csv(fig / "generalization_gap_smoke_table.csv").set_index("column")
    # Smoke: N = 512, SB 32 for 4 epochs = 64 updates; LB 128 = 4 per epoch.
    assert table.loc["SB", "updates"] == 4 * 16
    assert table.loc["LB", "updates"] == 4 * 4
    assert table.loc["+RA", "epochs"] == 4 * 4  # epochs x B_L / B_S
    assert table.loc["+RA", "updates"] == table.loc["SB", "updates"]
    assert table.loc["+RA", "lr_milestones"] == str((4, 8, 12))  # (1, 2, 3) x 4
    assert table.loc["+LR", "initial_lr"] == pytest.approx(0.1 * math.sqrt(128 / 32))
    assert table.loc["+GBN", "norm"] == "ghost:32" and table.loc["LB", "norm"] == "batch"
    # SB and LB at 2 seeds (smoke): the table's accuracy is the mean of their last
    # epochs, in percent; the other columns are one seed.
    frame = pd.read_csv(fig / "generalization_gap_smoke.csv")
    for column in ("SB", "LB"):
        finals = [frame[frame.run == label].iloc[-1] for label in (column, f"{column} seed 1")]
        assert [f.seed for f in finals] == [0, 1]
        assert table.loc[column, "seeds"] == 2
        assert table.loc[column, "test_accuracy"] == pytest.approx(
            100 * np.mean([f.test_accuracy for f in finals]), abs=0.006)
        assert table.loc[column, "test_accuracy_std"] == pytest.approx(
            100 * np.std([f.test_accuracy for f in finals], ddof=1), abs=0.006)
    assert table.loc["+RA", "seeds"] == 1 and np.isnan(table.loc["+RA", "test_accuracy_std"])
    distance = pd.read_csv(fig / "generalization_gap_smoke_distance.csv")
    sb = distance[distance.run == "SB"]
    assert sb.iteration.iloc[0] == 0 and sb.distance.iloc[0] == 0.0
    assert sb.iteration.max() == 64 and (sb.distance.iloc[1:] > 0).all()
    for suffix in ("error", "distance", "adapted"):
        assert (fig / f"generalization_gap_smoke_{suffix}.png").stat().st_size > 1000


@needs_mnist
def test_sharp_minima_line_ends_are_the_two_trained_models(tmp_path):
    from reproduce.papers import sharp_minima

    fig = _run(sharp_minima, tmp_path)
    line = pd.read_csv(fig / "sharp_minima_smoke_line.csv")
    every_seed = pd.read_csv(fig / "sharp_minima_smoke.csv")
    runs = every_seed[every_seed.seed == 0].set_index("batch_size")
    small, large = runs.index.min(), runs.index.max()
    test = line[line.split == "test"].set_index("alpha")
    # alpha = 0 is the small-batch model, alpha = 1 the large-batch one: each
    # trained model rebuilt from its saved weights and called on the test set
    # in batches of 1,000 with batch statistics (the line's batch-norm mode).
    import keras

    from reproduce.runs.datasets import prepared_data
    from reproduce.runs.train import build_model

    configs = {b: c for (_, b, i), c in sharp_minima.grid(sharp_minima.PRESETS["smoke"]).items()
               if i == 0}
    x, y, x_test, y_test = prepared_data(configs[small].dataset, configs[small].train_size,
                                         configs[small].test_size)
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    for alpha, batch in ((0.0, small), (1.0, large)):
        model = build_model(configs[batch], x.shape[1:], 10)
        model.set_weights(sharp_minima.load_weights(tmp_path / "res" / "sharp_minima",
                                                    configs[batch]))
        logits = np.concatenate([keras.ops.convert_to_numpy(model(x_test[i:i + 1000], training=True))
                                 for i in range(0, len(x_test), 1000)])
        assert test.loc[alpha, "accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y_test))
        assert test.loc[alpha, "loss"] == pytest.approx(
            float(np.mean(cross_entropy(y_test, logits))), rel=1e-5)
    # The runner's test accuracy uses the moving statistics: a different number.
    assert test.loc[0.0, "accuracy"] != pytest.approx(runs.loc[small, "test_accuracy"], abs=1e-6)
    assert len(test) == 25 and test.index.min() == -1 and test.index.max() == 2
    assert (runs.sharpness_full >= 0).all() and (runs.sharpness_subspace >= 0).all()
    table = pd.read_csv(fig / "sharp_minima_smoke_table.csv")
    assert list(table.regime) == ["SB", "LB"] and list(table.paper_test_accuracy) == [98.03, 97.81]
    # The smoke preset's own subspace dimension (10, not the paper's 100), in its words too.
    assert list(table.subspace_dimension) == [10, 10]
    claim = sharp_minima.large_batch_minimum_is_sharper({"table": table}, None)
    assert "10-dim subspace" in claim.numbers and "100-dim" not in claim.numbers
    # SB and LB at 2 seeds (smoke): Tables 2-4 are the seeds' means.
    assert list(table.seeds) == [2, 2] and sorted(every_seed.seed.unique()) == [0, 1]
    for row in table.itertuples():
        seeds = every_seed[every_seed.batch_size == row.batch_size]
        assert row.test_accuracy == pytest.approx(100 * seeds.test_accuracy.mean(), abs=0.006)
        assert row.sharpness_full == pytest.approx(seeds.sharpness_full.mean())
        assert row.sharpness_full_std == pytest.approx(seeds.sharpness_full.std(ddof=1))
    for suffix in ("line", "batch_size"):
        assert (fig / f"sharp_minima_smoke_{suffix}.png").stat().st_size > 1000


@needs_mnist
def test_critical_batch_updates_to_target_fit_and_noise_scale(tmp_path):
    from reproduce.papers import critical_batch

    fig = _run(critical_batch, tmp_path)
    spec = critical_batch.PRESETS["smoke"]["workloads"]["MNIST F1"]
    runs = pd.read_csv(fig / "critical_batch_smoke.csv")
    every = runs[runs.kind == "sweep"]
    sweep = every[every.seed_index == 0]
    grid = {(b, lr) for b in spec["batch_sizes"] for lr in spec["learning_rates"]}
    tried = set(zip(sweep.batch_size, sweep.lr))
    assert grid <= tried
    # A best rate on the grid's edge got the next rate outward (x2 or /2; one
    # step in smoke), and only where the first seed's best sat on that edge.
    low, high = min(spec["learning_rates"]), max(spec["learning_rates"])
    assert {lr for _, lr in tried - grid} <= {low / 2, high * 2}
    assert len(tried - grid) <= len(spec["batch_sizes"])
    hits = every[every.status == "reached"]
    assert (hits.examples_to_target == hits.batch_size * hits.updates_to_target).all()
    reached = sweep[sweep.status == "reached"]
    # Examples are counted per update at the run's batch.
    assert (reached.examples_to_target == reached.batch_size * reached.updates_to_target).all()
    # The noise run (64 = 4 x 16 accumulated, no batch norm) is the same
    # training as the sweep's batch-64 run at its rate: the same update hits.
    noise = runs[runs.kind == "noise"].iloc[0]
    twin = sweep[(sweep.batch_size == 64) & (sweep.lr == noise.lr)].iloc[0]  # first seed
    assert noise.status == twin.status == "reached"
    assert noise.updates_to_target == twin.updates_to_target
    # Best rate per batch: the fewest updates among the first seed's rates that
    # reached; then that rate at a second seed (the follow-up, never pruned),
    # and S(B) the mean over the seeds that reached.
    summary = pd.read_csv(fig / "critical_batch_smoke_summary.csv")
    for _, row in summary.iterrows():
        group = reached[reached.batch_size == row.batch_size]
        if len(group):
            top = group.sort_values(["updates_to_target", "lr"]).iloc[0]
            assert row.first_seed_updates_to_target == top.updates_to_target
            assert row.best_lr == top.lr
            seeds = every[(every.batch_size == row.batch_size) & (every.lr == top.lr)]
            assert sorted(seeds.seed_index) == [0, 1] and row.seeds == 2
            assert "slower than another rate" not in set(seeds.status)
            hit = seeds[seeds.status == "reached"]
            assert row.seeds_reached == len(hit)
            assert row.updates_to_target == pytest.approx(hit.updates_to_target.mean())
            assert row.examples_to_target == pytest.approx(row.batch_size * row.updates_to_target)
    assert len(every) == len(sweep) + summary.best_lr.notna().sum()
    assert set(sweep.status) <= {"reached", "diverged", "not reached", "slower than another rate"}
    # B_simple near the target: the noise run's value at its first evaluation
    # at the target, measured by the accumulator.
    trace = pd.read_csv(fig / "critical_batch_smoke_trace.csv")
    measured = trace[trace.kind == "noise"]
    first = measured[measured.accuracy >= spec["target"]].iloc[0]
    fit = pd.read_csv(fig / "critical_batch_smoke_fit.csv").iloc[0]
    assert fit.b_simple_near_target == pytest.approx(first.noise_scale_simple)
    assert first.updates == noise.updates_to_target
    # The adaptive run: a batch of 2 x 16 grown by powers of two, capped.
    adaptive = runs[runs.kind == "adaptive"].iloc[0]
    grown = adaptive.final_batch_size
    assert 32 <= grown <= spec["adaptive"]["max_batch_size"] and grown & (grown - 1) == 0
    if adaptive.status == "reached":
        assert 32 * adaptive.updates_to_target <= adaptive.examples_to_target \
            <= grown * adaptive.updates_to_target
    assert (fig / "critical_batch_smoke.png").stat().st_size > 1000
