"""Replay documented experiments and audit their claims against what we measure.

No verdict is written by hand: each comes from `judge`, applied to a measurement the
replay made in this run.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.report_format import footnoted_table, format_difference, format_value, readable_paths
from search.study import make_sampler, open_study
from spaces.base import DocumentedExperiment, SearchSpace

FULL_TRAINING_SET = 60_000
# what a replayed trial stores for each claimed metric
MEASURED_BY = {
    "test_accuracy": "test_accuracy",
    "test_loss": "test_loss",
    "val_accuracy": "best_val_accuracy",
    "val_loss": "min_val_loss",
    "param_count": "param_count",
    "stopped_epoch": "epochs_run",
}
HIGHER_IS_BETTER = {"test_accuracy", "val_accuracy", "train_accuracy"}
HEADLINE_ORDER = ("test_accuracy", "val_accuracy", "test_loss", "val_loss", "param_count")


@dataclass(frozen=True)
class AuditRow:
    report: str
    experiment: str
    space: str
    dataset: str  # the dataset the replay ran on
    epochs: str  # "2 of 50 (capped)"
    metric: str
    claimed: float
    reproduced: float | None
    difference: float | None
    verdict: str  # "reproduced", "not reproduced" or "not comparable"
    reason: str


def tolerance(metric: str, claimed: float, accuracy_tolerance: float) -> float:
    if metric in ("test_loss", "val_loss"):
        return 0.2 * claimed  # losses vary more between runs than accuracies
    if metric in ("param_count", "stopped_epoch"):
        return 0 if metric == "param_count" else 3
    return accuracy_tolerance


def judge(metric: str, claimed: float, measured: float | None, limits: list[str],
          accuracy_tolerance: float = 0.01) -> tuple[str, str]:
    """The verdict on one claim. `limits` are ways this replay fell short of the report's
    protocol (fewer epochs, fewer images): a shortfall under them refutes nothing."""
    if measured is None:
        return "not comparable", "; ".join(limits) or f"replay does not measure {metric}"
    difference = measured - claimed
    tol = tolerance(metric, claimed, accuracy_tolerance)
    if abs(difference) <= tol:
        return "reproduced", f"within {tol:g}" + "".join(f"; {x}" for x in limits)
    worse = difference < 0 if metric in HIGHER_IS_BETTER else difference > 0
    if limits and worse and metric != "param_count":
        return "not comparable", "; ".join(limits)
    side = "below" if difference < 0 else "above"
    return "not reproduced", f"{side} the claim by more than {tol:g}" + "".join(f"; {x}" for x in limits)


def select_experiments(spaces: Iterable[SearchSpace]) -> list[tuple[SearchSpace, DocumentedExperiment]]:
    """Each documented experiment once, with the first space that holds it."""
    seen: set[str] = set()
    chosen = []
    for space in spaces:
        for experiment in space.experiments:
            if experiment.key not in seen:
                seen.add(experiment.key)
                chosen.append((space, experiment))
    return chosen


def measurements(trial: FrozenTrial) -> dict[str, float]:
    attrs = dict(trial.user_attrs)
    if trial.intermediate_values:
        attrs["best_val_accuracy"] = max(trial.intermediate_values.values())
    return {claim: attrs[key] for claim, key in MEASURED_BY.items() if key in attrs}


def audit_rows(space: SearchSpace, experiment: DocumentedExperiment, dataset: str,
               trial: FrozenTrial | None, train_images: int, not_run: str = "",
               accuracy_tolerance: float = 0.01) -> list[AuditRow]:
    """One row per claim of `experiment`, judged against `trial` (None: it did not run)."""
    measured = measurements(trial) if trial is not None and trial.state == TrialState.COMPLETE else {}
    limits = []
    epochs = "not run"
    if not_run:
        limits.append(not_run)
    elif trial is not None:
        ran = trial.user_attrs.get("epochs_run", len(trial.intermediate_values))
        capped = trial.user_attrs.get("epochs_capped_from")
        epochs = f"{ran} of {experiment.epochs}" + (" (capped)" if capped else "")
        if capped:
            limits.append(f"capped at {ran} of {experiment.epochs} epochs")
        if trial.state != TrialState.COMPLETE:
            limits.append(f"trial {trial.state.name.lower()}: "
                          f"{trial.user_attrs.get('pruned_reason', 'no result')}")
        if train_images < FULL_TRAINING_SET:
            limits.append(f"trained on {train_images:,} of {FULL_TRAINING_SET:,} images")
    if dataset != experiment.dataset:
        limits.append(f"claim measured on {experiment.dataset}, replayed on {dataset}")
    rows = []
    for claim in experiment.claims:
        value = measured.get(claim.metric)
        # a parameter count depends on the model only, never on the data or epochs
        claim_limits = [] if claim.metric == "param_count" and value is not None else limits
        if dataset != experiment.dataset and claim.metric != "param_count":
            value = None
        verdict, reason = judge(claim.metric, claim.value, value, claim_limits, accuracy_tolerance)
        rows.append(AuditRow(
            experiment.report, experiment.name, space.name, dataset, epochs, claim.metric,
            claim.value, value, None if value is None else value - claim.value, verdict, reason,
        ))
    return rows


def headline(rows: list[AuditRow]) -> AuditRow:
    """The row that stands for its experiment in the summary table."""
    return min(rows, key=lambda r: HEADLINE_ORDER.index(r.metric)
               if r.metric in HEADLINE_ORDER else len(HEADLINE_ORDER))


def replay_experiment(storage: optuna.storages.BaseStorage, space: SearchSpace,
                      experiment: DocumentedExperiment, dataset: str,
                      objective: Callable[[optuna.Trial], float], seed: int) -> FrozenTrial:
    """Run one documented experiment as a trial of study `replay-<space>-<dataset>`."""
    study = open_study(storage, f"replay-{space.name}-{dataset}", space, dataset,
                       make_sampler(seed), optuna.pruners.NopPruner())
    study.enqueue_trial(space.trial_params(experiment.config),
                        user_attrs={**experiment.trial_attrs(), "source": "replay"})
    finished: list[FrozenTrial] = []
    study.optimize(objective, n_trials=1, catch=(RuntimeError, ValueError),
                   callbacks=[lambda _, trial: finished.append(trial)])
    return finished[0]


TABLE_COLUMNS = ("report", "experiment", "dataset", "epochs", "metric", "claimed", "reproduced",
                 "difference", "verdict", "reason")


def table_cells(row: AuditRow) -> list[str]:
    return [row.report, row.experiment, row.dataset, row.epochs, row.metric,
            format_value(row.metric, row.claimed), format_value(row.metric, row.reproduced),
            format_difference(row.metric, row.difference), row.verdict, row.reason]


def write_audit(out: Path, summary: list[AuditRow], claims: list[AuditRow], header: str) -> list[Path]:
    """replay.csv and replay.md (one row per experiment) and claims.csv (every claim)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "replay.csv", out / "claims.csv", out / "replay.md"]
    for path, rows in ((paths[0], summary), (paths[1], claims)):
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(AuditRow.__dataclass_fields__))
            writer.writeheader()
            writer.writerows(_csv_row(r) for r in rows)
    lines = [f"# Replay audit\n\n{readable_paths(header)}\n",
             *footnoted_table(TABLE_COLUMNS, [table_cells(r) for r in summary],
                              TABLE_COLUMNS.index("reason"))]
    counts = {v: sum(r.verdict == v for r in claims)
              for v in ("reproduced", "not reproduced", "not comparable")}
    lines.append("\nAll claims: " + ", ".join(f"{n} {v}" for v, n in counts.items()) +
                 " (every claim is in claims.csv).\n")
    paths[2].write_text("\n".join(lines))
    return paths


