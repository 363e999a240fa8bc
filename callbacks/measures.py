"""The papers' measurements: weight distance (Hoffer), updates to a target
(Shallue), sharpness and parametric interpolation (Keskar), the simple
gradient noise scale (McCandlish)."""

import math
import weakref

import keras
import numpy as np
import pandas as pd

from batchsize.optimizers import accumulator_of, micro_batches_until


def default_loss(reduction=None):
    """The suite's loss: cross-entropy of logits (what every model of the zoo
    outputs); unreduced (per example) by default, as the measures need it,
    "sum_over_batch_size" (the mean) for training."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction)


def next_log_spaced(count, per_decade):
    """The count after `count` at which a log-spaced record is due: 1, 2, 3, ...,
    then about `per_decade` points per factor of ten."""
    return max(count + 1, int(10 ** (math.log10(count) + 1 / per_decade))) if count else 1


# -- a loss and its gradient as numpy, on any backend ----------------------
def loss_and_gradient(model, loss_fn, x, y, weights=None, training=False):
    """(loss, flat gradient) of `loss_fn(y, model(x))` w.r.t. the trainable
    weights, evaluated at the flat vector `weights` (default: current).

    Non-trainable state (batch-norm moving statistics) is never updated. The
    computation is compiled once per model, loss and mode (`tf.function`,
    `jax.jit`; eager on PyTorch): the measures call it many times (64
    minibatches for a gradient-norm distribution, every L-BFGS-B step of the
    sharpness), and eagerly each call cost ~10x more.
    """
    trainable = model.trainable_variables
    values = [v.value for v in trainable] if weights is None else unflatten(weights, trainable)
    non_trainable = [v.value for v in model.non_trainable_variables]
    loss, grads = _compiled_loss_and_gradient(model, loss_fn, training)(
        values, non_trainable, keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y))
    flat = np.concatenate([np.asarray(keras.ops.convert_to_numpy(g), np.float64).ravel()
                           for g in grads])
    return float(keras.ops.convert_to_numpy(loss)), flat


_COMPILED = weakref.WeakKeyDictionary()  # model -> {training: (loss_fn, function)}


def _compiled_loss_and_gradient(model, loss_fn, training):
    """`(trainable values, non-trainable values, x, y) -> (loss, gradients)`
    for `model`, compiled for its backend and kept while the model lives.
    This is the one backend-specific helper: autodiff has no keras.ops API."""
    cache = _COMPILED.setdefault(model, {})
    if training in cache and cache[training][0] is loss_fn:
        return cache[training][1]

    def loss_of(tv, non_trainable, x, y):
        y_pred, _ = model.stateless_call(tv, non_trainable, x, training=training)
        return keras.ops.mean(loss_fn(y, y_pred))

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(reduce_retracing=True)
        def function(tv, non_trainable, x, y):
            with tf.GradientTape() as tape:
                tape.watch(tv)
                loss = loss_of(tv, non_trainable, x, y)
            return loss, tape.gradient(loss, tv)
    elif backend == "jax":
        import jax

        function = jax.jit(jax.value_and_grad(loss_of))
    elif backend == "torch":
        import torch

        def function(tv, non_trainable, x, y):
            tv = [torch.as_tensor(v).detach().requires_grad_(True) for v in tv]
            loss = loss_of(tv, non_trainable, x, y)
            return loss, torch.autograd.grad(loss, tv)
    else:
        raise NotImplementedError(f"no gradient helper for backend {backend!r}")
    cache[training] = (loss_fn, function)
    return function


def flatten(variables):
    return np.concatenate([np.asarray(keras.ops.convert_to_numpy(v), np.float64).ravel()
                           for v in variables])


def unflatten(flat, like):
    out, i = [], 0
    for v in like:
        n = int(np.prod(v.shape))
        out.append(keras.ops.convert_to_tensor(
            np.asarray(flat[i:i + n], np.float32).reshape(v.shape)))
        i += n
    return out


# -- Hoffer et al.: distance from the initial weights -----------------------
class WeightDistance(keras.callbacks.Callback):
    """||w_t - w_0|| over all trainable weights and per layer (Hoffer Fig 2).

    Recorded at log-spaced iterations (1, 2, 3, ..., then about `per_decade`
    points per factor of ten) and at every epoch end, where `weight_distance`
    is also added to the logs. `w_0` is taken when training first starts and
    kept across several `fit` calls.

    Args:
        per_decade: log-spaced points per decade of iterations.

    Example:

    >>> distance = WeightDistance()
    >>> model.fit(x, y, callbacks=[distance])
    >>> distance.history  # DataFrame: iteration, total, one column per layer
    """

    def __init__(self, per_decade=10):
        super().__init__()
        self.per_decade = per_decade
        self.initial = None
        self.records = []
        self.iteration = 0
        self._next = 0
        self._epoch_start = 0

    def on_train_begin(self, logs=None):
        if self.initial is None:
            self.initial = [np.array(keras.ops.convert_to_numpy(v))
                            for v in self.model.trainable_variables]
            self._record()

    def distances(self):
        per_layer, total = {}, 0.0
        for v, w0 in zip(self.model.trainable_variables, self.initial):
            sq = float(np.sum((np.asarray(keras.ops.convert_to_numpy(v), np.float64) - w0) ** 2))
            layer = v.path.split("/")[0]
            per_layer[layer] = per_layer.get(layer, 0.0) + sq
            total += sq
        return math.sqrt(total), {k: math.sqrt(s) for k, s in per_layer.items()}

    def _record(self):
        total, per_layer = self.distances()
        self.records.append(dict(iteration=self.iteration, total=total, **per_layer))
        return total

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self.iteration

    def on_train_batch_end(self, batch, logs=None):
        # `batch` is the last step run: with steps_per_execution or the fast
        # engine, one call runs several.
        self.iteration = self._epoch_start + batch + 1
        if self.iteration >= self._next:
            self._record()
            self._next = next_log_spaced(self.iteration, self.per_decade)

    def steps_until_due(self):
        """Steps until the next record: the fast engine stops there to call back."""
        return self._next - self.iteration

    def on_epoch_end(self, epoch, logs=None):
        total = self._record() if self.records[-1]["iteration"] != self.iteration else \
            self.records[-1]["total"]
        if logs is not None:
            logs["weight_distance"] = total

    @property
    def history(self):
        return pd.DataFrame(self.records).drop_duplicates("iteration", keep="last")


# -- Shallue et al.: updates to a target --------------------------------------
class UpdatesToTarget(keras.callbacks.Callback):
    """Counts the updates (and examples) until a held-out metric first reaches
    `target`, Shallue et al.'s (2018) "steps to result", and stops training
    there.

    The metric is evaluated at log-spaced update counts (1, 2, ..., then
    `per_decade` points per factor of ten), so the first hit is known to
    within a factor 10 ** (1 / per_decade) of updates, and at every epoch
    end. Updates are the optimizer's (`iterations`): with a
    `GradientAccumulator`, one per window, never per micro-batch.

    Args:
        x, y: held-out data the metric is computed on.
        target: the value to reach, e.g. 0.97 test accuracy.
        metric: a name in `model.evaluate`'s results, e.g. "accuracy", "loss".
        mode: "max" (reached when >= target) or "min" (<=); default "min"
            for a metric whose name contains "loss", else "max".
        per_decade: evaluations per factor of ten of updates.
        batch_size: examples per update, to count examples: an int, or a
            callable `model -> int` giving the current one (for batches that
            grow); None counts no examples.
        stop: stop training when the target is reached, or when the
            evaluation is no longer finite (a diverged run).
        max_updates: give up after this many updates (a budget, or the
            updates another run already needed: this one cannot beat it);
            None: train on.

    Attributes:
        records: [{"updates", "examples", metric}] at every evaluation, and
            `noise_scale_simple` where the optimizer measures it (a
            `GradientAccumulator` with `noise_scale_decay`): B_simple near
            the target.
        updates_to_target, examples_to_target: at the first evaluation that
            reached the target; None before (and for a run that never does).
        gave_up_at: the update count where `max_updates` stopped the run.

    Example:

    >>> hit = UpdatesToTarget(x_test, y_test, target=0.97, batch_size=256)
    >>> model.fit(x, y, batch_size=256, epochs=20, callbacks=[hit])
    >>> hit.updates_to_target, hit.examples_to_target
    """

    def __init__(self, x, y, target, metric="accuracy", mode=None, per_decade=20,
                 batch_size=None, stop=True, max_updates=None, evaluation_batch_size=1000):
        super().__init__()
        mode = mode or ("min" if "loss" in metric else "max")
        if mode not in ("min", "max"):
            raise ValueError(f"mode={mode!r}: expected 'min' or 'max'.")
        if per_decade < 1:
            raise ValueError(f"per_decade={per_decade!r}: expected a number >= 1.")
        self.x, self.y, self.target, self.metric, self.mode = x, y, float(target), metric, mode
        self.per_decade, self.stop, self.max_updates = per_decade, stop, max_updates
        self.batch_size, self.evaluation_batch_size = batch_size, evaluation_batch_size
        self.records = []
        self.updates_to_target = self.examples_to_target = self.gave_up_at = None
        self._next, self._updates, self._examples = 1, 0, 0

    def get_config(self):
        return dict(target=self.target, metric=self.metric, mode=self.mode,
                    per_decade=self.per_decade, stop=self.stop, max_updates=self.max_updates)

    def reached(self, value):
        return value >= self.target if self.mode == "max" else value <= self.target

    def _count(self):
        """Reads the optimizer's update count; adds the examples since the last read."""
        updates = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if self.batch_size is not None:
            batch = self.batch_size(self.model) if callable(self.batch_size) else self.batch_size
            self._examples += (updates - self._updates) * int(batch)
        self._updates = updates
        return updates

    def _evaluate(self):
        results = self.model.evaluate(self.x, self.y, batch_size=self.evaluation_batch_size,
                                      verbose=0, return_dict=True)
        if self.metric not in results:
            raise ValueError(f"UpdatesToTarget: metric={self.metric!r} is not among the "
                             f"model's results {sorted(results)}; compile with it.")
        value = float(results[self.metric])
        record = {"updates": self._updates,
                  "examples": self._examples if self.batch_size is not None else None,
                  self.metric: value}
        accumulator = accumulator_of(self.model.optimizer)
        if accumulator is not None and accumulator.noise_scale_decay is not None:
            record["noise_scale_simple"] = accumulator.noise_scale_simple
        self.records.append(record)
        if self.updates_to_target is None and self.reached(value):
            self.updates_to_target = self._updates
            self.examples_to_target = self.records[-1]["examples"]
            if self.stop:
                self.model.stop_training = True
        if self.stop and not all(math.isfinite(v) for v in results.values()):
            self.model.stop_training = True  # diverged: it will not reach the target
        return value

    def on_train_batch_end(self, batch, logs=None):
        updates = self._count()
        if updates >= self._next and self.updates_to_target is None:
            self._evaluate()
            self._next = next_log_spaced(updates, self.per_decade)
            if self.max_updates is not None:
                if updates >= self.max_updates and self.updates_to_target is None:
                    self.gave_up_at = updates
                    self.model.stop_training = True
                self._next = min(self._next, max(self.max_updates, updates + 1))

    def steps_until_due(self):
        """Micro-batches until the next evaluation (the fast engine stops
        there to call back): the updates left times the accumulation steps."""
        return micro_batches_until(self.model.optimizer, self._next - self._updates)

    def on_epoch_end(self, epoch, logs=None):
        self._count()
        if self.updates_to_target is None and self.gave_up_at is None and (
                not self.records or self.records[-1]["updates"] != self._updates):
            self._evaluate()
        if logs is not None and self.updates_to_target is not None:
            logs["updates_to_target"] = self.updates_to_target

    @property
    def history(self):
        return pd.DataFrame(self.records)


