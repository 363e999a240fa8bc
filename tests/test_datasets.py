"""Datasets: the real files from the mirror, checksum errors, TFDS by name."""

import shutil

import numpy as np
import pytest
from conftest import needs_cifar10, needs_mnist

from reproduce.runs import datasets


@needs_mnist
def test_mnist_from_mirror_has_known_shapes_counts_and_mean(tmp_path):
    (x, y), (xt, yt) = datasets.load("mnist", data_dir=tmp_path, download=False)
    assert x.shape == (60000, 28, 28, 1) and xt.shape == (10000, 28, 28, 1)
    assert x.dtype == np.uint8
    # Published class counts of the MNIST training set.
    assert np.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(yt).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert x.mean() / 255 == pytest.approx(0.1307, abs=1e-4)
    assert list(tmp_path.iterdir()) == []  # nothing copied or written


@pytest.mark.slow
@needs_cifar10
def test_cifar10_from_mirror_matches_published_statistics(tmp_path):
    (x, y), (xt, yt) = datasets.load("cifar10", data_dir=tmp_path, download=False)
    assert x.shape == (50000, 32, 32, 3) and xt.shape == (10000, 32, 32, 3)
    assert np.bincount(y).tolist() == [5000] * 10
    assert np.bincount(yt).tolist() == [1000] * 10
    np.testing.assert_allclose(x.reshape(-1, 3).mean(0), [125.31, 122.95, 113.87], atol=0.01)
    np.testing.assert_allclose(x.reshape(-1, 3).std(0), [62.99, 62.09, 66.71], atol=0.01)


@needs_mnist
def test_one_changed_byte_raises_checksum_error_with_both_hashes(tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(datasets.default_mirror() / "mnist", mirror / "mnist")
    target = mirror / "mnist" / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(datasets.DatasetError) as error:
        datasets.load("mnist", data_dir=tmp_path / "data", mirror=mirror, download=False)
    message = str(error.value)
    assert "t10k-labels-idx1-ubyte.gz" in message
    assert "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6" in message
    assert datasets.sha256_of(target) in message


def test_missing_file_without_network_says_where_to_put_it(tmp_path):
    with pytest.raises(datasets.DatasetError, match=r"put the file at .*cifar-100-python.tar.gz"):
        datasets.load("cifar100", data_dir=tmp_path, mirror=tmp_path / "none", download=False)


def test_unknown_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(datasets.DatasetError, match="no_such_dataset"):
        datasets.load("no_such_dataset", data_dir=tmp_path, download=False)


def test_any_tfds_dataset_by_name_with_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        (x, y), (xt, yt) = datasets.load("svhn_cropped", data_dir=tmp_path)
    assert x.shape == (12, 32, 32, 3) and xt.shape == (12, 32, 32, 3)
    assert x.dtype == np.uint8 and y.min() >= 0 and y.max() < 10


def test_a_mirror_file_failing_its_checksum_is_named_even_when_a_fallback_is_tried(tmp_path):
    """cifar10.npz is bad, so the loader goes on to the original archive, which
    is not there either: the error still names the bad file and both hashes."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "cifar10.npz").write_bytes(b"not the arrays")
    with pytest.raises(datasets.ChecksumError) as error:
        datasets.load("cifar10", data_dir=tmp_path / "data", mirror=mirror, download=False)
    message = str(error.value)
    assert str(mirror / "cifar10.npz") in message
    assert datasets.FILES["cifar10"][0].sha256 in message
    assert datasets.sha256_of(mirror / "cifar10.npz") in message
    assert "cifar-10-python.tar.gz not found" in message  # and what was tried after it
