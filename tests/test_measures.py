"""Measurement callbacks against hand-computed and analytic values."""

import keras
import numpy as np
import pytest

from batchsize.callbacks.measures import (WeightDistance, gradient_noise_scale, interpolate,
                                sharpness)

MSE = keras.losses.MeanSquaredError(reduction=None)


def linear(d, w):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((d,)), keras.layers.Dense(1, use_bias=False)])
    model.layers[0].kernel.assign(np.asarray(w, "float32").reshape(d, 1))
    return model


def test_weight_distance_is_zero_at_start_and_the_hand_computed_norm_after_one_step():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 3)).astype("float32"), rng.normal(size=(8, 1)).astype("float32")
    w = np.array([0.5, -1.0, 2.0])
    model = linear(3, w)
    model.compile(keras.optimizers.SGD(0.1), "mse")
    distance = WeightDistance()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[distance])
    history = distance.history
    assert history.iloc[0].iteration == 0 and history.iloc[0].total == 0.0
    grad = 2 / 8 * x.T @ (x @ w[:, None] - y)  # d/dw mean((xw - y)^2)
    assert history.iloc[-1].iteration == 1
    assert history.iloc[-1].total == pytest.approx(0.1 * np.linalg.norm(grad), rel=1e-5)


def quadratic(c, w):
    """f(w) = sum_i c_i w_i^2 as an MSE loss: rows x_i = sqrt(d c_i) e_i, y = 0."""
    d = len(c)
    x = np.diag(np.sqrt(d * np.asarray(c, float))).astype("float32")
    return linear(d, w), x, np.zeros((d, 1), "float32")


def analytic_sharpness(c, w, eps):
    c, w = np.asarray(c, float), np.asarray(w, float)
    f0 = np.sum(c * w ** 2)
    fmax = np.sum(c * (np.abs(w) + eps * (np.abs(w) + 1)) ** 2)
    return (fmax - f0) / (1 + f0) * 100


def test_sharpness_of_a_quadratic_matches_the_analytic_box_maximum():
    c, w = [1.0, 10.0, 100.0, 0.5], [0.3, -0.2, 0.1, 1.0]
    model, x, y = quadratic(c, w)
    value = sharpness(model, x, y, loss_fn=MSE, epsilon=1e-2)
    assert value == pytest.approx(analytic_sharpness(c, w, 1e-2), rel=1e-3)
    np.testing.assert_allclose(model.layers[0].kernel.numpy().ravel(), w, rtol=1e-6)


def test_sharpness_is_zero_on_a_flat_loss_and_grows_with_curvature():
    w = [0.3, -0.2, 0.1]
    flat = sharpness(*quadratic([0.0, 0.0, 0.0], w), loss_fn=MSE, epsilon=1e-2)
    values = [sharpness(*quadratic([k] * 3, w), loss_fn=MSE, epsilon=1e-2) for k in (1, 10, 100)]
    assert abs(flat) < 1e-9
    assert values[0] < values[1] < values[2]


def test_sharpness_in_a_random_subspace_is_at_most_the_full_space_value():
    c, w = [1.0, 10.0, 100.0, 0.5], [0.3, -0.2, 0.1, 1.0]
    full = sharpness(*quadratic(c, w), loss_fn=MSE, epsilon=1e-2)
    sub = sharpness(*quadratic(c, w), loss_fn=MSE, epsilon=1e-2, subspace=2)
    assert 0 < sub
    with pytest.raises(ValueError, match="bn_mode='ema'"):
        sharpness(*quadratic(c, w), loss_fn=MSE, bn_mode="ema")
    assert full > 0


