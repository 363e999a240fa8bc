"""The fast training engine: the training set on the device, many steps per call.

`model.fit` copies every batch from the host and returns to Python after every
step; at small batches that overhead, not the model, sets the speed. The
`FastEngine` trains the same compiled Keras model (same optimizer object,
accumulation wrapper included, same loss and metrics) differently:

- the training set is copied to the device once;
- each epoch's random draws (order, crop offsets, flips: a
  `pipeline.EpochPlan`, a few integers per example) are made on the host, as
  for fit, and applied on the device: gather, pad, crop, flip;
- up to `batches_per_call` batches (training steps) run in one compiled call: a
  `lax.fori_loop` over the model's stateless `train_step` on JAX (on a JAX
  CPU, a Python loop of jitted steps: XLA:CPU runs steps inside a loop ~5x
  slower), a `tf.function` loop over its `train_step` on TensorFlow.

Callbacks get control at every epoch's begin and end and after every call
(`on_train_batch_end` with the index of the call's last step, as Keras does
with `steps_per_execution`); the model's variables are current whenever a
callback runs. A callback can ask for control sooner with a method
`steps_until_due()` (e.g. `WeightDistance`'s log-spaced records). On JAX one
step function is compiled per distinct batch size (an epoch whose size does
not divide the training set also compiles its last, smaller batch). On
TensorFlow one `tf.function` serves every batch size: the first size is
traced with its static shape, and the second traces it once more with the
batch dimension unknown (`reduce_retracing`), which then serves every later
size, so a batch that grows every few epochs costs two traces, not one per
size. Either is traced again only when something forces a new train function
(`make_train_function(force=True)`, as `BatchSizeSchedule` does when the
momentum changes).

With the same batches in the same order, the weights after an epoch equal
fit's to float32 round-off (tests/test_engine.py); test accuracy is computed
by the same `model.evaluate`.

A training set that does not fit in the device's memory is streamed from the
host instead, `batches_per_call` batches per copy, with a message saying so.
The PyTorch backend has no such engine here: runs fall back to `fit`.
"""

import math
import sys

import keras
import numpy as np

from reproduce.runs.pipeline import EpochPlan, crop_on_device

ENGINES = ("fast", "fit")  # RunConfig.engine: this one, or model.fit


def fast_engine_available():
    return keras.backend.backend() in ("jax", "tensorflow")


def _free_device_bytes():
    """Free accelerator memory in bytes where the backend reports it, else None
    (on a CPU the "device" is the host, which already holds the data)."""
    if keras.backend.backend() == "jax":
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        if "bytes_limit" in stats:
            return stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    return None


# Training steps per compiled call: callbacks run between calls.
BATCHES_PER_CALL = 100


