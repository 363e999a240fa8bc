"""Every run's TensorBoard curves (reproduce/runs/tensorboard.py), read back with
TensorBoard's own event reader and compared against the run's stored record."""

import dataclasses
import io
import subprocess
import sys

import pytest

from conftest import ROOT, needs_mnist, our_lines
from reproduce.runs import tensorboard as board
from reproduce.runs.config import RunConfig
from reproduce.runs.sweep import Sweep

pytest.importorskip("tensorboard")

# 512 examples at batch 64: 8 updates an epoch, 3 epochs.
RUN = RunConfig(dataset="mnist", model="f1", norm="none", train_size=512, test_size=256,
                epochs=3, batch_size=64, lr=0.05)
EPOCH_TAGS = {"train/loss": "loss", "train/accuracy": "accuracy", "test/loss": "test_loss",
              "test/accuracy": "test_accuracy", "schedule/learning_rate": "lr",
              "schedule/momentum": "momentum", "schedule/batch_size": "batch_size"}


def trained(tmp_path, config, every_updates=None, **sweep_args):
    sweep = Sweep(tmp_path, log=io.StringIO(), describe=lambda c: f"batch {c.batch_size}",
                  tensorboard=True, **sweep_args)
    sweep._log_curves([config])
    sweep.curves = dataclasses.replace(sweep.curves, every_updates=every_updates)
    sweep._log_curves = lambda configs: None  # keep this interval
    sweep.run([config])
    return sweep.load(config), board.read_scalars(sweep.curves.log_dir(config)), sweep


def epoch_end(scalars, tag, rows):
    """The values of `tag` at the rows' updates (the epoch ends)."""
    at = dict(scalars[tag])
    return [at[row["updates"]] for row in rows]


@needs_mnist
def test_a_runs_curves_are_its_record_with_the_step_in_updates(tmp_path):
    record, scalars, sweep = trained(tmp_path, RUN, every_updates=3)
    rows = record["rows"]
    assert [row["updates"] for row in rows] == [8, 16, 24]
    folder = sweep.curves.log_dir(RUN)
    assert folder.parent == tmp_path / "tensorboard" and folder.name == f"batch_64_seed0-{RUN.key[:8]}"
    for tag, column in EPOCH_TAGS.items():
        assert epoch_end(scalars, tag, rows) == pytest.approx([r[column] for r in rows],
                                                             rel=1e-6), tag
    assert epoch_end(scalars, "schedule/physical_batch", rows) == [64] * 3
    assert epoch_end(scalars, "schedule/accumulation_steps", rows) == [1] * 3
    # Within an epoch, every 3 updates: the running train loss, never at an epoch end twice.
    assert [step for step, _ in scalars["train/loss"]] == [3, 6, 8, 9, 12, 15, 16, 18, 21, 24]
    assert "test/loss" in scalars and [s for s, _ in scalars["test/loss"]] == [8, 16, 24]
    # The same curves against examples seen and against epochs.
    assert [s for s, _ in scalars["by_epochs/test_accuracy"]] == [1, 2, 3]
    assert [v for _, v in scalars["by_epochs/test_accuracy"]] == pytest.approx(
        [r["test_accuracy"] for r in rows], rel=1e-6)
    assert [s for s, _ in scalars["by_examples/train_loss"]] == [
        3 * 64, 6 * 64, 512, 512 + 64, 512 + 4 * 64, 512 + 7 * 64, 1024, 1024 + 2 * 64,
        1024 + 5 * 64, 1536]
    assert dict(scalars["progress/examples"])[12] == 512 + 4 * 64
    assert dict(scalars["progress/epochs"])[16] == 2.0
    assert "measures/noise_scale_simple" not in scalars  # this run does not measure it


