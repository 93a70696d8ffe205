"""Replay documented experiments and audit their claims against what we measure.

No verdict is written by hand: each comes from `judge`, applied to a measurement the
replay made in this run.
"""

from __future__ import annotations

import csv
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

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


def format_value(metric: str, value: float | None) -> str:
    """Counts as 1,333,770, accuracies as 91.23%, losses to four significant digits."""
    if value is None:
        return "-"
    if metric == "param_count" or metric == "stopped_epoch":
        return f"{value:,.0f}"
    if metric.endswith("accuracy"):
        return f"{100 * value:.2f}%"
    return f"{value:.4g}"


def format_difference(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric.endswith("accuracy"):
        return f"{100 * value:+.2f} pts"
    return f"{value:+,.4g}"


TABLE_COLUMNS = ("report", "experiment", "dataset", "epochs", "metric", "claimed", "reproduced",
                 "difference", "verdict", "reason")


def table_cells(row: AuditRow) -> list[str]:
    return [row.report, row.experiment, row.dataset, row.epochs, row.metric,
            format_value(row.metric, row.claimed), format_value(row.metric, row.reproduced),
            format_difference(row.metric, row.difference), row.verdict, row.reason]


ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/])/[^\s`'\"(),;]+")  # not inside a URL (sqlite:////tmp/..)
LONG_REASON = 60  # characters: a longer reason given by more than one row is stated once, as a note


def readable_paths(text: str) -> str:
    """`text` with absolute paths as a reader elsewhere recognises them: inside the working
    folder, relative to it; inside the temporary folder, without it and the scratch folder made
    there (/tmp/tmpab12/kmnist-7k -> kmnist-7k)."""
    scratch_root, here = Path(tempfile.gettempdir()).resolve(), Path.cwd().resolve()

    def shown(match: re.Match) -> str:
        raw = match.group(0)
        path, slash = Path(raw), "/" if raw.endswith("/") and raw != "/" else ""
        for root, drop in ((here, 0), (scratch_root, 1)):
            try:
                parts = path.relative_to(root).parts
            except ValueError:
                continue
            kept = parts[drop:] or parts[-1:]
            return (str(Path(*kept)) + slash) if kept else "."
        return raw

    return ABSOLUTE_PATH.sub(shown, text)


def clauses(reason: str) -> list[str]:
    """A reason's clauses: split at '; ' outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(reason):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and reason.startswith("; ", i):
            parts.append(reason[start:i])
            start = i + 2
    return [*parts, reason[start:]]


def _gist(clause: str) -> str:
    """What a clause says before its details: up to ' (' or ':'."""
    cut = min((i for i in (clause.find(" ("), clause.find(":")) if i > 0), default=len(clause))
    return clause[:cut]


def footnoted_table(columns: Sequence[str], rows: Sequence[Sequence[str]], reason_column: int) -> list[str]:
    """A markdown table whose reason column states each long clause that several rows share
    once, as a numbered note under the table; paths are shown by `readable_paths`."""
    split = [clauses(readable_paths(row[reason_column])) for row in rows]
    counts: dict[str, int] = {}
    for parts in split:
        for part in dict.fromkeys(parts):
            counts[part] = counts.get(part, 0) + 1
    notes: list[str] = []
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row, parts in zip(rows, split, strict=True):
        shown = []
        for part in parts:
            if counts[part] > 1 and len(part) > LONG_REASON:
                if part not in notes:
                    notes.append(part)
                part = f"{_gist(part)}: see note {notes.index(part) + 1}"
            shown.append(part)
        cells = [readable_paths(cell) for cell in row]
        cells[reason_column] = "; ".join(shown)
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    if notes:
        lines += ["", "Notes:", ""] + [f"{i}. {note}" for i, note in enumerate(notes, 1)]
    return lines


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
