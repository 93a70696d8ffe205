"""`replay --learning-curve`: the reports' test accuracies judged against learning curves.

Each documented experiment is trained at several training-set sizes (nested stratified
subsets of the training split, one order per seed) and tested on the test set; a curve
fitted to those runs (search/curve_fit.py) is extrapolated to the size the report trained
on. The runs are trials of studies `curve-<space>-<dataset>`, so a stopped audit resumes
where it stopped. No verdict is written by hand: each comes from `claim_verdict`.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from objectives.data import SearchData, TensorSplit, nested_stratified_order, take
from objectives.datasets import DataUnavailableError
from objectives.objective import Objective
from search.curve_fit import (
    Curve,
    CurveFitError,
    Extrapolation,
    Validation,
    extrapolate,
    local_slopes,
    validate,
)
from search.figure_style import COLOURS, WIDTH, log_count_axis, percent_axis, save_figure, styled
from search.replay import footnoted_table, format_value, judge, readable_paths
from search.study import StudyMismatchError, make_sampler, open_study
from spaces.base import DocumentedExperiment, SearchSpace

SOURCE = "learning-curve"
VERDICTS = ("reproduced", "not reproduced", "consistent with the extrapolation",
            "outside the extrapolated interval", "not comparable")


@dataclass(frozen=True)
class CurveSettings:
    sizes: tuple[int, ...]  # training-set sizes, ascending; none above the training split
    seeds: int  # runs per size; seed i draws its own nested subsets and initial weights
    max_epochs: int | None  # cap on the documented epochs (documented early stopping still applies)
    seed: int  # base seed; also fixed the validation split
    level: float = 0.9  # nominal coverage of the prediction intervals
    bootstrap: int = 500

    def recorded(self, split_hash: str) -> dict[str, Any]:
        """What the runs depend on: a study made with other values holds other runs."""
        return {"max_epochs": self.max_epochs, "seed": self.seed, "split_hash": split_hash}


@dataclass(frozen=True)
class CurveRun:
    experiment: str  # documented experiment key
    size: int
    seed: int
    test_accuracy: float
    val_accuracy: float  # best over epochs, on the fixed validation split
    epochs_run: int
    param_count: int
    trial: int


def curve_study(storage: optuna.storages.BaseStorage, space: SearchSpace, dataset: str,
                settings: CurveSettings, split_hash: str) -> optuna.Study:
    study = open_study(storage, f"curve-{space.name}-{dataset}", space, dataset,
                       make_sampler(settings.seed), optuna.pruners.NopPruner())
    wanted = settings.recorded(split_hash)
    recorded = study.user_attrs.get("curve_settings")
    if recorded is None:
        study.set_user_attr("curve_settings", wanted)
    elif recorded != wanted:
        differ = ", ".join(f"{k} {recorded.get(k)} (now {v})" for k, v in wanted.items()
                           if recorded.get(k) != v)
        raise StudyMismatchError(f"study {study.study_name!r} holds learning-curve runs made with {differ}: "
                                 "repeat those options or use another --storage")
    return study


class CurveObjective:
    """Trains the trial on the subset its user attributes name, so any queued run is run right."""

    def __init__(self, space: SearchSpace, data: SearchData, test: TensorSplit,
                 settings: CurveSettings) -> None:
        self.space, self.data, self.test, self.settings = space, data, test, settings
        # every curve run carries its documented epochs; the budget only caps them
        self.budget = settings.max_epochs or sys.maxsize
        self.orders: dict[int, np.ndarray] = {}

    def subset(self, size: int, seed: int) -> SearchData:
        if seed not in self.orders:
            labels = self.data.train.labels.cpu().numpy()
            self.orders[seed] = nested_stratified_order(labels, self.settings.seed + seed)
        return replace(self.data, train=take(self.data.train, self.orders[seed][:size]))

    def __call__(self, trial: optuna.Trial) -> float:
        data = self.subset(trial.user_attrs["train_size"], trial.user_attrs["curve_seed"])
        return Objective(self.space, data, self.budget, self.settings.seed, test=self.test)(trial)


def _key(trial: FrozenTrial) -> tuple[str, int, int]:
    attrs = trial.user_attrs
    return attrs.get("documented_experiment", ""), attrs.get("train_size", -1), attrs.get("curve_seed", -1)


def run_one(study: optuna.Study, objective: CurveObjective) -> FrozenTrial:
    """Run the oldest queued trial."""
    finished: list[FrozenTrial] = []
    study.optimize(objective, n_trials=1, catch=(RuntimeError, ValueError),
                   callbacks=[lambda _, trial: finished.append(trial)])
    return finished[0]


def enqueue_run(study: optuna.Study, space: SearchSpace, experiment: DocumentedExperiment, size: int,
                seed: int) -> None:
    study.enqueue_trial(space.trial_params(experiment.config),
                        user_attrs={**experiment.trial_attrs(), "source": SOURCE, "train_size": size,
                                    "curve_seed": seed, "train_seed_offset": seed})


def run_curve(study: optuna.Study, space: SearchSpace, experiment: DocumentedExperiment,
              objective: CurveObjective, settings: CurveSettings,
              report: Callable[[str], None] = lambda _: None) -> list[CurveRun]:
    """Every (size, seed) run of `experiment`, training only those the study does not hold yet."""
    wanted = [(experiment.key, size, seed) for seed in range(settings.seeds) for size in settings.sizes]
    done = {_key(t): t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,
                                                                         TrialState.PRUNED))}
    waiting = {_key(t) for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))}
    for key in wanted:
        if key not in done and key not in waiting:
            enqueue_run(study, space, experiment, key[1], key[2])
    todo = [key for key in wanted if key not in done]
    for seed in range(settings.seeds):
        for key in (k for k in todo if k[2] == seed):
            while key not in done:  # a run queued by an interrupted audit may come first: it is run too
                trial = run_one(study, objective)
                done[_key(trial)] = trial  # a failed run is left out of the curve and retried next time
        mine = [done[k] for k in wanted if k[2] == seed and done[k].state == TrialState.COMPLETE]
        missed = sum(k[2] == seed for k in wanted) - len(mine)
        accs = [t.user_attrs["test_accuracy"] for t in mine] or [float("nan")]
        report(f"{experiment.key} seed {seed}: {len(mine)} sizes, test accuracy {100 * min(accs):.1f}% .. "
               f"{100 * max(accs):.1f}%" + f"; {missed} runs failed or were pruned" * (missed > 0))
    return [CurveRun(experiment.key, t.user_attrs["train_size"], t.user_attrs["curve_seed"],
                     t.user_attrs["test_accuracy"], max(t.intermediate_values.values()),
                     t.user_attrs["epochs_run"], t.user_attrs["param_count"], t.number)
            for t in (done[k] for k in wanted) if t.state == TrialState.COMPLETE]


def curve_points(runs: Sequence[CurveRun]) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([r.size for r in runs], dtype=float), np.array([r.test_accuracy for r in runs]))


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


TABLE_COLUMNS = ("report", "experiment", "epochs", "claimed", "measured at largest size (mean)",
                 "extrapolated test accuracy (interval; used only if validated)", "verdict", "reason")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def table_cells(row: CurveAuditRow) -> list[str]:
    interval = "-" if row.extrapolated is None else (
        f"{_percent(row.extrapolated)} [{_percent(row.interval_low)}, {_percent(row.interval_high)}] "
        f"at {row.target_images:,}")
    return [row.report.split("_")[0], row.experiment, row.epochs,
            f"{row.metric} {format_value(row.metric, row.claimed)}", _percent(row.measured_largest),
            interval, row.verdict, row.reason]


def headline(rows: Sequence[CurveAuditRow]) -> CurveAuditRow:
    """The test-accuracy claim where there is one: the one claim extrapolated."""
    return next((r for r in rows if r.metric == "test_accuracy"), rows[0])


HOW_TO_READ = """## How to read the verdicts

