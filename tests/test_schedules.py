"""Batch-size schedule and learning-rate rules against the papers' arithmetic."""

import math

import keras
import numpy as np
import pytest

from batchsize.callbacks import (BatchSizeSchedule, LinearWarmup, TrainingSchedule, base_learning_rate,
                       current_learning_rate, milestones_at, regime_adaptation, split_batch,
                       sqrt_scaling)

N = 50000
MILESTONES = (60, 120, 160)


def smith(cap, lr=0.1, b0=128, momentum=0.9):
    return TrainingSchedule(b0, lr, N, batch_milestones=MILESTONES, batch_factor=5,
                            max_batch_size=cap, momentum=momentum)


@pytest.mark.parametrize("cap,lrs,batches", [
    (128, [0.1, 0.02, 0.004, 0.0008], [128, 128, 128, 128]),      # decaying learning rate
    (640, [0.1, 0.1, 0.02, 0.004], [128, 640, 640, 640]),          # hybrid
    (None, [0.1, 0.1, 0.1, 0.1], [128, 640, 3200, 16000]),         # increasing batch size
])
def test_smiths_three_schedules_per_epoch(cap, lrs, batches):
    s = smith(cap)
    callback = BatchSizeSchedule(128, 0.1, N, milestones=MILESTONES, factor=5, max_batch_size=cap,
                                 momentum=0.9)
    for epoch, lr, batch in zip((0, 60, 120, 160), lrs, batches):
        for e in (epoch, epoch + 39):
            assert s[e].batch_size == callback.batch_size(e) == batch
            assert s[e].learning_rate == callback.learning_rate(e) == pytest.approx(lr)


@pytest.mark.parametrize("lr,b0,momentum,updates", [
    (0.1, 128, 0.9, 78200),    # original schedule: 200 x 391
    (0.1, 128, 0.9, 29200),    # increasing batch, cap 5120
    (0.5, 640, 0.9, 6500),     # higher initial lr
    (0.5, 3200, 0.98, 2360),   # higher momentum
])
def test_fig5_update_counts_follow_from_the_schedule(lr, b0, momentum, updates):
    cap = b0 if updates == 78200 else 5120
    s = smith(cap, lr, b0, momentum)
    assert abs(s.total_updates(200) - updates) <= 50
    if updates == 29200:  # 60*391 + 60*79 + 40*16 + 40*10
        assert s.total_updates(200) == 60 * 391 + 60 * 79 + 40 * 16 + 40 * 10


def test_noise_scale_is_kept_when_the_cap_turns_batch_growth_into_lr_decay():
    capped, free = smith(5120), smith(None)
    for epoch in (0, 60, 120, 160):
        assert capped.noise_scale(epoch) == pytest.approx(free.noise_scale(epoch))
    assert free.noise_scale(0) == pytest.approx(0.1 * N / (128 * 0.1))


def test_phases_split_where_the_physical_batch_changes_and_accumulation_reaches_the_rest():
    s = TrainingSchedule(128, 0.1, N, batch_milestones=MILESTONES, max_device_batch=1024)
    assert [p[:3] for p in s.phases(200)] == [(0, 60, 128), (60, 120, 640), (120, 160, 800),
                                              (160, 200, 1000)]
    assert (s[130].physical_batch, s[130].accumulation_steps) == (800, 4)
    assert (s[170].physical_batch, s[170].accumulation_steps) == (1000, 16)
    assert split_batch(16000, 1024) == (1000, 16)


def test_learning_rate_rules():
    assert base_learning_rate(2 ** -6, 64) == 1.0
    assert sqrt_scaling(0.1, 4096, 128) == pytest.approx(0.1 * math.sqrt(32))
    assert milestones_at((0.5, 0.75), 82) == (41, 62)
    assert regime_adaptation(100, (30, 60), 4096, 128) == (3200, (960, 1920))


def test_linear_warmup_starts_at_lr_over_32_and_ramps_to_the_schedule():
    decay = keras.optimizers.schedules.PiecewiseConstantDecay([99, 149], [0.32, 0.032, 0.0032])
    lr = LinearWarmup(decay, warmup_updates=10)
    assert float(lr(0)) == pytest.approx(0.01)
    assert float(lr(5)) == pytest.approx(0.01 + 0.5 * 0.31)
    assert float(lr(10)) == pytest.approx(0.32)
    assert float(lr(120)) == pytest.approx(0.032)
    assert float(lr(150)) == pytest.approx(0.0032)
    restored = LinearWarmup.from_config(lr.get_config())
    assert [float(restored(u)) for u in (0, 5, 120)] == [float(lr(u)) for u in (0, 5, 120)]


