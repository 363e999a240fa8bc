"""Batch-size schedule and learning-rate rules against the papers' arithmetic."""

import math

import pytest

from callbacks import (BatchSizeSchedule, WarmupStepDecay, base_learning_rate, milestones_at,
                       regime_adaptation, split_batch, sqrt_scaling)

N = 50000
MILESTONES = (60, 120, 160)


def smith(cap, lr=0.1, b0=128, momentum=0.9):
    return BatchSizeSchedule(b0, lr, N, milestones=MILESTONES, factor=5, max_batch_size=cap,
                             momentum=momentum)


@pytest.mark.parametrize("cap,lrs,batches", [
    (128, [0.1, 0.02, 0.004, 0.0008], [128, 128, 128, 128]),      # decaying learning rate
    (640, [0.1, 0.1, 0.02, 0.004], [128, 640, 640, 640]),          # hybrid
    (None, [0.1, 0.1, 0.1, 0.1], [128, 640, 3200, 16000]),         # increasing batch size
])
def test_smiths_three_schedules_per_epoch(cap, lrs, batches):
    s = smith(cap)
    for epoch, lr, batch in zip((0, 60, 120, 160), lrs, batches):
        for e in (epoch, epoch + 39):
            assert s.batch_size(e) == batch
            assert s.learning_rate(e) == pytest.approx(lr)


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
    s = BatchSizeSchedule(128, 0.1, N, milestones=MILESTONES, max_device_batch=1024)
    assert [p[:3] for p in s.phases(200)] == [(0, 60, 128), (60, 120, 640), (120, 160, 800),
                                              (160, 200, 1000)]
    assert s.split(130) == (800, 4) and s.split(170) == (1000, 16)
    assert split_batch(16000, 1024) == (1000, 16)


def test_learning_rate_rules():
    assert base_learning_rate(2 ** -6, 64) == 1.0
    assert sqrt_scaling(0.1, 4096, 128) == pytest.approx(0.1 * math.sqrt(32))
    assert milestones_at((0.5, 0.75), 82) == (41, 62)
    assert regime_adaptation(100, (30, 60), 4096, 128) == (3200, (960, 1920))


def test_warmup_starts_at_lr_over_32_and_decays_at_boundaries():
    lr = WarmupStepDecay(0.32, boundaries=[100, 150], warmup_steps=10)
    assert float(lr(0)) == pytest.approx(0.01)
    assert float(lr(5)) == pytest.approx(0.01 + 0.5 * 0.31)
    assert float(lr(10)) == pytest.approx(0.32)
    assert float(lr(120)) == pytest.approx(0.032)
    assert float(lr(150)) == pytest.approx(0.0032)
