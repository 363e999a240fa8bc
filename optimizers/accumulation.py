"""Gradient accumulation that is exactly the large batch.

`GradientAccumulator` wraps any Keras optimizer. It sums the gradients of
`accumulation_steps` micro-batches, each weighted by its number of examples,
and then lets the inner optimizer take *one* step on their example-weighted
mean. With a mean-reduced loss that mean is the gradient of the concatenated
batch, so the step is the large-batch step: weight decay, clipping, EMA,
learning-rate schedules and `iterations` all act once per update, and the
inner optimizer's state (momentum, Adam moments) does not move between
updates.

What batch normalization sees: every micro-batch is a separate forward pass,
so batch statistics are computed per micro-batch. Accumulating k x m with
BatchNormalization is therefore *ghost batch norm with ghost size m* on a
batch of k*m, not batch norm on k*m. Without batch norm (or with group norm,
which has no batch dimension) accumulation equals the large batch.
"""

import warnings

import keras
from keras import ops

from batchsize.optimizers.arguments import (check_accumulation_steps, micro_batch_argument,
                                          refuse_base_arguments)


@keras.saving.register_keras_serializable(package="batchsize")
class GradientAccumulator(keras.optimizers.Optimizer):
    """Accumulates gradients over micro-batches, then steps the inner optimizer.

    After `accumulation_steps` micro-batches the weights equal one step of
    `inner_optimizer` on the concatenated batch with a mean-reduced loss.

    Micro-batch weighting and epoch ends. An optimizer never sees the data,
    so by default every micro-batch gets the same weight and a window that is
    still open at the end of an epoch (or of `fit`) is *carried*: the next
    epoch completes it. Tell the accumulator how an epoch is cut, through
    `set_epoch(num_examples, micro_batch_size)` or the
    `callbacks.EpochAlignedAccumulation` callback, and it becomes exact for
    uneven epochs too: the short last
    micro-batch is weighted by its size, and the last window of the epoch is
    *flushed* (applied early, with fewer micro-batches), so an epoch makes
    `ceil(num_examples / (micro_batch_size * accumulation_steps))` updates, as
    native large-batch training does.

    The number of micro-batches per update is a variable
    (`set_accumulation_steps`): a callback may change it between epochs
    without recompiling.

    Mixed precision: wrap the loss-scale optimizer, not the other way round,
    and compile with `auto_scale_loss=False`:
    `GradientAccumulator(keras.optimizers.LossScaleOptimizer(Adam()), 8)`.
    The loss scale is constant within a window, so the accumulated sum is
    unscaled once; a micro-batch with non-finite gradients makes the sum
    non-finite and the whole window is skipped (and the scale halved).

    Gradient noise scale. With `noise_scale_decay` set, every window also
    measures McCandlish et al.'s (2018) simple noise scale
    B_simple = tr(Sigma) / |G|^2 at no extra gradient cost: the window's
    micro-batch gradients are small-batch samples and its mean is a
    large-batch one, all at the same weights. From |g_micro|^2 (mean over the
    window) and |g_window|^2 it forms their unbiased estimates of |G|^2 and
    tr(Sigma) (appendix A.1), keeps an exponential moving average of each
    and exposes the ratio as `noise_scale_simple` (NaN until a window of at least
    two micro-batches has closed). `AccumulatedNoiseScale` logs it. The batch
    sizes are in examples once the accumulator knows the micro-batch size
    (`set_epoch`, `callbacks.EpochAlignedAccumulation`, or `micro_batch_size`);
    without it `noise_scale_simple` is NaN, with a warning.

    Args:
        inner_optimizer: the `keras.optimizers.Optimizer` that takes the steps.
        accumulation_steps: int >= 1, micro-batches per update.
        noise_scale_decay: None (off), or the moving averages' decay per
            window, in [0, 1).
        micro_batch_size: the batch size given to `fit`, for B_simple in
            examples without the epoch callback (None: unknown).
        name: optional name.

    Example:

    >>> opt = GradientAccumulator(keras.optimizers.SGD(0.1, momentum=0.9), 8)
    >>> model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
    >>> model.fit(x, y, batch_size=128,  # updates at batch 1024
    ...           callbacks=[callbacks.EpochAlignedAccumulation(len(x), 128)])
    """

    def __init__(self, inner_optimizer, accumulation_steps=1, noise_scale_decay=None,
                 micro_batch_size=None, name=None, **kwargs):
        if isinstance(inner_optimizer, dict):
            inner_optimizer = keras.saving.deserialize_keras_object(inner_optimizer)
        if not isinstance(inner_optimizer, keras.optimizers.Optimizer):
            raise TypeError(
                "GradientAccumulator wraps a keras.optimizers.Optimizer; got "
                f"inner_optimizer={inner_optimizer!r}."
            )
        if getattr(inner_optimizer, "gradient_accumulation_steps", None):
            raise ValueError(
                "The inner optimizer already accumulates "
                f"(gradient_accumulation_steps="
                f"{inner_optimizer.gradient_accumulation_steps}); "
                "remove that argument and let GradientAccumulator do it."
            )
        check_accumulation_steps(accumulation_steps)
        refuse_base_arguments(kwargs)
        super().__init__(learning_rate=0.0, name=name)
        if noise_scale_decay is not None and not 0 <= noise_scale_decay < 1:
            raise ValueError(f"noise_scale_decay={noise_scale_decay!r}: expected None (off) or "
                             "a decay per window in [0, 1), e.g. 0.99.")
        if micro_batch_size is not None and (isinstance(micro_batch_size, bool) or not isinstance(
                micro_batch_size, int) or micro_batch_size < 1):
            raise ValueError(f"micro_batch_size={micro_batch_size!r}: expected None or the "
                             "batch size given to fit, an integer >= 1.")
        self.inner_optimizer = inner_optimizer
        self.initial_accumulation_steps = int(accumulation_steps)
        self.noise_scale_decay = noise_scale_decay
        self.initial_micro_batch_size = micro_batch_size
        self._warned_no_micro_batch = False

    # -- state -------------------------------------------------------------
    def build(self, var_list):
        if self.built:
            return

        def scalar(name, dtype, value=0):
            return self.add_variable(
                shape=(),
                dtype=dtype,
                initializer=keras.initializers.Constant(value),
                aggregation="none",
                name=name,
            )

        self.accumulation_steps = scalar(
            "accumulation_steps", "int32", self.initial_accumulation_steps
        )
        self.micro_step = scalar("micro_step", "int32")
        self.window_examples = scalar("window_examples", "float32")
        # How the current epoch is cut (0 = unknown: equal weights, carry).
        self.epoch_examples = scalar("epoch_examples", "int32")
        self.micro_batch_size = scalar("micro_batch_size", "int32",
                                       self.initial_micro_batch_size or 0)
        self.epoch_micro_step = scalar("epoch_micro_step", "int32")
        if self.noise_scale_decay is not None:
            # Sum over the window of |g_micro|^2; moving averages of the
            # estimates of |G|^2 and tr(Sigma) (their ratio needs no bias
            # correction: both start at 0 with the same decay).
            self.micro_sq_norms = scalar("micro_sq_norms", "float32")
            self.noise_grad_sq = scalar("noise_grad_sq", "float32")
            self.noise_trace = scalar("noise_trace", "float32")
        self.accumulators = [
            self.add_variable(
                shape=v.shape,
                dtype="float32",
                initializer="zeros",
                aggregation="none",
                name="accumulator",
            )
            for v in var_list
        ]
        self.inner_optimizer.build(var_list)
        super().build(var_list)

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    def set_accumulation_steps(self, accumulation_steps):
        """Sets the micro-batches per update; takes effect at the next window."""
        check_accumulation_steps(accumulation_steps)
        self.accumulation_steps.assign(int(accumulation_steps))

    def set_epoch(self, num_examples, micro_batch_size=None, *, batch_size=None):
        """Declares the next epoch: `num_examples` cut into batches of
        `micro_batch_size` (the batch given to `fit`; an update takes
        `accumulation_steps` of them). `batch_size=` is its deprecated name.

        Call between epochs (the callback does it in `on_epoch_begin`).
        """
        micro_batch_size = micro_batch_argument(micro_batch_size, batch_size, "set_epoch")
        if num_examples < 1 or micro_batch_size < 1:
            raise ValueError(
                f"set_epoch needs num_examples >= 1 and micro_batch_size >= 1; got "
                f"num_examples={num_examples}, micro_batch_size={micro_batch_size}."
            )
        self.epoch_examples.assign(int(num_examples))
        self.micro_batch_size.assign(int(micro_batch_size))
        self.epoch_micro_step.assign(0)

    # -- one micro-batch: the body every path shares ---------------------------
    def _closes_window(self):
        """(weight of the coming micro-batch, does it close its window?)."""
        known = ops.greater(self.epoch_examples, 0)
        left = self.epoch_examples - self.epoch_micro_step * self.micro_batch_size
        # Unknown epoch layout: every micro-batch weighs the declared
        # micro_batch_size (equal weights either way; the noise scale's batch
        # sizes are then in examples), or 1 if none was declared.
        n = ops.where(
            known, ops.minimum(left, self.micro_batch_size),
            ops.maximum(self.micro_batch_size, ops.ones_like(left)),
        )
        last_of_epoch = ops.logical_and(known, ops.less_equal(left, self.micro_batch_size))
        closes = ops.logical_or(
            ops.greater_equal(self.micro_step + 1, self.accumulation_steps), last_of_epoch
        )
        return ops.cast(n, "float32"), closes

    def _accumulate(self, grads, n, add=None, squared_norm=None):
        """Adds the micro-batch's gradients, weighted by its `n` examples.
        `add(accumulator, fn, grad)` applies fn per replica under tf.distribute,
        where `squared_norm(grads)` sums the replicas' small-batch |g|^2."""
        add = add or (lambda acc, fn, g: acc.assign(fn(acc, g)))
        for acc, g in zip(self.accumulators, grads):
            if g is not None:
                add(acc, lambda a, g: a + n * ops.cast(g, "float32"), g)
        if self.noise_scale_decay is not None:
            self.micro_sq_norms.assign(self.micro_sq_norms + (squared_norm or _squared_norm)(grads))
        self.window_examples.assign(self.window_examples + n)
        self.epoch_micro_step.assign(self.epoch_micro_step + 1)

    def _close_window(self, variables, step, per_replica=None, window_sq_norm=None,
                      replicas=1):
        """`step(mean gradients, variables)` on the window's example-weighted
        mean, then an empty window. Under tf.distribute, `per_replica(fn,
        *args)` computes the mean per replica, `window_sq_norm(mean)` the
        |g_window|^2 of their sum, and each of the `replicas` shards of a
        micro-batch is a small batch of the noise scale."""
        per_replica = per_replica or (lambda fn, *args: fn(*args))
        mean = [
            per_replica(lambda a, v: ops.cast(a / self.window_examples, v.dtype), a, v)
            for a, v in zip(self.accumulators, variables)
        ]
        if self.noise_scale_decay is not None:
            self._measure_noise((window_sq_norm or _squared_norm)(mean), replicas)
        step(mean, variables)
        for acc in self.accumulators:
            acc.assign(ops.zeros(acc.shape, acc.dtype))
        self.window_examples.assign(0.0)
        self.micro_step.assign(0)

    def _measure_noise(self, sq_big, replicas=1):
        """McCandlish et al. (2018), A.1: E|g_B|^2 = |G|^2 + tr(Sigma) / B at
        B_small = the window's mean micro-batch (per replica under
        tf.distribute) and B_big = the window; `sq_big` is |g_window|^2."""
        # The closing micro-batch did not wait: micro_step + 1 of them.
        count = ops.cast(self.micro_step + 1, "float32") * replicas
        big = self.window_examples
        small = big / count
        sq_small = self.micro_sq_norms / count
        usable = ops.greater(count, 1.5)
        safe = ops.where(usable, big - small, 1.0)
        grad_sq = (big * sq_big - small * sq_small) / safe
        trace = (sq_small - sq_big) * small * big / safe  # / (1/small - 1/big)
        decay = self.noise_scale_decay
        for average, value in ((self.noise_grad_sq, grad_sq), (self.noise_trace, trace)):
            average.assign(average + ops.where(usable, (1 - decay) * (value - average), 0.0))
        self.micro_sq_norms.assign(0.0)

    @property
    def batch_size(self):
        """Examples per update now: the micro-batch (as the last `set_epoch`
        gave it; 0 before) x the accumulation steps."""
        return int(ops.convert_to_numpy(self.micro_batch_size)) * int(
            ops.convert_to_numpy(self.accumulation_steps))

    @property
    def noise_scale_simple(self):
        """B_simple = tr(Sigma) / |G|^2 from the moving averages, in examples
        (a float; NaN before the first window of two or more micro-batches,
        when off, or when the micro-batch size is unknown: then the window
        weighed every micro-batch as 1 and a warning says what to add)."""
        if self.noise_scale_decay is None or not self.built:
            return float("nan")
        if int(ops.convert_to_numpy(self.micro_batch_size)) == 0:
            if not self._warned_no_micro_batch:
                self._warned_no_micro_batch = True
                warnings.warn(
                    "GradientAccumulator.noise_scale_simple is NaN: the micro-batch size is "
                    "unknown, so B_simple would be in micro-batches, not examples; add "
                    "EpochAlignedAccumulation(len(x), batch_size) to fit's callbacks or pass "
                    "micro_batch_size=batch_size to GradientAccumulator.", stacklevel=2)
            return float("nan")
        grad_sq = float(ops.convert_to_numpy(self.noise_grad_sq))
        trace = float(ops.convert_to_numpy(self.noise_trace))
        return trace / grad_sq if grad_sq != 0 else float("nan")

    def _wait(self):
        self.micro_step.assign(self.micro_step + 1)

    # -- the three ways Keras applies gradients ------------------------------
    def apply(self, grads, trainable_variables=None):
        if not self.built:
            self.build(trainable_variables)
            self.built = True
        grads = list(grads)
        variables = list(trainable_variables or self._trainable_variables)
        if keras.backend.backend() == "tensorflow" and _needs_merge_call():
            self._tf_distributed_apply(grads, variables)
            return
        n, closes = self._closes_window()
        self._accumulate(grads, n)
        close = lambda: self._close_window(variables, self.inner_optimizer.apply)  # noqa: E731
        if keras.backend.backend() == "jax":
            # Eager only (compiled JAX steps use stateless_apply), and lax.cond
            # cannot hold side effects: branch in Python.
            (close if bool(closes) else self._wait)()
        else:
            ops.cond(closes, close, self._wait)

    def _tf_distributed_apply(self, grads, variables):
        """tf.distribute (MirroredStrategy): accumulate each replica's own
        gradients, decide in cross-replica context, and let the inner
        optimizer all-reduce the window's mean as it would a gradient."""
        import tensorflow as tf

        def merged(distribution, grads, variables):
            extended = distribution.extended
            replicas = distribution.num_replicas_in_sync
            n, closes = self._closes_window()

            def total(per_replica_value):
                return distribution.reduce(tf.distribute.ReduceOp.SUM, per_replica_value,
                                           axis=None)

            def shard_sq_norms(grads):
                # Keras divides each replica's loss by the replica count (the
                # all-reduced sum is the mean), so a shard's own mean gradient
                # is `replicas` times the replica's.
                sq = extended.call_for_each_replica(lambda *g: _squared_norm(g), args=grads)
                return replicas ** 2 * total(sq)

            # `update` calls fn(component, grad) per device; fn must assign.
            self._accumulate(grads, n, add=lambda acc, fn, g: extended.update(
                acc.value, lambda a, g: a.assign(fn(a, g)), args=(g,), group=False),
                squared_norm=shard_sq_norms)

            def step(mean, variables):
                extended.call_for_each_replica(
                    self.inner_optimizer.apply, args=(mean, variables))

            def per_replica(fn, *args):
                return extended.call_for_each_replica(fn, args=args)

            def window_sq_norm(mean):
                return _squared_norm([total(m) for m in mean])

            ops.cond(closes, lambda: self._close_window(
                variables, step, per_replica, window_sq_norm, replicas), self._wait)

        tf.distribute.get_replica_context().merge_call(merged, args=(grads, variables))

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        # JAX: no side effects inside lax.cond, so each branch runs the shared
        # body in a StatelessScope of its own and returns the new values.
        mapping = list(zip(self.variables, optimizer_variables))
        with keras.StatelessScope(state_mapping=mapping):
            n, closes = self._closes_window()

        def branch(close):
            def run():
                new = dict(trainable=list(trainable_variables))
                with keras.StatelessScope(state_mapping=mapping) as scope:
                    self._accumulate(grads, n)
                    inner = [scope.get_current_value(v) for v in self.inner_optimizer.variables]
                    if close:
                        def step(mean, variables):
                            new["trainable"], inner[:] = self.inner_optimizer.stateless_apply(
                                inner, mean, variables)
                        self._close_window(list(trainable_variables), step)
                    else:
                        self._wait()
                    own = [scope.get_current_value(v) for v in self._variables]
                return list(new["trainable"]), own + list(inner)
            return run

        return ops.cond(closes, branch(True), branch(False))

    # -- delegation --------------------------------------------------------
    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        # The base constructor sets a dummy rate before the inner one exists.
        if "inner_optimizer" in self.__dict__:
            self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        """Updates made (micro-batches are not counted)."""
        return self.inner_optimizer.iterations

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def get_config(self):
        steps = (int(keras.ops.convert_to_numpy(self.accumulation_steps)) if self.built
                 else self.initial_accumulation_steps)
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            "accumulation_steps": steps,
            "noise_scale_decay": self.noise_scale_decay,
            "micro_batch_size": self.initial_micro_batch_size,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(
            config.pop("inner_optimizer"), custom_objects=custom_objects
        )
        if "steps" in config:  # saved before the argument was renamed
            config["accumulation_steps"] = config.pop("steps")
        return cls(inner, **config)