Each documented experiment was trained at several training-set sizes (nested, stratified
subsets of the training split; one subset order and one weight initialisation per seed) and
tested on the test set. A power law with an asymptote, err(n) = e_inf + b (n/1000)^-c, fitted
to those runs is extrapolated to the number of images the report trained on, with a
prediction interval for one run there (bootstrap over seeds and sizes plus the seed-to-seed
noise). Only test accuracy is extrapolated.

- *reproduced* / *not reproduced*: the full protocol ran (all the report's images, its
  epochs) and the claim is / is not within the tolerance. Parameter counts need no data.
- *consistent with the extrapolation*: the claim lies inside the interval. Not a
  reproduction: a claim anywhere in a wide interval is consistent.
- *outside the extrapolated interval*: the claim lies above or below it, by the points given.
- *not comparable*: the reason says why (another dataset whose files are missing, a claim
  that is not a test accuracy, a curve that could not be fitted, or an extrapolation that did
  not pass its check below, in which case no claim is judged by it).
"""


VERDICT_COLOURS = {"consistent with the extrapolation": "tab:green", "reproduced": "tab:green",
                   "outside the extrapolated interval": "tab:red", "not reproduced": "tab:red"}
NOT_JUDGED = "not judged by the curve"


def panel_title(row: CurveAuditRow, width: int = 30) -> str:
    """'000 · Experiment 1' on at most two lines, shortened with an ellipsis beyond that."""
    import textwrap

    lines = textwrap.wrap(f"{row.report.split('_')[0]} · {row.experiment}", width)
    if len(lines) > 2:
        lines = [lines[0], textwrap.shorten(" ".join(lines[1:]), width, placeholder=" ...")]
    return "\n".join(lines)


@styled
def plot_curves(claims: Sequence[CurveAuditRow], runs: Sequence[CurveRun], path: Path,
                validated: bool = True) -> Path:
    """One panel per experiment with a test-accuracy claim: its runs, the fitted curve over the
    measured sizes, and the claim at the report's size. The extrapolation (dashed, with its
    interval) is drawn only when it `validated`: the audit judges no claim by one that did not."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    tested = [r for r in claims if r.metric == "test_accuracy" and r.curve_e_inf is not None]
    columns = 4 if len(tested) > 4 else max(1, len(tested))
    rows = max(1, -(-len(tested) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(WIDTH, 0.9 + 2.1 * rows), squeeze=False, sharex=True,
                             sharey=True, layout="constrained")
    verdicts: set[str] = set()
    for ax, row in zip(axes.flat, tested, strict=False):
        mine = [r for r in runs if r.experiment == f"{row.report.split('_')[0]}/{row.experiment}"]
        sizes = [r.size for r in mine]
        ax.scatter(sizes, [100 * r.test_accuracy for r in mine], s=9, color=COLOURS["measured"], alpha=0.8,
                   zorder=2)
        curve = Curve(row.curve_e_inf, row.curve_b, row.curve_c)
        n = np.geomspace(min(sizes), max(sizes), 60)
        ax.plot(n, 100 * curve.accuracy(n), color=COLOURS["measured"])
        if validated:
            far = np.geomspace(max(sizes), row.target_images, 60)
            ax.plot(far, 100 * curve.accuracy(far), color=COLOURS["measured"], linestyle="--")
            ax.errorbar([row.target_images], [100 * row.extrapolated],
                        yerr=[[100 * (row.extrapolated - row.interval_low)],
                              [100 * (row.interval_high - row.extrapolated)]],
                        color=COLOURS["measured"], capsize=3, linewidth=1.2)
        verdict = row.verdict if row.verdict in VERDICT_COLOURS else NOT_JUDGED
        verdicts.add(verdict)
        ax.scatter([row.target_images], [100 * row.claimed], marker="*", s=90, zorder=3,
                   color=VERDICT_COLOURS.get(verdict, COLOURS["claim"]))
        ax.set_title(panel_title(row), fontsize=8)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(tested):]:
        ax.axis("off")
    if tested:
        log_count_axis(axes[0, 0], "x")
        percent_axis(axes[0, 0])
    for ax in axes[:, 0]:
        ax.set_ylabel("test accuracy")
    for column in range(columns):  # the lowest panel drawn in each column carries the x label
        drawn = [r for r in range(rows) if r * columns + column < len(tested)]
        if drawn:
            axes[drawn[-1], column].set_xlabel("training images (log)")
            axes[drawn[-1], column].xaxis.set_tick_params(labelbottom=True)
    handles = [Line2D([], [], color=COLOURS["measured"], marker="o", linestyle="", markersize=4,
                      label="one run (size, seed)"),
               Line2D([], [], color=COLOURS["measured"], label="fitted curve, measured sizes")]
    if validated:
        handles.append(Line2D([], [], color=COLOURS["measured"], linestyle="--", marker="_",
                              markersize=10, label="extrapolation and its interval"))
    handles += [Line2D([], [], color=VERDICT_COLOURS.get(v, COLOURS["claim"]), marker="*", linestyle="",
                       markersize=10, label=f"claimed ({v})") for v in sorted(verdicts)]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8)
    if not validated:
        fig.suptitle("The extrapolation failed its check, so it is not drawn and judges no claim",
                     fontsize=9)
    return save_figure(fig, path)


