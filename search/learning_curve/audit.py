"""The verdicts of the learning-curve audit: every claim of a documented experiment judged
against its runs and the curve fitted to them (fit.py), extrapolated to the size the report
trained on. No verdict is written by hand: each comes from `claim_verdict`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import optuna

from objectives.data import SearchData, TensorSplit
from search.learning_curve.fit import CurveFitError, Extrapolation, Validation, extrapolate, validate
from search.learning_curve.runs import (
    CurveObjective,
    CurveRun,
    CurveSettings,
    curve_points,
    curve_study,
    resolve_sizes,
    run_curve,
)
from search.replay import judge
from spaces.base import DocumentedExperiment, SearchSpace

VERDICTS = ("reproduced", "not reproduced", "consistent with the extrapolation",
            "outside the extrapolated interval", "not comparable")


def fit_runs(runs: Sequence[CurveRun], target: int, settings: CurveSettings) -> Extrapolation | str:
    """The extrapolation to `target`, or why there is none."""
    try:
        return extrapolate(*curve_points(runs), target, settings.level, settings.bootstrap, settings.seed)
    except CurveFitError as error:
        return f"no curve: {error}"


@dataclass(frozen=True)
class CurveAuditRow:
    report: str
    experiment: str
    dataset: str
    epochs: str  # "at most 30 of 50 (capped)"
    runs: str  # "8 sizes 500-5,842 x 4 seeds"
    metric: str
    claimed: float
    measured_largest: float | None  # mean test accuracy at the largest size
    target_images: int
    extrapolated: float | None
    interval_low: float | None
    interval_high: float | None
    curve_e_inf: float | None  # the fit: err(n) = e_inf + b * (n / 1000) ** -c
    curve_b: float | None
    curve_c: float | None
    verdict: str
    reason: str


def claim_verdict(metric: str, claimed: float, runs: Sequence[CurveRun],
                  fit: Extrapolation | str, full_protocol: bool, validation_failed: str,
                  param_count: int | None, accuracy_tolerance: float) -> tuple[str, str]:
    """The verdict on one claim. Only test accuracy is extrapolated: the test set is the
    one the reports measured on; their validation splits are not ours."""
    if metric == "param_count":
        return judge(metric, claimed, param_count, [] if param_count is not None else ["no run finished"])
    if metric != "test_accuracy":
        return "not comparable", f"only test accuracy is extrapolated, not {metric.replace('_', ' ')}"
    if not runs:
        return "not comparable", "no run finished"
    if full_protocol:
        sizes, accuracies = curve_points(runs)
        return judge(metric, claimed, float(accuracies[sizes == sizes.max()].mean()), [], accuracy_tolerance)
    if isinstance(fit, str):
        return "not comparable", fit
    if validation_failed:
        return "not comparable", f"extrapolation did not validate ({validation_failed})"
    where = (f"the {100 * fit.level:.0f}% interval [{100 * fit.low:.2f}%, {100 * fit.high:.2f}%] "
             f"at {fit.target:,} images")
    if fit.contains(claimed):
        return "consistent with the extrapolation", f"claim inside {where}"
    side = f"{100 * (claimed - fit.high):.2f} pts above" if claimed > fit.high else \
        f"{100 * (fit.low - claimed):.2f} pts below"
    return "outside the extrapolated interval", f"claim {side} {where}"


def audit_experiment(experiment: DocumentedExperiment, dataset: str, runs: Sequence[CurveRun],
                     settings: CurveSettings, validation_failed: str, param_count: int | None,
                     accuracy_tolerance: float, not_run: str = "") -> list[CurveAuditRow]:
    """One row per claim of `experiment`."""
    budget = min(experiment.epochs, settings.max_epochs or experiment.epochs)
    capped = budget < experiment.epochs
    epochs = "not run" if not_run else f"at most {budget} of {experiment.epochs}" + " (capped)" * capped
    fit: Extrapolation | str = not_run or "no run finished"
    largest = None
    described = "-"
    if runs:
        sizes, accuracies = curve_points(runs)
        largest = float(accuracies[sizes == sizes.max()].mean())
        described = (f"{len(set(sizes))} sizes {int(sizes.min()):,}-{int(sizes.max()):,} x "
                     f"{len({r.seed for r in runs})} seeds")
        fit = fit_runs(runs, experiment.train_images, settings)
    full_protocol = bool(runs) and not capped and max(r.size for r in runs) >= experiment.train_images
    if dataset != experiment.dataset:
        not_run = not_run or f"claim measured on {experiment.dataset}, replayed on {dataset}"
    rows = []
    for claim in experiment.claims:
        if not_run and (not runs or claim.metric != "param_count"):  # a count needs only the model
            verdict, reason = "not comparable", not_run
        else:
            verdict, reason = claim_verdict(claim.metric, claim.value, runs, fit, full_protocol,
                                            validation_failed, param_count, accuracy_tolerance)
        if experiment.doubtful:
            reason += f"; the catalogue doubts this claim: {experiment.doubtful}"
        numbers: tuple = (None,) * 6
        if isinstance(fit, Extrapolation):
            numbers = (fit.accuracy, fit.low, fit.high, fit.curve.e_inf, fit.curve.b, fit.curve.c)
        rows.append(CurveAuditRow(experiment.report, experiment.name, dataset, epochs, described,
                                  claim.metric, claim.value, largest, experiment.train_images, *numbers,
                                  verdict, reason))
    return rows


def validation_failures(validations: Sequence[Validation]) -> str:
    """Why the extrapolation may not be trusted ("" when every check passed)."""
    return "; ".join(f"fit up to {v.up_to:,}, predict {v.target:,}: coverage {100 * v.coverage:.0f}% against "
                     f"nominal {100 * v.level:.0f}%" for v in validations if not v.passed)


LoadedData = tuple[SearchData, TensorSplit] | str  # the data, or why it could not be loaded


def audit_by_curves(storage: optuna.storages.BaseStorage,
                    chosen: Sequence[tuple[SearchSpace, DocumentedExperiment]],
                    load: Callable[[str], LoadedData], dataset: str | None, settings: CurveSettings,
                    validate_up_to: Sequence[int], accuracy_tolerance: float,
                    report: Callable[[str], None] = lambda _: None,
                    ) -> tuple[list[CurveAuditRow], list[CurveRun], list[Validation]]:
    """Run every curve, validate the extrapolation on them, then judge every claim."""
    measured = []  # (experiment, dataset, runs, param count, why not run)
    for space, experiment in chosen:
        on = dataset or experiment.dataset
        loaded = load(on)
        if isinstance(loaded, str):
            measured.append((experiment, on, [], None, loaded))
            continue
        data, test = loaded
        mine = replace(settings, sizes=resolve_sizes(settings.sizes, len(data.train), on))
        study = curve_study(storage, space, on, mine, data.split_hash)
        objective = CurveObjective(space, data, test, mine)
        runs = run_curve(study, space, experiment, objective, mine, report)
        measured.append((experiment, on, runs, runs[0].param_count if runs else None, ""))
    curves = [curve_points(runs) for _, _, runs, _, _ in measured if runs]
    validations = [validate(curves, up_to, settings.level, settings.bootstrap) for up_to in validate_up_to
                   if curves and any(up_to < sizes.max() for sizes, _ in curves)]
    failed = validation_failures(validations)
    rows = [row for experiment, on, runs, count, not_run in measured
            for row in audit_experiment(experiment, on, runs, settings, failed, count, accuracy_tolerance,
                                        not_run)]
    return rows, [run for _, _, runs, _, _ in measured for run in runs], validations
