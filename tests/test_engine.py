"""The fast engine trains the same run as model.fit, on TensorFlow and on JAX.

Every test here runs on the current backend; `make test` runs this file
again under KERAS_BACKEND=jax (the Makefile's backend matrix).
"""

import io
from pathlib import Path

import keras
import numpy as np
import pytest

from batchsize.callbacks import BatchSizeSchedule, WeightDistance
from reproduce.runs.engine import FastEngine
from reproduce.runs.pipeline import EpochPlan, crop, crop_on_device, epoch_arrays
from reproduce.runs.config import RunConfig
from reproduce.runs.train import train
from roundoff import RoundOff, examples_reordered, smooth_convnet, smooth_model_registered

ROOT = Path(__file__).resolve().parent.parent
RNG = np.random.default_rng(0)
X = RNG.normal(size=(100, 12, 12, 3)).astype("float32")
Y = RNG.integers(0, 10, 100).astype("int32")
X_TEST, Y_TEST = X[:40] + 0.5, Y[:40]


def weights(model):
    return [keras.ops.convert_to_numpy(v) for v in model.weights]


def test_device_crop_equals_a_hand_written_crop():
    x = RNG.normal(size=(6, 5, 7, 2)).astype("float32")
    plan = EpochPlan(6, epoch=1, seed=0, augment=True)
    expected = []
    for i, n in enumerate(plan.order):  # pad, slice the window, mirror
        padded = np.pad(x[n], ((4, 4), (4, 4), (0, 0)))
        window = padded[plan.dy[i]:plan.dy[i] + 5, plan.dx[i]:plan.dx[i] + 7]
        expected.append(window[:, ::-1] if plan.flip[i] else window)
    assert plan.flip.any() and not plan.flip.all()
    on_device = crop_on_device(keras.ops.convert_to_tensor(x[plan.order]),
                               plan.dy, plan.dx, plan.flip, plan.pad)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(on_device), np.stack(expected))
    np.testing.assert_array_equal(crop(x[plan.order], plan.dy, plan.dx, plan.flip, 4),
                                  np.stack(expected))


