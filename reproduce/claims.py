"""Each paper's headline claims, checked over the figures' CSVs: HOLDS, FAILS or
INCONCLUSIVE, with the interval, the margin and its source.

Every figure declares its claims next to the tables they read
(`Figure(claims=...)`); this module holds the statistics they use, and
`reproduce.tools.check_claims` the command that checks them all:

    python -m reproduce.tools.check_claims [--out figures] [--preset quick]   # make check-claims

Verdicts.
- A claim of sameness ("the same", "within", "reaches", a slope of -1) HOLDS
  only when a two one-sided test (TOST) puts the 90% confidence interval of
  the difference inside +-margin, and FAILS when the interval lies wholly
  outside it. Failing to find a difference is never evidence of sameness:
  more noise widens the interval and can only make the verdict INCONCLUSIVE.
- A claim of difference ("worse", "sharper", "falls", "above") HOLDS when
  the 95% interval excludes zero (or the bound) in the claimed direction, and
  FAILS when it excludes it the other way.
- A claim of non-inferiority ("not worse by more than") HOLDS when the lower
  end of the 90% interval (the one-sided 95% bound) lies above -margin, and
  FAILS when the upper end lies below it.
- Otherwise INCONCLUSIVE, with a power line: the seeds per cell that the
  margin would need at the measured spread, or why none would do.

Intervals are Student-t with Welch-Satterthwaite degrees of freedom from the
seeds (`scipy.stats.t`; 3 seeds are not a normal sample). A side with one
seed has no spread to measure: such a comparison is INCONCLUSIVE. The test
set's own sampling error is added to the seeds' (its degrees of freedom are
many): paired where the table gives it (`<metric>_paired_var_vs_<cell>`,
the variance over the test examples of the difference in the seeds' mean
correctness, from each run's per-example results in the store), otherwise
each side's binomial p (1 - p) / n, which overstates the difference's error
of two runs scored on the same examples. Where a cell was chosen as the best
of a grid by its first seed, the claim is judged on its other seeds (the
choosing seed's lead is selection bias), and says so; while a best value
sits on an open edge of its grid the claim is INCONCLUSIVE.
"""

import dataclasses
import math
import runpy
import warnings

import numpy as np
import pandas as pd
import scipy.stats

from reproduce.figure import DIVERGED

