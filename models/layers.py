"""Normalization layers and the `norm=` option every model takes."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="batchsize")
class GhostBatchNormalization(keras.layers.Layer):
    """Batch normalization with statistics per ghost batch (Hoffer et al. 2017).

    In training the batch is cut into consecutive ghost batches of
    `ghost_size` examples (the last one may be smaller); each is normalized
    with its own mean and variance. The moving statistics are updated once
    per ghost batch, in order, exactly as if `BatchNormalization` had been
    called on each ghost batch in turn. Inference uses the moving statistics.
    With `ghost_size >= batch size` this is `BatchNormalization`.

    Args:
        ghost_size: int >= 1, examples per ghost batch.
        momentum: moving-average momentum per ghost batch (Keras convention:
            `moving = momentum * moving + (1 - momentum) * batch`).
        epsilon: added to the variance.
        center, scale: learn beta / gamma.

    Example:

    >>> x = keras.Input((32, 32, 16))
    >>> y = GhostBatchNormalization(ghost_size=32)(x)
    """

    def __init__(self, ghost_size=128, momentum=0.99, epsilon=1e-3,
                 center=True, scale=True, **kwargs):
        super().__init__(**kwargs)
        if isinstance(ghost_size, bool) or not isinstance(ghost_size, int) or ghost_size < 1:
            raise ValueError(f"ghost_size must be an integer >= 1; got {ghost_size!r}.")
        self.ghost_size = ghost_size
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = center
        self.scale = scale
        self.supports_masking = True
        # While `models.recompute_batch_norm_statistics` runs: the moving
        # statistics hold the plain mean of the last batch's ghost batches.
        self.record_statistics = False

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gamma = self.add_weight(shape=(channels,), initializer="ones",
                                     name="gamma", trainable=self.scale)
        self.beta = self.add_weight(shape=(channels,), initializer="zeros",
                                    name="beta", trainable=self.center)
        self.moving_mean = self.add_weight(shape=(channels,), initializer="zeros",
                                           name="moving_mean", trainable=False)
        self.moving_variance = self.add_weight(shape=(channels,), initializer="ones",
                                               name="moving_variance", trainable=False)

    def call(self, inputs, training=False):
        dtype = inputs.dtype
        x = ops.cast(inputs, "float32")
        if not training:
            y = ops.divide(x - self.moving_mean, ops.sqrt(self.moving_variance + self.epsilon))
            return ops.cast(y * self.gamma + self.beta, dtype)

        n = ops.shape(x)[0]
        g = self.ghost_size
        feature_shape = tuple(x.shape[1:])
        pad = (g - n % g) % g
        x_padded = ops.pad(x, [[0, pad]] + [[0, 0]] * len(feature_shape))
        mask = ops.pad(ops.ones((n,), "float32"), [[0, pad]])
        ghosts = ops.reshape(x_padded, (-1, g) + feature_shape)
        mask = ops.reshape(mask, (-1, g) + (1,) * len(feature_shape))
        axes = tuple(range(1, len(feature_shape) + 1))  # ghost members and space
        count = ops.sum(mask, axis=axes, keepdims=True) * math.prod(feature_shape[:-1])
        mean = ops.sum(ghosts * mask, axis=axes, keepdims=True) / count
        variance = ops.sum(ops.square((ghosts - mean) * mask), axis=axes, keepdims=True) / count
        y = (ghosts - mean) * ops.rsqrt(variance + self.epsilon) * self.gamma + self.beta
        y = ops.reshape(y, (-1,) + feature_shape)[:n]

        mean = ops.reshape(mean, (-1, feature_shape[-1]))
        variance = ops.reshape(variance, (-1, feature_shape[-1]))
        num_ghosts = ops.shape(mean)[0]
        if self.record_statistics:  # in the recomputation
            self.moving_mean.assign(ops.mean(mean, axis=0))
            self.moving_variance.assign(ops.mean(variance, axis=0))
            return ops.cast(y, dtype)
        # Sequential EMA over the ghost batches, in closed form:
        # m_G = b^G m_0 + (1 - b) sum_i b^(G-1-i) mu_i.
        order = ops.cast(ops.arange(num_ghosts), "float32")
        b = self.momentum
        weights = (1.0 - b) * ops.power(b, ops.cast(num_ghosts, "float32") - 1.0 - order)
        decay = ops.power(b, ops.cast(num_ghosts, "float32"))
        self.moving_mean.assign(decay * self.moving_mean + ops.sum(weights[:, None] * mean, axis=0))
        self.moving_variance.assign(
            decay * self.moving_variance + ops.sum(weights[:, None] * variance, axis=0))
        return ops.cast(y, dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(ghost_size=self.ghost_size, momentum=self.momentum,
                      epsilon=self.epsilon, center=self.center, scale=self.scale)
        return config


NORMS = ("none", "batch", "ghost:<size>", "group[:<groups>]")


def parse_norm(norm):
    """'batch' -> ('batch', None); 'ghost:128' -> ('ghost', 128); errors name the value."""
    kind, _, arg = str(norm).partition(":")
    if kind in ("none", "batch") and not arg:
        return kind, None
    if kind in ("ghost", "group"):
        if not arg and kind == "group":
            return kind, None
        if arg.isdigit() and int(arg) >= 1:
            return kind, int(arg)
    raise ValueError(f"unknown norm {norm!r}: expected one of {', '.join(NORMS)}.")


def normalization(norm, channels, name=None):
    """A normalization layer for `channels` features, or None for norm='none'.

    Args:
        norm: "none", "batch", "ghost:<size>" (GhostBatchNormalization) or
            "group[:<groups>]" (GroupNormalization; default 32 groups, fewer
            if they do not divide `channels`).
    """
    kind, arg = parse_norm(norm)
    if kind == "none":
        return None
    if kind == "batch":
        return keras.layers.BatchNormalization(name=name)
    if kind == "ghost":
        return GhostBatchNormalization(ghost_size=arg, name=name)
    groups = min(arg or 32, channels)
    while channels % groups:
        groups -= 1
    return keras.layers.GroupNormalization(groups=groups, name=name)


@keras.saving.register_keras_serializable(package="batchsize")
class SubsampleAndPad(keras.layers.Layer):
    """He et al.'s parameter-free shortcut ("option A"): stride 2, zero channels.

    Args:
        channels: output channels (>= input channels).
    """

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels

    def call(self, x):
        x = x[:, ::2, ::2, :]
        extra = self.channels - x.shape[-1]
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [extra // 2, extra - extra // 2]])

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        return (n, None if h is None else (h + 1) // 2, None if w is None else (w + 1) // 2,
                self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}
