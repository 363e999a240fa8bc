"""The runner: resumable sweeps, divergence, reproducibility, argument errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SMALL_BATCH_SMOKE, needs_cifar10, needs_mnist, our_lines

from reproduce.runs.config import ConfigError
from reproduce.runs.config import RunConfig
from reproduce.runs.sweep import Sweep
from reproduce.runs.train import train
from reproduce.runs.train import train_record

ROOT = Path(__file__).resolve().parent.parent
TINY = RunConfig(dataset="mnist", model="f1", norm="none", train_size=512, test_size=256,
                 epochs=2, batch_size=64, lr=0.05)

SWEEP_SCRIPT = """
import sys
from reproduce.runs.config import RunConfig
from reproduce.runs.sweep import Sweep
base = RunConfig(dataset="mnist", model="f1", norm="none", train_size=512, test_size=256,
                 epochs=2, batch_size=64, lr=0.05)
Sweep(sys.argv[1]).run([base.replace(seed=s) for s in range(6)])
"""


@pytest.mark.slow
@needs_mnist
def test_sweep_killed_half_way_retrains_only_the_missing_runs(tmp_path):
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", SWEEP_SCRIPT, str(store)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(store.glob("*.json"))) < 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p.name for p in store.glob("*.json")}
    assert 2 <= len(finished) < 6, finished
    assert not list(store.glob("*.tmp"))  # nothing half-written left behind
    for path in store.glob("*.json"):
        assert json.loads(path.read_text())["status"] == "finished"
    mtimes = {p.name: p.stat().st_mtime for p in store.glob("*.json")}

    rerun = subprocess.run([sys.executable, "-c", SWEEP_SCRIPT, str(store)], env=env,
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{len(finished)} already in" in rerun.stdout
    assert f"{6 - len(finished)} to train" in rerun.stdout
    assert len(list(store.glob("*.json"))) == 6
    for name, mtime in mtimes.items():  # finished runs were not trained again
        assert (store / name).stat().st_mtime == mtime


@needs_mnist
def test_absurd_learning_rate_is_recorded_as_diverged_and_the_sweep_goes_on(tmp_path):
    configs = [TINY.replace(lr=1e6), TINY]
    table = Sweep(tmp_path).run(configs)
    status = table.groupby("config_lr")["status"].first()  # "lr": the recorded float32 rate
    assert status[1e6] == "diverged" and status[0.05] == "finished"
    assert table[table.config_lr == 0.05].epoch.max() == 2
    assert table[table.config_lr == 1e6].epoch.max() == 1  # stopped early


@pytest.mark.slow
@needs_mnist
def test_same_seed_same_numbers_and_rows_per_epoch():
    a, b = train(TINY), train(TINY)
    assert [r["loss"] for r in a["rows"]] == [r["loss"] for r in b["rows"]]
    assert [r["updates"] for r in a["rows"]] == [8, 16]  # ceil(512 / 64) per epoch
    assert train(TINY.replace(seed=1))["rows"][-1]["loss"] != a["rows"][-1]["loss"]


@needs_mnist
def test_batch_size_schedule_changes_batch_and_steps_per_epoch_in_a_real_fit():
    config = TINY.replace(epochs=3, batch_size=32, batch_milestones=(1, 2), batch_factor=2,
                          max_device_batch=64)
    rows = train(config)["rows"]
    assert [r["batch_size"] for r in rows] == [32, 64, 128]
    updates = [r["updates"] for r in rows]
    # 512 examples: 16, 8, then 4 updates (128 = 2 x 64 accumulated).
    assert [updates[0], updates[1] - updates[0], updates[2] - updates[1]] == [16, 8, 4]


@pytest.mark.parametrize("field,value,message", [
    ("batch_size", 0, "batch_size=0: expected an integer >= 1"),
    ("lr", -1.0, "lr=-1.0: expected a number > 0"),
    ("model", "resnet9", "model='resnet9': expected one of"),
    ("optimizer", "sgdd", "optimizer='sgdd': expected one of"),
    ("noise_scale_decay", 0.9, "noise_scale_decay=0.9: expected None, or a decay"),
    ("adaptive_batch", 1.0, "adaptive_batch=1.0: expected None, or a factor > 0 with "
                            "noise_scale_decay set"),
])
def test_bad_config_values_are_named(field, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        TINY.replace(**{field: value})


@pytest.mark.slow
def test_cli_bad_argument_is_one_line_and_non_zero_exit(tmp_path):
    result = subprocess.run([sys.executable, "-m", "reproduce.papers.small_batch", "--preset", "fast",
                             "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    lines = our_lines(result.stderr)
    assert len(lines) == 1 and "invalid choice: 'fast'" in lines[0], result.stderr
    assert not list(tmp_path.iterdir())


@SMALL_BATCH_SMOKE
@pytest.mark.slow
@needs_cifar10
def test_small_batch_smoke_writes_every_cell_and_three_figures(small_batch_smoke, capsys):
    # small_batch's smoke preset with --set epochs=1 --set seed=3 (conftest)
    from reproduce.papers import small_batch

    fig = small_batch_smoke / "fig"
    frame = pd.read_csv(fig / "small_batch_smoke.csv")
    spec = small_batch.PRESETS["smoke"]
    cells = {(m, e) for m in spec["batch_sizes"] for e in spec["eta_exponents"]}
    grid = frame[frame.seed == frame.seed.min()]
    tried = set(zip(grid.m, grid.log2_eta_tilde))
    assert cells <= tried and len(grid) == len(tried)
    # Both exponents are edges of a 2-point grid: each m whose best sat on one
    # got the next eta_tilde outward (a grid step of 4; one step in smoke).
    for m, e in tried - cells:
        assert e in (-12, 0)
    assert len(tried - cells) <= len(spec["batch_sizes"])
    # Then each m's best cell (first seed, extension included) again at the
    # next seed, and the summary's best accuracy is that cell's mean over the two.
    more = frame[frame.seed != frame.seed.min()]
    assert (more.seed == grid.seed.min() + 1).all()
    summary = pd.read_csv(fig / "small_batch_smoke_summary.csv")
    for m, runs in grid.dropna(subset=["test_accuracy"]).groupby("m"):
        best = runs.loc[runs.test_accuracy.idxmax()]
        second = more[(more.m == m) & (more.log2_eta_tilde == best.log2_eta_tilde)]
        assert len(second) == 1 and len(more[more.m == m]) == 1
        row = summary[summary.m == m].iloc[0]
        assert row.best_log2_eta_tilde == best.log2_eta_tilde and row.seeds == 2 - int(
            second.test_accuracy.isna().item())
        assert row.best_first_seed_test_accuracy == pytest.approx(best.test_accuracy)
        assert row.best_test_accuracy == pytest.approx(np.nanmean(
            [best.test_accuracy, second.test_accuracy.item()]))
    finished = frame[frame.status == "finished"].test_accuracy
    assert finished.between(0, 1).all()
    assert frame[frame.status == "diverged"].test_accuracy.isna().all()
    assert set(frame.status) <= {"finished", "diverged"}
    # lr = m * eta_tilde (Masters & Luschi's base learning rate).
    assert (abs(frame.lr - frame.m * 2.0 ** frame.log2_eta_tilde) < 1e-12).all()
    for suffix in ("accuracy", "summary", "heatmap"):
        assert (fig / f"small_batch_smoke_{suffix}.png").stat().st_size > 1000
    # Run again: every run is reused, only the figures are redrawn.
    capsys.readouterr()
    small_batch.main(["--preset", "smoke", "--out", str(fig), "--results",
                      str(small_batch_smoke / "res"), "--set", "epochs=1", "--set", "seed=3"])
    again = capsys.readouterr().out
    assert f"{len(cells)} already in" in again and "0 to train" in again
    assert f"{len(more)} runs: {len(more)} already in" in again
    # One round for the grid, one per round of follow-ups (the edges, then the seeds).
    rounds = 1 + again.count("follow-up:")
    assert again.count(" 0 to train") == rounds, again


@pytest.mark.slow
@needs_mnist
def test_runner_works_on_jax_without_tensorflow():
    script = """
