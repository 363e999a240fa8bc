"""Process-wide settings chosen per platform, applied before TensorFlow loads.

TensorFlow ships its oneDNN kernels switched off on x86 CPUs without
AVX-512, and they are what makes its CPU convolutions fast: on the 2-core
AVX2 machine this suite is developed on, the fast engine trains ResNet-20
about 2x faster with them (`make bench-throughput`, README "Speed on the
CPU"). So on x86 we switch them on, unless the user has set
TF_ENABLE_ONEDNN_OPTS already (their value wins). TensorFlow reads the
variable once, when it is first imported, so `apply()` runs on importing the
`reproduce` package, and the Makefile exports the same default for every
process a target starts. oneDNN reorders floating-point sums: results move by
round-off, not more (tests/test_engine.py compares the engines to 1e-4).

    python -m reproduce     # what is in force in a process the suite starts
"""

import os
import platform

ONEDNN = "TF_ENABLE_ONEDNN_OPTS"
HOST_DEVICES = "--xla_force_host_platform_device_count"


def defaults(machine=None):
    """{variable: value} this suite sets on `machine` (default: this one)."""
    machine = (machine or platform.machine()).lower()
    return {ONEDNN: "1"} if machine in ("x86_64", "amd64", "x64") else {}


def apply():
    """Sets each default the user has not set; returns the variables it set."""
    changed = {}
    for name, value in defaults().items():
        if name not in os.environ:
            os.environ[name] = changed[name] = value
    flags = os.environ.get("XLA_FLAGS", "")
    if requested_devices() > 1 and HOST_DEVICES not in flags:
        # JAX's CPU as DEVICES devices (reproduce.devices); read when JAX starts.
        os.environ["XLA_FLAGS"] = changed["XLA_FLAGS"] = \
            f"{flags} {HOST_DEVICES}={requested_devices()}".strip()
    return changed


def requested_devices():
    """DEVICES from the environment (1 if unset or not a number; the figure
    command line reports a bad value)."""
    text = os.environ.get("DEVICES", "1")
    return int(text) if text.isdigit() else 1


def in_force():
    """What TensorFlow itself reports: (backend, oneDNN kernels on?)."""
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        return backend, False
    from tensorflow.python.util import _pywrap_util_port  # TF's own runtime check

    return backend, bool(_pywrap_util_port.IsMklEnabled())