# -- every schedule in updates ------------------------------------------------
def test_the_issues_example_places_decay_and_warmup_at_update_counts():
    """Batch 1024 = 128 x 8 accumulated on 50,000 examples: 49 updates an
    epoch, so "decay after epoch 1" is update 49 and 5% warm-up of the 490
    updates is 24 (not 391 and 39, which a count of micro-batches gives)."""
    from reproduce.runs.config import RunConfig
    from reproduce.runs.train import build_optimizer

    config = RunConfig(batch_size=1024, accumulation=8, lr_milestones=(1,), warmup=0.05,
                       lr=0.1, epochs=10)
    schedule = config.training_schedule(50000)
    assert [(s.batch_size, s.physical_batch, s.accumulation_steps, s.updates)
            for s in schedule] == [(1024, 128, 8, 49)] * 10
    assert [s.first_update for s in schedule] == list(range(0, 490, 49))
    assert schedule.total_updates() == 490 and schedule.warmup_updates == 24
    optimizer = build_optimizer(config, schedule)
    rate = optimizer.inner_optimizer.get_config()["learning_rate"]
    lr = keras.saving.deserialize_keras_object(rate)
    for update in range(490):  # hand-written: warm-up from lr/32 over 24 updates, / 10 at 49
        expected = 0.1 * (1 / 32 + 31 / 32 * min(update / 24, 1)) * (0.1 if update >= 49 else 1)
        assert float(lr(update)) == pytest.approx(expected, rel=1e-6), update
        assert schedule.learning_rate_at(update) == pytest.approx(expected, rel=1e-12)


# Warm-up + accumulation + batch milestones on 1,000 examples: batch 64, 128
# (2 x 64 accumulated), 256 (4 x 64): 16 + 8 + 4 = 28 updates; warm-up 25%
# of them = 7 updates from lr/32; lr / 10 at epoch 2 (update 24).
MIXED = dict(batch_size=64, lr=0.2, epochs=3, batch_milestones=(1, 2), batch_factor=2,
             max_device_batch=64, lr_milestones=(2,), warmup=0.25)
MIXED_TABLE = ([0.2 * (1 / 32 + 31 / 32 * u / 7) for u in range(7)]  # updates 0-6
               + [0.2] * 17                                           # 7-23
               + [0.02] * 4)                                          # 24-27


def test_warmup_accumulation_and_batch_milestones_give_the_hand_computed_rate_per_update():
    from reproduce.runs.config import RunConfig

    schedule = RunConfig(**MIXED).training_schedule(1000)
    assert [(s.batch_size, s.physical_batch, s.accumulation_steps, s.updates, s.first_update)
            for s in schedule] == [(64, 64, 1, 16, 0), (128, 64, 2, 8, 16), (256, 64, 4, 4, 24)]
    assert [schedule.learning_rate_at(u) for u in range(28)] == pytest.approx(MIXED_TABLE)


class RateAtEveryUpdate(keras.callbacks.Callback):
    """Records (update, learning rate) whenever a new update is about to be made."""

    def __init__(self):
        super().__init__()
        self.seen = {}

    def on_train_batch_begin(self, batch, logs=None):
        optimizer = self.model.optimizer
        update = int(keras.ops.convert_to_numpy(optimizer.iterations))
        self.seen.setdefault(update, current_learning_rate(optimizer))


def test_a_trained_run_uses_the_hand_computed_rate_at_every_update():
    import numpy as np

    from reproduce.runs.config import RunConfig
    from reproduce.runs.train import train

    rng = np.random.default_rng(0)
    data = (rng.normal(size=(1000, 6, 6, 1)).astype("float32"), rng.integers(0, 10, 1000),
            rng.normal(size=(100, 6, 6, 1)).astype("float32"), rng.integers(0, 10, 100))
    recorder = RateAtEveryUpdate()
    result = train(RunConfig(model="f1", norm="none", engine="fit", **MIXED), data=data,
                   callbacks=[recorder])
    assert [row["updates"] for row in result["rows"]] == [16, 24, 28]
    assert sorted(recorder.seen) == list(range(28))
    assert [recorder.seen[u] for u in range(28)] == pytest.approx(MIXED_TABLE, rel=1e-6)


