"""McCandlish et al.'s (2018) empirical model of large-batch training, and the
slopes Shallue et al. (2018) read: S = S_min (1 + B_noise / B) fitted to the
updates to a target, log-log slopes of S(B), and their intervals.

Intervals over a handful of seeds are delta-method Student-t intervals, not a
bootstrap (resampling 2 seeds gives a variance of s^2/4 where s^2/2 is right,
and no t quantile): each batch's log mean S carries the seeds' variance of
log S, pooled over the workload's batches (a batch whose two seeds tie would
otherwise have none), over its seed count, plus the evaluation grid's own
(a first hit is known within one evaluation interval, uniform in log:
width^2 / 12); degrees of freedom are the pooled variance's, sum(n_b - 1).
"""

import math

import numpy as np
import scipy.optimize

import scipy.stats


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


def log_mean_variances(steps, batches, per_decade):
    """({batch: the variance of log mean S}, degrees of freedom): the seeds'
    variance of log S pooled over `steps`' batches, plus the evaluation
    grid's uniform error, each over the batch's seed count."""
    logs = {b: np.log(np.asarray(v, float)) for b, v in steps.items() if len(v)}
    dof = sum(len(v) - 1 for v in logs.values())
    pooled = sum(((v - v.mean()) ** 2).sum() for v in logs.values()) / dof if dof else np.nan
    grid = (math.log(10) / per_decade) ** 2 / 12
    return {b: (pooled + grid) / len(logs[b]) for b in batches}, dof


def t_interval(value, variance, dof, level):
    half = scipy.stats.t.ppf(0.5 + level / 2, dof) * math.sqrt(variance)
    return value - half, value + half


def slope_interval(steps, batches, per_decade, level):
    """(slope, (low, high)): the log-log slope of the seeds' mean S over
    `batches` and its delta-method t interval (a linear combination of the
    batches' log means)."""
    x = np.log(np.asarray(batches, float))
    weights = (x - x.mean()) / ((x - x.mean()) ** 2).sum()
    means = [float(np.mean(steps[b])) for b in batches]
    variances, dof = log_mean_variances(steps, batches, per_decade)
    slope = float(weights @ np.log(means))
    variance = float(sum(w ** 2 * variances[b] for w, b in zip(weights, batches)))
    return slope, t_interval(slope, variance, dof, level)


def b_noise_interval(steps, batches, per_decade, level):
    """(fit, (low, high)): S = S_min (1 + B_noise / B) fitted to the seeds'
    means, and B_noise's delta-method t interval in log B_noise (the
    least-squares fit's sandwich covariance from the batches' variances)."""
    means = [float(np.mean(steps[b])) for b in batches]
    fit = fit_steps(batches, means)
    b = np.asarray(batches, float)
    ratio = fit["b_noise"] / b
    jacobian = np.stack([np.ones_like(b), ratio / (1 + ratio)], axis=1)
    variances, dof = log_mean_variances(steps, batches, per_decade)
    bread = np.linalg.inv(jacobian.T @ jacobian)
    covariance = bread @ jacobian.T @ np.diag([variances[x] for x in batches]) @ jacobian @ bread
    low, high = t_interval(math.log(fit["b_noise"]), float(covariance[1, 1]), dof, level)
    return fit, (math.exp(low), math.exp(high)), float(covariance[1, 1]), dof


def b_simple_late(trace, name, target):
    """log B_simple over the last third of the noise run's evaluations up to
    its first at the target (all of them where it never got there): (mean,
    variance of the mean, dof, count), or None with fewer than 2. B_simple
    drifts as training goes, and the windows overlap in time, so this spread
    is its error at this stage of training, not a sampling error."""
    rows = trace[(trace.workload == name) & (trace.kind == "noise")].dropna(
        subset=["noise_scale_simple"])
    rows = rows[rows.noise_scale_simple > 0].sort_values("updates")
    hit = rows[rows.accuracy >= target]
    if len(hit):
        rows = rows[rows.updates <= hit.updates.min()]
    late = rows.tail(max(len(rows) // 3, 2))
    if len(late) < 2:
        return None
    logs = np.log(late.noise_scale_simple.to_numpy(float))
    return float(logs.mean()), float(logs.var(ddof=1) / len(logs)), len(logs) - 1, len(logs)
