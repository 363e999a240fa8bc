"""GradientAccumulator against its independent reference: the inner optimizer
stepping once on the concatenated batch (plain large-batch training)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from batchsize.callbacks import EpochAlignedAccumulation
from batchsize.optimizers import GradientAccumulator, micro_batches_until
from roundoff import RoundOff, reordered

ROOT = Path(__file__).resolve().parent.parent
N, MICRO, STEPS = 100, 16, 3  # micro-batches 16 x 6 + 4; windows 48, 48, 4


def data(n=N, d=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype("float32"), rng.integers(0, classes, n)


def small_model(norm=None, d=5):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((d,)), keras.layers.Dense(8)]
    if norm == "batch":
        layers.append(keras.layers.BatchNormalization())
    elif norm == "group":
        layers.append(keras.layers.GroupNormalization(groups=2))
    layers += [keras.layers.Activation("tanh"), keras.layers.Dense(3)]
    return keras.Sequential(layers)


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def large_batch(make_optimizer, x, y, batch, epochs=2, norm=None):
    model = small_model(norm, x.shape[1])
    model.compile(make_optimizer(), LOSS)
    model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=False, verbose=0)
    return model


def accumulated(make_optimizer, x, y, micro, steps, epochs=2, norm=None, aligned=True):
    model = small_model(norm, x.shape[1])
    model.compile(GradientAccumulator(make_optimizer(), steps), LOSS)
    callbacks = [EpochAlignedAccumulation(len(x), micro)] if aligned else []
    model.fit(x, y, batch_size=micro, epochs=epochs, shuffle=False, verbose=0,
              callbacks=callbacks)
    return model


def assert_same_weights(a, b, atol=0):
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, atol=atol, rtol=0)


def round_off(train_reference, x, y, block):
    """The reference trained on (x, y) and again with the examples of every
    block of `block` in another order (tests/roundoff.py): its RoundOff."""
    return RoundOff(train_reference(x, y).get_weights(),
                    train_reference(*reordered(block, x, y)).get_weights())


OPTIMIZERS = {
    "sgd": lambda: keras.optimizers.SGD(0.1),
    "momentum": lambda: keras.optimizers.SGD(0.1, momentum=0.9),
    "nesterov": lambda: keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
    "adam": lambda: keras.optimizers.Adam(0.01),
    "adamw": lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1),
    "rmsprop": lambda: keras.optimizers.RMSprop(0.01),
    "adagrad": lambda: keras.optimizers.Adagrad(0.1),
    "lion": lambda: keras.optimizers.Lion(0.001),
    "sgd_weight_decay": lambda: keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.05),
    "clipnorm": lambda: keras.optimizers.SGD(0.5, momentum=0.9, clipnorm=0.05),
    "global_clipnorm": lambda: keras.optimizers.Adam(0.01, global_clipnorm=0.05),
    "ema": lambda: keras.optimizers.SGD(0.1, momentum=0.9, use_ema=True,
                                        ema_momentum=0.5, ema_overwrite_frequency=2),
    "schedule": lambda: keras.optimizers.SGD(
        keras.optimizers.schedules.PiecewiseConstantDecay([2, 4], [0.5, 0.1, 0.02]),
        momentum=0.9),
}


# make test-fast keeps one of each kind: plain, stateful, clipping, EMA, a schedule.
FAST_OPTIMIZERS = ("sgd", "momentum", "adam", "clipnorm", "ema", "schedule")


# Off TensorFlow (make test's second backend) only those six: the wrapper's
# arithmetic is the same code under every optimizer.
ON_TENSORFLOW = keras.backend.backend() == "tensorflow"


@pytest.mark.parametrize("name", [name if name in FAST_OPTIMIZERS else
                                  pytest.param(name, marks=pytest.mark.slow)
                                  for name in OPTIMIZERS
                                  if name in FAST_OPTIMIZERS or ON_TENSORFLOW])
def test_equals_one_large_batch_step_with_unequal_micro_batches(name):
    x, y = data()
    reference = large_batch(OPTIMIZERS[name], x, y, MICRO * STEPS)
    noise = round_off(lambda x, y: large_batch(OPTIMIZERS[name], x, y, MICRO * STEPS), x, y,
                      MICRO * STEPS)
    model = accumulated(OPTIMIZERS[name], x, y, MICRO, STEPS)
    noise.assert_agrees(model.get_weights(), f"{name}: accumulated vs the large batch")
    # Iterations (and so schedules, EMA, clipping) count updates: 3 per epoch.
    assert int(model.optimizer.iterations.numpy()) == 6
    assert int(reference.optimizer.iterations.numpy()) == 6


def test_matches_keras_built_in_accumulation_on_equal_micro_batches():
    x, y = data(n=96)
    make = OPTIMIZERS["momentum"]

    def built_in(x, y):
        model = small_model()
        model.compile(keras.optimizers.SGD(0.1, momentum=0.9, gradient_accumulation_steps=3),
                      LOSS)
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        return model

    round_off(built_in, x, y, 16).assert_agrees(
        accumulated(make, x, y, 16, 3, aligned=False).get_weights(), "wrapper vs built-in")


def test_inner_state_does_not_move_between_updates():
    var = keras.Variable(np.ones(3, "float32"))
    inner = keras.optimizers.Adam(0.1)
    opt = GradientAccumulator(inner, accumulation_steps=3)
    opt.build([var])
    before = [np.array(v) for v in inner.variables]
    opt.apply([np.array([1.0, 2.0, 3.0], "float32")], [var])
    opt.apply([np.array([3.0, 2.0, 1.0], "float32")], [var])
    for b, v in zip(before, inner.variables):
        np.testing.assert_array_equal(b, np.array(v))
    np.testing.assert_array_equal(var.numpy(), np.ones(3))
    opt.apply([np.array([2.0, 2.0, 2.0], "float32")], [var])
    # One Adam step on the mean gradient (2, 2, 2): each weight moves by lr.
    np.testing.assert_allclose(var.numpy(), np.ones(3) - 0.1, atol=1e-6)
    assert int(inner.iterations.numpy()) == 1


def test_without_epoch_layout_an_open_window_is_carried():
    x, y = data()
    make = OPTIMIZERS["momentum"]
    model = accumulated(make, x, y, MICRO, STEPS, epochs=1, aligned=False)
    opt = model.optimizer
    assert int(opt.iterations.numpy()) == 2  # 7 micro-batches: 2 windows + 1 open
    assert int(opt.micro_step.numpy()) == 1
    assert float(opt.window_examples.numpy()) == 1.0  # equal weights when unaligned
    assert any(np.abs(a.numpy()).sum() > 0 for a in opt.accumulators)
    # The two closed windows were exactly the large batches of x[:48], x[48:96].
    round_off(lambda x, y: large_batch(make, x, y, 48, epochs=1), x[:96], y[:96], 48
              ).assert_agrees(model.get_weights(), "the two closed windows")
    # 2 more updates: the open window's STEPS - 1 micro-batches, then STEPS more.
    assert micro_batches_until(opt, 2) == 2 * STEPS - 1
    assert micro_batches_until(keras.optimizers.SGD(0.1), 2) == 2  # one step per update


def test_batch_size_is_the_micro_batch_times_the_steps():
    x, y = data()
    model = accumulated(OPTIMIZERS["momentum"], x, y, MICRO, STEPS, epochs=1)
    assert model.optimizer.batch_size == MICRO * STEPS
    model.optimizer.set_accumulation_steps(2 * STEPS)
    assert model.optimizer.batch_size == 2 * MICRO * STEPS


def test_steps_change_between_epochs_without_recompiling():
    x, y = data(n=64)
    make = OPTIMIZERS["adam"]

    class DoubleSteps(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                self.function = self.model.train_function
                self.model.optimizer.set_accumulation_steps(4)

    model = small_model()
    model.compile(GradientAccumulator(make(), 2), LOSS)
    change = DoubleSteps()
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0,
              callbacks=[change, EpochAlignedAccumulation(64, 16)])
    assert model.train_function is change.function
    assert int(model.optimizer.iterations.numpy()) == 2 + 1

    def reference(x, y):
        native = small_model()
        native.compile(make(), LOSS)
        native.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
        native.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0)
        return native

    round_off(reference, x, y, 16).assert_agrees(model.get_weights(), "batch 32, then 64")


def test_batch_norm_sees_micro_batches_so_accumulation_differs_group_norm_does_not():
    x, y = data(n=96)
    make = OPTIMIZERS["sgd"]
    for norm, same in (("batch", False), ("group", True), (None, True)):
        a = accumulated(make, x, y, 16, 3, norm=norm).get_weights()
        noise = round_off(lambda x, y: large_batch(make, x, y, 48, norm=norm), x, y, 48)
        (noise.assert_agrees if same else noise.assert_differs)(a, f"norm={norm}")


@pytest.mark.skipif(keras.backend.backend() == "jax", reason=(
    "Keras's own LossScaleOptimizer.apply cannot run eagerly on JAX (its ops.cond has side "
    "effects); inside fit it is covered by the next test"))
def test_mixed_precision_non_finite_micro_batch_skips_its_whole_window():
    var = keras.Variable(np.ones(2, "float32"))
    lso = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(1.0), initial_scale=8.0)
    opt = GradientAccumulator(lso, accumulation_steps=2)
    opt.build([var])
    assert float(opt.scale_loss(1.0)) == 8.0  # the loss scale is the inner one's
    opt.apply([np.array([8.0, 8.0], "float32")], [var])
    opt.apply([np.array([np.inf, 8.0], "float32")], [var])
    np.testing.assert_array_equal(var.numpy(), [1.0, 1.0])  # whole window skipped
    assert float(lso.dynamic_scale.numpy()) == 4.0
    assert float(opt.window_examples.numpy()) == 0.0
    opt.apply([np.array([4.0, 4.0], "float32")], [var])
    opt.apply([np.array([8.0, 4.0], "float32")], [var])
    # Mean scaled gradient (6, 4) / scale 4 = (1.5, 1.0), one SGD step with lr 1.
    np.testing.assert_allclose(var.numpy(), [-0.5, 0.0], atol=1e-6)


def test_mixed_float16_model_trains_with_the_wrapper():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        x, y = data()
        model = small_model()
        opt = GradientAccumulator(keras.optimizers.LossScaleOptimizer(
            keras.optimizers.SGD(0.1)), 3)
        model.compile(opt, LOSS, auto_scale_loss=False)
        before = [w.copy() for w in model.get_weights()]
        history = model.fit(x, y, batch_size=16, verbose=0,
                            callbacks=[EpochAlignedAccumulation(N, 16)])
        assert np.isfinite(history.history["loss"][0])
        assert int(opt.iterations.numpy()) == 3
        assert any(np.abs(a - b).max() > 0 for a, b in zip(before, model.get_weights()))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_save_and_load_round_trips_the_wrapper_and_its_open_window(tmp_path):
    x, y = data()
    model = accumulated(OPTIMIZERS["adam"], x, y, MICRO, STEPS, epochs=1, aligned=False)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.optimizer, GradientAccumulator)
    assert loaded.optimizer.get_config()["accumulation_steps"] == STEPS
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    for m in (model, loaded):
        m.fit(x, y, batch_size=MICRO, epochs=1, shuffle=False, verbose=0)
    assert_same_weights(model, loaded, atol=0)


def test_the_callbacks_keep_their_old_import_path():
    from batchsize import callbacks
    from batchsize import optimizers

    assert optimizers.EpochAlignedAccumulation is callbacks.EpochAlignedAccumulation
    assert optimizers.AccumulatedNoiseScale is callbacks.AccumulatedNoiseScale
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        optimizers.Nope


def test_a_config_saved_with_the_old_argument_name_still_loads():
    config = {"name": "acc", "steps": 3,
              "inner_optimizer": keras.saving.serialize_keras_object(keras.optimizers.SGD(0.1))}
    optimizer = GradientAccumulator.from_config(config)
    assert optimizer.get_config()["accumulation_steps"] == 3
    assert optimizer.inner_optimizer.get_config()["learning_rate"] == pytest.approx(0.1)


def test_bad_steps_are_a_clear_error():
    with pytest.raises(ValueError, match="accumulation_steps must be an integer >= 1; "
                                         "got accumulation_steps=0"):
        GradientAccumulator(keras.optimizers.SGD(), accumulation_steps=0)
    with pytest.raises(TypeError, match="wraps a keras.optimizers.Optimizer"):
        GradientAccumulator("sgd", accumulation_steps=2)


def _run_script(script, **env):
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, capture_output=True,
        text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), **env})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.distribute")
def test_mirrored_strategy_on_two_logical_cpus_gives_the_large_batch_weights():
    # The reference is the plain large-batch step with no strategy: comparing
    # two strategies alone once hid an accumulator that never changed.
    out = _run_script("""
        import numpy as np, tensorflow as tf, keras
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from tests.test_accumulation import data, small_model, LOSS
        from tests.roundoff import RoundOff, reordered
        from batchsize.optimizers import GradientAccumulator
        from batchsize.callbacks import EpochAlignedAccumulation
        x, y = data(n=96)
        def run(strategy, steps, batch):
            with strategy.scope():
                model = small_model()
                sgd = keras.optimizers.SGD(0.1, momentum=0.9)
                model.compile(GradientAccumulator(sgd, steps) if steps > 1 else sgd, LOSS)
                start = model.get_weights()
            model.fit(x, y, batch_size=batch, epochs=2, shuffle=False, verbose=0,
                      callbacks=[EpochAlignedAccumulation(96, batch)] if steps > 1 else [])
            return start, model.get_weights()
        start, large = run(tf.distribute.get_strategy(), 1, 48)
        _, mirrored = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), 3, 16)
        # The round-off of the large batch on this host: the same run with the
        # examples of every replica's shard of 8 in another order.
        x, y = reordered(8, x, y)
        _, again = run(tf.distribute.get_strategy(), 1, 48)
        noise = RoundOff(large, again)
        print("MOVED", max(float(np.abs(a - b).max()) for a, b in zip(start, large)))
        print("AGREES", noise.agrees(mirrored), noise.describe(mirrored, "mirrored"))
    """)
    moved = float(out.split("MOVED")[-1].split()[0])
    assert moved > 1e-2
    assert "AGREES True" in out, out


# -- the gradient noise scale from the windows (McCandlish et al. 2018) ----------
@pytest.mark.slow  # thousands of steps for a statistical estimate
@pytest.mark.skipif(not ON_TENSORFLOW, reason="a statistical estimate: TensorFlow's run checks "
                    "it; the noise scale's arithmetic runs on JAX in the tests below")
def test_noise_scale_from_the_windows_matches_linear_regression_with_known_noise():
    """x ~ N(0, I_d), y = x.w* + sigma e, squared error, at w = w* + delta
    (the rate is 0): the per-example gradient is 2 x r, so G = 2 delta and
    tr(Sigma) = 4 ((d + 1)|delta|^2 + d sigma^2); B_simple is known (the same
    reference as tests/test_measures.py's `gradient_noise_scale`)."""
    d, sigma, micro, steps, windows = 4, 1.5, 64, 4, 1000
    rng = np.random.default_rng(0)
    w_star = rng.normal(size=d)
    delta = np.array([0.5, -0.5, 0.25, 0.0])
    x = rng.normal(size=(windows * steps * micro, d)).astype("float32")
    y = (x @ w_star + sigma * rng.normal(size=len(x)))[:, None].astype("float32")
    model = keras.Sequential([keras.Input((d,)), keras.layers.Dense(1, use_bias=False)])
    model.layers[0].kernel.assign((w_star + delta)[:, None].astype("float32"))
    optimizer = GradientAccumulator(keras.optimizers.SGD(0.0), steps, noise_scale_decay=0.995)
    model.compile(optimizer, "mse")
    assert np.isnan(optimizer.noise_scale_simple)  # nothing measured yet
    model.fit(x, y, batch_size=micro, epochs=1, shuffle=False, verbose=0,
              callbacks=[EpochAlignedAccumulation(len(x), micro)])
    expected = ((d + 1) * delta @ delta + d * sigma ** 2) / (delta @ delta)
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == windows
    assert optimizer.noise_scale_simple == pytest.approx(expected, rel=0.05)
    # Off by default, a clear error for a bad decay, and saved with the config.
    assert np.isnan(GradientAccumulator(keras.optimizers.SGD(0.1), 4).noise_scale_simple)
    with pytest.raises(ValueError, match=r"noise_scale_decay=1.0: expected None \(off\) or a decay"):
        GradientAccumulator(keras.optimizers.SGD(0.1), 4, noise_scale_decay=1.0)
    restored = GradientAccumulator.from_config(optimizer.get_config())
    assert restored.noise_scale_decay == 0.995


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.distribute")
def test_noise_scale_under_mirrored_strategy_matches_one_device_and_the_analytic_value():
    """The same regression on 1 device (small batch = the micro-batch of 64)
    and on 2 logical CPUs (small batch = each replica's 32), 1,000 windows of
    4 x 64 each, and on 2 CPUs without accumulation (the replicas' shards are
    the small batches; 2 per window instead of 8, so 4,000 windows averaged
    over ~1,000): all within 5% of the analytic B_simple = 21."""
    out = _run_script("""
        import numpy as np, tensorflow as tf, keras
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from batchsize.optimizers import GradientAccumulator
        from batchsize.callbacks import EpochAlignedAccumulation
        d, sigma, micro, windows = 4, 1.5, 64, 1000
        rng = np.random.default_rng(0)
        w_star, delta = rng.normal(size=d), np.array([0.5, -0.5, 0.25, 0.0])
        x = rng.normal(size=(windows * 4 * micro, d)).astype("float32")
        y = (x @ w_star + sigma * rng.normal(size=len(x)))[:, None].astype("float32")
        def run(strategy, steps, decay=0.995):
            with strategy.scope():
                model = keras.Sequential([keras.Input((d,)), keras.layers.Dense(1, use_bias=False)])
                model.layers[0].kernel.assign((w_star + delta)[:, None].astype("float32"))
                optimizer = GradientAccumulator(keras.optimizers.SGD(0.0), steps,
                                                noise_scale_decay=decay)
                model.compile(optimizer, "mse")
            n = len(x)
            model.fit(x[:n], y[:n], batch_size=micro, epochs=1, shuffle=False, verbose=0,
                      callbacks=[EpochAlignedAccumulation(n, micro)])
            return optimizer.noise_scale_simple
        mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        print("B_SIMPLE", run(tf.distribute.get_strategy(), 4), run(mirrored, 4), run(mirrored, 1, 0.999))
    """)
    one, two, replicas_only = map(float, out.split("B_SIMPLE")[-1].split())
    expected = 21.0  # ((d + 1)|delta|^2 + d sigma^2) / |delta|^2, as above
    for measured in (one, two, replicas_only):
        assert measured == pytest.approx(expected, rel=0.05)
    assert two == pytest.approx(one, rel=0.05)


def test_noise_scale_is_logged_by_the_callback_in_a_real_fit():
    from batchsize.callbacks import AccumulatedNoiseScale

    x, y = data(n=256)
    model = small_model()
    model.compile(GradientAccumulator(keras.optimizers.SGD(0.05), 4, noise_scale_decay=0.9), LOSS)
    logger = AccumulatedNoiseScale(every_updates=2)
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False,
                        callbacks=[EpochAlignedAccumulation(len(x), 16), logger])
    noise = history.history["noise_scale_simple"]
    assert len(noise) == 2 and all(np.isfinite(noise)) and noise[-1] == logger.history[-1][
        "noise_scale_simple"]
    assert [h["updates"] for h in logger.history] == list(range(2, 9, 2))  # 4 updates per epoch
    model.compile(keras.optimizers.SGD(0.05), LOSS)
    with pytest.raises(ValueError, match="needs the model's optimizer to be a GradientAccumulator"):
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[AccumulatedNoiseScale()])


