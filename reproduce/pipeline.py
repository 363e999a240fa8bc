"""The input pipeline: numpy only, so it runs on any Keras backend.

`epoch_arrays` draws an epoch's order and augmentation from `(seed, epoch)`,
so a run is reproducible and a resumed run sees the same batches. The runner
hands each epoch's arrays to `model.fit(..., shuffle=False)` with that epoch's
batch size (one `fit` per epoch): Keras's own array path is the fastest input
it has, and the batch size can change between epochs with the right number of
steps and a correct progress bar.

`EpochBatches` serves the same batches as a `keras.utils.PyDataset`, for code
that wants one object for several epochs. It is slower at small batches on the
TensorFlow backend (`make bench-pipeline`).
"""

import math

import keras
import numpy as np


def standardize(x, mean, std):
    """uint8 images -> float32, per-channel (x/255 - mean) / std."""
    return ((x.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)


def channel_stats(x):
    """Per-channel mean and std of uint8 images, in [0, 1] units."""
    x = x.reshape(-1, x.shape[-1]).astype(np.float64) / 255.0
    return x.mean(axis=0).astype(np.float32), x.std(axis=0).astype(np.float32)


def pad_crop_flip(x, rng, pad=4, flip=True):
    """The standard CIFAR augmentation: zero-pad by `pad`, random crop, random
    horizontal flip. x: (N, H, W, C) float32, already standardized (so the
    padding is the mean image, as in the papers' Torch code after mean removal).
    With flip=False it is a random shift by up to `pad` pixels (digits)."""
    n, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    dy = rng.integers(0, 2 * pad + 1, n)
    dx = rng.integers(0, 2 * pad + 1, n)
    rows = dy[:, None] + np.arange(h)[None, :]
    cols = dx[:, None] + np.arange(w)[None, :]
    flip = rng.random(n) < (0.5 if flip else 0.0)
    cols = np.where(flip[:, None], cols[:, ::-1], cols)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


AUGMENTATIONS = (False, True, "shift")


def epoch_arrays(x, y, epoch, seed=0, shuffle=True, augment=False):
    """The whole epoch's inputs and labels, in batch order.

    Args:
        x: float32 inputs (N, ...), already standardized.
        y: integer labels (N,).
        epoch: the epoch number (0-based); with `seed` it fixes order and augmentation.
        shuffle: permute the examples.
        augment: one of AUGMENTATIONS: False, True (pad 4, random crop,
            horizontal flip: CIFAR) or "shift" (pad 2 and crop, no flip: digits).

    Example:

    >>> xe, ye = epoch_arrays(x, y, epoch=3, seed=0, augment=True)
    >>> model.fit(xe, ye, batch_size=128, shuffle=False, initial_epoch=3, epochs=4)
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(x)) if shuffle else np.arange(len(x))
    x = x[order]
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment={augment!r}: expected one of {AUGMENTATIONS}.")
    if augment:
        x = pad_crop_flip(x, rng, **({} if augment is True else dict(pad=2, flip=False)))
    return x, np.asarray(y)[order].astype(np.int32)


class EpochBatches(keras.utils.PyDataset):
    """Batches of (x, y) for `model.fit`, reshuffled and re-augmented per epoch.

    Args:
        x: float32 inputs (N, ...), already standardized.
        y: integer labels (N,).
        batch_size: examples per batch; the last batch of an epoch holds the rest.
        seed: the epoch's order and augmentation come from (seed, epoch).
        shuffle: draw a new order every epoch.
        augment: False, True (`pad_crop_flip`: pad 4, crop, flip; CIFAR) or
            "shift" (pad 2 and crop, no flip: digits).
        first_epoch: the epoch number of the first epoch this object serves
            (a phase that starts at epoch 60 sees the batches of epoch 60).

    Example:

    >>> data = EpochBatches(x, y, batch_size=128, seed=0, augment=True)
    >>> model.fit(data, epochs=10)
    """

    def __init__(self, x, y, batch_size, seed=0, shuffle=True, augment=False, first_epoch=0):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
        self.x, self.y = x, np.asarray(y).astype(np.int32)
        self.batch_size = int(batch_size)
        self.seed, self.shuffle, self.augment = seed, shuffle, augment
        self.epoch = None
        self._next_epoch = first_epoch
        self._prepare(first_epoch)

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def on_epoch_begin(self):
        # Keras calls this once at the start of every epoch of `fit`.
        self.epoch, self._next_epoch = self._next_epoch, self._next_epoch + 1
        self._prepare(self.epoch)

    def _prepare(self, epoch):
        if getattr(self, "_prepared", None) != epoch:
            self._epoch_x, self._epoch_y = self.arrays_for_epoch(epoch)
            self._prepared = epoch

    def arrays_for_epoch(self, epoch):
        return epoch_arrays(self.x, self.y, epoch, self.seed, self.shuffle, self.augment)

    def __getitem__(self, index):
        s = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self._epoch_x[s], self._epoch_y[s]
