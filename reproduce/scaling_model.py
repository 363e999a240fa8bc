"""McCandlish et al.'s (2018) empirical model of large-batch training, and the
slopes Shallue et al. (2018) read: S = S_min (1 + B_noise / B) fitted to the
updates to a target, log-log slopes of S(B), and their bootstrap over seeds.
"""

import math

import numpy as np
import scipy.optimize

from reproduce.claims import bootstrap


def fit_steps(batch_sizes, updates):
    """S = S_min (1 + B_noise / B), least squares in log S.

    Returns dict(s_min, b_noise, e_min, r2) (r2 of log S), or NaNs for fewer
    than 3 points.
    """
    b, s = np.asarray(batch_sizes, float), np.asarray(updates, float)
    keep = np.isfinite(s) & (s > 0)
    b, s = b[keep], s[keep]
    if len(b) < 3:
        return dict(s_min=np.nan, b_noise=np.nan, e_min=np.nan, r2=np.nan)

    def log_steps(b, log_s_min, log_b_noise):
        return log_s_min + np.log1p(np.exp(log_b_noise) / b)

    start = (np.log(s.min()), np.log(np.median(b)))
    (log_s_min, log_b_noise), _ = scipy.optimize.curve_fit(log_steps, b, np.log(s), p0=start,
                                                          maxfev=20000)
    residual = np.log(s) - log_steps(b, log_s_min, log_b_noise)
    total = np.sum((np.log(s) - np.log(s).mean()) ** 2)
    s_min, b_noise = float(np.exp(log_s_min)), float(np.exp(log_b_noise))
    return dict(s_min=s_min, b_noise=b_noise, e_min=s_min * b_noise,
                r2=float(1 - np.sum(residual ** 2) / total) if total > 0 else np.nan)


def loglog_slope(batch_sizes, updates):
    """The least-squares slope of log S against log B (perfect scaling: -1)."""
    if len(batch_sizes) < 2:
        return np.nan
    return float(np.polyfit(np.log(batch_sizes), np.log(updates), 1)[0])


def evaluation_jitter(per_decade):
    """For `bootstrap`: a first hit is known to within one evaluation interval
    (the target was crossed somewhere after the previous evaluation, uniform
    in log), so each resampled value moves down by up to that factor."""
    width = math.log(10) / per_decade
    return lambda rng, values: values * np.exp(-width * rng.random(len(values)))


def bootstrap_slopes(steps, batches, per_decade, resamples=2000):
    """Bootstrap distribution of the log-log slope of the seeds' mean S(B) over
    `batches` ({batch: the seeds' updates to target}), resampling the seeds
    within each batch and each value within its evaluation interval."""
    return bootstrap([steps[b] for b in batches], lambda drawn: loglog_slope(
        batches, [float(np.mean(d)) for d in drawn]), resamples=resamples,
        jitter=evaluation_jitter(per_decade))