# -- what the wrapper refuses, and the noise scale in examples -------------------
@pytest.mark.parametrize("argument", [
    dict(clipnorm=0.001), dict(clipvalue=1.0), dict(global_clipnorm=1.0),
    dict(weight_decay=0.1), dict(use_ema=True), dict(loss_scale_factor=2.0),
    dict(gradient_accumulation_steps=2)])
def test_the_wrapper_refuses_base_optimizer_arguments_it_would_ignore(argument):
    (name, value), = argument.items()
    with pytest.raises(ValueError, match=rf"does not take {name}={value!r}: it would be "
                                         "ignored. Set it on the inner optimizer"):
        GradientAccumulator(keras.optimizers.SGD(0.01), 2, **argument)


def test_a_config_that_carries_the_base_defaults_still_loads():
    defaults = dict(weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None,
                    use_ema=False, ema_momentum=0.99, ema_overwrite_frequency=None,
                    loss_scale_factor=None, gradient_accumulation_steps=None, learning_rate=0.0)
    config = {"name": "acc", "accumulation_steps": 4, **defaults,
              "inner_optimizer": keras.saving.serialize_keras_object(
                  keras.optimizers.SGD(0.1, clipnorm=1.0))}
    optimizer = GradientAccumulator.from_config(config)
    assert optimizer.get_config()["accumulation_steps"] == 4
    assert optimizer.inner_optimizer.clipnorm == 1.0  # where clipping belongs
    with pytest.raises(ValueError, match="unexpected arguments: colour"):
        GradientAccumulator(keras.optimizers.SGD(0.1), 2, colour="blue")