def slope_table(runs: Sequence[CurveRun]) -> dict[tuple[int, int], list[float]]:
    """Local slopes of every experiment's curve, gathered per pair of neighbouring sizes."""
    gathered: dict[tuple[int, int], list[float]] = {}
    for key in dict.fromkeys(r.experiment for r in runs):
        for a, b, slope in local_slopes(*curve_points([r for r in runs if r.experiment == key])):
            gathered.setdefault((a, b), []).append(slope)
    return gathered


def write_curve_audit(out: Path, claims: Sequence[CurveAuditRow], runs: Sequence[CurveRun],
                      validations: Sequence[Validation], header: str) -> list[Path]:
    """audit.md (validation, one row per experiment), audit.csv (every claim), curve-runs.csv and
    audit-curves.png."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "audit.md", out / "audit.csv", out / "curve-runs.csv"]
    for path, rows, fields in ((paths[1], claims, CurveAuditRow.__dataclass_fields__),
                               (paths[2], runs, CurveRun.__dataclass_fields__)):
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(fields))
            writer.writeheader()
            writer.writerows({k: "" if v is None else v for k, v in asdict(r).items()} for r in rows)
    lines = [f"# Audit of the reports on the test set, by learning curves\n\n{readable_paths(header)}\n",
             HOW_TO_READ,
             "## Does the extrapolation validate?\n"]
    lines += [f"- {v.describe()}" for v in validations] or ["- no validation: too few sizes"]
    largest = max((r.size for r in runs), default=0)
    targets = sorted({r.target_images for r in claims})
    if validations and largest:
        reach = max(v.target / v.up_to for v in validations)
        low, high = targets[0] / largest, targets[-1] / largest
        lines.append(f"\nThe checks extrapolate at most {reach:.1f}x in training-set size; the audit "
                     f"extrapolates {low:.1f}x" + f"-{high:.1f}x" * (high > low) + f" (from {largest:,} "
                     f"to {', '.join(f'{t:,}' for t in targets)} images). Passing at the shorter reach is "
                     "necessary, not sufficient, for trusting the longer one.")
    slopes = slope_table(runs)
    if slopes:
        lines += ["\nHow the error falls with size, averaged over the experiments (slope of log test error "
                  "against log training images between neighbouring sizes; a saturating curve's slopes "
                  "flatten toward zero):\n", "| sizes | mean slope | range over experiments |",
                  "|---|---|---|"]
        lines += [f"| {a:,}-{b:,} | {np.mean(v):.3f} | {min(v):.3f} .. {max(v):.3f} |"
                  for (a, b), v in slopes.items()]
    if runs:
        figure = plot_curves(claims, runs, out / "audit-curves.png",
                             validated=not validation_failures(validations))
        paths.append(figure)
        lines.append(f"\n![learning curves]({figure.name})")
    experiments: dict[tuple[str, str], list[CurveAuditRow]] = {}
    for row in claims:
        experiments.setdefault((row.report, row.experiment), []).append(row)
    lines += ["\n## One row per experiment\n",
              *footnoted_table(TABLE_COLUMNS, [table_cells(headline(rows)) for rows in experiments.values()],
                               TABLE_COLUMNS.index("reason"))]
    counts = {v: sum(r.verdict == v for r in claims) for v in VERDICTS}
    lines.append("\nAll claims: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n) +
                 f" (every claim, with its curve, in {paths[1].name}; every run in {paths[2].name}).\n")
    paths[0].write_text("\n".join(lines))
    return paths



def _read_rows(path: Path, kind: type) -> list:
    """Rows of a CSV written by `write_curve_audit`, back as `kind` (a dataclass)."""
    def number(text: str) -> float:  # a count written as 535818 reads back as one, to write it alike
        return int(text) if text.lstrip("-").isdigit() else float(text)

    parse = {"str": str, "int": int, "float": number,
             "float | None": lambda v: None if v == "" else number(v)}
    fields = kind.__dataclass_fields__
    with open(path, newline="") as f:
        return [kind(**{name: parse[fields[name].type](value) for name, value in row.items()})
                for row in csv.DictReader(f)]


def read_curve_audit(folder: Path) -> tuple[list[CurveAuditRow], list[CurveRun]]:
    """The claims (audit.csv) and runs (curve-runs.csv) an audit wrote: enough to write its
    markdown and figure again without training anything."""
    return _read_rows(folder / "audit.csv", CurveAuditRow), _read_rows(folder / "curve-runs.csv", CurveRun)


def resolve_sizes(requested: Sequence[int], available: int, dataset: str) -> tuple[int, ...]:
    """`requested` with 0 meaning the whole training split, checked against `available`."""
    too_big = [n for n in requested if n > available]
    if too_big:
        raise DataUnavailableError(f"--sizes {too_big[0]:,} exceeds the {available:,} training images of "
                                 f"{dataset} left after the validation split: use sizes up to {available:,} "
                                 "or 'all'")
    return tuple(sorted({available if n == 0 else n for n in requested}))


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