# -- Keskar et al.: sharpness (Metric 2.1) ----------------------------------
def sharpness(model, x, y, loss_fn=None, epsilon=1e-3, subspace=None, maxiter=10,
              bn_mode="moving", seed=0):
    """Keskar et al.'s Metric 2.1 on the loss over (x, y), in percent.

    phi = (max_{z in C} f(w + A z) - f(w)) / (1 + f(w)) * 100, with the box
    C = {|z_i| <= epsilon (|(A^+ w)_i| + 1)}, maximised by scipy's L-BFGS-B
    (`maxiter` iterations, as the paper).

    Args:
        model: a Keras model; its weights are not changed.
        x, y: the (training) data the loss f is measured on.
        loss_fn: default sparse categorical cross-entropy from logits.
        epsilon: box size (paper: 1e-3 and 5e-4).
        subspace: None for A = I (full space) or p for a random n x p matrix A.
        maxiter: L-BFGS-B iterations.
        bn_mode: "moving" (inference statistics) or "batch" (batch statistics,
            as Keskar's plotting code; dropout is then active too).
        seed: for the random subspace.

    Example:

    >>> sharpness(model, x_train[:5000], y_train[:5000], epsilon=1e-3)
    """
    from scipy.optimize import Bounds, minimize

    if bn_mode not in ("moving", "batch"):
        raise ValueError(f"bn_mode={bn_mode!r}: expected 'moving' or 'batch'.")
    loss_fn = loss_fn or default_loss()
    training = bn_mode == "batch"
    w = flatten(model.trainable_variables)
    if subspace is None:
        A, center = None, w
    else:
        A = np.random.default_rng(seed).normal(size=(w.size, subspace))
        # A^+ w by the normal equations: A is tall and Gaussian, so A^T A is well
        # conditioned, and this is ~10x faster than lstsq's SVD for a 1M x 100 A.
        center = np.linalg.solve(A.T @ A, A.T @ w)
    bound = epsilon * (np.abs(center) + 1.0)

    def objective(z):
        point = w + (z if A is None else A @ z)
        loss, grad = loss_and_gradient(model, loss_fn, x, y, point, training)
        return -loss, -(grad if A is None else A.T @ grad)

    f0, _ = loss_and_gradient(model, loss_fn, x, y, w, training)
    z0 = np.zeros_like(center)
    result = minimize(objective, z0, jac=True, method="L-BFGS-B",
                      bounds=Bounds(-bound, bound), options=dict(maxiter=maxiter))
    return (max(-result.fun, f0) - f0) / (1.0 + f0) * 100.0


