"""One run on several devices, data parallel, with the engines Keras has:
`tf.distribute.MirroredStrategy` on TensorFlow, `keras.distribution.DataParallel`
on JAX. `RunConfig.devices = n` (`DEVICES=n`, `--devices n`) selects it.

The global batch (the config's batch, or its accumulation micro-batch) is
split evenly across the devices and the gradients are averaged, so a model
without batch norm trains the same weights as on one device (to round-off).
What batch norm's statistics are computed over differs by engine:

- TensorFlow (MirroredStrategy): per device. Each device normalizes its own
  physical_batch / n examples, i.e. ghost batches of that size (Hoffer et al.),
  and the moving statistics are the devices' mean.
- JAX (DataParallel): over the whole physical batch. The step is one program
  over a batch sharded across devices, and XLA computes the mean and variance
  over all of it, as one device would.

On a machine without n GPUs, n logical CPU devices stand in (how the tests
run this on a CPU): `use_cpu_devices(n)` before TensorFlow starts, or
XLA_FLAGS=--xla_force_host_platform_device_count=n for JAX (set by
`reproduce.runs.settings` from DEVICES).
"""

import contextlib

import keras

from reproduce.runs import settings
from reproduce.runs.cli import UserError


def use_cpu_devices(n):
    """Splits TensorFlow's CPU into max(n, $DEVICES) logical devices, if it has no GPU.

    Must run before TensorFlow initializes its devices (before the first op),
    so a process that will train on n devices sets DEVICES=n (the runs before
    then train on the first device); a no-op on other backends, with GPUs,
    or for n == 1."""
    n = max(n, settings.requested_devices())
    if n <= 1 or keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    if len(tf.config.get_logical_device_configuration(cpu) or []) == n:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    except RuntimeError:
        raise UserError(f"devices={n}: TensorFlow has already started with "
                        f"{len(tf.config.list_logical_devices('CPU'))} CPU device(s); "
                        "set DEVICES before the first TensorFlow op.") from None


def available(backend=None):
    """The devices a run may spread over: GPUs if any, else (logical) CPUs."""
    backend = backend or keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    if backend == "jax":
        import jax

        return jax.devices()
    return []


@contextlib.contextmanager
def data_parallel(n):
    """Builds, compiles and trains under this to spread one run over n devices;
    yields the strategy or distribution (None for n == 1)."""
    if n == 1:
        yield None
        return
    backend = keras.backend.backend()
    devices = available(backend)
    if backend not in ("tensorflow", "jax"):
        raise UserError(f"devices={n}: data parallel runs need the TensorFlow or JAX "
                        f"backend, not {backend}.")
    if len(devices) < n:
        hint = ("DEVICES=n before the process starts makes n logical CPU devices"
                if backend == "tensorflow" else
                "XLA_FLAGS=--xla_force_host_platform_device_count=n makes n CPU devices")
        raise UserError(f"devices={n}: only {len(devices)} device(s) here; {hint}.")
    if backend == "tensorflow":
        import tensorflow as tf

        names = [d.name for d in devices[:n]]
        # NCCL (the default all-reduce) is for GPUs; logical CPUs reduce on one device.
        reduce = None if "GPU" in names[0] else tf.distribute.ReductionToOneDevice()
        strategy = tf.distribute.MirroredStrategy(names, cross_device_ops=reduce)
        with strategy.scope():
            yield strategy
    else:
        previous = keras.distribution.distribution()
        distribution = keras.distribution.DataParallel(devices=devices[:n])
        keras.distribution.set_distribution(distribution)
        try:
            yield distribution
        finally:
            keras.distribution.set_distribution(previous)