def test_open_ended_schedule_and_bad_values_are_named():
    s = TrainingSchedule(128, 0.1, 50000, batch_milestones=(60,))
    assert s[100].batch_size == 640 and s[100].first_update == 60 * 391 + 40 * 79
    with pytest.raises(ValueError, match="warmup=0.1 is a fraction of training: give epochs"):
        TrainingSchedule(128, 0.1, 50000, warmup=0.1)
    with pytest.raises(ValueError, match="batch_size=0"):
        TrainingSchedule(0, 0.1, 50000)


# -- the batch grown on the measured noise scale ------------------------------
def noisy_regression(examples, d=4, sigma=1.5, seed=0):
    """x ~ N(0, I), y = x.w* + sigma e, weights held at w* + delta (rate 0):
    B_simple = ((d + 1)|delta|^2 + d sigma^2) / |delta|^2 = 21 exactly
    (tests/test_accumulation.py derives it)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    w_star, delta = rng.normal(size=d), np.array([0.5, -0.5, 0.25, 0.0])
    x = rng.normal(size=(examples, d)).astype("float32")
    y = (x @ w_star + sigma * rng.normal(size=examples))[:, None].astype("float32")
    model = keras.Sequential([keras.Input((d,)), keras.layers.Dense(1, use_bias=False)])
    model.layers[0].kernel.assign((w_star + delta)[:, None].astype("float32"))
    return model, x, y


@pytest.mark.slow  # 3,800 steps each, for the noise scale to settle
@pytest.mark.parametrize("factor,cap,final", [(1.0, None, 32), (0.5, None, 64), (1.0, 16, 16)][
    :None if keras.backend.backend() == "tensorflow" else 1])  # one case off TensorFlow
def test_noise_scale_batch_size_grows_until_the_batch_passes_b_simple(factor, cap, final):
    """Micro-batch 4, starting at 2 x 4 = 8: grow (x2) while 21 > factor x B,
    so B ends at the first power of two past 21 / factor, or at the cap."""
    from batchsize.callbacks import EpochAlignedAccumulation, NoiseScaleBatchSize
    from batchsize.optimizers import GradientAccumulator

    model, x, y = noisy_regression(300 * 8 + 200 * 64)
    optimizer = GradientAccumulator(keras.optimizers.SGD(0.0), 2, noise_scale_decay=0.99)
    model.compile(optimizer, "mse")
    grow = NoiseScaleBatchSize(factor, max_batch_size=cap, every_updates=300)
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0,
              callbacks=[EpochAlignedAccumulation(len(x), 4), grow])
    assert optimizer.noise_scale_simple == pytest.approx(21.0, rel=0.15)
    assert grow.batch_size == final
    assert grow.history[0]["updates"] == 300 and grow.history[-1]["batch_size"] == final
    assert int(keras.ops.convert_to_numpy(optimizer.accumulation_steps)) == final // 4


def test_noise_scale_batch_size_needs_a_measuring_accumulator():
    from batchsize.callbacks import NoiseScaleBatchSize

    with pytest.raises(ValueError, match="growth=1"):
        NoiseScaleBatchSize(growth=1)
    model, x, y = noisy_regression(16)
    model.compile(keras.optimizers.SGD(0.1), "mse")
    with pytest.raises(ValueError, match="needs the model's optimizer to be a GradientAccumulator"):
        model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[NoiseScaleBatchSize()])
    config = dict(factor=0.5, growth=4, max_batch_size=1024, every_updates=7)
    assert NoiseScaleBatchSize(**NoiseScaleBatchSize(**config).get_config()).get_config() == config
    with pytest.warns(DeprecationWarning, match="schedule=.... is deprecated and unused"):
        NoiseScaleBatchSize(schedule=object())  # the accumulator holds k now


def test_a_saved_batch_size_schedule_is_the_one_that_was_trained_with():
    """Every argument survives get_config / from_config (through JSON, as a
    saved callback would): the batch, rate and updates of every epoch, and the
    rate of every update, warm-up and step decay included."""
    import json

    schedule = BatchSizeSchedule(64, 0.2, 1000, milestones=(1, 2), factor=2, max_batch_size=200,
                                 momentum=((0, 0.5), (2, 0.9)), max_device_batch=64, epochs=4,
                                 lr_milestones=(3,), lr_decay=0.5, warmup=0.25,
                                 warmup_start_factor=0.1)
    restored = BatchSizeSchedule.from_config(json.loads(json.dumps(schedule.get_config())))
    a, b = schedule.schedule, restored.schedule
    assert list(a) == list(b)  # every ScheduledEpoch: batch, split, updates, lr, momentum
    assert a.warmup_updates == b.warmup_updates > 0
    assert [b.learning_rate_at(u) for u in range(b.total_updates())] == [
        a.learning_rate_at(u) for u in range(a.total_updates())]
    assert [s.learning_rate for s in a] != [s.learning_rate for s in
                                            BatchSizeSchedule(64, 0.2, 1000, epochs=4).schedule]


def test_from_schedule_applies_a_training_schedule_and_the_old_call_warns():
    plan = TrainingSchedule(128, 0.1, 5000, epochs=3, batch_milestones=(1,), lr_milestones=(2,))
    callback = BatchSizeSchedule.from_schedule(plan)
    assert callback.schedule is plan  # kept, not rebuilt through renamed arguments
    assert BatchSizeSchedule.from_config(callback.get_config()).schedule.get_config() == \
        plan.get_config()
    with pytest.warns(DeprecationWarning, match="use BatchSizeSchedule.from_schedule"):
        old = BatchSizeSchedule(plan)
    assert old.schedule is plan


def test_the_micro_batch_has_one_name_and_the_old_keyword_warns():
    """`batch_size` is the examples per update everywhere; the batch given to
    fit is `micro_batch_size` in set_epoch and EpochAlignedAccumulation. The
    old keyword still works for one release, and a config saved under it loads."""
    import keras

    from batchsize import EpochAlignedAccumulation, GradientAccumulator

    accumulator = GradientAccumulator(keras.optimizers.SGD(0.1), 4)
    accumulator.build([keras.Variable(np.zeros(3, "float32"))])
    accumulator.set_epoch(1000, micro_batch_size=32)
    assert accumulator.batch_size == 32 * 4  # the update batch
    with pytest.warns(DeprecationWarning, match="micro_batch_size="):
        accumulator.set_epoch(1000, batch_size=16)
    assert accumulator.batch_size == 16 * 4
    with pytest.raises(TypeError, match="give micro_batch_size only"):
        accumulator.set_epoch(1000, 8, batch_size=8)
    callback = EpochAlignedAccumulation(1000, 32)
    assert callback.get_config() == {"num_examples": 1000, "micro_batch_size": 32}
    with pytest.warns(DeprecationWarning, match="EpochAlignedAccumulation"):
        old = EpochAlignedAccumulation(**{"num_examples": 1000, "batch_size": 32})  # a saved config
    assert old.micro_batch_size == 32


def test_the_accumulator_holds_k_and_growth_carries_over_a_phase_change():
    """k has one holder, the model's GradientAccumulator: BatchSizeSchedule sets
    the plan's k at each epoch, a measurement multiplies it (as
    NoiseScaleBatchSize does, on the accumulator alone), and the schedule's next
    phase keeps that growth: planned k 2 then 4 (batch 8 then 16 at physical
    batch 4), grown x2 in epoch 0, gives 4 then 8."""
    from batchsize.optimizers import GradientAccumulator

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(GradientAccumulator(keras.optimizers.SGD(0.1), 1), "mse")
    schedule = TrainingSchedule(8, 0.1, 64, epochs=3, batch_milestones=(1,), batch_factor=2,
                                max_device_batch=4)
    assert [s.accumulation_steps for s in schedule] == [2, 4, 4]
    callback = BatchSizeSchedule.from_schedule(schedule)
    callback.set_model(model)
    callback.set_params({"steps": None})

    def k():
        return int(keras.ops.convert_to_numpy(model.optimizer.accumulation_steps))

    callback.on_epoch_begin(0)
    assert k() == callback.accumulation_steps == 2
    model.optimizer.set_accumulation_steps(2 * k())  # a measurement grows the batch
    assert callback.batch_size_in_force == 4 * 4
    callback.on_epoch_begin(1)
    assert k() == callback.accumulation_steps == 8 and callback.batch_size_in_force == 32
    callback.on_epoch_begin(2)
    assert k() == 8
    fresh = BatchSizeSchedule.from_schedule(schedule)  # a new run starts from the plan
    fresh.set_model(model)
    fresh.set_params({"steps": None})
    fresh.on_epoch_begin(0)
    assert k() == 2
