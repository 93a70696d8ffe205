"""From a study's trials to self-contained configurations, and back to a validated config."""

from __future__ import annotations

import datetime as dt
from importlib.metadata import version
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FixedTrial, FrozenTrial, TrialState

from search.study import SETTINGS_ATTR, SearchSettings, describe_pick, stored_pick, trial_source
from spaces import get_space
from spaces.base import SearchSpace
from storage.configs import FORMAT, ConfigError


class ExportError(ValueError):
    """A study or trial that cannot be exported; the message says what to do."""


def as_plain(value: Any) -> Any:
    """JSON/YAML-friendly: tuples become lists, recursively."""
    if isinstance(value, (tuple, list)):
        return [as_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: as_plain(v) for k, v in value.items()}
    return value


def _space_value(value: Any) -> Any:
    """Back from a file: lists become the tuples the spaces hold."""
    if isinstance(value, list):
        return tuple(_space_value(v) for v in value)
    if isinstance(value, dict):
        return {k: _space_value(v) for k, v in value.items()}
    return value


def trial_config(trial: FrozenTrial, space: SearchSpace) -> dict[str, Any]:
    """A trial's parameters in the space's own terms, rebuilt without training."""
    return space.suggest(FixedTrial(trial.params))


def choose_trials(study: optuna.Study, trial_number: int | None, top: int) -> list[FrozenTrial]:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise ExportError(f"study {study.study_name!r} has no completed trial: run "
                          f"`kmnist-search start --study {study.study_name}` first")
    if trial_number is not None:
        match = [t for t in study.get_trials(deepcopy=False) if t.number == trial_number]
        if not match:
            raise ExportError(f"study {study.study_name!r} has no trial {trial_number}: see "
                              "`kmnist-search status`")
        if match[0].state != TrialState.COMPLETE:
            raise ExportError(f"trial {trial_number} is {match[0].state.name.lower()}, not complete: "
                              "export a completed trial")
        return match
    return sorted(complete, key=lambda t: t.value, reverse=True)[:top]


def trials_to_export(study: optuna.Study, trial_number: int | None, top: int, within_points: float | None,
                     cost: Any) -> tuple[list[FrozenTrial], str]:
    """The trials `export` writes, and a line saying how they were chosen ("" for the plain best):
    --trial, --within-points (the cheapest near the best), the study's re-evaluated pick, or
    the --top best by validation accuracy."""
    if within_points is not None:
        if trial_number is not None or top != 1:
            raise ExportError("--within-points picks the trial itself: leave out --trial and --top")
        from search.front import costed_trials, smallest_within

        return [smallest_within(costed_trials(study, cost), cost, within_points)], ""
    pick = stored_pick(study) if trial_number is None and top == 1 else None
    if pick is not None:
        return choose_trials(study, pick["trial"], 1), f"exporting the {describe_pick(pick)}; --trial N " \
                                                       "exports another"
    return choose_trials(study, trial_number, top), ""


def export_paths(output: Path, count: int) -> list[Path]:
    """One file, or NAME-1, NAME-2, ... for several trials."""
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{rank}{output.suffix}") for rank in range(1, count + 1)]


def retrain_epochs(trial: FrozenTrial, params: dict[str, Any]) -> int:
    """The trial's best epoch; a decaying schedule instead needs its whole length, which
    sets how fast the rate falls (stopping at the best epoch would cut it mid-way)."""
    ran = int(trial.user_attrs.get("epochs_run", len(trial.intermediate_values) or 1))
    if params.get("lr_schedule", "constant") != "constant":
        return ran
    return int(trial.user_attrs.get("best_epoch", ran))


def export_config(study: optuna.Study, trial: FrozenTrial, storage_url: str) -> dict[str, Any]:
    space = get_space(str(study.user_attrs.get("space")))
    # a study `replay` made has no search settings: the defaults of `start`
    settings = SearchSettings.load(study) if SETTINGS_ATTR in study.user_attrs else None
    params = trial_config(trial, space)
    return {
        "format": FORMAT,
        "space": space.name,
        "family": space.family,
        "dataset": study.user_attrs["dataset"],
        "params": as_plain(params),
        "epochs": retrain_epochs(trial, params),
        "seed": settings.seed if settings else 0,
        "val_fraction": settings.val_fraction if settings else 1 / 6,
        "provenance": {
            "study": study.study_name,
            "storage": storage_url,
            "trial": trial.number,
            "validation_accuracy": trial.value,
            "split_hash": settings.split_hash if settings else None,
            "source": trial_source(trial),
            "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": {name: version(name) for name in ("kmnist-search", "torch", "optuna")},
        },
    }


def checked_params(config: dict[str, Any]) -> tuple[SearchSpace, dict[str, Any]]:
    """The config's space and its parameters as the space holds them; raises if they don't fit."""
    space = get_space(config["space"])
    if config["family"] != space.family:
        raise ConfigError(f"family {config['family']!r} does not match space {space.name!r} "
                          f"({space.family}): re-export the configuration")
    unknown = sorted(set(config["params"]) - space.declared)
    if unknown:
        raise ConfigError(f"params {', '.join(unknown)} are not parameters of space {space.name!r}: remove "
                          f"them (its parameters: {', '.join(sorted(space.declared))})")
    params = _space_value(config["params"])
    problems = space.problems(params)
    if problems:
        raise ConfigError(f"params do not fit space {space.name!r}: {'; '.join(problems)}")
    return space, {**params, **space.fixed}  # the space's own fixed values, equal but of its types
