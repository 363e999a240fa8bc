"""Offline-first datasets, every file checked by sha256 before use.

`load("cifar10")` returns `((x_train, y_train), (x_test, y_test))` as uint8
images (N, H, W, C) and int labels. Each file is looked for in order:

1. `DATA_DIR` (default `data/`, git-ignored; downloads go here),
2. `DATA_MIRROR` (default `../shared/data`, read-only: never written to),
3. the canonical URL, downloaded into `DATA_DIR`.

A file whose sha256 differs from the known one is an error naming the file and
both hashes; a missing file with no network is an error saying where to put
it. Any other name is loaded through TensorFlow Datasets (`tfds.load`).
"""

import functools
import gzip
import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reproduce.runs import settings
from reproduce.runs.cli import UserError



class DatasetError(UserError, RuntimeError):
    """A dataset file is missing, cannot be fetched, or fails its checksum."""


class ChecksumError(DatasetError):
    """A file is there but is not the file it should be."""


@dataclass(frozen=True)
class File:
    """One dataset file: where it lives below a data folder, its hash, its URL."""

    path: str
    sha256: str
    url: str = ""
    # Decompressed-content hash, for copies re-gzipped with another header
    # (Debian's dataset-fashion-mnist zeroes the gzip name and time).
    content_sha256: str = ""


_MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
_FASHION_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

