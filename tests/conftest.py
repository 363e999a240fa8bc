import os
import re
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Each pytest-xdist worker keeps to one thread (reproduce.runs.settings), so the
# workers share the cores instead of fighting over them, and a sweep's runs
# train one by one unless a test asks for them side by side.
# (`make` exports them empty when unset: empty counts as unset.)
for name in ("THREADS", "JOBS"):
    if not os.environ.get(name):
        os.environ[name] = "1"
ROOT = Path(__file__).resolve().parent.parent

import pytest  # noqa: E402

from reproduce.runs import datasets  # noqa: E402

import keras  # noqa: E402  (after reproduce: its settings come first)


def mirror_has(path):
    return (datasets.default_mirror() / path).is_file()


needs_mnist = pytest.mark.skipif(not mirror_has("mnist/train-images-idx3-ubyte.gz"),
                                 reason="MNIST mirror not found")
needs_cifar10 = pytest.mark.skipif(not mirror_has("cifar10.npz"), reason="CIFAR-10 mirror not found")


# TensorFlow's own start-up notes on stderr (absl log lines such as "oneDNN custom
# operations are on"), printed before any of our code runs and whatever
# TF_CPP_MIN_LOG_LEVEL says: not ours to count.
TF_NOTE = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl|"
                     r"To enable the following instructions|This TensorFlow binary)")


def without_thread_budget(env):
    """`env` without the thread settings this test process runs with, for a
    subprocess that sets its own budget."""
    from reproduce.runs import settings

    drop = {*settings.thread_settings(1), "XLA_FLAGS"}
    return {k: v for k, v in env.items() if k not in drop}


def our_lines(stderr):
    """The lines of `stderr` that are not TensorFlow's start-up notes."""
    return [line for line in stderr.strip().splitlines() if line and not TF_NOTE.match(line)]


def pytest_configure(config):
    # `make test-fast` leaves these out: figure smoke runs, whole sweeps in
    # subprocesses; `make test` (and CI) runs everything.
    config.addinivalue_line("markers", (
        "slow: trains a preset, starts Python processes, or runs thousands of steps for a "
        "statistical estimate, or takes over ~5 s on 2 cores (make test-fast stays under a "
        "minute)"))
    # Keras's TF backend calls np.array(x, copy=False) on every metric read.
    config.addinivalue_line(
        "filterwarnings", "ignore:__array__ implementation doesn't accept a copy keyword")


# small_batch's smoke preset trained once per worker for the two tests that read it
# (tests/test_cli.py: --set; tests/test_runner.py: the figure's cells and files);
# both carry SMALL_BATCH_SMOKE's xdist_group, so one worker trains it once.
SMALL_BATCH_SMOKE = pytest.mark.xdist_group("small_batch_smoke")


@pytest.fixture(scope="session")
def small_batch_smoke(tmp_path_factory):
    """The folder of small_batch's smoke preset run with `--set epochs=1 --set
    seed=3`: fig/ (CSVs, PNGs) and res/ (the store)."""
    from reproduce.papers import small_batch

    folder = tmp_path_factory.mktemp("small_batch_smoke")
    small_batch.main(["--preset", "smoke", "--out", str(folder / "fig"),
                      "--results", str(folder / "res"), "--set", "epochs=1", "--set", "seed=3"])
    return folder


# -- helpers the sweep tests share (test_shared_store.py, test_scale_out.py) --
def one_event_file_per_run(folder):
    """The runs with curves under `folder` (a sweep's TensorBoard folder),
    checking that each has one event file: it was logged once."""
    runs = [p for p in folder.iterdir() if p.is_dir()]
    for run in runs:
        assert len(list(run.glob("events.out.tfevents.*"))) == 1, run
    return len(runs)


class Raise(keras.callbacks.Callback):
    """Raises `error` at the end of the first epoch."""

    def __init__(self, error):
        super().__init__()
        self.error = error

    def on_epoch_end(self, epoch, logs=None):
        raise self.error


# -- the claims tests' test-set sizes (test_claims.py, test_paper_claims.py) --
def n_test(n):
    return lambda network=None: n