class FastEngine:
    """Trains a compiled Keras model on a training set held on the device.

    Args:
        model: a compiled Keras model (JAX or TensorFlow backend).
        x: float32 training inputs (N, ...), already standardized (numpy).
        y: integer labels (N,).
        batches_per_call: batches trained per compiled call; callbacks run
            between calls.
        device_data_limit: bytes of training data that may be put on the
            device; None: half the device's free memory where known, else
            no limit. A larger training set is streamed from the host.
        log: where the fallback message goes.

    Example:

    >>> engine = FastEngine(model, x, y)
    >>> engine.fit(epochs=10, batch_size=lambda epoch: 128, seed=0, augment=True,
    ...            validation_data=(x_test, y_test), callbacks=[keras.callbacks.CSVLogger("log.csv")])
    """

    def __init__(self, model, x, y, batches_per_call=BATCHES_PER_CALL, device_data_limit=None,
                 log=sys.stdout):
        if not fast_engine_available():
            raise ValueError(f"FastEngine runs on the JAX and TensorFlow backends, not "
                             f"{keras.backend.backend()!r}; use engine='fit'.")
        if batches_per_call < 1:
            raise ValueError(f"batches_per_call={batches_per_call!r}: expected an integer >= 1.")
        self.model, self.batches_per_call, self.log = model, int(batches_per_call), log
        self.x_host, self.y_host = np.asarray(x, np.float32), np.asarray(y, np.int32)
        self._functions, self._train_function = {}, None
        # One entry per compilation (the batch size; None: traced for any size).
        self.compiled_batch_sizes = []
        self.resident = self._place(device_data_limit)

    # -- data ------------------------------------------------------------------
    def _place(self, limit):
        size = self.x_host.nbytes + self.y_host.nbytes
        if limit is None:
            free = _free_device_bytes()
            limit = None if free is None else free // 2
        if limit is not None and size > limit:
            self._say(f"fast engine: the training set ({size / 2**20:.0f} MiB) exceeds the "
                      f"device budget ({limit / 2**20:.0f} MiB); streaming {self.batches_per_call} "
                      "batches per copy from the host instead.")
            return False
        try:
            self.x_device = keras.ops.convert_to_tensor(self.x_host)
            self.y_device = keras.ops.convert_to_tensor(self.y_host)
        except (MemoryError, RuntimeError) as error:  # XLA and TF out-of-memory errors
            self._say(f"fast engine: could not put the training set on the device "
                      f"({str(error).splitlines()[0]}); streaming from the host instead.")
            return False
        return True

    def _chunk_inputs(self, plan, start, batch, count, rows):
        """What one call needs: the source arrays and (rows, batch) tables of
        positions, crop offsets and flips for `count` batches from epoch
        position `start`, padded to `rows` batches so the shapes, and so the
        compiled call, stay fixed."""
        take = slice(start, start + count * batch)
        order = plan.order[take]
        if self.resident:
            x, y, index = self.x_device, self.y_device, order
        else:  # only this call's examples travel, gathered on the host
            x = np.zeros((rows * batch, *self.x_host.shape[1:]), np.float32)
            y = np.zeros(rows * batch, np.int32)
            x[:len(order)], y[:len(order)] = self.x_host[order], self.y_host[order]
            index = np.arange(len(order))

        def table(values, dtype):
            out = np.zeros((rows, batch), dtype)
            out.reshape(-1)[:len(values)] = values
            return out

        zeros = np.zeros(len(order), np.int32)
        pad = plan.pad
        return (x, y, table(index, np.int32),
                table(plan.dy[take] if pad else zeros, np.int32),
                table(plan.dx[take] if pad else zeros, np.int32),
                table(plan.flip[take] if pad else zeros, bool))

    # -- compiled steps ----------------------------------------------------------
    def _function(self, batch, pad):
        if self.model.train_function is not self._train_function:
            self._functions = {}  # a new train function: trace everything again
            self._train_function = self.model.train_function
        jax = keras.backend.backend() == "jax"
        key = (batch, pad) if jax else pad
        if key not in self._functions:
            if jax:
                self._functions[key] = _jax_steps(self.model, pad)
                self.compiled_batch_sizes.append(batch)
            else:
                self._functions[key] = _tensorflow_steps(
                    self.model, pad, on_trace=self.compiled_batch_sizes.append)
        return self._functions[key]

    def _run(self, plan, start, batch, count, rows):
        steps = self._function(batch, plan.pad)
        inputs = self._chunk_inputs(plan, start, batch, count, rows)
        steps(*inputs, count)

    # -- the loop ----------------------------------------------------------------
    def fit(self, epochs, batch_size, seed=0, augment=False, validation_data=None,
            validation_batch_size=1000, callbacks=(), initial_epoch=0, verbose=0,
            first_evaluated_epoch=0):
        """Trains epochs initial_epoch .. epochs-1, like `model.fit`.

        Args:
            epochs: index of the epoch to stop before.
            batch_size: an int, or epoch -> the epoch's (physical) batch size.
            seed, augment: the epoch plans' (`pipeline.EpochPlan`).
            validation_data: (x, y), evaluated with `model.evaluate` after
                every epoch from `first_evaluated_epoch` on; logged as
                val_loss, val_accuracy, ...
            callbacks: Keras callbacks.
            verbose: 1 shows Keras's progress bar.

        Returns:
            The last epoch's logs.
        """
        model = self.model
        size_of = batch_size if callable(batch_size) else (lambda epoch: batch_size)
        n = len(self.x_host)
        callbacks = keras.callbacks.CallbackList(
            list(callbacks), add_progbar=verbose != 0, model=model, verbose=verbose,
            epochs=epochs, steps=math.ceil(n / size_of(initial_epoch)))
        # Build the model, loss, metrics and optimizer variables before tracing.
        model._symbolic_build(data_batch=(self.x_host[:1], self.y_host[:1]))
        model.make_train_function()
        model.stop_training = False
        logs = {}
        callbacks.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            batch = int(size_of(epoch))
            full, rest = divmod(n, batch)
            callbacks.set_params(dict(epochs=epochs, steps=full + (rest > 0), verbose=verbose))
            model.reset_metrics()
            callbacks.on_epoch_begin(epoch)
            plan = EpochPlan(n, epoch, seed, augment=augment)
            rows = min(self.batches_per_call, full) if full else 0
            step = 0
            while step < full and not model.stop_training:
                # Begin hooks first: one may change the accumulation (a batch
                # grown on the noise scale), which moves where the next is due.
                callbacks.on_train_batch_begin(step)
                count = min(rows, full - step, *self._due(callbacks))
                self._run(plan, step * batch, batch, count, rows)
                step += count
                callbacks.on_train_batch_end(step - 1, {})
            if rest and not model.stop_training:  # the epoch's last, smaller batch
                callbacks.on_train_batch_begin(full)
                self._run(plan, full * batch, rest, 1, 1)
                callbacks.on_train_batch_end(full, {})
            logs = {name: float(value) for name, value in model.get_metrics_result().items()}
            if validation_data is not None and epoch >= first_evaluated_epoch:
                results = model.evaluate(*validation_data, batch_size=validation_batch_size,
                                         verbose=0, return_dict=True)
                logs.update({f"val_{name}": float(value) for name, value in results.items()})
            callbacks.on_epoch_end(epoch, logs)
            if model.stop_training:
                break
        callbacks.on_train_end(logs)
        return logs

    @staticmethod
    def _due(callbacks):
        return [max(1, int(c.steps_until_due())) for c in callbacks.callbacks
                if hasattr(c, "steps_until_due")]

    def _say(self, text):
        print(text, file=self.log, flush=True)


