"""The papers' networks, as Keras functional models that output logits.

Every builder takes the input shape, the number of classes and:
    norm: "none", "batch", "ghost:<g>" or "group[:<groups>]" (see layers.py).
    he_init: He-normal kernels (Masters & Luschi, He et al.) instead of
        Keras's Glorot-uniform default.
    weight_decay: L2 on kernels, as SGD weight decay in Torch/PyTorch (the
        papers' frameworks): the loss gets wd/2 * ||w||^2, so the gradient
        gets wd * w, also under momentum.

Use a loss with `from_logits=True`.
"""

import keras

from batchsize.models.layers import SubsampleAndPad, normalization


class _Builder:
    """Holds the shared options so each network reads like its paper's table."""

    def __init__(self, norm, he_init, weight_decay):
        self.norm = norm
        self.init = "he_normal" if he_init else "glorot_uniform"
        self.reg = keras.regularizers.L2(weight_decay / 2) if weight_decay else None

    def conv(self, x, filters, kernel, strides=1, padding="same", bias=None):
        use_bias = self.norm == "none" if bias is None else bias
        return keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding,
                                   use_bias=use_bias, kernel_initializer=self.init,
                                   kernel_regularizer=self.reg)(x)

    def dense(self, x, units):
        return keras.layers.Dense(units, kernel_initializer=self.init,
                                  kernel_regularizer=self.reg)(x)

    def norm_act(self, x):
        layer = normalization(self.norm, x.shape[-1])
        if layer is not None:
            x = layer(x)
        return keras.layers.ReLU()(x)

    def logits(self, x, num_classes):
        return keras.layers.Dense(num_classes, kernel_regularizer=self.reg, name="logits")(x)


def f1(input_shape=(28, 28, 1), num_classes=10, norm="batch", he_init=False, weight_decay=0.0):
    """Keskar's / Hoffer's F1: 784 -> 5 x (Dense 512, norm, ReLU) -> classes."""
    b = _Builder(norm, he_init, weight_decay)
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    for _ in range(5):
        x = b.norm_act(b.dense(x, 512))
    return keras.Model(inputs, b.logits(x, num_classes), name="f1")


def c1(input_shape=(32, 32, 3), num_classes=10, norm="batch", he_init=False, weight_decay=0.0):
    """Keskar's C1 (C3 on CIFAR-100): a shallow AlexNet-like conv net."""
    b = _Builder(norm, he_init, weight_decay)
    inputs = keras.Input(input_shape)
    x = inputs
    for _ in range(2):
        x = b.norm_act(b.conv(x, 64, 5))
        x = keras.layers.MaxPooling2D(3, 2, padding="same")(x)
    x = keras.layers.Flatten()(x)
    for units in (384, 192):
        x = keras.layers.Dropout(0.5)(b.norm_act(b.dense(x, units)))
    return keras.Model(inputs, b.logits(x, num_classes), name="c1")


def c2(input_shape=(32, 32, 3), num_classes=10, norm="batch", he_init=False, weight_decay=0.0):
    """Keskar's C2 (C4 on CIFAR-100): VGG-16-like, batch norm and dropout.

    The layout of Zagoruyko's cifar.torch VGG, which Keskar et al. cite.
    """
    b = _Builder(norm, he_init, weight_decay)
    plan = [(64, 0.3), (64, "M"), (128, 0.4), (128, "M"), (256, 0.4), (256, 0.4), (256, "M"),
            (512, 0.4), (512, 0.4), (512, "M"), (512, 0.4), (512, 0.4), (512, "M")]
    inputs = keras.Input(input_shape)
    x = inputs
    for filters, after in plan:
        x = b.norm_act(b.conv(x, filters, 3))
        if after == "M":
            x = keras.layers.MaxPooling2D(2)(x)
        else:
            x = keras.layers.Dropout(after)(x)
    x = keras.layers.Flatten()(keras.layers.Dropout(0.5)(x))
    x = keras.layers.Dropout(0.5)(b.norm_act(b.dense(x, 512)))
    return keras.Model(inputs, b.logits(x, num_classes), name="c2")