@needs_mnist
def test_the_hparams_are_the_grids_fields(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    configs = [RUN.replace(lr=lr, epochs=1) for lr in (0.05, 0.1)]
    sweep = Sweep(tmp_path, log=io.StringIO(), tensorboard=True, jobs=1)
    sweep.run(configs)
    assert sweep.curves.fields == ("batch_size", "lr", "seed")  # lr varies; the rest always
    for config in configs:
        events = EventAccumulator(str(sweep.curves.log_dir(config)))
        events.Reload()
        content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        values = {k: v.number_value for k, v in data.session_start_info.hparams.items()}
        assert values == dict(batch_size=64, lr=config.lr, seed=0)


@needs_mnist
def test_an_accumulated_run_steps_in_updates_not_micro_batches(tmp_path):
    """Batch 64 as 4 micro-batches of 16: 8 updates an epoch, 32 micro-batches."""
    config = RUN.replace(max_device_batch=16, epochs=2)
    record, scalars, _ = trained(tmp_path, config, every_updates=3)
    assert [row["updates"] for row in record["rows"]] == [8, 16]
    assert [s for s, _ in scalars["train/loss"]] == [3, 6, 8, 9, 12, 15, 16]
    assert epoch_end(scalars, "schedule/accumulation_steps", record["rows"]) == [4, 4]
    assert epoch_end(scalars, "schedule/physical_batch", record["rows"]) == [16, 16]
    assert dict(scalars["progress/examples"])[9] == 512 + 64


@needs_mnist
def test_both_engines_write_the_same_curves(tmp_path):
    """The same steps in every tag; at epoch ends each engine's own record
    (the engines' records agree to round-off: tests/test_engine.py)."""
    config = RUN.replace(max_device_batch=32, epochs=2)
    fast, fast_scalars, _ = trained(tmp_path / "fast", config, every_updates=3, engine="fast")
    fit, fit_scalars, _ = trained(tmp_path / "fit", config, every_updates=3, engine="fit")
    assert fast_scalars.keys() == fit_scalars.keys()
    for tag in fast_scalars:
        assert [s for s, _ in fast_scalars[tag]] == [s for s, _ in fit_scalars[tag]], tag
    for record, scalars in ((fast, fast_scalars), (fit, fit_scalars)):
        assert epoch_end(scalars, "train/loss", record["rows"]) == pytest.approx(
            [r["loss"] for r in record["rows"]], rel=1e-6)


@needs_mnist
def test_a_run_trained_again_logs_once_and_a_stored_run_not_at_all(tmp_path):
    _, first, sweep = trained(tmp_path, RUN.replace(epochs=1))
    folder = sweep.curves.log_dir(RUN.replace(epochs=1))
    files = sorted(folder.iterdir())
    # A run trained again (its record lost, as after a kill mid-run): one log, not two.
    for record in tmp_path.glob("*.json"):
        record.unlink()
    _, again, _ = trained(tmp_path, RUN.replace(epochs=1))
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1
    assert [s for s, _ in again["train/loss"]] == [s for s, _ in first["train/loss"]] == [8]
    # Served from the store: nothing written.
    stamp = {p: p.stat().st_mtime_ns for p in folder.iterdir()}
    trained(tmp_path, RUN.replace(epochs=1))
    assert {p: p.stat().st_mtime_ns for p in folder.iterdir()} == stamp
    assert files  # the first run wrote its file


@needs_mnist
def test_tensorboard_0_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORBOARD", "0")
    sweep = Sweep(tmp_path, log=io.StringIO())
    sweep.run([RUN.replace(epochs=1)])
    assert sweep.load(RUN.replace(epochs=1))["status"] == "finished"
    assert not (tmp_path / "tensorboard").exists()


@pytest.mark.slow  # a figure in a subprocess (~6 s)
def test_a_bad_tensorboard_value_is_a_one_line_error():
    from conftest import without_thread_budget
    import os

    env = without_thread_budget({**os.environ, "TENSORBOARD": "yes"})
    out = subprocess.run([sys.executable, "-m", "reproduce.papers.lr_scaling", "--preset", "smoke"],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert our_lines(out.stderr) == [
        "error: TENSORBOARD='yes': expected one of 1, 0 (1 (default): every run writes its "
        "curves; 0: none)."], out.stderr


def test_every_updates_must_be_a_positive_count():
    with pytest.raises(ValueError, match="every_updates=0: expected an integer >= 1"):
        board.RunCurves("unused", None, None, every_updates=0)


def test_by_default_a_run_writes_about_once_per_compiled_call():
    """A call trains BATCHES_PER_CALL (100) micro-batches: 100 updates at k = 1,
    25 at k = 4, and at least 1 however large k is."""
    from types import SimpleNamespace

    def interval(k):
        return board.RunCurves("unused", None, SimpleNamespace(accumulation_steps=k)).interval()

    assert [interval(k) for k in (1, 4, 3, 100, 256)] == [100, 25, 33, 1, 1]
    assert board.RunCurves("unused", None, None, every_updates=7).interval() == 7


def test_make_tensorboard_serves_one_figure_or_all_and_names_a_bad_one(tmp_path):
    from reproduce.runs.cli import UserError

    assert board.log_root("fig-dont-decay", tmp_path) == tmp_path / "dont_decay" / "tensorboard"
    assert board.log_root("small_batch", tmp_path) == tmp_path / "small_batch" / "tensorboard"
    assert board.log_root(None, tmp_path) == tmp_path
    with pytest.raises(UserError, match="FIGURE='fig-nope': expected one of small_batch, "):
        board.log_root("fig-nope", tmp_path)
