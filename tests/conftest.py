import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402

from reproduce import datasets  # noqa: E402


def mirror_has(path):
    return (datasets.default_mirror() / path).is_file()


needs_mnist = pytest.mark.skipif(not mirror_has("mnist/train-images-idx3-ubyte.gz"),
                                 reason="MNIST mirror not found")
needs_cifar10 = pytest.mark.skipif(not mirror_has("cifar10.npz"), reason="CIFAR-10 mirror not found")


def pytest_configure(config):
    # Keras's TF backend calls np.array(x, copy=False) on every metric read.
    config.addinivalue_line(
        "filterwarnings", "ignore:__array__ implementation doesn't accept a copy keyword")