def _augmented_batch(x, y, index, dy, dx, flip, pad):
    from keras import ops

    xb = ops.take(x, index, axis=0)
    if pad:
        xb = crop_on_device(xb, dy, dx, flip, pad)
    return xb, ops.take(y, index, axis=0)


def _jax_steps(model, pad):
    """(x, y, index, dy, dx, flip, count) -> runs `count` steps; JAX."""
    import jax

    def steps(state, x, y, index, dy, dx, flip, count):
        def step(i, state):
            batch = _augmented_batch(x, y, index[i], dy[i], dx[i], flip[i], pad)
            return model.train_step(state, batch)[1]
        return jax.lax.fori_loop(0, count, step, state)

    compiled = jax.jit(steps)
    one_step = jax.jit(lambda state, *batch: model.train_step(
        state, _augmented_batch(*batch, pad))[1])
    # XLA:CPU runs a train step inside a loop (fori_loop or scan) about 5x
    # slower than the same step jitted alone (ResNet-20, batch 2: 17 vs 85
    # samples/s), so on CPU the call is a Python loop of jitted steps, the
    # state staying on the device between them.
    on_cpu = jax.default_backend() == "cpu"

    def run(x, y, index, dy, dx, flip, count):
        variables = (model.trainable_variables, model.non_trainable_variables,
                     model.optimizer.variables, model.metrics_variables)
        state = tuple([v.value for v in group] for group in variables)
        if on_cpu:
            for i in range(count):
                state = one_step(state, x, y, index[i], dy[i], dx[i], flip[i])
        else:
            state = compiled(state, x, y, index, dy, dx, flip, count)
        for group, values in zip(variables, state):
            for variable, value in zip(group, values):
                variable.assign(value)
    return run


def _tensorflow_steps(model, pad, on_trace):
    """(x, y, index, dy, dx, flip, count) -> runs `count` steps; TensorFlow.
    `on_trace(batch size or None)` is called each time TensorFlow traces it."""
    import tensorflow as tf

    @tf.function(jit_compile=bool(model.jit_compile), reduce_retracing=True)
    def steps(x, y, index, dy, dx, flip, count):
        on_trace(index.shape[1])  # Python: runs only while tracing
        for i in tf.range(count):
            model.train_step(_augmented_batch(x, y, index[i], dy[i], dx[i], flip[i], pad))

    def run(x, y, index, dy, dx, flip, count):
        steps(x, y, index, dy, dx, flip, tf.constant(count, tf.int32))
    return run
