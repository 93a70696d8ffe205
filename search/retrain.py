"""Retrain an exported configuration on the full training set and test it, over several seeds.

Several seeds answer optuna#5335: a lucky trial should not pass for a good configuration.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from sklearn.metrics import classification_report, confusion_matrix

from objectives.data import load_raw, pixel_stats, to_device
from objectives.datasets import DATASET_CHOICES
from objectives.errors import TensorFileError
from objectives.models import build_model, model_config
from objectives.schema import MAX_SEED, SchemaError, mapping, number, one_of, text, whole_number
from objectives.tensor_files import TENSOR_KEY, TensorInfo, load_tensor_file, save_tensor_file, tensor_info
from objectives.training import EpochResult, evaluate, resolve_device, seed_everything, train, train_settings
from search.evidence import (
    class_names,
    confusion_figure,
    retrain_curves_figure,
    save_figure,
    write_confusion_csv,
)
from search.export import checked_params
from search.run_folder import (
    MODEL_FILE,
    MODEL_SUFFIX,
    RETRAIN_FIX,
    checked_run,
    recorded_accuracy,
)
from spaces.base import UnknownSpaceError
from spaces.documented import ALL_EXPERIMENTS
from storage.configs import OPTIONAL_KEYS, REQUIRED_KEYS, ConfigError, check_fields
from storage.urls import redact_url

MODEL_FORMAT = "kmnist-search-model/2"  # /1 was a torch.save file (model.pt)


@dataclass(frozen=True)
class SeedResult:
    seed: int
    test_accuracy: float
    test_loss: float
    history: list[EpochResult]
    labels: np.ndarray
    predictions: np.ndarray


def train_and_test(config: dict[str, Any], params: dict[str, Any], data_dir: Path, seeds: list[int],
                   device: torch.device, out: Path) -> list[SeedResult]:
    """Train once per seed on train+validation, test each, save each model under out/models/."""
    dataset = config["dataset"]
    num_classes = DATASET_CHOICES[dataset].num_classes
    images, labels = load_raw(dataset, data_dir, train=True)
    mean, std = pixel_stats(images)
    train_split = to_device(images, labels, mean, std, device)
    test_images, test_labels = load_raw(dataset, data_dir, train=False)
    test_split = to_device(test_images, test_labels, mean, std, device)
    (out / "models").mkdir(parents=True, exist_ok=True)
    results = []
    for seed in seeds:
        seed_everything(seed)
        model = build_model(model_config(config["family"], params, num_classes)).to(device)
        settings = train_settings(params, config["epochs"], seed)
        history = train(model, train_split, None, settings)
        evaluation = evaluate(model, test_split)
        path = out / "models" / f"seed-{seed}{MODEL_SUFFIX}"
        save_model(path, model, SavedModelInfo(config, seed, num_classes, mean, std,
                                                  list(class_names(dataset, num_classes))))
        reloaded, _ = load_saved_model(path, device)  # the file alone must give the same model
        if not torch.equal(evaluate(reloaded, test_split).predictions, evaluation.predictions):
            raise RuntimeError(f"{path} does not reproduce the trained model's predictions")
        results.append(SeedResult(seed, evaluation.accuracy, evaluation.loss, history,
                                  test_labels.numpy(), evaluation.predictions.numpy()))
    return results


@dataclass(frozen=True)
class SavedModelInfo:
    """Everything besides the weights that a model file carries to rebuild and test it."""

    config: dict[str, Any]  # the exported configuration it was trained from
    seed: int
    num_classes: int
    mean: float  # the training images' normalisation
    std: float
    class_names: list[str]  # in label order


SAVED_INFO_FIELDS = tuple(f.name for f in fields(SavedModelInfo))


def save_model(path: Path, model: torch.nn.Module, info: SavedModelInfo) -> None:
    save_tensor_file(path, MODEL_FORMAT, {**asdict(info), "state_dict": model.state_dict()})


MAX_MODEL_PARAMS = 50_000_000  # far above any model of the spaces (the largest is ~2M)


def load_saved_model(path: Path, device: torch.device) -> tuple[torch.nn.Module, SavedModelInfo]:
    """Rebuild a saved model; never executes anything from the file. TensorFileError (one line
    naming the file and the fix) for any file that is not one `retrain` wrote.

    The metadata is checked against the schema and the model is built on the meta device
    (no memory) first; every tensor's name, shape and dtype must match it before any weight
    is read."""
    built: dict[str, Any] = {}

    def check(skeleton: dict[str, Any], infos: dict[str, TensorInfo]) -> None:
        info, params = _checked_info(path, skeleton)
        with torch.device("meta"):
            model = build_model(model_config(info.config["family"], params, info.num_classes))
        count = sum(p.numel() for p in model.parameters())
        if count > MAX_MODEL_PARAMS:
            raise TensorFileError(f"{path} describes a model of {count:,} parameters, over the "
                                  f"{MAX_MODEL_PARAMS:,} allowed")
        expected = {name: tensor_info(t) for name, t in model.state_dict().items()}
        state = skeleton.get("state_dict")
        if not isinstance(state, dict) or set(state) != set(expected):
            raise TensorFileError(f"{path} does not hold a model its configuration describes (other "
                                  "tensor names)")
        for name, reference in state.items():
            found = infos.get(reference.get(TENSOR_KEY)) if isinstance(reference, dict) else None
            if found != expected[name]:
                raise TensorFileError(f"{path} does not hold a model its configuration describes (tensor "
                                      f"{name} is {found}, the model needs {expected[name]})")
        built.update(info=info, params=params)

    try:
        saved = load_tensor_file(path, MODEL_FORMAT, check)
        model = build_model(model_config(built["info"].config["family"], built["params"],
                                         built["info"].num_classes))
        model.load_state_dict(saved["state_dict"])
    except TensorFileError as error:
        raise TensorFileError(f"{error}: {RETRAIN_FIX}") from None
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TensorFileError(f"{path} does not hold a model its configuration describes "
                              f"({type(error).__name__}: {first}): {RETRAIN_FIX}") from None
    return model.to(device), built["info"]


def _checked_info(path: Path, skeleton: dict[str, Any]) -> tuple[SavedModelInfo, dict[str, Any]]:
    """The model file's metadata, every field checked, and the parameters of its configuration."""
    try:
        mapping(skeleton, "metadata", (*SAVED_INFO_FIELDS, "state_dict"))
        missing = [name for name in SAVED_INFO_FIELDS if name not in skeleton]
        if missing:
            raise SchemaError("metadata", f"a mapping holding {', '.join(SAVED_INFO_FIELDS)}",
                              f"no {', '.join(missing)}")
        config = mapping(skeleton["config"], "config", (*REQUIRED_KEYS, *OPTIONAL_KEYS))
        if not set(REQUIRED_KEYS) <= set(config):
            raise SchemaError("config", f"a configuration holding {', '.join(REQUIRED_KEYS)}", "fewer keys")
        check_fields(config)
        num_classes = DATASET_CHOICES[config["dataset"]].num_classes
        one_of(skeleton["num_classes"], "num_classes", (num_classes,))
        info = SavedModelInfo(
            config=config, seed=whole_number(skeleton["seed"], "seed", 0, MAX_SEED + 1000),
            num_classes=num_classes, mean=number(skeleton["mean"], "mean", 0, 1),
            std=number(skeleton["std"], "std", 0, 1, open_interval=True),
            class_names=[text(n, "class_names", 64)
                         for n in _short_list(skeleton["class_names"], num_classes)])
    except SchemaError as error:
        raise TensorFileError(f"{path} has metadata outside its schema ({error})") from None
    try:
        _, params = checked_params(config)
    except (ConfigError, UnknownSpaceError) as error:
        raise TensorFileError(f"{path} carries a configuration that does not fit its space ({error})"
                              ) from None
    return info, params