def test_gradient_noise_scale_matches_linear_regression_with_known_noise():
    """x ~ N(0, I_d), y = x.w* + sigma*e. At w = w* + delta the per-example
    gradient is x r, so G = delta (up to the loss's factor 2, which cancels)
    and tr(Sigma) = (d + 1)|delta|^2 + d sigma^2."""
    d, sigma = 4, 1.5
    rng = np.random.default_rng(0)
    w_star = rng.normal(size=d)
    delta = np.array([0.5, -0.5, 0.25, 0.0])
    x = rng.normal(size=(200000, d)).astype("float32")
    y = (x @ w_star + sigma * rng.normal(size=len(x)))[:, None].astype("float32")
    model = linear(d, w_star + delta)
    b_simple, _, _ = gradient_noise_scale(model, x, y, small=16, big=4096, loss_fn=MSE,
                                          repeats=300)
    expected = ((d + 1) * delta @ delta + d * sigma ** 2) / (delta @ delta)
    assert b_simple == pytest.approx(expected, rel=0.10)


@pytest.mark.slow
def test_interpolation_at_0_and_1_equals_evaluating_the_two_models():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 5)).astype("float32"), rng.integers(0, 3, 64)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def trained(seed):
        keras.utils.set_random_seed(seed)
        m = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.BatchNormalization(), keras.layers.Dense(3)])
        m.compile(keras.optimizers.Adam(0.01), loss, metrics=["accuracy"])
        m.fit(x, y, epochs=3, verbose=0)
        return m

    a, b = trained(1), trained(2)
    splits = {"train": (x, y), "test": (x[:32], y[:32])}
    curve = interpolate(a, a.get_weights(), b.get_weights(), [0.0, 0.5, 1.0], splits)
    for alpha, model in ((1.0, a), (0.0, b)):
        for split, (xs, ys) in splits.items():
            row = curve[(curve.alpha == alpha) & (curve.split == split)].iloc[0]
            expected = model.evaluate(xs, ys, batch_size=1000, verbose=0, return_dict=True)
            assert row.loss == pytest.approx(expected["loss"], rel=1e-5)
            assert row.accuracy == pytest.approx(expected["accuracy"])
    assert len(curve) == 6


def test_interpolation_with_batch_statistics_normalises_each_batch_by_itself():
    # Reference: the model called in training mode on one batch (BN uses that
    # batch's mean and variance), by hand; the moving statistics are left alone.
    rng = np.random.default_rng(1)
    x = (3.0 + 2.0 * rng.normal(size=(50, 5))).astype("float32")
    y = rng.integers(0, 3, 50)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8),
                              keras.layers.BatchNormalization(), keras.layers.Dense(3)])
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    w = model.get_weights()
    curve = interpolate(model, w, w, [1.0], {"train": (x, y)}, batch_size=50, bn_mode="batch")
    moving = interpolate(model, w, w, [1.0], {"train": (x, y)}, batch_size=50)
    for before, after in zip(w, model.get_weights()):
        np.testing.assert_array_equal(before, after)

    dense1, bn, dense2 = (layer.get_weights() for layer in model.layers)
    h = x @ dense1[0] + dense1[1]
    h = bn[0] * (h - h.mean(0)) / np.sqrt(h.var(0) + bn_epsilon(model)) + bn[1]
    logits = h @ dense2[0] + dense2[1]
    log_p = logits - logits.max(1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(1, keepdims=True))
    expected_loss = -log_p[np.arange(50), y].mean()
    row = curve.iloc[0]
    assert row.loss == pytest.approx(expected_loss, rel=1e-4)
    assert row.accuracy == pytest.approx(np.mean(logits.argmax(1) == y))
    # Inference mode uses the (fresh) moving statistics: a different loss here.
    assert abs(moving.iloc[0].loss - row.loss) > 1e-3
    with pytest.raises(ValueError, match="bn_mode"):
        interpolate(model, w, w, [1.0], {"train": (x, y)}, bn_mode="train")


def bn_epsilon(model):
    return model.layers[1].epsilon