FILES = {
    "mnist": [
        File(f"mnist/{name}.gz", sha, _MNIST_URL + f"{name}.gz")
        for name, sha in zip(_IDX, (
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        ))
    ],
    "fashion_mnist": [
        File(f"fashion-mnist/{name}.gz", sha, _FASHION_URL + f"{name}.gz", content)
        for name, sha, content in zip(_IDX, (
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        ), (
            # Recorded from Debian's copy (it parses as 60k/10k IDX files);
            # offline there was no second copy to cross-check against.
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ))
    ],
    # The mirror holds CIFAR-10 as arrays (see its README); online, the
    # canonical archive is used instead.
    "cifar10": [
        File("cifar10.npz",
             "a44cc18e4ad961b5158c7da062a6232fb65938b615bf013046199b823b75c43d"),
        File("cifar-10-python.tar.gz",
             "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
             "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    ],
    "cifar100": [
        File("cifar-100-python.tar.gz",
             "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
             "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
    ],
}

# Extra read-only places some datasets are installed by system packages.
SYSTEM_MIRRORS = {"fashion_mnist": [Path("/usr/share/datasets")]}

NUM_CLASSES = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100}


def default_data_dir():
    return settings.data_dir()


def default_mirror():
    return settings.data_mirror()


def sha256_of(path, decompress=False):
    digest = hashlib.sha256()
    opener = gzip.open if decompress else open
    with opener(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path, file):
    """Raises DatasetError unless `path` has `file`'s known hash."""
    actual = sha256_of(path)
    if actual == file.sha256:
        return
    if file.content_sha256 and sha256_of(path, decompress=True) == file.content_sha256:
        return
    raise ChecksumError(
        f"checksum mismatch for {path}: expected sha256 {file.sha256}, got "
        f"{actual}. Delete the file (or fix the mirror) and run again."
    )


def locate(file, data_dir=None, mirror=None, extra=(), download=True):
    """The verified local path of `file`, downloading it if need be."""
    data_dir = Path(data_dir or default_data_dir())
    places = [data_dir, Path(mirror or default_mirror()), *map(Path, extra)]
    for root in places:
        candidate = root / file.path
        if candidate.is_file():
            verify(candidate, file)
            return candidate
    if not file.url or not download:
        raise DatasetError(
            f"{file.path} not found in {', '.join(map(str, places))}; "
            f"put the file at {data_dir / file.path}"
            + (f" (from {file.url})." if file.url else ".")
        )
    return _download(file, data_dir / file.path)


def _download(file, target):
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(file.url, timeout=60) as r:
            shutil.copyfileobj(r, out)
        verify(tmp, file)
        os.replace(tmp, target)
    except OSError as error:
        raise DatasetError(
            f"cannot download {file.url} ({error}); with no network, put the "
            f"file at {target} (sha256 {file.sha256})."
        ) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


# -- readers ---------------------------------------------------------------
def _read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _load_idx(name, data_dir, mirror, download):
    paths = [
        locate(f, data_dir, mirror, SYSTEM_MIRRORS.get(name, ()), download)
        for f in FILES[name]
    ]
    x_train, y_train, x_test, y_test = (_read_idx(p) for p in paths)
    return (x_train[..., None], y_train), (x_test[..., None], y_test)


def _cifar_from_tar(path, fine_labels):
    key = b"fine_labels" if fine_labels else b"labels"
    parts = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            base = os.path.basename(member.name)
            if base.startswith(("data_batch", "test_batch", "train", "test")) and member.isfile():
                batch = pickle.load(tar.extractfile(member), encoding="bytes")
                if b"data" in batch:
                    parts[base] = batch
    train = sorted(k for k in parts if k.startswith(("data_batch", "train")))
    test = [k for k in parts if k in ("test_batch", "test")]

    def stack(keys):
        x = np.concatenate([parts[k][b"data"] for k in keys])
        y = np.concatenate([np.asarray(parts[k][key]) for k in keys])
        return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), y.astype(np.uint8)

    return stack(train), stack(test)


def _load_cifar10(data_dir, mirror, download):
    arrays, archive = FILES["cifar10"]
    try:
        path = locate(arrays, data_dir, mirror, download=False)
    except DatasetError as first:  # no arrays: the original archive will do
        try:
            return _cifar_from_tar(locate(archive, data_dir, mirror, download=download), False)
        except DatasetError as second:
            if isinstance(first, ChecksumError):  # name the bad file, not only the download
                raise ChecksumError(f"{first} Then: {second}") from None
            raise
    with np.load(path) as d:
        return (d["x_train"], d["y_train"]), (d["x_test"], d["y_test"])


def _load_cifar100(data_dir, mirror, download):
    return _cifar_from_tar(locate(FILES["cifar100"][0], data_dir, mirror, download=download), True)


def _load_tfds(name, data_dir, download):
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DatasetError(
            f"unknown dataset {name!r}: known are {sorted(NUM_CLASSES)}; other "
            "names need tensorflow-datasets (pip install tensorflow-datasets)."
        ) from None
    try:
        builder = tfds.builder(name, data_dir=str(Path(data_dir) / "tfds"))
    except Exception as error:  # tfds raises its own DatasetNotFoundError
        raise DatasetError(f"unknown dataset {name!r}: {error}".splitlines()[0]) from None
    if download:
        builder.download_and_prepare()

    def arrays(split):
        batches = list(tfds.as_numpy(builder.as_dataset(split=split, batch_size=4096,
                                                        as_supervised=True)))
        return (np.concatenate([b[0] for b in batches]),
                np.concatenate([b[1] for b in batches]))

    NUM_CLASSES[name] = builder.info.features["label"].num_classes
    return arrays("train"), arrays("test")


def load(name, data_dir=None, mirror=None, download=None):
    """Loads a dataset as uint8 images and integer labels.

    Args:
        name: "mnist", "fashion_mnist", "cifar10", "cifar100", or any TFDS
            image-classification dataset with "train" and "test" splits.
        data_dir: writable data folder; default $DATA_DIR or data/.
        mirror: read-only mirror folder; default $DATA_MIRROR or ../shared/data.
        download: fetch missing files from the canonical URL; default: yes,
            unless $DATA_DOWNLOAD is 0.

    Returns:
        `((x_train, y_train), (x_test, y_test))`, x as (N, H, W, C) uint8.

    Example:

    >>> (x, y), (x_test, y_test) = load("mnist")
    >>> x.shape
    (60000, 28, 28, 1)
    """
    data_dir = Path(data_dir or default_data_dir())
    if download is None:
        download = settings.env_text("DATA_DOWNLOAD", "1", choices=("0", "1")) == "1"
    if name in ("mnist", "fashion_mnist"):
        return _load_idx(name, data_dir, mirror, download)
    if name == "cifar10":
        return _load_cifar10(data_dir, mirror, download)
    if name == "cifar100":
        return _load_cifar100(data_dir, mirror, download)
    return _load_tfds(name, data_dir, download)


# -- the arrays a run trains on ------------------------------------------------
@functools.lru_cache(maxsize=4)
def prepared_data(dataset, train_size=None, test_size=None, subset_seed=12345):
    """Standardized float32 arrays; subsets drawn once with `subset_seed`, so
    every run of a sweep sees the same examples."""
    (x, y), (x_test, y_test) = load(dataset)
    rng = np.random.default_rng(subset_seed)
    if train_size and train_size < len(x):
        keep = np.sort(rng.permutation(len(x))[:train_size])
        x, y = x[keep], y[keep]
    if test_size and test_size < len(x_test):
        keep = np.sort(rng.permutation(len(x_test))[:test_size])
        x_test, y_test = x_test[keep], y_test[keep]
    from reproduce.runs.pipeline import channel_stats, standardize  # keras: only when needed

    mean, std = channel_stats(x)
    return (standardize(x, mean, std), y.astype(np.int32),
            standardize(x_test, mean, std), y_test.astype(np.int32))


def data_of(config):
    """`prepared_data` for `config`: (x, y, x_test, y_test), less the
    `validation_size` training examples held out (`validation_of`)."""
    x, y, x_test, y_test = prepared_data(config.dataset, config.train_size, config.test_size,
                                         config.subset_seed)
    held = config.validation_size or 0
    return x[:len(x) - held], y[:len(y) - held], x_test, y_test


def validation_of(config):
    """(x, y) of the training examples `config` holds out to choose on (the
    last `validation_size` of its training subset; None without): a sweep
    picks its best cell on these and judges it on the test set (Shallue et
    al. tune on validation data)."""
    if not config.validation_size:
        return None
    x, y = prepared_data(config.dataset, config.train_size, config.test_size,
                         config.subset_seed)[:2]
    return x[len(x) - config.validation_size:], y[len(y) - config.validation_size:]