import sys
sys.modules["tensorflow"] = None  # as if TensorFlow were not installed
sys.modules["tensorflow_datasets"] = None
import keras
assert keras.backend.backend() == "jax"
from reproduce.runs.config import RunConfig
from reproduce.runs.train import train
r = train(RunConfig(dataset="mnist", model="f1", norm="ghost:16", train_size=512, test_size=256,
                    epochs=2, batch_size=32, lr=0.05, batch_milestones=(1,), batch_factor=4,
                    max_device_batch=64))
print("ROWS", [(row["batch_size"], row["updates"]) for row in r["rows"]], r["status"])
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=600,
                         env={**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    # 512 / 32 = 16 updates, then batch 128 = 2 x 64 accumulated: 4 more.
    assert "ROWS [(32, 16), (128, 20)] finished" in out.stdout


def test_fields_added_later_leave_the_keys_of_stored_runs_alone():
    """A run stored before `noise_scale_decay`, `adaptive_batch`,
    `eval_statistics`, `validation_size` and `evaluated_epochs` existed keeps its key; setting them makes a different
    run. A run without batch norm is the same run whatever its evaluation
    statistics; with batch norm, the moving averages are the old runs."""
    import dataclasses
    import hashlib
    import json

    fields = dataclasses.asdict(TINY)
    for name in ("engine", "subset_seed", "devices", "noise_scale_decay", "adaptive_batch",
                 "eval_statistics", "validation_size", "evaluated_epochs"):
        del fields[name]
    old_key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    assert TINY.key == old_key == TINY.replace(eval_statistics="moving").key
    batch_norm = TINY.replace(norm="batch")
    fields = dataclasses.asdict(batch_norm.replace(eval_statistics="moving"))
    for name in ("engine", "subset_seed", "devices", "noise_scale_decay", "adaptive_batch",
                 "eval_statistics", "validation_size", "evaluated_epochs"):
        del fields[name]
    old_key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    assert batch_norm.replace(eval_statistics="moving").key == old_key != batch_norm.key
    assert TINY.replace(evaluated_epochs=1).key != TINY.key
    measured = TINY.replace(batch_size=16, accumulation=2, noise_scale_decay=0.9)
    assert len({measured.key, measured.replace(noise_scale_decay=None).key,
                measured.replace(adaptive_batch=1.0).key}) == 3


@needs_mnist
def test_held_out_examples_are_scored_and_not_trained_on():
    """validation_size=64 of 512: 448 trained on (7 updates an epoch at batch
    64), the 64 scored every epoch as validation_accuracy; a bad size is a
    one-line error naming it."""
    from reproduce.runs.datasets import data_of, validation_of

    config = TINY.replace(validation_size=64)
    x, y, _, _ = data_of(config)
    held_x, held_y = validation_of(config)
    whole = data_of(TINY)[0]
    assert len(x) == 448 and len(held_x) == 64
    np.testing.assert_array_equal(np.concatenate([x, held_x]), whole)
    result = train(config)
    assert [row["updates"] for row in result["rows"]] == [7, 14]
    assert all(0 <= row["validation_accuracy"] <= 1 for row in result["rows"])
    assert np.isnan(train(TINY)["rows"][-1]["validation_accuracy"])
    with pytest.raises(ConfigError, match="validation_size=512"):
        TINY.replace(validation_size=512)


@needs_mnist
@pytest.mark.parametrize("engine, statistics", [
    ("fast", "recomputed"), ("fast", "moving"),
    pytest.param("fit", "moving", marks=pytest.mark.slow)])  # fit: ~7 s
def test_scoring_only_the_last_epochs_trains_the_same_run(engine, statistics):
    """evaluated_epochs=1 of 2: the same training (every row's loss, accuracy
    and updates), nothing scored at epoch 1, and at epoch 2 the test and
    held-out scores of the run that scored every epoch (the statistics are
    recomputed from scratch, the moving averages never read in training)."""
    base = TINY.replace(norm="batch", validation_size=64, engine=engine,
                        eval_statistics=statistics)
    every, last = train(base)["rows"], train(base.replace(evaluated_epochs=1))["rows"]
    for a, b in zip(every, last, strict=True):
        assert (a["loss"], a["accuracy"], a["updates"]) == (b["loss"], b["accuracy"], b["updates"])
    assert np.isnan(last[0]["test_accuracy"]) and np.isnan(last[0]["validation_accuracy"])
    assert not np.isnan(every[0]["test_accuracy"])
    for column in ("test_accuracy", "test_loss", "validation_accuracy"):
        assert last[1][column] == every[1][column], column
    # More than the run has: every epoch (a run shortened with --set epochs=1).
    assert base.replace(evaluated_epochs=5).first_evaluated_epoch == 0
    with pytest.raises(ConfigError, match="evaluated_epochs=0: expected None, or an integer >= 1"):
        base.replace(evaluated_epochs=0)


def test_the_dry_runs_kinds_come_from_the_fields_marked_program_shaping():
    """A noise-scale run, an adaptive one, a run with held-out data or
    recomputed statistics is another program than a plain one (the dry run
    starts one of each); a size or a seed is not."""
    from reproduce.runs.plan import combination

    base = TINY.replace(batch_size=64, accumulation=2)
    kinds = {combination(c) for c in (
        base, base.replace(noise_scale_decay=0.9),
        base.replace(noise_scale_decay=0.9, adaptive_batch=1.0),
        base.replace(validation_size=64), base.replace(eval_statistics="moving"),
        base.replace(momentum=0.9))}
    assert len(kinds) == 6
    assert combination(base) == combination(base.replace(seed=3, train_size=256, lr=0.2,
                                                         batch_size=128, accumulation=2))


@needs_mnist
def test_one_record_type_from_training_to_the_store_and_back(tmp_path):
    """`train_record` makes a RunRecord; the store writes it whole and reads
    the same back; its test-set size and per-example results come with it;
    a record from before a field existed reads that field as None; dict-style
    access still works for old scripts."""
    from reproduce.runs.store import RunRecord, RunStore

    record = train_record(TINY)
    assert isinstance(record, RunRecord) and record.status == "finished"
    assert record.test_size == 256 and record.correct.mean() == pytest.approx(
        record.final["test_accuracy"], abs=1e-6)
    store = RunStore(tmp_path)
    store.save(TINY, record)
    def text(r):
        return json.dumps(r.as_dict(), default=float, sort_keys=True)

    assert text(store.load(TINY)) == text(record)
    old = {k: v for k, v in record.as_dict().items() if k not in ("test_correct", "threads")}
    (tmp_path / f"{TINY.key}.json").write_text(json.dumps(old))
    again = store.load(TINY)
    assert again.test_correct is None and again.test_size is None and again.correct is None
    assert again["rows"] == again.rows and again.get("measures", {}) == {}