def regression_at_fixed_weights(windows, micro, steps, d=4, sigma=1.5, seed=0):
    """Linear least squares at w = w* + delta with the rate 0: per-example
    gradient 2 x r, G = 2 delta, tr(Sigma) = 4 ((d + 1)|delta|^2 + d sigma^2),
    so B_simple = ((d + 1)|delta|^2 + d sigma^2) / |delta|^2 = 21 examples."""
    rng = np.random.default_rng(seed)
    w_star, delta = rng.normal(size=d), np.array([0.5, -0.5, 0.25, 0.0])
    x = rng.normal(size=(windows * steps * micro, d)).astype("float32")
    y = (x @ w_star + sigma * rng.normal(size=len(x)))[:, None].astype("float32")
    expected = ((d + 1) * delta @ delta + d * sigma ** 2) / (delta @ delta)

    def model():
        m = keras.Sequential([keras.Input((d,)), keras.layers.Dense(1, use_bias=False)])
        m.layers[0].kernel.assign((w_star + delta)[:, None].astype("float32"))
        return m
    return model, x, y, expected


@pytest.mark.slow  # thousands of steps for a statistical estimate
def test_noise_scale_is_in_examples_with_or_without_the_epoch_callback():
    """B_simple is 21 examples; with micro-batches of 16 a count in micro-batches
    would say 1.3. Without EpochAlignedAccumulation the wrapper must either be
    told the micro-batch (`micro_batch_size`) or say it does not know."""
    micro, steps = 16, 8
    model, x, y, expected = regression_at_fixed_weights(500, micro, steps)

    def measured(callbacks=(), **options):
        m = model()
        optimizer = GradientAccumulator(keras.optimizers.SGD(0.0), steps,
                                        noise_scale_decay=0.995, **options)
        m.compile(optimizer, "mse")
        m.fit(x, y, batch_size=micro, epochs=1, shuffle=False, verbose=0,
              callbacks=list(callbacks))
        return optimizer

    aligned = measured([EpochAlignedAccumulation(len(x), micro)]).noise_scale_simple
    declared = measured(micro_batch_size=micro).noise_scale_simple
    assert aligned == pytest.approx(expected, rel=0.1)
    # The epoch is whole windows, so both weight every micro-batch as 16 examples.
    assert declared == pytest.approx(aligned, rel=1e-5)
    unknown = measured()
    with pytest.warns(UserWarning, match="micro-batch size is unknown.*add "
                                         "EpochAlignedAccumulation"):
        assert np.isnan(unknown.noise_scale_simple)
    with pytest.raises(ValueError, match="micro_batch_size=0: expected None or the batch size"):
        GradientAccumulator(keras.optimizers.SGD(0.0), 2, micro_batch_size=0)