# -- Keskar et al.: parametric interpolation (Fig 3) -------------------------
def interpolate(model, weights_a, weights_b, alphas, splits, batch_size=1000,
                bn_mode="moving", loss_fn=None):
    """Loss and accuracy at alpha * a + (1 - alpha) * b for each alpha.

    Args:
        model: compiled with a loss and an "accuracy" metric; its weights are
            restored afterwards.
        weights_a, weights_b: lists as from `model.get_weights()` (all weights,
            batch-norm statistics included).
        alphas: e.g. np.linspace(-1, 2, 25).
        splits: {"train": (x, y), "test": (x, y)}.
        batch_size: evaluation batch (in "batch" mode also the batch whose
            statistics normalise it).
        bn_mode: "moving" evaluates in inference mode with the moving
            statistics interpolated like the weights (past alpha = 1 or below
            0 an extrapolated variance can turn negative: the loss is then
            NaN); "batch" normalises with each evaluation batch's own
            statistics, as Keskar et al.'s plotting code (dropout is then
            active too).
        loss_fn: for "batch" mode; default sparse categorical cross-entropy
            from logits.

    Returns:
        DataFrame with columns alpha, split, loss, accuracy.

    Example:

    >>> interpolate(model, w_large, w_small, np.linspace(-1, 2, 25),
    ...             {"train": (x, y), "test": (x_test, y_test)}, bn_mode="batch")
    """
    if bn_mode not in ("moving", "batch"):
        raise ValueError(f"bn_mode={bn_mode!r}: expected 'moving' or 'batch'.")
    loss_fn = loss_fn or default_loss()
    original = model.get_weights()
    rows = []
    try:
        for alpha in alphas:
            model.set_weights([alpha * a + (1 - alpha) * b for a, b in zip(weights_a, weights_b)])
            for split, (x, y) in splits.items():
                if bn_mode == "moving":
                    result = model.evaluate(x, y, batch_size=batch_size, verbose=0,
                                            return_dict=True)
                    loss, accuracy = result["loss"], result.get("accuracy", np.nan)
                else:
                    loss, accuracy = _evaluate_with_batch_statistics(
                        model, loss_fn, x, y, batch_size)
                rows.append(dict(alpha=float(alpha), split=split, loss=loss, accuracy=accuracy))
    finally:
        model.set_weights(original)
    return pd.DataFrame(rows)


