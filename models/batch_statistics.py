"""Batch norm evaluated as trained: the moving statistics recomputed exactly.

Keras's `BatchNormalization` keeps moving averages with momentum 0.99, so
after k updates the statistics used at test time still carry 0.99^k of their
initial values (mean 0, variance 1): 67% after 40 updates, 13% after 200. A run
evaluated in inference mode after fewer updates measures those stale
statistics, not its weights. "Precise BN" (Wu & Johnson 2021; PyTorch's
`torch.optim.swa_utils.update_bn`) fixes this: with the weights fixed, run
training batches forward and set each layer's statistics to the plain average
of the statistics it normalises with in training.
"""

import math
import weakref

import keras
import numpy as np

from batchsize.models.layers import GhostBatchNormalization


def batch_norm_layers(model):
    """Every BatchNormalization and GhostBatchNormalization layer of `model`,
    nested models included."""
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, (keras.layers.BatchNormalization, GhostBatchNormalization))]


def recompute_batch_norm_statistics(model, data, batch_size, num_batches=None):
    """Sets every batch norm layer's moving mean and variance to the exact
    average over `num_batches` training batches of the statistics it
    normalises with in training.

    The weights stay fixed. Each batch runs forward in training mode, so a
    layer sees what it saw while training: its input computed with the
    earlier layers' batch statistics. A `BatchNormalization` averages its
    per-batch mean and (biased) variance; a `GhostBatchNormalization` its
    per-ghost-batch ones. Layers in training mode elsewhere (dropout) behave as
    in training. Nothing but the moving statistics changes.

    Args:
        model: a built Keras model (any backend; built in a distribution
            scope or not).
        data: the training inputs, an array of examples (or a tuple whose
            first item is), read in order: shuffle it first if it is sorted.
        batch_size: examples per batch, the batch the layers normalised with
            in training (for an accumulated run, the micro-batch).
        num_batches: how many full batches to average over; None: every
            full batch of `data`.

    Returns:
        The number of batches averaged.

    Example:

    >>> model.fit(x, y, batch_size=128, epochs=1)
    >>> recompute_batch_norm_statistics(model, x, batch_size=128, num_batches=32)
    >>> model.evaluate(x_test, y_test)  # the weights, not stale averages
    """
    x = data[0] if isinstance(data, (tuple, list)) else data
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: expected an integer >= 1")
    available = len(x) // batch_size
    if available < 1:
        raise ValueError(f"batch_size={batch_size} exceeds the {len(x)} examples given: "
                         "expected at least one full batch")
    if num_batches is None:
        num_batches = available
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
        raise ValueError(f"num_batches={num_batches!r}: expected an integer >= 1 or None")
    num_batches = min(num_batches, available)
    layers = batch_norm_layers(model)
    if not layers:
        return 0
    # Each layer in "record" mode: a BatchNormalization with momentum 0 keeps
    # the last batch's statistics, a GhostBatchNormalization the mean of the
    # last batch's ghost batches. Their values after each batch are summed
    # here in float64, and the averages assigned at the end.
    plain = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    ghosts = [layer for layer in layers if isinstance(layer, GhostBatchNormalization)]
    momenta = [layer.momentum for layer in plain]
    variables = [v for layer in layers for v in (layer.moving_mean, layer.moving_variance)]
    totals = [np.zeros(v.shape, np.float64) for v in variables]
    try:
        for layer in plain:
            layer.momentum = 0.0
        for layer in ghosts:
            layer.record_statistics = True
        forward = _FORWARD.get(model) or _FORWARD.setdefault(
            model, _statistics_after_forward(model, variables))
        for k in range(num_batches):
            values = forward(x[k * batch_size:(k + 1) * batch_size])
            for total, value in zip(totals, values):
                total += np.asarray(keras.ops.convert_to_numpy(value), np.float64)
    finally:
        for layer, momentum in zip(plain, momenta):
            layer.momentum = momentum
        for layer in ghosts:
            layer.record_statistics = False
    for variable, total in zip(variables, totals):
        variable.assign((total / num_batches).astype(variable.dtype))
    return num_batches


# One compiled pass per model, traced again only for a new batch shape.
_FORWARD = weakref.WeakKeyDictionary()