HOLDS, FAILS, INCONCLUSIVE = "HOLDS", "FAILS", "INCONCLUSIVE"
FULL_TEST_SET = 10_000  # MNIST and CIFAR-10 alike
MAX_SEEDS = 200  # the power line's search


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A claim's outcome (HOLDS, FAILS or INCONCLUSIVE), the numbers compared,
    and for INCONCLUSIVE what would decide it."""

    outcome: str
    numbers: str
    power: str = ""

    @property
    def holds(self):
        return self.outcome == HOLDS


def combine(verdicts, joiner="; "):
    """One verdict of several parts (networks, epochs, batches): FAILS if any
    part fails, HOLDS if all hold, else INCONCLUSIVE. `verdicts` is
    [(label, Verdict)]."""
    outcomes = {v.outcome for _, v in verdicts}
    outcome = FAILS if FAILS in outcomes else HOLDS if outcomes == {HOLDS} else INCONCLUSIVE
    numbers = joiner.join(f"{label}: {v.numbers}" if label else v.numbers for label, v in verdicts)
    power = joiner.join(f"{label}: {v.power}" if label else v.power
                        for label, v in verdicts if v.power)
    return Verdict(outcome, numbers, power)


def inconclusive(numbers, power):
    return Verdict(INCONCLUSIVE, numbers, power)


# --- one cell, and the difference of two --------------------------------------------

# A diverged run's accuracy: chance on the 10 classes of MNIST and CIFAR-10. A
# diverged seed counts against its cell at this value (it never vanishes).
CHANCE = 0.1
POWER = 0.80  # the power line's target


def parse_by_seed(text, diverged_value=None):
    """"0:0.4525 1:0.44 2:diverged" -> {seed: value}; a diverged seed takes
    `diverged_value` (None where the metric has no value for it)."""
    out = {}
    for item in str(text).split():
        seed, _, value = item.partition(":")
        out[int(seed)] = diverged_value if value == DIVERGED else float(value)
    return out


@dataclasses.dataclass(frozen=True)
class Side:
    """One cell's measurement: the mean over its seeds, their sample standard
    deviation (None with one seed), how many seeds, the variance the test
    set's sampling adds to the mean (0 for what is not a test accuracy), and
    where the table gives them the seeds' own values ({seed: value}, for a
    paired comparison) and how many diverged.

    A diverged seed counts against its cell: an accuracy takes `CHANCE` for
    it, in the mean, the spread and the pairing alike."""

    mean: float
    std: object
    seeds: int
    test_variance: float = 0.0
    values: tuple = ()  # ((seed, value), ...)
    diverged: int = 0

    @classmethod
    def of(cls, row, metric, n_test=None, scale=1.0, seeds="seeds"):
        """From a table row with `metric`, `<metric>_std` and the count column
        `seeds`, or better `<metric>_by_seed` (every seed's value, diverged
        ones named); an accuracy in percent needs scale=100; `n_test` adds
        p(1 - p) / n and makes a diverged seed score `CHANCE`."""
        get = row.get if hasattr(row, "get") else (lambda *_: None)
        text = get(f"{metric}_by_seed")
        if text is not None and not (isinstance(text, float) and math.isnan(text)) and str(text):
            values = parse_by_seed(text, CHANCE * scale if n_test else None)
            side = cls.of_seeds({k: None if v is None else v / scale for k, v in values.items()},
                                n_test)
            return dataclasses.replace(side, diverged=str(text).count(DIVERGED))
        mean = float(row[metric]) / scale
        std = get(f"{metric}_std")
        std = None if std is None or pd.isna(std) else float(std) / scale
        count = int(get(seeds) or 1)
        test_variance = mean * (1 - mean) / n_test if n_test else 0.0
        return cls(mean, std if count > 1 else None, count, test_variance)

    # A side with seeds but no spread column reads as std None too (`too_few_seeds` tells).

    @classmethod
    def of_values(cls, values, n_test=None):
        """From the values of its seeds (e.g. test accuracies), unnamed."""
        values = [float(v) for v in values if v is not None and np.isfinite(v)]
        mean = float(np.mean(values)) if values else math.nan
        std = float(np.std(values, ddof=1)) if len(values) > 1 else None
        return cls(mean, std, len(values), mean * (1 - mean) / n_test if n_test else 0.0)

    @classmethod
    def of_seeds(cls, values, n_test=None):
        """From {seed: value} (None: a diverged seed without a value, counted
        but not averaged)."""
        kept = {seed: float(v) for seed, v in values.items() if v is not None}
        side = cls.of_values(list(kept.values()), n_test)
        lost = sum(v is None for v in values.values())
        return dataclasses.replace(side, values=tuple(sorted(kept.items())), diverged=lost)


@dataclasses.dataclass(frozen=True)
class Difference:
    """a - b with its standard error and Student-t degrees of freedom.

    Paired (`design` "paired"): the arms share seeds (seed i of each starts
    from the same weights and data order), so the seeds' term is the spread
    of the per-seed differences over S seeds, S - 1 dof. Otherwise Welch: each
    side's spread over its own seeds, Welch-Satterthwaite dof. The test set's
    sampling term (`test_variance`, with `test_dof`) is added to either.

    Use `difference(a, b)`: it is None where a side has one seed."""

    a: Side
    b: Side
    test_variance: float
    paired: bool  # the test-set term is paired (per-example results)
    design: str = "Welch"  # or "paired": how the seeds' term was computed
    differences: tuple = ()  # the per-seed differences of a paired design
    test_dof: float = math.inf
    extra_seeds: int = 0  # seeds trained per cell beyond those judged (a choosing seed)
    pooled: tuple = None  # (variance per seed, dof) over the figure's cells of the metric

    @property
    def value(self):
        if self.design == "paired":
            return float(np.mean(self.differences))
        return self.a.mean - self.b.mean

    def _terms(self, seeds=None):
        """[(variance of the mean, degrees of freedom)] of the seeds' term at
        `seeds` per side (the measured ones by default). A cell of 2 seeds
        takes the variance pooled over the figure's cells of the same metric
        (`pooled`) with its degrees of freedom: two seeds that tie would
        otherwise make a spread of 0. Paired, 2 shared seeds take twice the
        pooled variance (the pairing's gain given up)."""
        if self.design == "paired":
            n = len(self.differences)
            variance, dof = float(np.var(self.differences, ddof=1)), n - 1
            if n == 2 and self.pooled:
                variance, dof = 2 * self.pooled[0], self.pooled[1]
            return [(variance / (seeds or n), dof if not seeds else seeds - 1)]
        terms, pooled = [], 0.0
        for side in (self.a, self.b):
            if side.seeds == 2 and self.pooled:  # one estimate: one term, its own dof
                pooled += self.pooled[0] / (seeds or side.seeds)
            else:
                terms.append((side.std ** 2 / (seeds or side.seeds),
                              (seeds or side.seeds) - 1))
        return terms + ([(pooled, self.pooled[1] if not seeds else seeds - 1)] if pooled else [])

    def se(self, seeds=None):
        return math.sqrt(sum(v for v, _ in self._terms(seeds)) + self.test_variance)

    def dof(self, seeds=None):
        terms = self._terms(seeds) + [(self.test_variance, self.test_dof)]
        total = sum(v for v, _ in terms)
        denominator = sum(v ** 2 / d for v, d in terms if d > 0 and math.isfinite(d))
        return total ** 2 / denominator if denominator > 0 else math.inf

    def interval(self, level, seeds=None):
        t = scipy.stats.t.ppf(0.5 + level / 2, self.dof(seeds))
        return self.value - t * self.se(seeds), self.value + t * self.se(seeds)

    @property
    def seeds(self):
        return len(self.differences) if self.design == "paired" else max(self.a.seeds,
                                                                          self.b.seeds)

    def describe(self, level, scale=100, unit=" points"):
        low, high = self.interval(level)
        test = ("; paired test-set error" if self.paired else "; unpaired test-set error"
                if self.test_variance else "")
        design = (f"paired by seed, {len(self.differences)} shared seeds" if self.design ==
                  "paired" else f"Welch, {self.a.seeds} + {self.b.seeds} seeds")
        return (f"{scale * self.value:+.3g}{unit}, {level:.0%} interval [{scale * low:+.3g}, "
                f"{scale * high:+.3g}] (t, {self.dof():.1f} dof; {design}{test})")


def difference(a, b, paired_test_variance=None, test_dof=math.inf, extra_seeds=0, pooled=None):
    """`Difference` of two sides, or None where a side has no measured spread.
    Paired by seed where both sides name their seeds and share two or more
    with a value on each side; Welch otherwise."""
    paired = paired_test_variance is not None and np.isfinite(paired_test_variance)
    test_variance = paired_test_variance if paired else a.test_variance + b.test_variance
    common = dict(test_variance=float(test_variance), paired=paired, test_dof=test_dof,
                  extra_seeds=extra_seeds, pooled=pooled)
    shared = sorted(set(dict(a.values)) & set(dict(b.values)))
    if len(shared) >= 2:
        va, vb = dict(a.values), dict(b.values)
        return Difference(a, b, design="paired",
                          differences=tuple(va[s] - vb[s] for s in shared), **common)
    if a.std is None or b.std is None:
        return None
    return Difference(a, b, **common)


def pooled_variance(table, metric, seeds="seeds", scale=1.0):
    """(variance per seed, dof) of `metric` pooled over the rows of `table`
    with two or more seeds (sum (n - 1) s^2 / sum (n - 1)), or None.

    The seeds' noise only: a row with a diverged seed is left out (its seed
    counts at chance against its own cell, a failure, not training noise of
    the others), and rows that are the same runs (equal `<metric>_by_seed`,
    e.g. batch 64's base rate under every scaling rule) count once."""
    if table is None or f"{metric}_std" not in table or seeds not in table:
        return None
    rows = table[(table[seeds] >= 2) & table[f"{metric}_std"].notna()]
    if "diverged" in rows:
        rows = rows[rows["diverged"].fillna(0) == 0]
    by_seed = f"{metric}_by_seed"
    if by_seed in rows:
        rows = rows[rows[by_seed].isna() | ~rows[by_seed].duplicated()]
    dof = float((rows[seeds] - 1).sum())
    if dof <= 0:
        return None
    variance = float(((rows[seeds] - 1) * (rows[f"{metric}_std"] / scale) ** 2).sum()) / dof
    return variance, dof


def compare_rows(a_row, b_row, metric="test_accuracy", n_test=None, scale=1.0, paired=None,
                 seeds="seeds", extra_seeds=0, table=None):
    """(a, b, Difference a - b or None) of two table rows' `metric` (its
    `<metric>_by_seed` for a paired design, else mean, `<metric>_std` and the
    count column `seeds`); `n_test` adds each accuracy's test-set error,
    `paired` (a column of a's row) replaces it with the paired one.
    `extra_seeds`: seeds each cell trained beyond those judged (1 where the
    first seed chose the cell), for the power line's seeds to train. `table`:
    the rows' table, whose pooled spread a 2-seed cell takes (`pooled_variance`)."""
    a, b = (Side.of(row, metric, n_test, scale, seeds) for row in (a_row, b_row))
    paired_variance = a_row.get(paired) if paired and hasattr(a_row, "get") else None
    paired_variance = None if paired_variance is None or pd.isna(paired_variance) \
        else float(paired_variance) / scale ** 2
    return a, b, difference(a, b, paired_variance, test_dof=n_test - 1 if n_test else math.inf,
                            extra_seeds=extra_seeds,
                            pooled=pooled_variance(table, metric, seeds, scale))


def verdict_or_too_few(a, b, diff, names, judge, percent=True):
    """`judge(diff)` where both sides have a spread, else INCONCLUSIVE."""
    if diff is None:
        return too_few_seeds(a, b, names, percent)
    verdict = judge(diff)
    return dataclasses.replace(verdict, numbers=f"{names[0]} {value_text(a, percent)} vs "
                                                 f"{names[1]} {value_text(b, percent)}: "
                                                 f"{verdict.numbers}")


def value_text(side, percent=True):
    """'97.05 ± 0.10% (3 seeds)', or '205.1 ± 12.3 (3 seeds, 1 diverged)'."""
    seeds = f"{side.seeds} seed{'s' if side.seeds != 1 else ''}"
    if side.diverged:
        seeds += f", {side.diverged} diverged" + (" counted at chance" if percent else "")
    if percent:
        spread = f" ± {100 * side.std:.2f}" if side.std is not None else ""
        return f"{100 * side.mean:.2f}{spread}% ({seeds})"
    spread = f" ± {side.std:.4g}" if side.std is not None else ""
    return f"{side.mean:.4g}{spread} ({seeds})"


def too_few_seeds(a, b, names=("a", "b"), percent=True):
    """The INCONCLUSIVE verdict of a comparison with a side without a spread
    (one seed, or a table that gives none)."""
    short = [f"{name} has {side.seeds}" if side.seeds < 2 else f"{name}'s has no spread column"
             for name, side in zip(names, (a, b)) if side.std is None]
    return inconclusive(f"{names[0]} {value_text(a, percent)} vs {names[1]} "
                        f"{value_text(b, percent)}",
                        f"needs 2 or more seeds a side and their spread ({', '.join(short)}; "
                        "regenerate the figure if the seeds are there)")


# --- the three kinds of claim ---------------------------------------------------------

def seeds_to_train(diff, room, one_sided_level, outcome):
    """The power line: the seeds per cell to train for `POWER` power of
    reaching `outcome` (HOLDS or FAILS), at the measured spread and
    difference, where `room` is the distance the measured difference lies
    from the bound it must clear (> 0), judged at a one-sided
    `one_sided_level`; or why no number of seeds would: the test set's own
    error alone too wide for that room.

    Power: the bound is cleared with probability ~POWER when room >=
    (t_level + t_power) x se(n) at n seeds per cell (the normal
    approximation with Student-t quantiles at n's degrees of freedom)."""
    def needed(se, dof):
        return (scipy.stats.t.ppf(one_sided_level, dof) + scipy.stats.t.ppf(POWER, dof)) * se

    floor = needed(math.sqrt(diff.test_variance), diff.test_dof)
    if room <= 0 or floor >= room:
        return (f"no number of seeds decides it at this scale: the test set's own error alone "
                f"(+-{100 * floor:.2f} points for {POWER:.0%} power) is wider than the "
                f"{100 * max(room, 0):.2f} points the difference lies from the bound; a larger "
                "test set would")
    for seeds in range(max(diff.seeds, 2), MAX_SEEDS + 1):
        if needed(diff.se(seeds), diff.dof(seeds)) <= room:
            judged = seeds
            trained = seeds + diff.extra_seeds
            how = (f" ({judged} judged + {diff.extra_seeds} that chose the cell)"
                   if diff.extra_seeds else "")
            return (f"{trained} seeds per cell to train{how} for {POWER:.0%} power to "
                    f"{'HOLD' if outcome == HOLDS else 'FAIL'} at the measured spread and "
                    f"difference")
    return f"more than {MAX_SEEDS} seeds per cell at the measured spread and difference"


def bonferroni(level, parts):
    """The confidence level of each of `parts` intervals so that all hold at `level`."""
    return 1 - (1 - level) / max(parts, 1)


def same_within(diff, margin, scale=100, unit=" points", parts=1):
    """Sameness by TOST: HOLDS if the 90% interval lies inside +-margin (in
    the sides' own units), FAILS if wholly outside (at the Bonferroni level
    for one of `parts` parts, where any part failing fails the claim)."""
    low, high = diff.interval(0.90)
    text = f"{diff.describe(0.90, scale, unit)}; margin +-{scale * margin:.3g}{unit}"
    if -margin < low and high < margin:
        return Verdict(HOLDS, text)
    low_k, high_k = diff.interval(bonferroni(0.90, parts))
    if low_k > margin or high_k < -margin:
        return Verdict(FAILS, text + (f" (its {bonferroni(0.90, parts):.2%} interval, one of "
                                      f"{parts} parts, too)" if parts > 1 else ""))
    inside = abs(diff.value) < margin
    room = margin - abs(diff.value) if inside else abs(diff.value) - margin
    return inconclusive(text, seeds_to_train(diff, room, 0.95 if inside else
                                             bonferroni(0.95, parts), HOLDS if inside else FAILS))


def differs(diff, direction=1, scale=100, unit=" points", parts=1):
    """A difference in the claimed direction (+1: a > b): HOLDS if the 95%
    interval excludes zero that way, FAILS if it excludes it the other way
    (at the Bonferroni level for one of `parts` parts)."""
    low, high = diff.interval(0.95)
    text = (f"{diff.describe(0.95, scale, unit)}; claim: "
            f"{'above' if direction > 0 else 'below'} 0")
    if (low > 0 if direction > 0 else high < 0):
        return Verdict(HOLDS, text)
    low_k, high_k = diff.interval(bonferroni(0.95, parts))
    if (high_k < 0 if direction > 0 else low_k > 0):
        return Verdict(FAILS, text)
    right_way = diff.value * direction > 0
    return inconclusive(text, seeds_to_train(diff, abs(diff.value), 0.975 if right_way else
                                             bonferroni(0.975, parts),
                                             HOLDS if right_way else FAILS))


def not_worse(diff, margin, scale=100, unit=" points", parts=1):
    """Non-inferiority of a over b: HOLDS if the 90% interval's lower end (the
    one-sided 95% bound) lies above -margin, FAILS if its upper end lies below."""
    low, high = diff.interval(0.90)
    text = f"{diff.describe(0.90, scale, unit)}; margin: not below -{scale * margin:.3g}{unit}"
    if low > -margin:
        return Verdict(HOLDS, text)
    if diff.interval(bonferroni(0.90, parts))[1] < -margin:
        return Verdict(FAILS, text)
    room = diff.value + margin
    return inconclusive(text, seeds_to_train(diff, abs(room), 0.95 if room > 0 else
                                             bonferroni(0.95, parts),
                                             HOLDS if room > 0 else FAILS))


# --- intervals against bounds -------------------------------------------------------

def interval_within(low, high, lower, upper):
    """HOLDS / FAILS / INCONCLUSIVE for an interval that should lie in [lower, upper]."""
    if lower <= low and high <= upper:
        return HOLDS
    if high < lower or low > upper:
        return FAILS
    return INCONCLUSIVE


def interval_above(low, high, bound):
    if low > bound:
        return HOLDS
    if high < bound:
        return FAILS
    return INCONCLUSIVE


# --- the claims and the command ---------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim of a paper, as a check over a figure's CSVs.

    Args:
        paper: short citation, e.g. "Hoffer et al. 2017".
        text: the claim, in the paper's terms.
        reads: the table suffixes it reads ("" is `<figure>.csv`).
        check: `(tables, n_test) -> Verdict`; `tables` {suffix: DataFrame},
            `n_test(network=None)` the test examples behind the accuracies.
        margin: the margin or bound, in words, with its source (printed).
        expected: {preset: True, or the reason it is not expected to hold};
            unnamed presets (smoke) are checked, not expected.
        figure: the figure's file stem; set by `Figure` for its own claims.
        by_construction: the claim holds by the method's own arithmetic (a
            schedule's update count), not by anything measured: labelled so,
            and not tallied as evidence.
    """

    paper: str
    text: str
    reads: tuple
    check: object
    margin: str = ""
    expected: object = None
    figure: str = ""
    by_construction: bool = False

    def expectation(self, preset):
        expected = {"quick": True, "cpu": True, "paper": True} if self.expected is None \
            else self.expected
        return expected.get(preset, "smoke runs are too short to show anything")


if __name__ == "__main__":  # the command's old name, for one release
    warnings.warn("`python -m reproduce.claims` is deprecated; use `python -m "
                  "reproduce.tools.check_claims` (make check-claims)", FutureWarning, stacklevel=1)
    runpy.run_module("reproduce.tools.check_claims", run_name="__main__", alter_sys=True)
