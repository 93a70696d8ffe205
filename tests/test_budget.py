"""Deployment budgets: costs per trial, pruning over budget, TPE constraints, the front."""

from __future__ import annotations

import json

import optuna
import pytest
import torch
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from objectives.budget import COST_LIMITS, Budget
from objectives.cost import LATENCY_THREADS, measure_latency, smallest_latency, smallest_model
from objectives.models import build_model, count_parameters, forward_mflops, model_config
from search.front import COSTS, pareto_front, smallest_within
from spaces import get_space
from tests.conftest import run_cli, run_main

COST_ATTRS = ("param_count", "forward_mflops", "latency_ms", "latency_ms_batch256", "latency_threads")


def random_models(space_name: str, count: int, seed: int = 0):
    space = get_space(space_name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(count):
        try:
            yield build_model(model_config(space.family, space.suggest(study.ask()), 10))
        except ValueError:  # the corners of the space with no model in them
            continue


@pytest.mark.parametrize(("space_name", "attr", "measure", "expected"), [
    ("cnn_beyond", "param_count", count_parameters, 90),  # 1 block of 4 3x3 filters, global pool, 4x10 head
    ("mlp_beyond", "param_count", count_parameters, 784 * 64 + 64 + 64 * 10 + 10),
    # ~30 s: torch counts FLOPs by running each model
    pytest.param("cnn_beyond", "forward_mflops", forward_mflops, None, marks=pytest.mark.slow),
])
def test_smallest_model_is_buildable_and_no_random_configuration_is_smaller(space_name, attr, measure,
                                                                            expected):
    space = get_space(space_name)
    smallest = smallest_model(space, attr)
    if expected is not None:
        assert smallest.cost == expected
    rebuilt = build_model(model_config(space.family, space.suggest(optuna.trial.FixedTrial(smallest.answers)),
                                       10))
    assert measure(rebuilt) == smallest.cost
    costs = [measure(m) for m in random_models(space_name, 80 if attr == "forward_mflops" else 400)]
    assert len(costs) > 60
    assert min(costs) >= smallest.cost


def test_smallest_latency_is_measured_on_the_fewest_flops_configuration():
    space = get_space("cnn_beyond")
    fastest = smallest_latency(space)
    assert fastest.params == smallest_model(space, "forward_mflops").params
    assert 0 < fastest.cost < 5  # a 4-filter convolution: milliseconds at most, even on a loaded CPU


def test_latency_is_measured_without_touching_threads_mode_or_the_global_rng():
    model = build_model(model_config("mlp", {"hidden_layers": (256,)}, 10))
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    model.train()
    latency = measure_latency(model)
    assert latency["latency_threads"] == LATENCY_THREADS
    assert 0 < latency["latency_ms"] < latency["latency_ms_batch256"]
    assert torch.get_num_threads() == threads
    assert model.training
    assert torch.equal(torch.get_rng_state(), rng)


def test_budget_excess_is_relative_and_violations_name_the_option():
    budget = Budget(max_params=1000, max_latency_ms=2.0)
    costs = {"param_count": 1500, "forward_mflops": 99.0, "latency_ms": 1.0}
    assert budget.excess(costs) == {"max_params": 0.5, "max_latency_ms": -0.5}
    assert budget.violations(costs) == ["1,500 parameters exceed --max-params 1,000"]
    assert budget.describe() == "--max-params 1000 --max-latency-ms 2.0"
    assert Budget.from_dict(budget.as_dict()) == budget
    assert Budget().describe() == "no budget" and not Budget().limits()
    assert [c.name for c in COST_LIMITS] == list(COSTS)


def fake_trials(points: list[tuple[float, int]]) -> list[optuna.trial.FrozenTrial]:
    return [optuna.trial.create_trial(value=acc, params={"x": float(i)},
                                      distributions={"x": FloatDistribution(0, 100)},
                                      user_attrs={"param_count": params})
            for i, (acc, params) in enumerate(points)]


def test_front_keeps_only_the_non_dominated_trials_and_the_pick_is_the_cheapest_near_the_best():
    trials = fake_trials([(0.90, 100), (0.95, 1000), (0.93, 2000), (0.97, 5000), (0.96, 800), (0.97, 9000),
                          (0.89, 100), (0.96, 800)])
    front = pareto_front(trials, COSTS["params"])
    assert [(t.value, t.user_attrs["param_count"]) for t in front] == [(0.90, 100), (0.96, 800), (0.96, 800),
                                                                      (0.97, 5000)]
    assert smallest_within(trials, COSTS["params"], 1.0).user_attrs["param_count"] == 800
    assert smallest_within(trials, COSTS["params"], 0.0).user_attrs["param_count"] == 5000
    assert smallest_within(trials, COSTS["params"], 10.0).value == 0.90  # the better of two equally cheap


def is_dominated(trial, others, attr):
    return any(o.user_attrs[attr] <= trial.user_attrs[attr] and o.value >= trial.value
               and (o.user_attrs[attr], o.value) != (trial.user_attrs[attr], trial.value) for o in others)


@pytest.mark.slow
def test_budgeted_search_prunes_over_budget_models_before_training_and_sets_constraints(tmp_path,
                                                                                       synthetic_root):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    # start through its `main` in this process; the worker below runs as a real process
    result = run_main("start", "--space", "cnn_beyond", "--study", "small", "--trials", "8", "--epochs", "1",
                      "--max-params", "20000", "--threads", "1", "--storage", url, "--data-dir",
                      str(synthetic_root), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--max-params 20000" in result.stdout
    study = optuna.load_study(study_name="small", storage=url)
    assert study.user_attrs["budget"] == {"max_params": 20000}
    costed = [t for t in study.trials if "param_count" in t.user_attrs]
    over = [t for t in costed if t.user_attrs["param_count"] > 20000]
    within = [t for t in costed if t.user_attrs["param_count"] <= 20000]
    assert over and within  # the seed-004 CNNs (5,750 parameters) are within, most random ones not
    for t in costed:
        assert set(COST_ATTRS) <= set(t.user_attrs), t.user_attrs
        assert t.user_attrs["latency_threads"] == 1
        assert t.constraints == {"max_params": pytest.approx(t.user_attrs["param_count"] / 20000 - 1)}
    for t in over:
        assert t.state == TrialState.PRUNED and not t.intermediate_values  # never trained
        assert t.user_attrs["pruned_reason"].startswith("over budget: ")
        assert "exceed --max-params 20,000" in t.user_attrs["pruned_reason"]
    assert any(t.state == TrialState.COMPLETE for t in within)
    assert study.best_trial.user_attrs["param_count"] <= 20000

    # a worker without budget options searches under the stored budget: it runs an over-budget
    # configuration enqueued again, and prunes it the same way
    study.enqueue_trial(over[0].params)
    result = run_cli("worker", "--study", "small", "--storage", url, "--trials", "9", "--threads", "1",
                     "--data-dir", str(synthetic_root), "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    again = optuna.load_study(study_name="small", storage=url).trials[-1]
    assert again.params == over[0].params and again.state == TrialState.PRUNED
    assert again.user_attrs["pruned_reason"] == over[0].user_attrs["pruned_reason"]
    assert again.constraints == over[0].constraints


@pytest.mark.slow
def test_front_table_figure_and_pick_through_the_cli(tmp_path, synthetic_root):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    # the first `front` runs as a real process; the other commands through their `main` in this one
    result = run_main("start", "--space", "mlp_regularisation", "--trials", "6", "--epochs", "1",
                      "--max-params", "300000", "--threads", "1", "--storage", url, "--data-dir",
                      str(synthetic_root), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="mlp_regularisation", storage=url)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) >= 2

    for cost in ("params", "latency"):
        attr = COSTS[cost].attr
        png = tmp_path / f"front-{cost}.png"
        run = run_cli if cost == "params" else run_main
        result = run("front", "--study", "mlp_regularisation", "--storage", url, "--cost", cost,
                     "--within-points", "1", "-o", str(png), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert png.read_bytes().startswith(b"\x89PNG")
        on_front = {t.number for t in complete if not is_dominated(t, complete, attr)}
        table_rows = {int(line.split("│")[1]) for line in result.stdout.splitlines()
                      if line.startswith("│") and line.split("│")[1].strip().isdigit()}
        assert table_rows == on_front
        best = max(t.value for t in complete)
        near = [t for t in complete if t.value >= best - 0.01]
        cheapest = min(near, key=lambda t: (t.user_attrs[attr], -t.value))
        assert f"trial {cheapest.number}, validation accuracy" in result.stdout
        assert f"--trial {cheapest.number}`" in result.stdout

        exported = tmp_path / f"pick-{cost}.json"
        result = run_main("export", "--study", "mlp_regularisation", "--storage", url, "--within-points", "1",
                          "--cost", cost, "-o", str(exported), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert json.loads(exported.read_text())["provenance"]["trial"] == cheapest.number

    study = optuna.load_study(study_name="mlp_regularisation", storage=url)
    attached = {a.filename for a in optuna.artifacts.get_all_artifact_meta(study)}
    assert {f"front-{cost}-{len(complete)}-trials.png" for cost in ("params", "latency")} <= attached


def test_the_benchmark_redraws_its_fronts_from_the_results_file(tmp_path):
    from tests.benchmark_scripts import load_benchmark

    deployment_budget = load_benchmark("deployment_budget")

    rows = [{"trial": n, "validation_accuracy": acc, "param_count": p, "latency_ms": p / 1e5}
            for n, (acc, p) in enumerate(((0.18, 4_730), (0.74, 9_738), (0.44, 12_900)))]
    results = {"studies": {"cnn-budget": {"budget_max_params": 20_000, "completed_trials": rows},
                           "mlp-free": {"budget_max_params": None, "completed_trials": rows[:2]}}}
    paths = deployment_budget.replot(results, tmp_path, 1.0)
    assert [p.name for p in paths] == ["deployment_budget-cnn-budget-params.png",
                                       "deployment_budget-cnn-budget-latency.png",
                                       "deployment_budget-mlp-free-params.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)
