"""Arithmetic cost of training a model, counted from its layers' shapes.

A multiply-add is two FLOPs. Only the layers that dominate the cost are
counted: convolutions and dense layers (normalization, activations and
pooling add a few percent). A training step costs about three forward passes
(the forward pass, and the backward pass's gradients with respect to the
inputs and to the weights), the usual rule of thumb (Kaplan et al. 2020).
"""

import math

import keras


def forward_flops(model):
    """FLOPs of one example's forward pass through `model`'s Conv2D and Dense layers.

    Example:

    >>> forward_flops(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]))
    24
    """
    total = 0
    for layer in _layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            cin = layer.input.shape[-1]
            out = layer.output.shape  # (None, h, w, c), channels last
            total += 2 * out[1] * out[2] * kh * kw * (cin // layer.groups) * layer.filters
        elif isinstance(layer, keras.layers.Dense):
            inputs = layer.input.shape
            positions = math.prod(inputs[1:-1])  # Dense on a sequence or image applies per position
            total += 2 * positions * inputs[-1] * layer.units
    return int(total)


def training_flops(model):
    """FLOPs of one example's training step: 3 x `forward_flops(model)`."""
    return 3 * forward_flops(model)


def _layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
        else:
            yield layer
