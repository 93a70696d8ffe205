"""Retrain an exported configuration on the full training set and test it, over several seeds.

Several seeds answer optuna#5335: a lucky trial should not pass for a good configuration.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import classification_report, confusion_matrix

from objectives.data import load_raw, pixel_stats, to_device
from objectives.datasets import DATASET_CHOICES
from objectives.models import build_model, model_config
from objectives.training import EpochResult, evaluate, seed_everything, train, train_settings
from search.evidence import plot_confusion, plot_learning_curve
from search.export import checked_params
from spaces.documented import ALL_EXPERIMENTS

MODEL_FORMAT = "kmnist-search-model/1"


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
        torch.save({"format": MODEL_FORMAT, "config": config, "seed": seed, "num_classes": num_classes,
                    "mean": mean, "std": std, "state_dict": model.state_dict()},
                   out / "models" / f"seed-{seed}.pt")
        results.append(SeedResult(seed, evaluation.accuracy, evaluation.loss, history,
                                  test_labels.numpy(), evaluation.predictions.numpy()))
    return results


def load_saved_model(path: Path, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    saved = torch.load(path, map_location=device, weights_only=False)
    if not isinstance(saved, dict) or saved.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path} is not a kmnist-search model file")
    _, params = checked_params(saved["config"])
    model = build_model(model_config(saved["config"]["family"], params, saved["num_classes"]))
    model.load_state_dict(saved["state_dict"])
    return model.to(device), saved


def test_metrics(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> dict[str, Any]:
    report = classification_report(labels, predictions, labels=list(range(num_classes)),
                                   output_dict=True, zero_division=0)
    per_class = {str(c): {k: round(report[str(c)][k], 4) for k in ("precision", "recall", "f1-score")}
                 | {"support": int(report[str(c)]["support"])} for c in range(num_classes)}
    matrix = confusion_matrix(labels, predictions, labels=list(range(num_classes)))
    return {"per_class": per_class, "confusion_matrix": matrix.tolist()}


def summarise(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def best_documented_claim(dataset: str) -> tuple[float, str] | None:
    claims = [(e.claim("test_accuracy"), e.key) for e in ALL_EXPERIMENTS
              if e.dataset == dataset and e.claim("test_accuracy") is not None and not e.doubtful]
    return max(claims) if claims else None


def write_run(out: Path, config: dict[str, Any], results: list[SeedResult], data_dir: Path) -> dict:
    """metrics.json, model.pt (first seed), plots and report.md."""
    num_classes = DATASET_CHOICES[config["dataset"]].num_classes
    first = results[0]
    (out / "model.pt").write_bytes((out / "models" / f"seed-{first.seed}.pt").read_bytes())
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
        "model_pt": test_metrics(first.labels, first.predictions, num_classes),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    plot_confusion(np.array(metrics["model_pt"]["confusion_matrix"]), out / "confusion_matrix.png",
                   f"test confusion matrix (seed {first.seed})")
    plot_learning_curve(first.history, out / "learning_curve.png",
                        f"retrain on train+validation (seed {first.seed})")
    (out / "report.md").write_text(report_text(config, metrics))
    return metrics


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
    lines += ["", "Configuration:", "", "```json", json.dumps(config["params"], indent=2), "```", ""]
    if metrics["test_images"] < 10_000:
        lines.insert(4, f"Note: this test set has {metrics['test_images']:,} images, not the official "
                        "10,000, so the documented figures were measured on different data.\n")
    return "\n".join(lines)
