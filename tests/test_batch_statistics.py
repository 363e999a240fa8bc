"""Batch norm statistics recomputed exactly (`models.recompute_batch_norm_statistics`),
against numpy's computation of the same batches, on every backend."""

import keras
import numpy as np
import pytest

from batchsize.models import (GhostBatchNormalization, RecomputeBatchNormStatistics,
                    recompute_batch_norm_statistics)
from roundoff import FACTOR

GHOST = 4


def two_norm_model(seed=0):
    """Dense -> BatchNormalization -> tanh -> Dense -> GhostBatchNormalization(4)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(5)(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Activation("tanh")(h)
    h = keras.layers.Dense(3)(h)
    out = GhostBatchNormalization(ghost_size=GHOST, name="gbn")(h)
    return keras.Model(inputs, out)


def numpy_statistics(model, x, batch_size, num_batches, dtype, reverse=False):
    """The average over the batches of each layer's training-mode statistics,
    computed in numpy at `dtype` (batches summed in reverse order if asked)."""
    w = [np.asarray(keras.ops.convert_to_numpy(v), dtype) for v in model.weights]
    by_name = {v.path: a for v, a in zip(model.weights, w)}

    def get(layer, name):
        return next(a for path, a in by_name.items() if path.startswith(layer) and
                    path.endswith(name))

    dense1, dense2 = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    bn_stats, gbn_stats = [], []
    for k in range(num_batches):
        xb = np.asarray(x[k * batch_size:(k + 1) * batch_size], dtype)
        h1 = xb @ get(dense1.name, "kernel") + get(dense1.name, "bias")
        mu, var = h1.mean(0), h1.var(0)
        bn_stats.append((mu, var))
        a = np.tanh((h1 - mu) / np.sqrt(var + dtype(1e-3)) * get("bn", "gamma")
                    + get("bn", "beta"))
        h2 = a @ get(dense2.name, "kernel") + get(dense2.name, "bias")
        for g in range(0, len(h2), GHOST):
            gbn_stats.append((h2[g:g + GHOST].mean(0), h2[g:g + GHOST].var(0)))
    order = slice(None, None, -1) if reverse else slice(None)
    return {name: tuple(sum(s[i] for s in stats[order]) / dtype(len(stats)) for i in (0, 1))
            for name, stats in (("bn", bn_stats), ("gbn", gbn_stats))}


def moving(model, name):
    layer = model.get_layer(name)
    return tuple(keras.ops.convert_to_numpy(v) for v in (layer.moving_mean, layer.moving_variance))


@pytest.mark.parametrize("batch_size,num_batches", [(8, 5), (6, None)])
def test_recomputed_statistics_are_the_average_of_the_training_batches(batch_size, num_batches):
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, size=(40, 6)).astype("float32")
    model = two_norm_model()
    model(x[:8], training=True)  # moving statistics away from their initial values
    gamma = keras.ops.convert_to_numpy(model.get_layer("bn").gamma)
    used = recompute_batch_norm_statistics(model, x, batch_size, num_batches)
    expected_batches = num_batches or len(x) // batch_size
    assert used == expected_batches
    exact = numpy_statistics(model, x, batch_size, used, np.float64)
    # The float32 round-off of the same computation, measured in the test: numpy in float32
    # with the batches summed in the other order, against float64.
    rounded = numpy_statistics(model, x, batch_size, used, np.float32, reverse=True)
    for name in ("bn", "gbn"):
        for got, want, other in zip(moving(model, name), exact[name], rounded[name]):
            roundoff = max(np.abs(other - want).max(), np.spacing(np.float32(np.abs(want).max())))
            assert np.abs(got - want).max() <= FACTOR * roundoff, name
    # Only the statistics change, and the momentum is restored.
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("bn").gamma), gamma)
    assert model.get_layer("bn").momentum == 0.99
    assert model.get_layer("gbn").record_statistics is False


def test_an_ema_of_the_same_batches_is_not_the_average():
    """Negative control: what the moving averages hold after the same batches
    in training mode is far from the exact average the function computes."""
    x = np.random.default_rng(1).normal(1.0, 2.0, size=(40, 6)).astype("float32")
    model = two_norm_model()
    for k in range(5):
        model(x[k * 8:(k + 1) * 8], training=True)
    exact = numpy_statistics(model, x, 8, 5, np.float64)
    assert np.abs(moving(model, "bn")[0] - exact["bn"][0]).max() > 0.1


def test_bad_arguments_name_the_value():
    model = two_norm_model()
    x = np.zeros((10, 6), "float32")
    with pytest.raises(ValueError, match="batch_size=0"):
        recompute_batch_norm_statistics(model, x, 0)
    with pytest.raises(ValueError, match="batch_size=16 exceeds the 10 examples"):
        recompute_batch_norm_statistics(model, x, 16)
    with pytest.raises(ValueError, match="num_batches=0"):
        recompute_batch_norm_statistics(model, x, 2, num_batches=0)


def test_stale_statistics_after_40_updates_and_recomputed_ones():
    """40 updates at momentum 0.99 leave 67% of the initial statistics in the
    moving averages; recomputed statistics score the test set as the exact
    population statistics do (numpy over every training example), the stale
    ones do not."""
    rng = np.random.default_rng(2)
    n, d = 4096, 10
    centers = rng.normal(0, 1, size=(2, d))
    y = rng.integers(0, 2, size=2 * n)
    # Inputs far from mean 0 / variance 1: stale statistics normalise them wrongly.
    x = (5.0 + 4.0 * (centers[y] + 0.8 * rng.normal(size=(2 * n, d)))).astype("float32")
    x_train, y_train, x_test, y_test = x[:n], y[:n], x[n:], y[n:]
    keras.utils.set_random_seed(0)
    inputs = keras.Input((d,))
    features = keras.layers.Dense(16)(inputs)
    h = keras.layers.Activation("tanh")(keras.layers.BatchNormalization(name="bn")(features))
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    model.compile(optimizer=keras.optimizers.SGD(0.05), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train[:40 * 64], y_train[:40 * 64], batch_size=64, epochs=1, verbose=0)
    stale = model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]

    layer = model.get_layer("bn")
    h_train = keras.ops.convert_to_numpy(keras.Model(inputs, features)(x_train)).astype("float64")
    layer.moving_mean.assign(h_train.mean(0))
    layer.moving_variance.assign(h_train.var(0))
    population = model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
    recompute_batch_norm_statistics(model, x_train, batch_size=64)
    recomputed = model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]

    # Within one test-set standard error of each other; the stale statistics
    # many standard errors below.
    se = np.sqrt(population * (1 - population) / len(y_test))
    assert abs(recomputed - population) <= se
    assert stale < population - 10 * se


def test_the_callback_evaluates_with_recomputed_statistics():
    """In a user's own fit: val_accuracy in the logs is the recomputed model's."""
    rng = np.random.default_rng(3)
    x = (3.0 + 2.0 * rng.normal(size=(512, 6))).astype("float32")
    y = (x[:, 0] > 3.0).astype("int32")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.BatchNormalization()(inputs)))
    model.compile(optimizer=keras.optimizers.SGD(0.1), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = RecomputeBatchNormStatistics(x, batch_size=32, validation_data=(x, y))
    history = model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[callback])
    after = model.evaluate(x, y, verbose=0, return_dict=True)["accuracy"]
    assert history.history["val_accuracy"][-1] == pytest.approx(after)
    expected = numpy_bn_average(x, 32)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.layers[1].moving_mean),
                               expected, rtol=1e-5)


def numpy_bn_average(x, batch_size):
    return np.mean([x[k:k + batch_size].mean(0) for k in range(0, len(x), batch_size)], axis=0)