def _squared_norm(tensors):
    """Sum of squares over a list of gradients (None skipped), float32."""
    return sum(ops.sum(ops.square(ops.cast(t, "float32"))) for t in tensors if t is not None)


def _needs_merge_call():
    import tensorflow as tf

    return (tf.distribute.has_strategy() and tf.distribute.in_cross_replica_context() is False
            and not tf.__internal__.distribute.strategy_supports_no_merge_call())


def wrapped_optimizers(optimizer):
    """`optimizer` and every optimizer it wraps (`inner_optimizer`), outermost first."""
    while optimizer is not None:
        yield optimizer
        optimizer = getattr(optimizer, "inner_optimizer", None)


def accumulator_of(optimizer):
    """The `GradientAccumulator` in `optimizer` (or wrapping it), or None."""
    return next((o for o in wrapped_optimizers(optimizer)
                 if isinstance(o, GradientAccumulator)), None)


def micro_batches_until(optimizer, updates):
    """Training steps (micro-batches) until `optimizer` has made `updates` more
    updates: `updates` without accumulation, else updates x steps less the
    micro-batches of the open window. A callback's `steps_until_due()` uses it
    to tell the fast engine where to stop."""
    accumulator = accumulator_of(optimizer)
    if accumulator is None or not accumulator.built:
        return updates
    return updates * int(ops.convert_to_numpy(accumulator.accumulation_steps)) - int(
        ops.convert_to_numpy(accumulator.micro_step))


def inner_optimizer(optimizer):
    """The optimizer that does the arithmetic, below any wrappers."""
    return list(wrapped_optimizers(optimizer))[-1]


def built_accumulator(model):
    """The `GradientAccumulator` of `model`'s optimizer, built for the model's
    weights if it was not yet (a callback may need its variables before the
    first step), or None."""
    accumulator = accumulator_of(model.optimizer)
    if accumulator is not None and not accumulator.built:
        accumulator.build(model.trainable_variables)
    return accumulator
