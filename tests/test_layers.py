"""GhostBatchNormalization against BatchNormalization, and the model zoo."""

import keras
import numpy as np
import pytest

from batchsize import models
from batchsize.models import GhostBatchNormalization
from roundoff import RoundOff


def _pair(shape, ghost_size):
    bn = keras.layers.BatchNormalization(momentum=0.9)
    gbn = GhostBatchNormalization(ghost_size=ghost_size, momentum=0.9)
    bn.build(shape)
    gbn.build(shape)
    rng = np.random.default_rng(0)
    gamma, beta = rng.normal(size=shape[-1:]), rng.normal(size=shape[-1:])
    for layer in (bn, gbn):
        layer.gamma.assign(gamma)
        layer.beta.assign(beta)
    return bn, gbn


def batch_norm_in_chunks(x, chunk, order=None):
    """The reference: a BatchNormalization called on each chunk of `chunk`
    examples in turn, with the examples of each chunk taken in `order` (a
    permutation within chunks; the outputs are put back in place). Returns the
    training-mode output, the moving mean and variance, and the inference-mode
    output: what a ghost batch norm must give."""
    bn, _ = _pair(x.shape, chunk)
    order = np.arange(len(x)) if order is None else order
    out = np.empty_like(x)
    for i in range(0, len(x), chunk):
        rows = order[i:i + chunk]
        out[rows] = keras.ops.convert_to_numpy(bn(x[rows], training=True))
    return [out, bn.moving_mean, bn.moving_variance, bn(x, training=False)]


def shuffled_within(n, chunk, seed=0):
    rng, order = np.random.default_rng(seed), np.arange(n)
    for i in range(0, n, chunk):
        order[i:i + chunk] = rng.permutation(order[i:i + chunk])
    return order


@pytest.mark.parametrize("shape", [(16, 5), (16, 4, 4, 3)])
def test_ghost_size_equal_to_batch_is_batch_norm(shape):
    x = np.random.default_rng(1).normal(2.0, 3.0, size=shape).astype("float32")
    _, gbn = _pair(shape, ghost_size=shape[0])
    ghost = [gbn(x, training=True), gbn.moving_mean, gbn.moving_variance, gbn(x, training=False)]
    # Round-off measured here: the same batch norm with the batch in another order.
    noise = RoundOff(batch_norm_in_chunks(x, shape[0]),
                     batch_norm_in_chunks(x, shape[0], shuffled_within(shape[0], shape[0])))
    noise.assert_agrees(ghost, "ghost size = batch vs batch norm")


@pytest.mark.parametrize("batch,ghost", [(16, 4), (14, 4), (5, 8)])
def test_smaller_ghost_size_is_batch_norm_on_each_chunk_in_turn(batch, ghost):
    """Includes a batch that is not a multiple of the ghost size (14 = 4+4+4+2);
    the moving statistics get one EMA update per chunk, in order."""
    shape = (batch, 3, 3, 2)
    x = np.random.default_rng(2).normal(1.0, 2.0, size=shape).astype("float32")
    _, gbn = _pair(shape, ghost_size=ghost)
    got = [gbn(x, training=True), gbn.moving_mean, gbn.moving_variance, gbn(x, training=False)]
    noise = RoundOff(batch_norm_in_chunks(x, ghost),
                     batch_norm_in_chunks(x, ghost, shuffled_within(batch, ghost)))
    noise.assert_agrees(got, f"ghost batch norm, ghost {ghost} of {batch}")


def test_ghost_batch_norm_in_a_compiled_model_and_config_round_trip(tmp_path):
    model = keras.Sequential([keras.Input((6,)), GhostBatchNormalization(ghost_size=4),
                              keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    x = np.random.default_rng(3).normal(size=(10, 6)).astype("float32")
    model.fit(x, np.zeros((10, 2)), batch_size=10, verbose=0)  # 10 = 4 + 4 + 2
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.layers[0].ghost_size == 4
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_bad_ghost_size_and_norm_are_clear_errors():
    with pytest.raises(ValueError, match="ghost_size must be an integer >= 1; got 0"):
        GhostBatchNormalization(ghost_size=0)
    with pytest.raises(ValueError, match="unknown norm 'ghost:x'"):
        models.parse_norm("ghost:x")
    with pytest.raises(ValueError, match="unknown model 'vgg99'"):
        models.build("vgg99", (32, 32, 3), 10)


# Counting parameters is the same arithmetic on every backend: TensorFlow's run counts.
tensorflow_only = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                     reason="backend-independent; run on TensorFlow")


@tensorflow_only
@pytest.mark.parametrize("name,params", [("resnet20", 0.27e6), ("resnet56", 0.85e6),
                                         ("wrn16_4", 2.75e6)])
def test_resnets_have_the_published_parameter_counts(name, params):
    """He et al.: ResNet-20 0.27M, ResNet-56 0.85M; Zagoruyko: WRN-16-4 2.7M."""
    model = models.build(name, (32, 32, 3), 10, norm="batch")
    assert model.count_params() == pytest.approx(params, rel=0.02)


def test_simple_cnn_has_the_tensorflow_tutorials_parameter_count():
    """Shallue et al.'s MNIST Simple CNN, counted by hand: conv 5x5x1x32 + 32,
    conv 5x5x32x64 + 64, Dense 7*7*64 -> 1024 (+ bias), Dense 1024 -> 10."""
    expected = (25 * 32 + 32) + (25 * 32 * 64 + 64) + (7 * 7 * 64 * 1024 + 1024) + (1024 * 10 + 10)
    assert models.build("simple_cnn", (28, 28, 1), 10).count_params() == expected == 3_274_634


# Every pair on TensorFlow; elsewhere each model with ghost batch norm, the
# layer of ours (the norm layers are each tested on every backend above).
NORMS = ["none", "batch", "ghost:2", "group"] if keras.backend.backend() == "tensorflow" \
    else ["ghost:2"]


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("name", ["f1", "c1", "alexnet", "digit_cnn", "resnet8"])
def test_every_model_takes_every_norm(name, norm):
    shape = (28, 28, 1) if name in ("f1", "digit_cnn") else (32, 32, 3)
    model = models.build(name, shape, 10, norm=norm)
    out = model(np.zeros((3,) + shape, "float32"), training=True)
    assert out.shape == (3, 10)
    has_gbn = any(isinstance(layer, GhostBatchNormalization) for layer in model.layers)
    assert has_gbn == norm.startswith("ghost")