def resnet(depth=20, input_shape=(32, 32, 3), num_classes=10, norm="batch", he_init=True,
           weight_decay=0.0):
    """He et al.'s CIFAR ResNet-{8,20,32,44,56}: 3 stages of (depth-2)/6 blocks.

    Widths 16/32/64, parameter-free shortcuts (option A), global average pool.
    """
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 (8, 20, 32, 44, 56, ...); got {depth}.")
    blocks = (depth - 2) // 6
    b = _Builder(norm, he_init, weight_decay)
    inputs = keras.Input(input_shape)
    x = b.norm_act(b.conv(inputs, 16, 3))
    for stage, width in enumerate((16, 32, 64)):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            shortcut = SubsampleAndPad(width)(x) if stride == 2 else x
            y = b.norm_act(b.conv(x, width, 3, strides=stride))
            y = b.conv(y, width, 3)
            layer = normalization(norm, width)
            y = layer(y) if layer is not None else y
            x = keras.layers.ReLU()(keras.layers.Add()([shortcut, y]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, b.logits(x, num_classes), name=f"resnet{depth}")


def wide_resnet(depth=16, width=4, input_shape=(32, 32, 3), num_classes=10, norm="batch",
                he_init=True, weight_decay=0.0):
    """Zagoruyko & Komodakis's WRN-depth-width: pre-activation blocks."""
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"WRN depth must be 6n+4 (10, 16, 22, 28, ...); got {depth}.")
    blocks = (depth - 4) // 6
    b = _Builder(norm, he_init, weight_decay)
    inputs = keras.Input(input_shape)
    x = b.conv(inputs, 16, 3)
    for stage, channels in enumerate((16 * width, 32 * width, 64 * width)):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            pre = b.norm_act(x)
            if stride != 1 or x.shape[-1] != channels:
                shortcut = b.conv(pre, channels, 1, strides=stride)
            else:
                shortcut = x
            y = b.conv(pre, channels, 3, strides=stride)
            y = b.conv(b.norm_act(y), channels, 3)
            x = keras.layers.Add()([shortcut, y])
    x = keras.layers.GlobalAveragePooling2D()(b.norm_act(x))
    return keras.Model(inputs, b.logits(x, num_classes), name=f"wrn{depth}_{width}")


def alexnet(input_shape=(32, 32, 3), num_classes=10, norm="none", he_init=True, weight_decay=0.0):
    """Masters & Luschi's reduced AlexNet: kernels 5,3,3,3,3; channels
    16,48,96,64,64; 3x3/2 max-pools after conv 1, 2 and 5; two Dense 256."""
    b = _Builder(norm, he_init, weight_decay)
    inputs = keras.Input(input_shape)
    x = inputs
    for i, (kernel, filters) in enumerate(zip((5, 3, 3, 3, 3), (16, 48, 96, 64, 64))):
        x = b.norm_act(b.conv(x, filters, kernel))
        if i in (0, 1, 4):
            x = keras.layers.MaxPooling2D(3, 2, padding="same")(x)
    x = keras.layers.Flatten()(x)
    for _ in range(2):
        x = b.norm_act(b.dense(x, 256))
    return keras.Model(inputs, b.logits(x, num_classes), name="alexnet")


def digit_cnn(input_shape=(28, 28, 1), num_classes=10, norm="batch", he_init=False,
              weight_decay=0.0):
    """The Digit Recognizer CNN of the seed article: 3 x [conv3x3 'same',
    conv3x3, norm, ReLU, max-pool 2, dropout 0.4] with 32/64/128 channels,
    then Dense 256, norm, ReLU, dropout 0.4, Dense classes."""
    b = _Builder(norm, he_init, weight_decay)
    inputs = keras.Input(input_shape)
    x = inputs
    for filters in (32, 64, 128):
        x = b.conv(x, filters, 3, padding="same", bias=True)
        x = b.norm_act(b.conv(x, filters, 3, padding="valid"))
        x = keras.layers.Dropout(0.4)(keras.layers.MaxPooling2D(2)(x))
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.4)(b.norm_act(b.dense(x, 256)))
    return keras.Model(inputs, b.logits(x, num_classes), name="digit_cnn")


def simple_cnn(input_shape=(28, 28, 1), num_classes=10, norm="none", he_init=False,
               weight_decay=0.0):
    """Shallue et al.'s (2018) MNIST "Simple CNN" (the TensorFlow tutorial's):
    conv5x5 32, max-pool 2, conv5x5 64, max-pool 2, Dense 1024, Dense classes;
    ReLU, no normalization unless `norm` asks for it."""
    b = _Builder(norm, he_init, weight_decay)
    inputs = keras.Input(input_shape)
    x = inputs
    for filters in (32, 64):
        x = keras.layers.MaxPooling2D(2)(b.norm_act(b.conv(x, filters, 5)))
    x = b.norm_act(b.dense(keras.layers.Flatten()(x), 1024))
    return keras.Model(inputs, b.logits(x, num_classes), name="simple_cnn")


MODELS = {
    "f1": f1,
    "c1": c1, "c3": c1,
    "c2": c2, "c4": c2,
    **{f"resnet{d}": (lambda d: lambda **kw: resnet(d, **kw))(d) for d in (8, 20, 32, 44, 56)},
    "wrn16_4": lambda **kw: wide_resnet(16, 4, **kw),
    "wrn16_1": lambda **kw: wide_resnet(16, 1, **kw),
    "alexnet": alexnet,
    "digit_cnn": digit_cnn,
    "simple_cnn": simple_cnn,
}


def build(name, input_shape, num_classes, **options):
    """Builds a model by name (see MODELS); errors list the known names."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: expected one of {', '.join(sorted(MODELS))}.")
    return MODELS[name](input_shape=input_shape, num_classes=num_classes, **options)
