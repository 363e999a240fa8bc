"""Round-off, measured on the host the tests run on, not guessed on another.

Two computations of the same math (the fast engine and `fit`, accumulated
micro-batches and the large batch, two devices and one) agree only to
round-off, and how large that is depends on the CPU's kernels: an AVX-512
EPYC rounds a dynamic-shape batch differently from an AVX2 one, and Adam turns
round-off in a near-zero gradient into a step of up to its learning rate. So
no test here states a tolerance of its own. Each runs its reference twice,
the second time with the examples of every block of the data in another order
(`examples_reordered`): the same batches, so the same math, only its sums in
another order. The gap between those two runs is this host's round-off for
that computation (`RoundOff`), and the computation under test must lie within
`FACTOR` times it of the reference.

FACTOR = 10. Round-off from reordering a sum and round-off from another
kernel's blocking are alike in size, and over a few updates both grow the same
way, so a correct computation lands within a small multiple of the measured
gap; 10 leaves room for the gap being one draw. A real error is far outside
it: the last micro-batch weighted wrongly moves the weights by ~1e-3 to 1e-2
against a measured gap of ~1e-7 (the negative control in
tests/test_engine.py shows the check failing on exactly that).

Smooth networks. At ReLU's kink round-off is no longer round-off: a
pre-activation a few ulps from zero changes sign when a sum is reordered, its
gradient switches on or off, and the weights jump by ~1e-5 to 1e-4 after one
update (measured on ResNet-8: a pre-ReLU value 3.6e-7 from zero, and two
reorderings landing 2.4e-7 and 2.3e-4 from the same run). Which side such a
unit falls on is a coin toss on every host, so no measured spread bounds it.
The parity tests therefore train `smooth_convnet` (tanh, and batch norm where
asked), where the weights move continuously with round-off and the measured
spread is the right scale; the engines' plumbing (batch statistics, moving
averages, augmentation, accumulation, partial batches) is the same for any
activation.
"""

import contextlib

import numpy as np

FACTOR = 10
SMOOTH_MODEL = "smooth_convnet"


def smooth_convnet(input_shape, num_classes, norm="batch", he_init=False, weight_decay=0.0):
    """Two conv + norm + tanh blocks, global average pool, dense logits: a
    network whose loss is smooth in its weights (see the module doc)."""
    import keras

    from batchsize.models.layers import normalization

    inputs = keras.Input(input_shape)
    h = inputs
    for _ in range(2):
        h = keras.layers.Conv2D(8, 3, padding="same", use_bias=norm == "none",
                                kernel_initializer="he_normal" if he_init else "glorot_uniform")(h)
        layer = normalization(norm, 8)
        h = keras.layers.Activation("tanh")(layer(h) if layer is not None else h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(h))


@contextlib.contextmanager
def smooth_model_registered():
    """`RunConfig(model="smooth_convnet")` trains `smooth_convnet` inside this block."""
    from batchsize import models

    models.MODELS[SMOOTH_MODEL] = smooth_convnet
    try:
        yield SMOOTH_MODEL
    finally:
        models.MODELS.pop(SMOOTH_MODEL, None)


def _positions(n, block, rng):
    """A permutation of range(n) that keeps every block of `block` positions
    (the last one may be shorter) in place as a set."""
    perm = np.arange(n)
    for start in range(0, n, block):
        stop = min(start + block, n)
        perm[start:stop] = start + rng.permutation(stop - start)
    return perm


def reordered(block, *arrays, seed=1):
    """`arrays` (aligned along axis 0) with the examples of every block of
    `block` in another order: for references trained with `fit(shuffle=False)`
    on plain arrays, at a batch size that `block` divides."""
    perm = _positions(len(arrays[0]), block, np.random.default_rng(seed))
    return tuple(np.asarray(a)[perm] for a in arrays)


@contextlib.contextmanager
def examples_reordered(block, seed=1):
    """Every `pipeline.EpochPlan` made inside this block puts the examples of
    each block of `block` positions (with their crops and flips) in another
    order. With `block` dividing every physical batch (and every ghost batch
    or device shard) each batch holds the same examples as before."""
    from reproduce.runs.pipeline import EpochPlan

    original = EpochPlan.__init__

    def init(plan, n, epoch, *args, **kwargs):
        original(plan, n, epoch, *args, **kwargs)
        perm = _positions(n, block, np.random.default_rng([seed, epoch]))
        plan.order = plan.order[perm]
        for name in ("dy", "dx", "flip"):
            if getattr(plan, name) is not None:
                setattr(plan, name, getattr(plan, name)[perm])

    EpochPlan.__init__ = init
    try:
        yield
    finally:
        EpochPlan.__init__ = original


def as_arrays(values):
    """A model (its weights), a list of arrays, or a number -> list of float64 arrays."""
    if hasattr(values, "weights") and not isinstance(values, (list, tuple)):
        import keras

        values = [keras.ops.convert_to_numpy(v) for v in values.weights]
    if np.isscalar(values):
        values = [values]
    return [np.asarray(_numpy(v), np.float64) for v in values]


def _numpy(value):
    if isinstance(value, (np.ndarray, float, int, np.generic)):
        return value
    import keras

    return keras.ops.convert_to_numpy(value)


def gap(a, b):
    """The largest absolute difference between two sets of values."""
    a, b = as_arrays(a), as_arrays(b)
    assert len(a) == len(b), (len(a), len(b))
    return max((float(np.max(np.abs(u - v))) if u.size else 0.0 for u, v in zip(a, b)),
               default=0.0)


class RoundOff:
    """The round-off between `reference` and `reordered` (the same computation
    with its sums in another order): their largest gap, at least one float32
    ulp of the largest value (or `resolution`, for a count such as an
    accuracy over n examples, which moves in steps of 1/n).

    Example:

    >>> noise = RoundOff(fit_weights, fit_weights_reordered)
    >>> noise.assert_agrees(fast_weights, "the fast engine")
    """

    def __init__(self, reference, reordered, resolution=0.0):
        self.reference = as_arrays(reference)
        largest = max((float(np.max(np.abs(v))) for v in self.reference if v.size), default=0.0)
        ulp = float(np.spacing(np.float32(largest)))
        self.measured = gap(self.reference, reordered)
        self.spread = max(self.measured, ulp, resolution)

    @property
    def tolerance(self):
        return FACTOR * self.spread

    def agrees(self, other):
        return gap(self.reference, other) <= self.tolerance

    def describe(self, other, what):
        return (f"{what}: {gap(self.reference, other):.3g} from the reference; round-off "
                f"measured {self.measured:.3g} (reordered sums), tolerance {FACTOR} x "
                f"{self.spread:.3g} = {self.tolerance:.3g}")

    def assert_agrees(self, other, what):
        assert self.agrees(other), self.describe(other, what)

    def assert_differs(self, other, what):
        assert not self.agrees(other), self.describe(other, what) + " (expected a real difference)"
