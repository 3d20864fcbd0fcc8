"""Small-sample statistics for benchmark tables: mean with a Student-t 95% interval, and the
per-seed paired difference of two entries with its interval and verdict."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

# two-sided 95% quantiles of Student's t, t_{0.975, df}, df = 1..30
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile(df: int) -> float:
    """t_{0.975, df}: the half-width multiplier of a 95% interval with `df` degrees of freedom
    (beyond 30, the large-sample value with the first-order correction)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df)


@dataclass(frozen=True)
class Interval:
    """Mean of `n` values and the half-width of its 95% interval (nan with fewer than 2)."""

    mean: float
    half: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half

    def excludes_zero(self) -> bool:
        return self.n > 1 and (self.low > 0 or self.high < 0)

    def text(self, digits: int = 2, signed: bool = False) -> str:
        sign = "+" if signed else ""
        if self.n < 2 or math.isnan(self.half):
            return f"{self.mean:{sign}.{digits}f}"
        return f"{self.mean:{sign}.{digits}f} ± {self.half:.{digits}f}"


def mean_interval(values: list[float]) -> Interval:
    """Mean and 95% t-interval of the finite values."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return Interval(float("nan"), float("nan"), 0)
    mean = statistics.fmean(vals)
    if len(vals) < 2:
        return Interval(mean, float("nan"), len(vals))
    half = t_quantile(len(vals) - 1) * statistics.stdev(vals) / math.sqrt(len(vals))
    return Interval(mean, half, len(vals))


def paired_difference(a: dict[int, float], b: dict[int, float]) -> Interval:
    """Mean of a[seed] - b[seed] over the seeds both have, with its 95% interval."""
    seeds = sorted(set(a) & set(b))
    return mean_interval([a[s] - b[s] for s in seeds])


def verdict(diff: Interval, better: str = "better", worse: str = "worse") -> str:
    """`better` / `worse` when the interval excludes zero, else no measurable difference."""
    if diff.n < 2:
        return "too few paired seeds"
    if diff.low > 0:
        return better
    if diff.high < 0:
        return worse
    return "no measurable difference"