def _statistics_after_forward(model, variables):
    """x -> the values of `variables` after one training-mode forward pass of
    `model` on x: compiled on TensorFlow (a `tf.function`) and JAX (`jax.jit`
    of the model's stateless call), eager elsewhere and under a tf.distribute
    strategy. An eager Keras forward pass costs ~8x a compiled one at batch 8
    on a CPU, and the recomputation makes one per batch."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        index = [next(i for i, w in enumerate(model.non_trainable_variables) if w is v)
                 for v in variables]

        @jax.jit
        def run(trainable, non_trainable, x):
            _, new = model.stateless_call(trainable, non_trainable, x, training=True)
            return [new[i] for i in index]

        # The weights' current values at every call (training replaces them).
        return lambda x: run([v.value for v in model.trainable_variables],
                             [v.value for v in model.non_trainable_variables], x)

    def run(x):
        model(x, training=True)
        return [v.value for v in variables]

    if backend == "tensorflow":
        import tensorflow as tf

        if not tf.distribute.has_strategy():
            return tf.function(run, reduce_retracing=True)
    return run


# Examples a run's recomputation averages over (Wu & Johnson find ~10^3-10^4
# enough); every run of a sweep reads the same ones. At most this many batches:
# each is an eager forward call, which at batch 4 would cost a third of an epoch.
RECOMPUTE_EXAMPLES = 2048
RECOMPUTE_BATCHES = 128


class RecomputeBatchNormStatistics(keras.callbacks.Callback):
    """`recompute_batch_norm_statistics` in your own `fit`: before each
    evaluation on validation data, or at the end of training.

    Keras's `fit` evaluates validation data before `on_epoch_end`, so to
    score every epoch with recomputed statistics pass the validation data
    here instead of to `fit` (`validation_data=`): the callback recomputes,
    evaluates, and adds `val_<metric>` to the epoch's logs for the callbacks
    after it (e.g. `CSVLogger`, `EarlyStopping`).

    Args:
        data: training inputs to average over (see the function).
        batch_size: the training batch the layers normalised with, or
            `epoch -> batch` for a schedule that changes it.
        num_batches: full batches to average over; None: all of `data`.
        validation_data: (x, y) to evaluate after each recomputation, or None
            to recompute only at the end of training.
        validation_batch_size: batch size of that evaluation.
        first_evaluated_epoch: the first epoch (0-based) to recompute and
            evaluate at; the ones before only train (for a run whose last
            epochs alone are read).

    Example:

    >>> recompute = RecomputeBatchNormStatistics(x, batch_size=64, num_batches=32,
    ...                                          validation_data=(x_test, y_test))
    >>> model.fit(x, y, batch_size=64, epochs=5, callbacks=[recompute])
    """

    def __init__(self, data, batch_size, num_batches=None, validation_data=None,
                 validation_batch_size=1000, first_evaluated_epoch=0):
        super().__init__()
        if not (isinstance(first_evaluated_epoch, int) and first_evaluated_epoch >= 0):
            raise ValueError(f"first_evaluated_epoch={first_evaluated_epoch!r}: expected an "
                             "integer >= 0 (an epoch index).")
        self.data = data
        self.batch_size = batch_size
        self.num_batches = num_batches
        self.validation_data = validation_data
        self.validation_batch_size = validation_batch_size
        self.first_evaluated_epoch = first_evaluated_epoch

    def recompute(self, epoch):
        batch_size = self.batch_size(epoch) if callable(self.batch_size) else self.batch_size
        return recompute_batch_norm_statistics(self.model, self.data, int(batch_size),
                                               self.num_batches)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if self.validation_data is None or epoch < self.first_evaluated_epoch:
            return
        self.recompute(epoch)
        results = self.model.evaluate(*self.validation_data, verbose=0, return_dict=True,
                                      batch_size=self.validation_batch_size)
        if logs is not None:
            logs.update({f"val_{name}": float(value) for name, value in results.items()})

    def on_train_end(self, logs=None):
        if self.validation_data is None:
            self.recompute(getattr(self, "epoch", 0))


def recompute_batches(num_examples, batch_size, examples=RECOMPUTE_EXAMPLES):
    """How many full batches of `batch_size` cover `examples` of
    `num_examples` (at least one)."""
    return max(1, math.ceil(min(examples, num_examples) / batch_size))


def fixed_sample(x, examples=RECOMPUTE_EXAMPLES, seed=0):
    """`examples` of `x` in a fixed random order (the same for every run)."""
    return x[np.random.default_rng(seed).permutation(len(x))[:examples]]
