"""Search efficiency on real handwriting (BENCHMARKS 2).

Three searches, each under the same wall-clock budget, on a KMNIST-format root built from
the 10,000 real KMNIST test images (8,000 train / 2,000 test; the searches see only the
train part, split 5/6 train and 1/6 validation):
(i)   the product's default search: the documented experiments of mlp_regularisation
      replayed first, then TPE with the median pruner (search.study, objectives.objective);
(ii)  the same without pruning (NopPruner);
(iii) optuna-examples pytorch/pytorch_simple.py as published: its space, a torchvision
      DataLoader made per trial, 30 training and 10 validation batches of 128 per epoch,
      TPE + MedianPruner with their defaults.
Every arm is judged with one yardstick: the best accuracy on the same validation split
reached at any epoch of a completed trial.

    .venv/bin/python benchmarks/search_efficiency.py [--quick] [--budget S] [--epochs N]
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import torch
import torch.nn.functional as F
from common import first_reaching, machine, parser, set_threads, write_results
from optuna.trial import FrozenTrial, TrialState
from torch import nn, optim
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from objectives.data import (
    build_root_from_test_images,
    load_raw,
    load_search_data,
    split_indices,
    write_root,
)
from objectives.objective import Objective
from search.study import enqueue_documented, make_pruner, make_sampler, open_study
from spaces.mlp_regularisation import MLP_REGULARISATION
from storage.urls import open_storage

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO.parent / "shared" / "data" / "kmnist"
CPU = torch.device("cpu")
VAL_FRACTION = 1 / 6  # the product's default
SEED = 0
DATASET = "kmnist"
TARGET_EPOCH_RATIO = 1 / 3
NEAR = 0.005  # "within half a point", a secondary reading of the target

# pytorch_simple.py's constants
EXAMPLE_BATCHSIZE = 128
EXAMPLE_CLASSES = 10
EXAMPLE_EPOCHS = 10
EXAMPLE_TRAIN_EXAMPLES = EXAMPLE_BATCHSIZE * 30
EXAMPLE_VALID_EXAMPLES = EXAMPLE_BATCHSIZE * 10


# --- the timeline every arm records --------------------------------------------------------

class Timeline:
    """An Optuna callback: after each trial, the arm's best so far on the common yardstick,
    elapsed seconds and epochs trained; stops the study once the budget is spent."""

    def __init__(self, arm: str, budget: float, images_per_epoch: int,
                 yardstick: Callable[[FrozenTrial], float | None]) -> None:
        self.arm, self.budget, self.images_per_epoch = arm, budget, images_per_epoch
        self.yardstick = yardstick
        self.started = time.perf_counter()
        self.best, self.epochs = 0.0, 0
        self.trials: list[dict[str, Any]] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        epochs = len(trial.intermediate_values)
        self.epochs += epochs
        score = self.yardstick(trial) if trial.state == TrialState.COMPLETE else None
        if score is not None:
            self.best = max(self.best, score)
        self.trials.append({
            "trial": trial.number,
            "source": trial.user_attrs.get("documented_experiment", "sampled"),
            "state": trial.state.name.lower(),
            "epochs": epochs,
            "yardstick_accuracy": None if score is None else round(score, 4),
            "elapsed_s": round(self.elapsed(), 2),
            "cumulative_epochs": self.epochs,
            "best_so_far": round(self.best, 4),
        })
        print(f"  {self.arm}: trial {trial.number:3d} {trial.state.name.lower():8s} after {epochs:2d} "
              f"epochs; best {self.best:.4f}; {self.elapsed():6.1f} s, {self.epochs} epochs", flush=True)
        if self.elapsed() >= self.budget:
            study.stop()

    def summary(self) -> dict[str, Any]:
        within = [t for t in self.trials if t["elapsed_s"] <= self.budget]
        last = within[-1] if within else {"best_so_far": 0.0, "cumulative_epochs": 0}
        states = [t["state"] for t in within]
        pruned_after = [t["epochs"] for t in within if t["state"] == "pruned"]
        scored = [t for t in within if t["yardstick_accuracy"] is not None]
        best = max(scored, key=lambda t: t["yardstick_accuracy"]) if scored else None
        return {
            "budget_s": self.budget,
            "final_best_within_budget": last["best_so_far"],
            "epochs_within_budget": last["cumulative_epochs"],
            "images_trained_within_budget": last["cumulative_epochs"] * self.images_per_epoch,
            "images_per_epoch": self.images_per_epoch,
            "trials_within_budget": {s: states.count(s) for s in sorted(set(states))},
            "pruned_after_epochs": {e: pruned_after.count(e) for e in sorted(set(pruned_after))},
            "best_trial": best and {k: best[k] for k in ("trial", "source", "yardstick_accuracy",
                                                         "elapsed_s", "cumulative_epochs")},
            "overran_budget_by_s": round(max(0.0, self.trials[-1]["elapsed_s"] - self.budget), 1)
            if self.trials else 0.0,
            "curve": [(t["elapsed_s"], t["best_so_far"], t["cumulative_epochs"]) for t in self.trials],
            "trials": self.trials,
        }


# --- (i) and (ii): the product ----------------------------------------------------------

def product_arm(arm: str, pruner: str, data_dir: Path, storage: optuna.storages.BaseStorage,
                budget: float, epochs: int) -> dict[str, Any]:
    started = time.perf_counter()
    data = load_search_data(DATASET, data_dir, VAL_FRACTION, SEED, CPU)
    study = open_study(storage, arm, MLP_REGULARISATION, DATASET, make_sampler(SEED),
                       make_pruner(pruner, epochs))
    enqueued = enqueue_documented(study, MLP_REGULARISATION)
    # the product's trial value is already the yardstick: best validation accuracy over epochs
    timeline = Timeline(arm, budget, len(data.train), lambda trial: trial.value)
    timeline.started = started
    # study.optimize as the CLI's driver calls it; the driver's trial-count bookkeeping
    # (search.study.run_until) has no place in a time-boxed run
    study.optimize(Objective(MLP_REGULARISATION, data, epochs, SEED), timeout=budget,
                   callbacks=[timeline], catch=(RuntimeError, ValueError), gc_after_trial=False)
    return {"pruner": pruner, "epochs_per_trial": epochs, "documented_enqueued": enqueued,
            "train_images": len(data.train), "val_images": len(data.val), **timeline.summary()}


# --- (iii): optuna-examples pytorch/pytorch_simple.py ----------------------------------------

def define_model(trial: optuna.Trial) -> nn.Sequential:
    """pytorch_simple.py's define_model, unchanged."""
    n_layers = trial.suggest_int("n_layers", 1, 3)
    layers: list[nn.Module] = []
    in_features = 28 * 28
    for i in range(n_layers):
        out_features = trial.suggest_int(f"n_units_l{i}", 4, 128)
        layers.append(nn.Linear(in_features, out_features))
        layers.append(nn.ReLU())
        p = trial.suggest_float(f"dropout_l{i}", 0.2, 0.5)
        layers.append(nn.Dropout(p))
        in_features = out_features
    layers.append(nn.Linear(in_features, EXAMPLE_CLASSES))
    layers.append(nn.LogSoftmax(dim=1))
    return nn.Sequential(*layers)


