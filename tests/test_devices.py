"""One run on two devices (reproduce.runs.devices), on two logical CPU devices:
the weights of one device without batch norm, and what batch norm's
statistics are computed over on each engine."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest
from conftest import needs_mnist

ROOT = Path(__file__).resolve().parent.parent

# Trains pairs of runs in a fresh process (devices are fixed when the
# backend starts) and prints whether each pair agrees to the round-off
# measured for its reference.
SCRIPT = """
import json, sys
import numpy as np
import reproduce
from reproduce.runs.config import RunConfig
from reproduce.runs.train import train
from tests.roundoff import RoundOff, examples_reordered, smooth_model_registered

# A smooth network, so round-off stays round-off (tests/roundoff.py).
registration = smooth_model_registered()  # held for the script's life
model = registration.__enter__()
base = RunConfig(dataset="mnist", model=model, norm="none", train_size=256, test_size=64,
                 epochs=2, batch_size=64, lr=0.01, engine="fit")

def weights(config):
    _, model = train(config, return_model=True)
    return [np.asarray(w) for w in model.trainable_weights]

def agrees(reference, other):
    # The reference's round-off on this host: the same run with the examples of
    # every device shard (and ghost batch) of 32 in another order.
    with examples_reordered(32):
        again = weights(reference)
    noise = RoundOff(weights(reference), again)
    candidate = weights(other)
    return dict(agrees=noise.agrees(candidate), text=noise.describe(candidate, str(other)))

print(json.dumps(dict(
    plain=agrees(base, base.replace(devices=2)),
    accumulated=agrees(base.replace(batch_size=128), base.replace(batch_size=128, accumulation=2,
                                                                  devices=2)),
    bn_vs_whole_batch=agrees(base.replace(norm="batch"), base.replace(norm="batch", devices=2)),
    bn_vs_ghost=agrees(base.replace(norm="ghost:32"), base.replace(norm="batch", devices=2)),
)))
"""


def gaps(backend):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": backend, "DEVICES": "2"}
    env.pop("XLA_FLAGS", None)  # reproduce.runs.settings derives it from DEVICES
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                            text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@needs_mnist
def test_two_devices_train_one_devices_weights_and_batch_norm_as_the_engine_says():
    # The backend under test (make test runs this file on TensorFlow and JAX).
    backend = keras.backend.backend()
    g = gaps(backend)
    # Each pair: within 10x the reference's measured round-off (tests/roundoff.py), or not.
    assert g["plain"]["agrees"], g["plain"]["text"]
    # 2 micro-batches on 2 devices = the batch of 128
    assert g["accumulated"]["agrees"], g["accumulated"]["text"]
    if backend == "tensorflow":
        # MirroredStrategy: batch norm per device, ghost batches of 64 / 2 = 32.
        assert g["bn_vs_ghost"]["agrees"], g["bn_vs_ghost"]["text"]
        assert not g["bn_vs_whole_batch"]["agrees"], g["bn_vs_whole_batch"]["text"]
    else:
        # JAX DataParallel: batch norm over the whole batch of 64, as on one device.
        assert g["bn_vs_whole_batch"]["agrees"], g["bn_vs_whole_batch"]["text"]
        assert not g["bn_vs_ghost"]["agrees"], g["bn_vs_ghost"]["text"]


def test_more_devices_than_there_are_is_a_one_line_error():
    from reproduce.runs.cli import UserError
    from reproduce.runs.devices import data_parallel

    with pytest.raises(UserError, match=r"devices=64: only \d+ device\(s\) here; "):
        with data_parallel(64):
            pass


def test_devices_must_divide_the_physical_batch():
    from reproduce.runs.config import ConfigError, RunConfig

    with pytest.raises(ConfigError, match="devices=3: expected an integer >= 1 that divides "
                                          "the physical batch 64"):
        RunConfig(batch_size=64, devices=3)
    assert RunConfig(devices=1).key == RunConfig().key  # stored runs keep their keys