def _evaluate_with_batch_statistics(model, loss_fn, x, y, batch_size):
    """Mean loss and accuracy with the model in training mode, statelessly
    (the moving statistics are read but not updated)."""
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    total_loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        y_pred, _ = model.stateless_call(trainable, non_trainable, xb, training=True)
        total_loss += float(keras.ops.sum(loss_fn(yb, y_pred)))
        predicted = keras.ops.convert_to_numpy(keras.ops.argmax(y_pred, axis=-1))
        correct += int(np.sum(predicted == np.asarray(yb).reshape(-1)))
    return total_loss / len(x), correct / len(x)


# -- McCandlish et al.: the simple gradient noise scale ---------------------
def gradient_noise_scale(model, x, y, small, big, loss_fn=None, repeats=8, seed=0,
                         training=False):
    """B_simple = tr(Sigma) / |G|^2 from mean squared gradient norms at two
    batch sizes (McCandlish et al. 2018, appendix A.1):
    E|G_B|^2 = |G|^2 + tr(Sigma) / B, solved for |G|^2 and tr(Sigma).

    Returns (b_simple, |G|^2 estimate, tr(Sigma) estimate).
    """
    if not 1 <= small < big <= len(x):
        raise ValueError(f"need 1 <= small < big <= {len(x)}; got small={small}, big={big}.")
    loss_fn = loss_fn or default_loss()
    rng = np.random.default_rng(seed)

    def mean_sq_norm(batch):
        norms = []
        for _ in range(repeats):
            idx = rng.choice(len(x), batch, replace=False)
            _, g = loss_and_gradient(model, loss_fn, x[idx], y[idx], training=training)
            norms.append(g @ g)
        return float(np.mean(norms))

    g_small, g_big = mean_sq_norm(small), mean_sq_norm(big)
    grad_sq = (big * g_big - small * g_small) / (big - small)
    trace = (g_small - g_big) / (1 / small - 1 / big)
    return trace / grad_sq, grad_sq, trace
