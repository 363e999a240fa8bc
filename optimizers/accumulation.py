"""Gradient accumulation that is exactly the large batch.

`GradientAccumulator` wraps any Keras optimizer. It sums the gradients of
`steps` micro-batches, each weighted by its number of examples, and then
lets the inner optimizer take *one* step on their example-weighted mean. With
a mean-reduced loss that mean is the gradient of the concatenated batch, so
the step is the large-batch step: weight decay, clipping, EMA, learning-rate
schedules and `iterations` all act once per update, and the inner optimizer's
state (momentum, Adam moments) does not move between updates.

What batch normalization sees: every micro-batch is a separate forward pass,
so batch statistics are computed per micro-batch. Accumulating k x m with
BatchNormalization is therefore *ghost batch norm with ghost size m* on a
batch of k*m, not batch norm on k*m. Without batch norm (or with group norm,
which has no batch dimension) accumulation equals the large batch.
"""

import keras
from keras import ops
from keras.src import backend as keras_backend  # StatelessScope, for JAX
from keras.src.saving import serialization_lib


@keras.saving.register_keras_serializable(package="batchsize")
class GradientAccumulator(keras.optimizers.Optimizer):
    """Accumulates gradients over micro-batches, then steps the inner optimizer.

    After `steps` micro-batches the weights equal one step of
    `inner_optimizer` on the concatenated batch with a mean-reduced loss.

    Micro-batch weighting and epoch ends. An optimizer never sees the data,
    so by default every micro-batch gets the same weight and a window that is
    still open at the end of an epoch (or of `fit`) is *carried*: the next
    epoch completes it. Tell the accumulator how an epoch is cut, through
    `set_epoch(num_examples, batch_size)` or the `EpochAlignedAccumulation`
    callback, and it becomes exact for uneven epochs too: the short last
    micro-batch is weighted by its size, and the last window of the epoch is
    *flushed* (applied early, with fewer micro-batches), so an epoch makes
    `ceil(num_examples / (batch_size * steps))` updates, as native large-batch
    training does.

    The number of steps is a variable (`set_steps`): a callback may change it
    between epochs without recompiling.

    Mixed precision: wrap the loss-scale optimizer, not the other way round,
    and compile with `auto_scale_loss=False`:
    `GradientAccumulator(keras.optimizers.LossScaleOptimizer(Adam()), 8)`.
    The loss scale is constant within a window, so the accumulated sum is
    unscaled once; a micro-batch with non-finite gradients makes the sum
    non-finite and the whole window is skipped (and the scale halved).

    Args:
        inner_optimizer: the `keras.optimizers.Optimizer` that takes the steps.
        steps: int >= 1, micro-batches per update.
        name: optional name.

    Example:

    >>> opt = GradientAccumulator(keras.optimizers.SGD(0.1, momentum=0.9), 8)
    >>> model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
    >>> model.fit(x, y, batch_size=128,  # updates at batch 1024
    ...           callbacks=[EpochAlignedAccumulation(len(x), 128)])
    """

    def __init__(self, inner_optimizer, steps=1, name=None, **kwargs):
        if isinstance(inner_optimizer, dict):
            inner_optimizer = serialization_lib.deserialize_keras_object(
                inner_optimizer
            )
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
        _check_steps(steps)
        kwargs.pop("learning_rate", None)  # from_config of the base class
        super().__init__(learning_rate=0.0, name=name, **kwargs)
        self.inner_optimizer = inner_optimizer
        self.initial_steps = int(steps)

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

        self.steps = scalar("steps", "int32", self.initial_steps)
        self.micro_step = scalar("micro_step", "int32")
        self.window_examples = scalar("window_examples", "float32")
        # How the current epoch is cut (0 = unknown: equal weights, carry).
        self.epoch_examples = scalar("epoch_examples", "int32")
        self.micro_batch_size = scalar("micro_batch_size", "int32")
        self.epoch_micro_step = scalar("epoch_micro_step", "int32")
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

    def set_steps(self, steps):
        """Sets the micro-batches per update; takes effect at the next window."""
        _check_steps(steps)
        self.steps.assign(int(steps))

    def set_epoch(self, num_examples, batch_size):
        """Declares the next epoch: `num_examples` cut into `batch_size` batches.

        Call between epochs (the callback does it in `on_epoch_begin`).
        """
        if num_examples < 1 or batch_size < 1:
            raise ValueError(
                f"set_epoch needs num_examples >= 1 and batch_size >= 1; got "
                f"num_examples={num_examples}, batch_size={batch_size}."
            )
        self.epoch_examples.assign(int(num_examples))
        self.micro_batch_size.assign(int(batch_size))
        self.epoch_micro_step.assign(0)

    # -- the step ----------------------------------------------------------
    def _micro_batch(self):
        """(weight of this micro-batch, does it close its window?)."""
        known = ops.greater(self.epoch_examples, 0)
        seen = self.epoch_micro_step * self.micro_batch_size
        left = self.epoch_examples - seen
        n = ops.where(
            known, ops.minimum(left, self.micro_batch_size), ops.ones_like(left)
        )
        last_of_epoch = ops.logical_and(known, ops.less_equal(left, self.micro_batch_size))
        closes = ops.logical_or(
            ops.greater_equal(self.micro_step + 1, self.steps), last_of_epoch
        )
        return ops.cast(n, "float32"), closes

    def _mean_gradients(self, accumulated, total, reference):
        return [
            ops.cast(ops.divide(a, total), v.dtype)
            for a, v in zip(accumulated, reference)
        ]

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            self.build(trainable_variables)
            self.built = True
        grads = list(grads)
        variables = list(trainable_variables or self._trainable_variables)
        if keras.backend.backend() == "tensorflow" and _needs_merge_call():
            self._tf_distributed_apply(grads, variables)
            return
        n, closes = self._micro_batch()
        for acc, g in zip(self.accumulators, grads):
            if g is not None:
                acc.assign(acc + n * ops.cast(g, "float32"))
        self.window_examples.assign(self.window_examples + n)
        ops.cond(closes, lambda: self._close_window(variables), self._wait)
        self.epoch_micro_step.assign(self.epoch_micro_step + 1)

    def _close_window(self, variables):
        mean = self._mean_gradients(self.accumulators, self.window_examples, variables)
        self.inner_optimizer.apply(mean, variables)
        for acc in self.accumulators:
            acc.assign(ops.zeros_like(acc))
        self.window_examples.assign(0.0)
        self.micro_step.assign(0)

    def _wait(self):
        self.micro_step.assign(self.micro_step + 1)

    def _tf_distributed_apply(self, grads, variables):
        """tf.distribute (MirroredStrategy): accumulate each replica's own
        gradients, decide in cross-replica context, and let the inner
        optimizer all-reduce the window's mean as it would a gradient."""
        import tensorflow as tf

        def merged(distribution, grads, variables):
            n, closes = self._micro_batch()
            for acc, g in zip(self.accumulators, grads):
                if g is not None:
                    distribution.extended.update(
                        acc.value, lambda a, g: a.assign(a + n * tf.cast(g, "float32")),
                        args=(g,), group=False)
            self.window_examples.assign(self.window_examples + n)

            def per_replica_step(mean, variables):
                distribution.extended.call_for_each_replica(
                    self.inner_optimizer.apply, args=(mean, variables))

            def close():
                mean = [
                    distribution.extended.call_for_each_replica(
                        lambda a, v: tf.cast(a / self.window_examples, v.dtype), args=(a, v))
                    for a, v in zip(self.accumulators, variables)
                ]
                per_replica_step(mean, variables)
                for acc in self.accumulators:
                    acc.assign(tf.zeros_like(acc))
                self.window_examples.assign(0.0)
                self.micro_step.assign(0)

            ops.cond(closes, close, self._wait)
            self.epoch_micro_step.assign(self.epoch_micro_step + 1)

        tf.distribute.get_replica_context().merge_call(merged, args=(grads, variables))

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        # JAX: no side effects inside lax.cond, so each branch returns values.
        own_count = len(self._variables)
        mapping = list(zip(self.variables, optimizer_variables))
        with keras_backend.StatelessScope(state_mapping=mapping):
            n, closes = self._micro_batch()
            accumulated = [
                acc if g is None else acc + n * ops.cast(g, "float32")
                for acc, g in zip(
                    [ops.convert_to_tensor(a) for a in self.accumulators], grads
                )
            ]
            total = ops.convert_to_tensor(self.window_examples) + n
            micro_step = ops.convert_to_tensor(self.micro_step)
            epoch_micro_step = ops.convert_to_tensor(self.epoch_micro_step) + 1
        own_index = {id(v): i for i, v in enumerate(self._variables)}
        inner_values = list(optimizer_variables[own_count:])

        def own_values(accs, total, micro_step):
            values = list(optimizer_variables[:own_count])
            for acc_var, value in zip(self.accumulators, accs):
                values[own_index[id(acc_var)]] = value
            values[own_index[id(self.window_examples)]] = total
            values[own_index[id(self.micro_step)]] = micro_step
            values[own_index[id(self.epoch_micro_step)]] = epoch_micro_step
            return values

        def update():
            mean = self._mean_gradients(accumulated, total, trainable_variables)
            new_trainable, new_inner = self.inner_optimizer.stateless_apply(
                inner_values, mean, trainable_variables
            )
            zeros = [ops.zeros_like(a) for a in accumulated]
            own = own_values(zeros, ops.zeros_like(total), ops.zeros_like(micro_step))
            return list(new_trainable), own + list(new_inner)

        def wait():
            own = own_values(accumulated, total, micro_step + 1)
            return list(trainable_variables), own + inner_values

        return ops.cond(closes, update, wait)

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
        return {
            "name": self.name,
            "inner_optimizer": serialization_lib.serialize_keras_object(
                self.inner_optimizer
            ),
            "steps": int(self.steps.numpy()) if self.built else self.initial_steps,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = serialization_lib.deserialize_keras_object(
            config.pop("inner_optimizer"), custom_objects=custom_objects
        )
        return cls(inner, **config)


def _needs_merge_call():
    import tensorflow as tf

    return (tf.distribute.has_strategy() and tf.distribute.in_cross_replica_context() is False
            and not tf.__internal__.distribute.strategy_supports_no_merge_call())


def _check_steps(steps):
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(
            f"GradientAccumulator steps must be an integer >= 1; got steps={steps!r}."
        )


@keras.saving.register_keras_serializable(package="batchsize")
class EpochAlignedAccumulation(keras.callbacks.Callback):
    """Tells a `GradientAccumulator` how each epoch is cut into micro-batches.

    With it the short last micro-batch of an epoch is weighted by its size
    and the epoch's last window is flushed, so accumulated training equals
    native large-batch training epoch by epoch.

    Args:
        num_examples: training examples per epoch.
        batch_size: the micro-batch size given to `fit`.

    Example:

    >>> model.fit(x, y, batch_size=128,
    ...           callbacks=[EpochAlignedAccumulation(len(x), 128)])
    """

    def __init__(self, num_examples, batch_size):
        super().__init__()
        self.num_examples = int(num_examples)
        self.batch_size = int(batch_size)

    def get_config(self):
        return {"num_examples": self.num_examples, "batch_size": self.batch_size}

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = accumulator_of(self.model.optimizer)
        if optimizer is None:
            return
        if not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        optimizer.set_epoch(self.num_examples, self.batch_size)


def accumulator_of(optimizer):
    """The `GradientAccumulator` in `optimizer` (or wrapping it), or None."""
    while optimizer is not None:
        if isinstance(optimizer, GradientAccumulator):
            return optimizer
        optimizer = getattr(optimizer, "inner_optimizer", None)
    return None
