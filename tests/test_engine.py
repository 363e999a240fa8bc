"""The fast engine trains the same run as model.fit, on TensorFlow and on JAX.

Every test here runs on the current backend; `make test` runs this file
again under KERAS_BACKEND=jax (the Makefile's backend matrix).
"""

import io
from pathlib import Path

import keras
import numpy as np
import pytest

from callbacks import BatchSizeSchedule, WeightDistance
from reproduce import settings
from reproduce.engine import FastEngine
from reproduce.pipeline import EpochPlan, crop, crop_on_device, epoch_arrays
from reproduce.runner import RunConfig, train

ROOT = Path(__file__).resolve().parent.parent
RNG = np.random.default_rng(0)
X = RNG.normal(size=(100, 12, 12, 3)).astype("float32")
Y = RNG.integers(0, 10, 100).astype("int32")
X_TEST, Y_TEST = X[:40] + 0.5, Y[:40]


def weights(model):
    return [keras.ops.convert_to_numpy(v) for v in model.weights]


def assert_same_weights(a, b):
    for u, v in zip(weights(a), weights(b), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=2e-6)


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


def small_convnet():
    """Two conv + batch-norm blocks: what the engine must get right (batch
    statistics, moving averages, augmentation) at a fraction of ResNet-8's
    compile time, which on JAX is most of these tests' cost."""
    layers = keras.layers
    inputs = keras.Input(X.shape[1:])
    h = inputs
    for _ in range(2):
        h = layers.Conv2D(8, 3, padding="same", use_bias=False)(h)
        h = layers.ReLU()(layers.BatchNormalization()(h))
    return keras.Model(inputs, layers.Dense(10)(layers.GlobalAveragePooling2D()(h)))


def compiled_model(momentum=0.9):
    keras.utils.set_random_seed(0)
    model = small_convnet()
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

    reference, ref_callbacks = compiled_model(), callbacks()
    history = []
    for epoch in range(2):
        fit = reference.fit(*epoch_arrays(X, Y, epoch, seed=3, augment=True), batch_size=16,
                            shuffle=False, epochs=epoch + 1, initial_epoch=epoch, verbose=0,
                            validation_data=(X_TEST, Y_TEST), callbacks=ref_callbacks)
        history.append({k: v[-1] for k, v in fit.history.items()})

    model, fast_callbacks = compiled_model(), callbacks()
    engine = FastEngine(model, X, Y, batches_per_call=3)
    logs = engine.fit(2, 16, seed=3, augment=True, validation_data=(X_TEST, Y_TEST),
                      callbacks=fast_callbacks)

    assert_same_weights(model, reference)
    for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert logs[name] == pytest.approx(history[-1][name], rel=1e-4), name
    # Traced for 16, then for the epoch's last batch of 4 (JAX: a function per
    # size; TensorFlow: the same function once more, for any size), and all
    # again when the momentum changes.
    last = 4 if keras.backend.backend() == "jax" else None
    assert engine.compiled_batch_sizes == [16, last, 16, last]
    a, b = ref_callbacks[1].history, fast_callbacks[1].history
    # fit calls back after every step; the engine stops exactly where a record is due.
    assert list(a["iteration"]) == list(b["iteration"]) == [*range(9), 10, 12, 14]
    np.testing.assert_allclose(a["total"], b["total"], rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("options", [
    dict(augment=True, batch_size=25, batch_milestones=(1,), batch_factor=2,
         max_device_batch=25, momentum=0.9),  # batch 25, then 50 = 2 x 25 accumulated
    # 100 examples in micro-batches of 16 leave a last one of 4: the partial path.
    dict(augment="shift", optimizer="adam", lr=1e-3, accumulation=2, batch_size=32),
    dict(augment="shift", momentum=0.9, lr=0.05, accumulation=2, batch_size=32),
    dict(augment="shift", optimizer="adam", lr=1e-3, accumulation=2, batch_size=20),
])
def test_runner_engines_train_the_same_run(options):
    config = RunConfig(model="resnet8", norm="batch", epochs=2, seed=1, **options)
    data = (X, Y, X_TEST, Y_TEST)
    fit, fit_model = train(config.replace(engine="fit"), data=data, return_model=True)
    fast, fast_model = train(config.replace(engine="fast"), data=data, return_model=True)
    backend, onednn = settings.in_force()
    # On TensorFlow the fast engine runs a partial last batch through its
    # dynamic-shape trace, fit with a static shape (reproduce/engine.py).
    partial = backend == "tensorflow" and len(X) % (config.batch_size // config.accumulation)
    amplified = config.optimizer == "adam" and bool(onednn or partial)
    if amplified:
        # The two engines' graphs then get other kernels (oneDNN's, or on an
        # AVX-512 CPU Eigen's for the dynamic shape even with oneDNN off): their
        # sums round differently (SGD on the same path: 1.2e-7 apart), and
        # Adam's step lr * m / sqrt(v) turns round-off in a near-zero gradient
        # into a step of up to lr. Measured: 1.6e-3 after 4 updates at lr 1e-3,
        # losses equal to 5e-6 (README). Adam is compared to round-off where
        # the batches divide the data with oneDNN off (`make test`'s matrix).
        for u, v in zip(weights(fast_model), weights(fit_model), strict=True):
            np.testing.assert_allclose(u, v, atol=5 * config.lr)
    else:
        assert_same_weights(fast_model, fit_model)
    for a, b in zip(fit["rows"], fast["rows"], strict=True):
        assert (a["updates"], a["batch_size"], a["lr"]) == (b["updates"], b["batch_size"], b["lr"])
        for name in ("loss", "accuracy", "test_loss", "test_accuracy"):
            assert b[name] == pytest.approx(a[name], rel=1e-3 if amplified else 1e-4,
                                            abs=1e-6), name


@pytest.mark.slow
def test_training_set_too_large_for_the_device_is_streamed_with_a_message():
    resident = compiled_model()
    FastEngine(resident, X, Y, batches_per_call=4).fit(1, 16, augment=True)
    streamed, log = compiled_model(), io.StringIO()
    engine = FastEngine(streamed, X, Y, batches_per_call=4, device_data_limit=1000, log=log)
    engine.fit(1, 16, augment=True)
    assert not engine.resident
    assert "exceeds the device budget (0 MiB); streaming 4 batches per copy" in log.getvalue()
    assert_same_weights(streamed, resident)


def test_bad_engine_arguments_are_named():
    with pytest.raises(ValueError, match="engine='slow': expected one of fast, fit"):
        RunConfig(engine="slow")
    with pytest.raises(ValueError, match="batches_per_call=0: expected an integer >= 1"):
        FastEngine(compiled_model(), X, Y, batches_per_call=0)
