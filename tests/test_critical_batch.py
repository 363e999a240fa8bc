"""McCandlish et al.'s model fit of the critical-batch figure, on points made
from the model itself and from hand-written curves."""

import numpy as np
import pytest

from reproduce.scaling_model import fit_steps, loglog_slope

BATCHES = 2.0 ** np.arange(4, 13)  # 16 .. 4096


def test_fit_recovers_s_min_and_b_noise_from_the_models_own_curve():
    s = 120 * (1 + 300 / BATCHES)  # S_min 120, B_noise 300
    fit = fit_steps(BATCHES, s)
    assert fit["s_min"] == pytest.approx(120, rel=1e-4)
    assert fit["b_noise"] == pytest.approx(300, rel=1e-4)
    assert fit["e_min"] == pytest.approx(120 * 300, rel=1e-4)  # E_min = S_min B_noise
    assert fit["r2"] == pytest.approx(1.0, abs=1e-9)


def test_fit_on_noisy_points_reports_a_lower_r2_and_skips_the_missing():
    rng = np.random.default_rng(0)
    s = 120 * (1 + 300 / BATCHES) * np.exp(rng.normal(0, 0.15, len(BATCHES)))
    s[3] = np.nan  # a batch whose rates all missed the target
    fit = fit_steps(BATCHES, s)
    assert 0.9 < fit["r2"] < 1.0
    assert fit["b_noise"] == pytest.approx(300, rel=0.5)
    assert np.isnan(fit_steps(BATCHES[:2], s[:2])["b_noise"])  # two points fit nothing


def test_loglog_slope_is_minus_one_for_perfect_scaling_and_zero_when_flat():
    assert loglog_slope([16, 32, 64], [4000, 2000, 1000]) == pytest.approx(-1.0)
    assert loglog_slope([2048, 4096], [450, 450]) == pytest.approx(0.0)
    assert loglog_slope([16, 32, 64], [1000 * 2 ** 0.5, 1000, 1000 / 2 ** 0.5]) == \
        pytest.approx(-0.5)
