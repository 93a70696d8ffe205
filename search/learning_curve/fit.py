"""Learning curves: test accuracy against training-set size, fitted and extrapolated.

The curve is the three-parameter power law with an asymptote ("pow3" in Viering & Loog,
"The shape of learning curves: a review", 2022), on the error rate:

    err(n) = e_inf + b * (n / 1000) ** -c

fitted by least squares (scipy's curve_fit) on every run. The prediction interval for
one new run at the target size comes from a bootstrap: each replicate resamples, at every
size, the runs' deviations from that size's mean (seeds and their subsets; scaled by
sqrt(k / (k - 1)) so a few seeds do not shrink the spread), refits, and adds the seed-to-seed
noise pooled over the larger half of the sizes. Plain numpy/scipy: no studies, no torch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

SCALE = 1000.0  # sizes in thousands keep the fit well conditioned
MIN_SIZES = 4  # three parameters: fewer distinct sizes leave no residual degrees of freedom
BOUNDS = ([0.0, 0.0, 0.01], [1.0, 10.0, 3.0])  # e_inf, b, c


class CurveFitError(ValueError):
    """Too few points for a curve, or least squares did not converge."""


@dataclass(frozen=True)
class Curve:
    e_inf: float  # error rate the curve saturates at
    b: float
    c: float  # decay exponent

    def accuracy(self, n: float | np.ndarray) -> float | np.ndarray:
        return 1.0 - _error(np.asarray(n, dtype=float) / SCALE, self.e_inf, self.b, self.c)

    def describe(self) -> str:
        return f"err(n) = {self.e_inf:.4f} + {self.b:.4f} * (n/1000)^-{self.c:.3f}"


@dataclass(frozen=True)
class Extrapolation:
    target: int  # training-set size predicted
    accuracy: float  # the curve fitted on every run, at target
    low: float  # prediction interval for one run at target
    high: float
    level: float  # nominal coverage of [low, high]
    curve: Curve
    replicates: int  # bootstrap refits that converged
    noise: float  # seed-to-seed standard deviation added to each replicate

    def contains(self, accuracy: float) -> bool:
        return self.low <= accuracy <= self.high


def _error(x: np.ndarray, e_inf: float, b: float, c: float) -> np.ndarray:
    return e_inf + b * np.power(x, -c)


def fit_curve(sizes: Sequence[float], accuracies: Sequence[float], start: Curve | None = None) -> Curve:
    """Least-squares pow3 curve through (size, accuracy) runs; several runs per size allowed."""
    x = np.asarray(sizes, dtype=float) / SCALE
    err = 1.0 - np.asarray(accuracies, dtype=float)
    if len(np.unique(x)) < MIN_SIZES:
        raise CurveFitError(f"a curve needs runs at {MIN_SIZES} or more training-set sizes, "
                            f"got {len(np.unique(x))}")
    if start is None:  # saturation below the best error seen, decay of a typical learning curve
        e0 = 0.5 * float(err.min())
        start = Curve(e0, max(float(err.max()) - e0, 1e-3) * float(x.min()) ** 0.5, 0.5)
    p0 = np.clip([start.e_inf, start.b, start.c], BOUNDS[0], BOUNDS[1])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            params, _ = curve_fit(_error, x, err, p0=p0, bounds=BOUNDS, maxfev=5000)
    except (RuntimeError, ValueError) as error:
        raise CurveFitError(f"least squares did not converge: {error}") from None
    return Curve(*(float(p) for p in params))


def seed_noise(sizes: np.ndarray, accuracies: np.ndarray) -> float:
    """Standard deviation between runs of one size, pooled over the larger half of the sizes
    (noise shrinks with size, so this errs wide at the target)."""
    larger = np.unique(sizes)[len(np.unique(sizes)) // 2:]
    deviations = [accuracies[sizes == n] - accuracies[sizes == n].mean() for n in larger]
    dof = sum(len(d) - 1 for d in deviations)
    return float(np.sqrt(sum(float(d @ d) for d in deviations) / dof)) if dof > 0 else 0.0


def extrapolate(sizes: Sequence[float], accuracies: Sequence[float], target: int, level: float = 0.9,
                replicates: int = 500, seed: int = 0) -> Extrapolation:
    """The fitted curve at `target` with a bootstrap prediction interval for one run there."""
    x = np.asarray(sizes, dtype=float)
    acc = np.asarray(accuracies, dtype=float)
    curve = fit_curve(x, acc)
    noise = seed_noise(x, acc)
    rng = np.random.default_rng(seed)
    groups = [acc[x == size] for size in np.unique(x)]
    predictions = []
    for _ in range(replicates):
        resampled = np.concatenate([g.mean() + math.sqrt(len(g) / max(len(g) - 1, 1))
                                    * rng.choice(g - g.mean(), size=len(g)) for g in groups])
        try:
            refit = fit_curve(np.sort(x), resampled, start=curve)
        except CurveFitError:
            continue
        predictions.append(min(1.0, max(0.0, float(refit.accuracy(target)) + rng.normal(0.0, noise))))
    if len(predictions) < replicates // 2:
        raise CurveFitError(f"only {len(predictions)} of {replicates} bootstrap refits converged")
    tail = (1.0 - level) / 2
    low, high = np.quantile(predictions, [tail, 1.0 - tail])
    return Extrapolation(target, float(curve.accuracy(target)), float(low), float(high), level, curve,
                         len(predictions), noise)


@dataclass(frozen=True)
class Validation:
    """Fit on the sizes up to `up_to`, predict `target`: how often the measured runs fall inside."""

    up_to: int
    target: int
    level: float
    coverage: float  # mean over experiments of the share of their runs inside the interval
    experiments: int
    runs_inside: int
    runs: int
    bias: float  # mean over experiments of measured mean - prediction: > 0 when the curve predicts too little

    @property
    def lowest_acceptable(self) -> float:
        """Nominal coverage less two binomial standard errors over the experiments checked."""
        return self.level - 2 * math.sqrt(self.level * (1 - self.level) / max(self.experiments, 1))

    @property
    def passed(self) -> bool:
        return self.experiments > 0 and self.coverage >= self.lowest_acceptable

    def describe(self) -> str:
        return (f"fit on sizes up to {self.up_to:,}, predict {self.target:,}: {self.runs_inside} of "
                f"{self.runs} runs inside the {100 * self.level:.0f}% interval, coverage "
                f"{100 * self.coverage:.0f}% over {self.experiments} experiments (nominal "
                f"{100 * self.level:.0f}%, lowest acceptable {100 * self.lowest_acceptable:.0f}%), measured "
                f"{100 * self.bias:+.2f} pts from the prediction on average: "
                + ("validated" if self.passed else "NOT validated"))


def validate(curves: Sequence[tuple[Sequence[float], Sequence[float]]], up_to: int, level: float = 0.9,
             replicates: int = 500) -> Validation:
    """Hold out the largest size of each (sizes, accuracies) curve and predict it from sizes <= up_to."""
    shares, misses, inside, runs, target = [], [], 0, 0, 0
    for sizes, accuracies in curves:
        x, acc = np.asarray(sizes, dtype=float), np.asarray(accuracies, dtype=float)
        target = int(x.max())
        if target <= up_to:
            continue
        held_out = acc[x == target]
        try:
            predicted = extrapolate(x[x <= up_to], acc[x <= up_to], target, level, replicates)
            hits = sum(predicted.contains(a) for a in held_out)
            misses.append(float(held_out.mean()) - predicted.accuracy)
        except CurveFitError:  # no prediction counts as a miss
            hits = 0
        shares.append(hits / len(held_out))
        inside, runs = inside + hits, runs + len(held_out)
    coverage = float(np.mean(shares)) if shares else 0.0
    return Validation(up_to, target, level, coverage, len(shares), inside, runs,
                      float(np.mean(misses)) if misses else float("nan"))


def local_slopes(sizes: Sequence[float], accuracies: Sequence[float]) -> list[tuple[int, int, float]]:
    """(size, next size, slope of log mean error against log size) between neighbouring sizes.

    A saturating curve flattens (slopes approach zero from below); slopes that grow steeper
    with size mean the runs have not yet reached the power-law region the curve assumes.
    """
    x, acc = np.asarray(sizes, dtype=float), np.asarray(accuracies, dtype=float)
    levels = np.unique(x)
    log_err = [math.log(max(1.0 - float(acc[x == n].mean()), 1e-9)) for n in levels]
    return [(int(levels[i]), int(levels[i + 1]),
             (log_err[i + 1] - log_err[i]) / math.log(levels[i + 1] / levels[i]))
            for i in range(len(levels) - 1)]
