"""The input pipeline: numpy and keras.ops, so it runs on any Keras backend.

An `EpochPlan` draws an epoch's order and augmentation (crop offsets, flips)
from `(seed, epoch)`, so a run is reproducible and a resumed run sees the same
batches. The fast engine (`reproduce.runs.engine`) applies the plan on the device
(`crop_on_device`); with engine="fit" the runner applies it with numpy
(`epoch_arrays`) and hands each epoch's arrays to `model.fit(...,
shuffle=False)` with that epoch's batch size (one `fit` per epoch), so the
batch size can change between epochs with the right number of steps.

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
    n = len(x)
    dy = rng.integers(0, 2 * pad + 1, n)
    dx = rng.integers(0, 2 * pad + 1, n)
    flips = rng.random(n) < (0.5 if flip else 0.0)
    return crop(x, dy, dx, flips, pad)


def crop(x, dy, dx, flip, pad):
    """numpy: pad x (N, H, W, C) by `pad` with zeros, then take each example's
    H x W window at offset (dy, dx), mirrored where `flip`."""
    n, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    rows = dy[:, None] + np.arange(h)[None, :]
    cols = dx[:, None] + np.arange(w)[None, :]
    cols = np.where(flip[:, None], cols[:, ::-1], cols)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def crop_on_device(x, dy, dx, flip, pad):
    """`crop` in keras.ops, for a batch already on the device (any backend):
    one gather from the padded batch, so the result equals `crop`'s exactly."""
    from keras import ops

    n = ops.shape(x)[0]  # a tensor where the batch size is not static (TensorFlow)
    h, w, c = x.shape[1:]
    hp, wp = h + 2 * pad, w + 2 * pad
    padded = ops.reshape(ops.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))), (-1, c))
    dy, dx = ops.cast(dy, "int32")[:, None], ops.cast(dx, "int32")[:, None]
    rows = dy + ops.arange(h, dtype="int32")[None, :]
    cols = ops.where(ops.cast(flip, "bool")[:, None],
                     dx + ops.arange(w - 1, -1, -1, dtype="int32")[None, :],
                     dx + ops.arange(w, dtype="int32")[None, :])
    flat = ((ops.arange(n, dtype="int32")[:, None, None] * hp + rows[:, :, None]) * wp
            + cols[:, None, :])
    return ops.reshape(ops.take(padded, ops.reshape(flat, (-1,)), axis=0), (-1, h, w, c))


AUGMENTATIONS = (False, True, "shift")


class EpochPlan:
    """An epoch's random draws, made on the host from (seed, epoch): the order
    of the examples and, when augmenting, each position's crop offset and flip.

    Applying a plan is the pipeline's real work; `epoch_arrays` does it with
    numpy, the fast engine (`reproduce.runs.engine`) on the device, batch by
    batch, so both see exactly the same batches.

    Attributes:
        order: (N,) example indices in batch order.
        pad: crop padding (0: no augmentation).
        dy, dx, flip: (N,) per position in `order`, or None without augmentation.
    """

    def __init__(self, n, epoch, seed=0, shuffle=True, augment=False):
        if not any(augment is a for a in AUGMENTATIONS):
            raise ValueError(f"augment={augment!r}: expected one of {AUGMENTATIONS}.")
        rng = np.random.default_rng([seed, epoch])
        self.order = rng.permutation(n) if shuffle else np.arange(n)
        self.pad, self.dy, self.dx, self.flip = 0, None, None, None
        if augment:
            self.pad, mirror = (4, True) if augment is True else (2, False)
            # The draws of pad_crop_flip, in its order.
            self.dy = rng.integers(0, 2 * self.pad + 1, n)
            self.dx = rng.integers(0, 2 * self.pad + 1, n)
            self.flip = rng.random(n) < (0.5 if mirror else 0.0)

    def apply(self, x, y):
        """numpy: the epoch's inputs and labels, in batch order."""
        x = x[self.order]
        if self.pad:
            x = crop(x, self.dy, self.dx, self.flip, self.pad)
        return x, np.asarray(y)[self.order].astype(np.int32)


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
    return EpochPlan(len(x), epoch, seed, shuffle, augment).apply(x, y)


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