def _csv_row(row: AuditRow) -> dict[str, Any]:
    return {k: ("" if v is None else v) for k, v in asdict(row).items()}


# --- the `replay` command as library calls ---

@dataclass(frozen=True)
class ReplayRequest:
    """What `kmnist-search replay` asks for; `spaces` and `report` choose the experiments."""

    spaces: tuple[SearchSpace, ...]
    report: str | None
    dataset: str | None  # None: each experiment's documented dataset
    data_dir: Path
    storage: str
    out: Path
    val_fraction: float = 1 / 6
    seed: int = 0
    device: str = "auto"
    max_epochs: int | None = None
    accuracy_tolerance: float = 0.01
    artifact_dir: Path | None = None

    def experiments_and_data(self) -> tuple[list[tuple[SearchSpace, DocumentedExperiment]], Callable]:
        """The experiments to replay, and the loader of their datasets on the request's device."""
        from objectives.training import resolve_device

        return (choose_experiments(self.spaces, self.report),
                data_loader(self.data_dir, self.val_fraction, self.seed, resolve_device(self.device)))


def replay_documented(request: ReplayRequest,
                      say: Callable[[str], None] = lambda _: None) -> tuple[list[AuditRow], list[Path]]:
    """Replay the chosen experiments into the storage and write the audit; one headline row
    per experiment and the files written."""
    from storage.artifacts import artifact_dir, open_artifact_store
    from storage.urls import open_storage

    chosen, load = request.experiments_and_data()
    store = open_artifact_store(artifact_dir(request.storage, request.artifact_dir))
    summary, claims = replay_and_audit(chosen, open_storage(request.storage), store, load, request.dataset,
                                       request.max_epochs, request.seed, request.accuracy_tolerance, say)
    cap = f"epochs capped at {request.max_epochs}" if request.max_epochs else "documented epochs"
    header = (f"Data: {request.data_dir}; {cap}; validation fraction {request.val_fraction:.3g}; "
              f"seed {request.seed}; accuracy tolerance {100 * request.accuracy_tolerance:g} points.")
    return summary, write_audit(request.out, summary, claims, header)