# -- Shallue et al.: updates to a target ----------------------------------------
def separable(n=512, d=8, seed=0):
    """Two Gaussian classes whose accuracy rises over tens of SGD updates."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n).astype("int32")
    x = (rng.normal(size=(n, d)) + 0.6 * (2 * y[:, None] - 1)).astype("float32")
    return x, y


def classifier(d=8):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((d,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.02),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


@pytest.mark.slow
def test_updates_to_target_is_the_first_evaluation_at_the_target_and_stops_there():
    from batchsize.callbacks import UpdatesToTarget

    x, y = separable()
    hit = UpdatesToTarget(x, y, target=0.9, per_decade=10, batch_size=16)
    model = classifier()
    model.fit(x, y, batch_size=16, epochs=20, shuffle=False, verbose=0, callbacks=[hit])
    history = hit.history
    # Log-spaced evaluations: every update up to 8, then steps of at most
    # a factor 10 ** (1 / 10) (the first hit is known that closely).
    assert list(history.updates[:8]) == list(range(1, 9))
    ratios = (history.updates.iloc[1:].to_numpy() / history.updates.iloc[:-1].to_numpy())
    assert (ratios > 1).all() and (ratios[8:] <= 10 ** 0.1 + 1e-9).all()
    reached = history[history.accuracy >= 0.9]
    assert hit.updates_to_target == reached.updates.iloc[0] == history.updates.iloc[-1]
    assert (history.accuracy.iloc[:-1] < 0.9).all()
    assert hit.examples_to_target == 16 * hit.updates_to_target
    assert 10 < hit.updates_to_target < 20 * 32  # not at once, and before the budget ran out
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == hit.updates_to_target
    # Reference: a fresh run of exactly that many updates, and of the
    # evaluation before, measured by model.evaluate independently.
    for updates, above in ((hit.updates_to_target, True), (history.updates.iloc[-2], False)):
        fresh = classifier()
        epochs, rest = divmod(int(updates), len(x) // 16)
        if epochs:
            fresh.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
        if rest:
            fresh.fit(x[:rest * 16], y[:rest * 16], batch_size=16, epochs=1, shuffle=False,
                      verbose=0)
        accuracy = fresh.evaluate(x, y, verbose=0, return_dict=True)["accuracy"]
        assert (accuracy >= 0.9) == above


@pytest.mark.slow
def test_updates_to_target_counts_updates_not_micro_batches():
    """4 accumulated micro-batches of 16 are one update at batch 64 (no batch
    norm: the same training), so the target falls on the same update."""
    from batchsize.callbacks import UpdatesToTarget
    from batchsize.callbacks import EpochAlignedAccumulation
    from batchsize.optimizers import GradientAccumulator

    x, y = separable()
    hits = []
    for steps, batch in ((1, 64), (4, 16)):
        model = classifier()
        if steps > 1:
            model.compile(GradientAccumulator(keras.optimizers.SGD(0.08), steps),
                          model.loss, metrics=["accuracy"])
        else:
            model.optimizer.learning_rate = 0.08
        hit = UpdatesToTarget(x, y, target=0.9, per_decade=10, batch_size=64)
        model.fit(x, y, batch_size=batch, epochs=30, shuffle=False, verbose=0,
                  callbacks=[hit] + ([EpochAlignedAccumulation(len(x), 16)] if steps > 1 else []))
        hits.append(hit)
    assert hits[0].updates_to_target is not None
    assert hits[1].updates_to_target == hits[0].updates_to_target
    assert hits[1].examples_to_target == 64 * hits[0].updates_to_target


def test_updates_to_target_says_what_it_needs():
    from batchsize.callbacks import UpdatesToTarget

    x, y = separable(n=32)
    with pytest.raises(ValueError, match="mode='up': expected 'min' or 'max'"):
        UpdatesToTarget(x, y, 0.9, mode="up")
    assert UpdatesToTarget(x, y, 0.1, metric="loss").mode == "min"
    model = classifier()
    with pytest.raises(ValueError, match="metric='auc' is not among the model's results"):
        model.fit(x, y, batch_size=16, epochs=1, verbose=0,
                  callbacks=[UpdatesToTarget(x, y, 0.9, metric="auc")])