def compiled_model(momentum=0.9):
    """Two conv + batch-norm blocks (tests/roundoff.py's smooth_convnet): what
    the engine must get right (batch statistics, moving averages,
    augmentation) at a fraction of ResNet-8's compile time, which on JAX is
    most of these tests' cost, and smooth, so round-off stays round-off."""
    keras.utils.set_random_seed(0)
    model = smooth_convnet(X.shape[1:], 10)
    model.compile(keras.optimizers.SGD(0.05, momentum=momentum),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


@pytest.mark.slow
def test_chunked_steps_equal_fit_with_a_momentum_change_and_weight_records():
    """3 steps per call, a 100-example epoch at batch 16 (6 full batches and
    one of 4), the momentum raised at epoch 1 (a retrace), WeightDistance
    records at iterations 1, 2, 3, ... in between calls."""
    def callbacks():
        return [BatchSizeSchedule(16, 0.05, len(X), momentum=((0, 0.5), (1, 0.9))),
                WeightDistance()]

    def with_fit():
        model, model_callbacks, history = compiled_model(), callbacks(), []
        for epoch in range(2):
            fit = model.fit(*epoch_arrays(X, Y, epoch, seed=3, augment=True), batch_size=16,
                            shuffle=False, epochs=epoch + 1, initial_epoch=epoch, verbose=0,
                            validation_data=(X_TEST, Y_TEST), callbacks=model_callbacks)
            history.append({k: v[-1] for k, v in fit.history.items()})
        return model, model_callbacks, history[-1]

    reference, ref_callbacks, last = with_fit()
    with examples_reordered(16):  # the same batches, their sums in another order
        reordered, reordered_callbacks, reordered_last = with_fit()

    model, fast_callbacks = compiled_model(), callbacks()
    engine = FastEngine(model, X, Y, batches_per_call=3)
    logs = engine.fit(2, 16, seed=3, augment=True, validation_data=(X_TEST, Y_TEST),
                      callbacks=fast_callbacks)

    RoundOff(reference, reordered).assert_agrees(model, "weights, fast engine vs fit")
    for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
        resolution = 1 / len(X_TEST) if name == "val_accuracy" else (
            1 / len(X) if name == "accuracy" else 0.0)
        RoundOff(last[name], reordered_last[name], resolution).assert_agrees(logs[name], name)
    # Traced for 16, then for the epoch's last batch of 4 (JAX: a function per
    # size; TensorFlow: the same function once more, for any size), and all
    # again when the momentum changes.
    last_size = 4 if keras.backend.backend() == "jax" else None
    assert engine.compiled_batch_sizes == [16, last_size, 16, last_size]
    a, b = ref_callbacks[1].history, fast_callbacks[1].history
    # fit calls back after every step; the engine stops exactly where a record is due.
    assert list(a["iteration"]) == list(b["iteration"]) == [*range(9), 10, 12, 14]
    RoundOff(a["total"].to_numpy(), reordered_callbacks[1].history["total"].to_numpy()
             ).assert_agrees(b["total"].to_numpy(), "distances from w0")


def wrong_last_micro_batch_weight(optimizer):
    """`GradientAccumulator._closes_window` with the bug the round-off check
    must catch: a short last micro-batch weighted as a full one."""
    n, closes = optimizer._correct_closes_window()
    known = keras.ops.greater(optimizer.epoch_examples, 0)
    full = keras.ops.cast(optimizer.micro_batch_size, "float32")
    return keras.ops.where(known, full, n), closes


ENGINE_CASES = [
    dict(augment=True, batch_size=25, batch_milestones=(1,), batch_factor=2,
         max_device_batch=25, momentum=0.9),  # batch 25, then 50 = 2 x 25 accumulated
    # 100 examples in micro-batches of 16 leave a last one of 4: the partial path.
    dict(augment="shift", optimizer="adam", lr=1e-3, accumulation=2, batch_size=32),
    # ... and with 4 x 16 that one shares its window with two full ones (16 + 16 + 4),
    # so its weight matters (the negative control below).
    dict(augment="shift", momentum=0.9, lr=0.05, accumulation=4, batch_size=64),
    dict(augment="shift", optimizer="adam", lr=1e-3, accumulation=2, batch_size=20),
]
if keras.backend.backend() != "tensorflow":
    # The JAX run keeps the case with every path (partial micro-batch, its
    # window, the negative control); TensorFlow's runs all four, twice (oneDNN on, off).
    ENGINE_CASES = ENGINE_CASES[2:3]


@pytest.mark.slow
@pytest.mark.parametrize("options", ENGINE_CASES)
def test_runner_engines_train_the_same_run(options, monkeypatch):
    """The fast engine lands within the round-off that `fit` shows against
    itself with every batch's examples in another order (tests/roundoff.py).
    That covers what differs by host and optimizer: oneDNN's kernels, an
    AVX-512 CPU's rounding of a dynamic-shape batch, and Adam's step
    lr * m / sqrt(v), which turns round-off in a near-zero gradient into a step
    of up to lr (the reordered fit shows the same amplification)."""
    with smooth_model_registered() as model:
        check_engines_train_the_same_run(RunConfig(model=model, norm="batch", epochs=2, seed=1,
                                                   **options), monkeypatch)


def check_engines_train_the_same_run(config, monkeypatch):
    data = (X, Y, X_TEST, Y_TEST)
    schedule = config.training_schedule(len(X))
    block = schedule[0].physical_batch
    assert all(epoch.physical_batch % block == 0 for epoch in schedule)
    fit, fit_model = train(config.replace(engine="fit"), data=data, return_model=True)
    with examples_reordered(block):
        again, again_model = train(config.replace(engine="fit"), data=data, return_model=True)
    fast, fast_model = train(config.replace(engine="fast"), data=data, return_model=True)
    noise = RoundOff(fit_model, again_model)
    noise.assert_agrees(fast_model, f"weights, fast engine vs fit, {config}")
    for a, b, r in zip(fit["rows"], fast["rows"], again["rows"], strict=True):
        assert (a["updates"], a["batch_size"], a["lr"]) == (b["updates"], b["batch_size"], b["lr"])
        for name in ("loss", "accuracy", "test_loss", "test_accuracy"):
            resolution = 1 / len(X_TEST) if name == "test_accuracy" else (
                1 / len(X) if name == "accuracy" else 0.0)
            RoundOff(a[name], r[name], resolution).assert_agrees(b[name], name)
    if config.optimizer == "sgd" and len(X) % block and len(X) % config.batch_size > block:
        # Negative control: the same check fails on a real engine bug, the
        # short last micro-batch weighted as a full one.
        from batchsize.optimizers import GradientAccumulator

        monkeypatch.setattr(GradientAccumulator, "_correct_closes_window",
                            GradientAccumulator._closes_window, raising=False)
        monkeypatch.setattr(GradientAccumulator, "_closes_window", wrong_last_micro_batch_weight)
        _, broken = train(config.replace(engine="fast"), data=data, return_model=True)
        noise.assert_differs(broken, "weights with the last micro-batch weighted wrongly")


@pytest.mark.slow
def test_training_set_too_large_for_the_device_is_streamed_with_a_message():
    resident = compiled_model()
    FastEngine(resident, X, Y, batches_per_call=4).fit(1, 16, augment=True)
    streamed, log = compiled_model(), io.StringIO()
    engine = FastEngine(streamed, X, Y, batches_per_call=4, device_data_limit=1000, log=log)
    engine.fit(1, 16, augment=True)
    assert not engine.resident
    assert "exceeds the device budget (0 MiB); streaming 4 batches per copy" in log.getvalue()
    with examples_reordered(16):
        reordered = compiled_model()
        FastEngine(reordered, X, Y, batches_per_call=4).fit(1, 16, augment=True)
    RoundOff(resident, reordered).assert_agrees(streamed, "weights, streamed vs resident")


def test_bad_engine_arguments_are_named():
    with pytest.raises(ValueError, match="engine='slow': expected one of fast, fit"):
        RunConfig(engine="slow")
    with pytest.raises(ValueError, match="batches_per_call=0: expected an integer >= 1"):
        FastEngine(compiled_model(), X, Y, batches_per_call=0)