def choose_experiments(spaces: Iterable[SearchSpace], report: str | None) -> list[tuple[SearchSpace,
                                                                                        DocumentedExperiment]]:
    """The (space, experiment) pairs to replay, narrowed to one report's ("002") when given."""
    from spaces.base import UnknownSpaceError

    chosen = select_experiments(spaces)
    if report is None:
        return chosen
    picked = [(space, e) for space, e in chosen if e.key.startswith(f"{report}/")]
    if not picked:
        reports = sorted({e.key.split("/")[0] for _, e in chosen})
        raise UnknownSpaceError(f"no documented experiment of report {report} in the chosen spaces: "
                                f"use --report {' / '.join(reports)} or another --space")
    return picked


def data_loader(data_dir: Path, val_fraction: float, seed: int, device: Any) -> Callable[[str], tuple | str]:
    """dataset -> (search data, test split), or why it could not be loaded; each loaded once."""
    from objectives.data import load_search_data, load_test_split
    from objectives.datasets import DataUnavailableError

    loaded: dict[str, tuple | str] = {}

    def load(dataset: str) -> tuple | str:
        if dataset not in loaded:
            try:
                data = load_search_data(dataset, data_dir, val_fraction, seed, device)
                loaded[dataset] = (data, load_test_split(dataset, data_dir, data.mean, data.std, device))
            except DataUnavailableError as error:
                loaded[dataset] = f"not run: {error}"
        return loaded[dataset]

    return load


def replay_and_audit(chosen: list[tuple[SearchSpace, DocumentedExperiment]],
                     storage: optuna.storages.BaseStorage, artifact_store: Any,
                     load: Callable[[str], tuple | str], dataset: str | None, max_epochs: int | None,
                     seed: int, accuracy_tolerance: float,
                     say: Callable[[str], None]) -> tuple[list[AuditRow], list[AuditRow]]:
    """Replay each experiment (on `dataset`, else its documented one) and judge its claims;
    returns one headline row per experiment and every claim's row."""
    from objectives.objective import Objective
    from search.evidence import TrialEvidence

    evidence = TrialEvidence(artifact_store)
    claims, summary = [], []
    for space, experiment in chosen:
        on = dataset or experiment.dataset
        loaded = load(on)
        if isinstance(loaded, str):
            rows = audit_rows(space, experiment, on, None, 0, not_run=loaded,
                              accuracy_tolerance=accuracy_tolerance)
        else:
            data, test = loaded
            epochs = min(experiment.epochs, max_epochs or experiment.epochs)
            say(f"replaying {experiment.key} on {on} for {epochs} of {experiment.epochs} epochs")
            objective = Objective(space, data, epochs, seed, test=test, on_trial_end=evidence)
            trial = replay_experiment(storage, space, experiment, on, objective, seed)
            rows = audit_rows(space, experiment, on, trial, len(data.train) + len(data.val),
                              accuracy_tolerance=accuracy_tolerance)
        claims += rows
        summary.append(headline(rows))
    return summary, claims