def _short_list(value: Any, length: int) -> list:
    if not isinstance(value, list) or len(value) != length:
        raise SchemaError("class_names", f"a list of {length} names", value)
    return value


def test_metrics(labels: np.ndarray, predictions: np.ndarray, num_classes: int,
                 dataset: str) -> dict[str, Any]:
    """Per-class precision/recall/F1 keyed by label, the confusion matrix (rows: true label),
    and the classes' names in label order."""
    report = classification_report(labels, predictions, labels=list(range(num_classes)),
                                   output_dict=True, zero_division=0)
    per_class = {str(c): {k: round(report[str(c)][k], 4) for k in ("precision", "recall", "f1-score")}
                 | {"support": int(report[str(c)]["support"])} for c in range(num_classes)}
    matrix = confusion_matrix(labels, predictions, labels=list(range(num_classes)))
    return {"class_names": list(class_names(dataset, num_classes)), "per_class": per_class,
            "confusion_matrix": matrix.tolist()}


def summarise(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def best_documented_claim(dataset: str) -> tuple[float, str] | None:
    claims = [(e.claim("test_accuracy"), e.key) for e in ALL_EXPERIMENTS
              if e.dataset == dataset and e.claim("test_accuracy") is not None and not e.doubtful]
    return max(claims) if claims else None


def write_run(out: Path, config: dict[str, Any], results: list[SeedResult], data_dir: Path) -> dict:
    """metrics.json, model.safetensors (first seed), confusion_matrix.csv, plots and report.md."""
    num_classes = DATASET_CHOICES[config["dataset"]].num_classes
    first = results[0]
    (out / MODEL_FILE).write_bytes((out / "models" / f"seed-{first.seed}{MODEL_SUFFIX}").read_bytes())
    accuracy = summarise([r.test_accuracy for r in results])
    metrics = {
        "test_accuracy": {**accuracy, "per_seed": {str(r.seed): r.test_accuracy for r in results}},
        "test_loss": {**summarise([r.test_loss for r in results]),
                      "per_seed": {str(r.seed): r.test_loss for r in results}},
        "seeds": [r.seed for r in results],
        "model_seed": first.seed,
        "epochs": config["epochs"],
        "dataset": config["dataset"],
        "data_dir": str(data_dir),
        "test_images": len(first.labels),
        "saved_model": test_metrics(first.labels, first.predictions, num_classes, config["dataset"]),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n",
                                      encoding="utf-8")
    (out / "config.json").write_text(json.dumps(redacted(config), indent=2) + "\n")
    matrix = np.array(metrics["saved_model"]["confusion_matrix"])
    write_confusion_csv(matrix, out / "confusion_matrix.csv", metrics["saved_model"]["class_names"])
    for name, figure in run_figures(config, results).items():
        save_figure(figure, out / name)
    (out / "report.md").write_text(report_text(config, metrics), encoding="utf-8")
    return metrics


def redacted(config: dict[str, Any]) -> dict[str, Any]:
    """The configuration with the password of its provenance's storage URL masked."""
    provenance = config.get("provenance") or {}
    if not isinstance(provenance.get("storage"), str):
        return config
    return {**config, "provenance": {**provenance, "storage": redact_url(provenance["storage"])}}


def run_figures(config: dict[str, Any], results: list[SeedResult]) -> dict[str, Figure]:
    """A retrain's figures by file name: the first seed's (the run's model file) test confusion matrix,
    and every seed's training loss with its test accuracy."""
    first = results[0]
    num_classes = DATASET_CHOICES[config["dataset"]].num_classes
    matrix = confusion_matrix(first.labels, first.predictions, labels=list(range(num_classes)))
    return {
        "confusion_matrix.png": confusion_figure(
            matrix, f"test confusion matrix, {MODEL_FILE} (seed {first.seed})", config["dataset"]),
        "learning_curve.png": retrain_curves_figure(
            [(r.seed, r.history, r.test_accuracy) for r in results],
            f"retrain on train+validation: {len(results)} seed{'s' if len(results) > 1 else ''}"),
    }


def report_text(config: dict[str, Any], metrics: dict[str, Any]) -> str:
    acc = metrics["test_accuracy"]
    provenance = config.get("provenance", {})
    val = provenance.get("validation_accuracy")
    lines = [
        f"# Retrained {config['space']} on {config['dataset']}",
        "",
        f"Trained on the full training set (train + validation) for {config['epochs']} epochs with "
        f"seeds {', '.join(map(str, metrics['seeds']))}; tested once on the untouched test set "
        f"({metrics['test_images']:,} images).",
        "",
        "| figure | value |",
        "|---|---|",
        f"| retrained test accuracy | {100 * acc['mean']:.2f}% ± {100 * acc['std']:.2f} "
        f"(mean ± std over {len(metrics['seeds'])} seeds) |",
    ]
    if val is not None:
        lines.append(f"| trial {provenance.get('trial')} validation accuracy (study "
                     f"{provenance.get('study')}) | {100 * val:.2f}% |")
        lines.append(f"| test minus validation | {100 * (acc['mean'] - val):+.2f} pts |")
    claim = best_documented_claim(config["dataset"])
    if claim:
        lines.append(f"| best documented test accuracy on {config['dataset']} ({claim[1]}) | "
                     f"{100 * claim[0]:.2f}% |")
        lines.append(f"| retrained minus documented | {100 * (acc['mean'] - claim[0]):+.2f} pts |")
    lines += ["", f"Per class ({MODEL_FILE}, seed {metrics['model_seed']}):", "",
              "| label | class | precision | recall | F1 | support |", "|---|---|---|---|---|---|"]
    model = metrics["saved_model"]
    for (label, row), name in zip(model["per_class"].items(), model["class_names"], strict=True):
        lines.append(f"| {label} | {name} | {row['precision']:.4f} | {row['recall']:.4f} | "
                     f"{row['f1-score']:.4f} | {row['support']:,} |")
    lines += ["", "Configuration:", "", "```json", json.dumps(config["params"], indent=2), "```", ""]
    if metrics["test_images"] < 10_000:
        lines.insert(4, f"Note: this test set has {metrics['test_images']:,} images, not the official "
                        "10,000, so the documented figures were measured on different data.\n")
    return "\n".join(lines)


# --- the `retrain` and `evaluate` commands as library calls ---

def retrain(config: dict[str, Any], params: dict[str, Any], out: Path, seeds: list[int], data_dir: Path,
            device: str = "auto") -> dict[str, Any]:
    """Train and test once per seed and write the run folder; returns its metrics."""
    results = train_and_test(config, params, data_dir, seeds, resolve_device(device), out)
    return write_run(out, config, results, data_dir)


def link_to_study(config: dict[str, Any], params: dict[str, Any], out: Path, metrics: dict[str, Any],
                  storage_url: str, artifact_override: Path | None = None) -> str:
    """Note on the exported trial (and artifacts on its study) so the dashboard shows where it
    went; returns what happened, in one line. The storage is the user's, never one named in
    the file, and the trial must be the one the file was exported from (same parameters)."""
    from optuna.trial import TrialState

    from search.evidence import append_note
    from search.export import as_plain, trial_config
    from search.study import find_study
    from spaces import get_space
    from storage.artifacts import artifact_dir, attach, open_artifact_store
    from storage.urls import StorageError, open_storage

    provenance = config.get("provenance") or {}
    if not {"study", "trial"} <= set(provenance):
        return "not linked: the configuration names no study and trial"
    where = f"study {provenance['study']!r} in {redact_url(storage_url)}"
    try:
        study = find_study(open_storage(storage_url, must_exist=True), provenance["study"])
    except StorageError as error:
        return f"not linked to its study: {error}"
    trial = None if study is None else next(
        (t for t in study.get_trials(deepcopy=False) if t.number == provenance["trial"]), None)
    try:
        same = trial is not None and trial.state == TrialState.COMPLETE and \
            as_plain(trial_config(trial, get_space(config["space"]))) == as_plain(params)
    except (ValueError, KeyError, TypeError, UnknownSpaceError):
        same = False
    if not same:
        return (f"not linked: {where} holds no completed trial {provenance['trial']} with these parameters "
                "(pass the study's --storage to link the run)")
    acc = metrics["test_accuracy"]
    study.set_user_attr(f"retrained_trial_{trial.number}", {
        "run": str(out.resolve()), "test_accuracy_mean": acc["mean"], "test_accuracy_std": acc["std"],
        "seeds": metrics["seeds"]})
    store = open_artifact_store(artifact_dir(storage_url, artifact_override))
    for name in ("report.md", "metrics.json", "confusion_matrix.png", "learning_curve.png"):
        attach(store, out / name, study)
    append_note(study, trial, f"## Retrained\n\nRun folder `{out}`: test accuracy "
                              f"{100 * acc['mean']:.2f}% ± {100 * acc['std']:.2f} over "
                              f"{len(metrics['seeds'])} seeds (files attached to the study).")
    return f"linked to trial {trial.number} of {where}"


@dataclass(frozen=True)
class RunEvaluation:
    accuracy: float
    loss: float
    images: int
    seed: int  # of the run's model file
    recorded: float  # the test accuracy retrain recorded for that seed
    details: dict[str, Any]  # per class, confusion matrix, class names (test_metrics)

    @property
    def matches(self) -> bool:
        return self.accuracy == self.recorded


def evaluate_run(run: Path, data_dir: Path, device: str = "auto") -> RunEvaluation:
    """Reload a run folder's model and test it again on the test images under `data_dir`
    (never a path the folder names; nothing is downloaded)."""
    model_path, metrics_path = checked_run(run)
    torch_device = resolve_device(device)
    model, saved = load_saved_model(model_path, torch_device)
    recorded = recorded_accuracy(metrics_path, saved.seed)
    images, labels = load_raw(saved.config["dataset"], data_dir, train=False, download=False)
    evaluation = evaluate(model, to_device(images, labels, saved.mean, saved.std, torch_device))
    details = test_metrics(labels.numpy(), evaluation.predictions.numpy(), saved.num_classes,
                           saved.config["dataset"])
    return RunEvaluation(evaluation.accuracy, evaluation.loss, len(labels), saved.seed, recorded, details)
