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

Thread budget. `THREADS=n` keeps a process to n CPU threads: TensorFlow's
intra-op pool (where oneDNN runs) and inter-op pool, OpenMP and the BLAS
libraries, and XLA's CPU (JAX: one thread, or its default for n > 1, since
XLA has no flag for n). `thread_settings(n)` is that environment; it must be
in place before the backend starts, so `apply()` sets it on importing
`reproduce`, and a sweep's Ray workers get it in their task's environment
(`reproduce.runs.cluster`). A value you set yourself wins.
"""

import os
import platform
from pathlib import Path

ONEDNN = "TF_ENABLE_ONEDNN_OPTS"
HOST_DEVICES = "--xla_force_host_platform_device_count"
THREADS = "THREADS"
# The often-quoted "... intra_op_parallelism_threads=1" is no XLA flag: XLA stops
# reading XLA_FLAGS at that word, so the device count after it went unread.
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false"


def defaults(machine=None):
    """{variable: value} this suite sets on `machine` (default: this one)."""
    machine = (machine or platform.machine()).lower()
    return {ONEDNN: "1"} if machine in ("x86_64", "amd64", "x64") else {}


def apply():
    """Sets each default the user has not set; returns the variables it set."""
    changed = {}
    threads = requested_threads()
    for name, value in {**defaults(), **(thread_settings(threads) if threads else {})}.items():
        if name not in os.environ:
            os.environ[name] = changed[name] = value
    flags = os.environ.get("XLA_FLAGS", "")
    if threads == 1 and "xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = changed["XLA_FLAGS"] = f"{flags} {XLA_ONE_THREAD}".strip()
        flags = os.environ["XLA_FLAGS"]
    if requested_devices() > 1 and HOST_DEVICES not in flags:
        # JAX's CPU as DEVICES devices (reproduce.runs.devices); read when JAX starts.
        os.environ["XLA_FLAGS"] = changed["XLA_FLAGS"] = \
            f"{flags} {HOST_DEVICES}={requested_devices()}".strip()
    return changed


def thread_settings(threads):
    """The environment that keeps a process to `threads` CPU threads (XLA's
    flag for one thread is added by `apply`, which merges it into XLA_FLAGS)."""
    n = str(int(threads))
    return {THREADS: n, "TF_NUM_INTRAOP_THREADS": n, "TF_NUM_INTEROP_THREADS": n,
            "OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "MKL_NUM_THREADS": n}


def requested_threads():
    """THREADS from the environment: the process's thread budget, or None
    (unset: the backends' default, every core)."""
    text = os.environ.get(THREADS, "")
    return int(text) if text.isdigit() and int(text) > 0 else None


def cores():
    """The CPU cores this process may run on (its affinity mask)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


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


# -- the environment, read in one place ---------------------------------------------
# Every variable the suite reads, with its meaning; the Makefile exports the
# same names. A bad value is a one-line error naming it (`reproduce.runs.cli`).
ENVIRONMENT = {
    "THREADS": "a run's thread budget (default: every core)",
    "JOBS": "runs at once on this machine (1: one by one; default: side by side)",
    "DEVICES": "devices one run is spread over, data parallel (default 1)",
    "DRY_RUN": "1: train 2 updates of each kind of run and print the plan",
    "MAX_DEVICE_BATCH": "fig-dont-decay: batches above it are accumulated",
    "RUNS_PER_GPU": "runs sharing one GPU (Ray fractional GPUs; default 1)",
    "RAY_CPUS_PER_RUN": "CPUs a run's Ray task asks for (default 1)",
    "RAY_NUM_CPUS": "CPUs of a local Ray (default: every core)",
    "RAY_ADDRESS": "local, auto or ray://host:port: a sweep's runs as Ray tasks",
    "NETWORK": "fig-generalization-gap, fig-sharp-minima: one network's part",
    "TENSORBOARD": "1 (default): every run writes its curves; 0: none",
    "DATA_DIR": "datasets and the Kaggle files (default data/ in the checkout)",
    "DATA_MIRROR": "a read-only dataset mirror (default ../shared/data)",
    "DATA_DOWNLOAD": "0 forbids downloads",
}
ROOT = Path(__file__).resolve().parents[2]


def env_number(name, default=None, kind=int, minimum=1):
    """`name` from the environment as a number >= `minimum` (`kind`: int or
    float), `default` if unset or empty (make exports unset variables
    empty); any other value is a one-line error naming it."""
    from reproduce.runs.cli import UserError

    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        what = "an integer" if kind is int else "a number"
        raise UserError(f"{name}={text!r}: expected {what} >= {minimum}.")
    return value


def env_text(name, default=None, choices=None):
    """`name` from the environment, `default` if unset or empty; with
    `choices`, any other value is a one-line error naming them."""
    from reproduce.runs.cli import UserError

    text = os.environ.get(name, "").strip() or default
    if choices is not None and text not in choices:
        meaning = f" ({ENVIRONMENT[name]})" if name in ENVIRONMENT else ""
        raise UserError(f"{name}={text!r}: expected one of {', '.join(choices)}{meaning}.")
    return text


def data_dir():
    """DATA_DIR, else data/ in the checkout: one default for every reader."""
    return Path(env_text("DATA_DIR") or ROOT / "data")


def data_mirror():
    """DATA_MIRROR, else ../shared/data beside the checkout."""
    return Path(env_text("DATA_MIRROR") or ROOT.parent / "shared" / "data")