def example_loaders(root: Path) -> tuple[DataLoader, DataLoader]:
    """pytorch_simple.py's get_mnist on our split: 'train' is the search's training part,
    'test' its validation part (the example validates on the test set; ours never does)."""
    train_loader = DataLoader(
        datasets.KMNIST(str(root), train=True, download=True, transform=transforms.ToTensor()),
        batch_size=EXAMPLE_BATCHSIZE, shuffle=True)
    valid_loader = DataLoader(
        datasets.KMNIST(str(root), train=False, transform=transforms.ToTensor()),
        batch_size=EXAMPLE_BATCHSIZE, shuffle=True)
    return train_loader, valid_loader


class ExampleObjective:
    """pytorch_simple.py's objective, plus the common yardstick after each epoch."""

    def __init__(self, root: Path, val_images: torch.Tensor, val_labels: torch.Tensor,
                 seed: int = SEED) -> None:
        self.root, self.seed = root, seed
        # the whole validation split in the example's input format: [0, 1], flattened
        self.val_x, self.val_y = val_images.float().div(255).view(len(val_images), -1), val_labels

    def yardstick(self, model: nn.Module) -> float:
        model.eval()
        with torch.no_grad():
            return float((model(self.val_x).argmax(dim=1) == self.val_y).float().mean())

    def __call__(self, trial: optuna.Trial) -> float:
        torch.manual_seed(self.seed + trial.number)  # the example leaves this unseeded
        model = define_model(trial).to(CPU)
        optimizer_name = trial.suggest_categorical("optimizer", ["Adam", "RMSprop", "SGD"])
        lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        optimizer = getattr(optim, optimizer_name)(model.parameters(), lr=lr)
        train_loader, valid_loader = example_loaders(self.root)
        best = 0.0
        for epoch in range(EXAMPLE_EPOCHS):
            model.train()
            for batch_idx, (data, target) in enumerate(train_loader):
                if batch_idx * EXAMPLE_BATCHSIZE >= EXAMPLE_TRAIN_EXAMPLES:
                    break
                data = data.view(data.size(0), -1)
                optimizer.zero_grad()
                loss = F.nll_loss(model(data), target)
                loss.backward()
                optimizer.step()
            model.eval()
            correct = 0
            with torch.no_grad():
                for batch_idx, (data, target) in enumerate(valid_loader):
                    if batch_idx * EXAMPLE_BATCHSIZE >= EXAMPLE_VALID_EXAMPLES:
                        break
                    pred = model(data.view(data.size(0), -1)).argmax(dim=1, keepdim=True)
                    correct += pred.eq(target.view_as(pred)).sum().item()
            accuracy = correct / min(len(valid_loader.dataset), EXAMPLE_VALID_EXAMPLES)
            best = max(best, self.yardstick(model))
            trial.set_user_attr("yardstick_accuracy", best)
            trial.report(accuracy, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return accuracy


def example_root(data_dir: Path, out: Path) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """A root whose train/test files are the search's train/validation split."""
    images, labels = load_raw(DATASET, data_dir, train=True)
    train_idx, val_idx = split_indices(labels.numpy(), VAL_FRACTION, SEED)
    write_root(out, DATASET, (images[train_idx].numpy(), labels[train_idx].numpy()),
               (images[val_idx].numpy(), labels[val_idx].numpy()))
    load_raw(DATASET, out, train=True)  # unpacks the .gz files, as torchvision reads only raw IDX
    return out, images[val_idx], labels[val_idx]


def example_arm(root: Path, val_images: torch.Tensor, val_labels: torch.Tensor,
                storage: optuna.storages.BaseStorage, budget: float) -> dict[str, Any]:
    started = time.perf_counter()
    study = optuna.create_study(study_name="iii_optuna_example", storage=storage,
                                sampler=optuna.samplers.TPESampler(seed=SEED),
                                pruner=optuna.pruners.MedianPruner(), direction="maximize")
    objective = ExampleObjective(root, val_images, val_labels)
    timeline = Timeline("iii_optuna_example", budget, EXAMPLE_TRAIN_EXAMPLES,
                        lambda trial: trial.user_attrs.get("yardstick_accuracy"))
    timeline.started = started
    study.optimize(objective, timeout=budget, callbacks=[timeline])
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    own_best = max(complete, key=lambda t: t.value) if complete else None
    return {
        "epochs_per_trial": EXAMPLE_EPOCHS,
        "own_metric": "last-epoch accuracy on 1,280 random validation images",
        "own_best_value": None if own_best is None else round(own_best.value, 4),
        "own_best_trial_yardstick": None if own_best is None
        else round(own_best.user_attrs["yardstick_accuracy"], 4),
        **timeline.summary(),
    }


# --- the target ---------------------------------------------------------------------------------

MILESTONES = (0.80, 0.85, 0.88, 0.89, 0.90)


def milestones(arms: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """For each accuracy level: when each arm's best first reached it (None: never, in the budget)."""
    levels = sorted({*MILESTONES, *(arm["final_best_within_budget"] for arm in arms.values())})
    table: dict[str, dict[str, Any]] = {}
    for level in levels:
        row = {}
        for name, arm in arms.items():
            hit = first_reaching(arm, level)
            row[name] = hit and {"epochs": hit["cumulative_epochs"], "elapsed_s": hit["elapsed_s"],
                                 "images": hit["cumulative_epochs"] * arm["images_per_epoch"]}
        table[f"{level:.4f}"] = row
    return table


def same_prefix(a: dict[str, Any], b: dict[str, Any], last_trial: int) -> bool:
    """Whether two arms ran the same trials, to the same end, up to `last_trial`."""
    def prefix(arm: dict[str, Any]) -> list[tuple]:
        return [(t["source"], t["state"], t["epochs"]) for t in arm["trials"] if t["trial"] <= last_trial]

    return prefix(a) == prefix(b)


def compare(product: dict[str, Any], no_pruning: dict[str, Any]) -> dict[str, Any]:
    """Epochs the product needed to first reach (ii)'s final best, against (ii)'s own."""
    target = no_pruning["final_best_within_budget"]
    result: dict[str, Any] = {
        "target": f"(i)'s epochs to reach (ii)'s final best <= {TARGET_EPOCH_RATIO:.3g} x (ii)'s epochs "
                  "to reach it ('ratio'); also shown against all of (ii)'s epochs in the budget",
        "no_pruning_final_best": target,
        "product_final_best": product["final_best_within_budget"],
        "no_pruning_ever_reached_product_best": first_reaching(
            no_pruning, product["final_best_within_budget"]) is not None,
    }
    for name, level in (("exact", target), ("within_half_a_point", target - NEAR)):
        reference = first_reaching(no_pruning, level)
        reached = first_reaching(product, level)
        row: dict[str, Any] = {
            "level": round(level, 4),
            "no_pruning_epochs_to_reach": reference and reference["cumulative_epochs"],
            "no_pruning_epochs_within_budget": no_pruning["epochs_within_budget"],
            "product_reached": reached is not None,
        }
        if reached is not None and reference is not None:
            ratio = reached["cumulative_epochs"] / reference["cumulative_epochs"]
            ratio_budget = reached["cumulative_epochs"] / no_pruning["epochs_within_budget"]
            row.update(product_epochs_to_reach=reached["cumulative_epochs"],
                       product_seconds_to_reach=reached["elapsed_s"],
                       no_pruning_seconds_to_reach=reference["elapsed_s"],
                       ratio=round(ratio, 3), target_met=ratio <= TARGET_EPOCH_RATIO,
                       ratio_vs_no_pruning_budget=round(ratio_budget, 3),
                       target_met_vs_no_pruning_budget=ratio_budget <= TARGET_EPOCH_RATIO)
            if same_prefix(product, no_pruning, reference["trial"]):
                row["why"] = (f"(ii) found it in trial {reference['trial']} ({reference['source']}); "
                              "both arms ran identical trials up to there (the pruner had not yet "
                              "started), so no pruner could reach it with fewer epochs")
        else:
            row.update(product_epochs_to_reach=None, ratio=None, target_met=False)
        result[name] = row
    return result


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=None, help="seconds per arm (default 140, quick 10)")
    p.add_argument("--epochs", type=int, default=None, help="product epochs per trial (default 10)")
    p.add_argument("--source", type=Path, default=SOURCE, help="folder with t10k-*-ubyte.gz")
    args = p.parse_args()
    budget = args.budget or (10.0 if args.quick else 140.0)
    epochs = args.epochs or (2 if args.quick else 10)
    if not (args.source / "t10k-images-idx3-ubyte.gz").exists():
        print(f"skipped: the real KMNIST test images are not in {args.source} "
              "(put t10k-images/labels-idx*-ubyte.gz there, or pass --source DIR)")
        return
    set_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    machine_before = machine()
    print(f"machine: {machine_before['cpu_model']}, {machine_before['usable_cores']} cores, torch "
          f"{machine_before['torch']}, {args.threads} thread(s); load {machine_before['load_average_1m']}; "
          f"{budget:g} s per arm")
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        data_dir = Path(tmp) / "real"
        build_root_from_test_images(args.source, data_dir, test_fraction=0.2, seed=SEED)
        root, val_images, val_labels = example_root(data_dir, Path(tmp) / "example")
        storage = open_storage(f"sqlite:///{tmp}/search.db")
        arms = {
            "i_product": product_arm("i_product", "median", data_dir, storage, budget, epochs),
            "ii_no_pruning": product_arm("ii_no_pruning", "none", data_dir, storage, budget, epochs),
            "iii_optuna_example": example_arm(root, val_images, val_labels, storage, budget),
        }
    comparison = compare(arms["i_product"], arms["ii_no_pruning"])
    results = {
        "benchmark": "search_efficiency",
        "quick": args.quick,
        "machine": machine_before,
        "machine_after": {"load_average_1m": machine()["load_average_1m"]},
        "data": f"KMNIST test images from {args.source}: 8,000 train / 2,000 test (unused); "
                f"the search's split of the 8,000: {arms['i_product']['train_images']} train / "
                f"{arms['i_product']['val_images']} validation (seed {SEED})",
        "yardstick": "best accuracy on that validation split at any epoch of a completed trial",
        "budget_s_per_arm": budget,
        "product_vs_no_pruning": comparison,
        "epochs_to_reach": milestones(arms),
        "arms": arms,
    }
    for name, arm in arms.items():
        print(f"{name}: best {arm['final_best_within_budget']:.4f} in {arm['epochs_within_budget']} epochs "
              f"({arm['images_trained_within_budget']:,} images), trials {arm['trials_within_budget']}")
    exact = comparison["exact"]
    print(f"(ii)'s best {comparison['no_pruning_final_best']:.4f}: reached by (i) after "
          f"{exact['product_epochs_to_reach']} epochs vs (ii) after {exact['no_pruning_epochs_to_reach']}: "
          f"ratio {exact['ratio']} (target <= {TARGET_EPOCH_RATIO:.3g}, met: {exact['target_met']}); "
          f"against all {exact['no_pruning_epochs_within_budget']} epochs of (ii): "
          f"{exact.get('ratio_vs_no_pruning_budget')}")
    print(f"wrote {write_results('search_efficiency', results, quick=args.quick)}")


if __name__ == "__main__":
    main()
