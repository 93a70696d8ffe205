"""The statistics behind the sampler/pruner comparison (benchmarks/search_arms.py): anytime
curves, time to a level, censored medians and the paired verdicts the defaults rest on."""

import pytest

from tests.benchmark_scripts import load_benchmark

search_arms = load_benchmark("search_arms")


def run(points: list[tuple[float, float | None, int]], budget: float = 100.0) -> dict:
    """A run from (elapsed_s, completed value or None for pruned, epochs) per trial."""
    trials, best, epochs = [], 0.0, 0
    for number, (elapsed, value, trial_epochs) in enumerate(points):
        epochs += trial_epochs
        if value is not None and elapsed <= budget:
            best = max(best, value)
        trials.append({"trial": number, "value": value, "elapsed_s": elapsed,
                       "cumulative_epochs": epochs, "best_so_far": best})
    return {"budget_s": budget, "trials": trials}


def test_best_at_counts_completed_trials_up_to_the_time() -> None:
    r = run([(10, 0.80, 10), (20, None, 2), (30, 0.90, 10), (120, 0.99, 10)])
    assert search_arms.best_at(r, 5) == 0.0
    assert search_arms.best_at(r, 25) == 0.80
    assert search_arms.best_at(r, 100) == 0.90  # the trial after the budget does not count


def test_first_reaching_gives_seconds_and_epochs_or_none() -> None:
    r = run([(10, 0.80, 10), (20, None, 2), (30, 0.90, 10)])
    hit = search_arms.first_reaching(r, 0.85)
    assert (hit["elapsed_s"], hit["cumulative_epochs"]) == (30, 22)
    assert search_arms.first_reaching(r, 0.95) is None


def test_area_under_curve_is_the_time_average_of_the_best_so_far() -> None:
    r = run([(50, 0.80, 10)], budget=100)
    assert search_arms.area_under_curve(r) == pytest.approx(0.40)
    r = run([(25, 0.80, 10), (50, 0.90, 10)], budget=100)
    assert search_arms.area_under_curve(r) == pytest.approx((25 * 0.8 + 50 * 0.9) / 100)


def test_censored_median_treats_never_as_slower_than_any_time() -> None:
    assert search_arms.censored_median([3.0, None, 1.0]) == 3.0
    assert search_arms.censored_median([None, None, 1.0]) is None
    assert search_arms.censored_median([1.0, 2.0, 3.0, 4.0]) == 2.5
    assert search_arms.censored_median([1.0, 2.0, None, None]) is None


def test_paired_verdicts_name_a_real_difference_and_its_absence() -> None:
    import numpy as np
    rng = np.random.default_rng(0)
    default = [0.90, 0.91, 0.92, 0.90, 0.91, 0.92, 0.90]
    better = search_arms.paired(default, [d + 0.01 + 0.001 * i for i, d in enumerate(default)], rng)
    assert better["verdict"] == "better than the default"
    assert better["bootstrap_95"][0] > 0
    assert better["wilcoxon_p"] < 0.05
    worse = search_arms.paired(default, [d - 0.02 for d in default], rng)
    assert worse["verdict"] == "worse than the default"
    noise = (0.01, -0.01, 0.02, -0.02, 0.0, 0.01, -0.01)
    mixed = search_arms.paired(default, [d + s for d, s in zip(default, noise, strict=True)], rng)
    assert mixed["verdict"] == "no detectable difference"
    # five seeds all the same way: the bootstrap excludes 0, but Wilcoxon cannot go below 0.0625
    few = search_arms.paired(default[:5], [d + 0.01 for d in default[:5]], rng)
    assert few["bootstrap_95"][0] > 0 and few["wilcoxon_p"] > 0.05
    assert few["verdict"] == "no detectable difference"
    same = search_arms.paired(default, default, rng)
    assert (same["verdict"], same["wilcoxon_p"]) == ("no detectable difference", 1.0)


def test_target_check_uses_a_bound_when_the_example_never_gets_there() -> None:
    def arm(seconds: float | None) -> dict:
        return {"levels": {f"{level:.3f}": {"median_seconds": seconds} for level in search_arms.LEVELS}}
    budget = search_arms.BUDGET_S
    rows = search_arms.target_check({"default": arm(budget / 4), "optuna_example": arm(None)})
    assert all(row["met"] and row["example_s"] == f"> {budget:g}" for row in rows.values())
    rows = search_arms.target_check({"default": arm(30.0), "optuna_example": arm(60.0)})
    assert all(not row["met"] and row["ratio"] == 0.5 for row in rows.values())
    rows = search_arms.target_check({"default": arm(None), "optuna_example": arm(60.0)})
    assert not any(row["met"] for row in rows.values())
    rows = search_arms.target_check({"default": arm(None), "optuna_example": arm(None)})
    assert all(row["met"] is None for row in rows.values())  # neither reached it: no verdict


def synthetic_runs() -> dict:
    """Three arms x 3 seeds: each seed's trials climb at its own pace."""
    runs = {}
    for k, name in enumerate(("default", "random", "optuna_example")):
        runs[name] = {seed: run([(5.0 * i + seed + k, 0.85 + 0.004 * i - 0.01 * k, 10) for i in range(1, 25)],
                                budget=search_arms.BUDGET_S) for seed in range(3)}
    return runs


def test_curve_table_holds_every_seeds_best_so_far_on_one_grid() -> None:
    runs = synthetic_runs()
    table = search_arms.curve_table(runs)
    for name, by_seed in runs.items():
        seconds = table[name]["seconds"]
        assert len(seconds) == search_arms.CURVE_POINTS and seconds[-1] == search_arms.BUDGET_S
        for seed, r in by_seed.items():
            expected = [round(search_arms.best_at(r, s), 4) for s in seconds]
            assert table[name]["best_so_far"][str(seed)] == expected


def test_figures_redraw_from_the_results_file_alone(tmp_path) -> None:
    import json

    runs = synthetic_runs()
    results = {"space": "mlp_regularisation", "budget_s_per_run": search_arms.BUDGET_S,
               "levels": search_arms.LEVELS, **search_arms.analyse(runs, {}, search_arms._arms())}
    older = json.loads(json.dumps(results))  # as written before the curves were kept
    assert search_arms.figures(older, tmp_path / "a.png") == [tmp_path / "a.png"]
    results["curves"] = search_arms.curve_table(runs)
    paths = search_arms.figures(json.loads(json.dumps(results)), tmp_path / "b.png")
    assert paths == [tmp_path / "b.png", tmp_path / "b-curves.png"]
    assert all(path.read_bytes().startswith(b"\x89PNG") for path in paths)


def test_run_all_runs_every_job_and_counts_the_ones_that_failed(tmp_path, capsys) -> None:
    marks = [tmp_path / f"ran-{n}" for n in range(3)]
    jobs = [["-c", f"open({str(marks[0])!r}, 'w')"], ["-c", "raise SystemExit(3)"],
            ["-c", f"open({str(marks[2])!r}, 'w')"]]
    assert search_arms.run_all(jobs, parallel=2) == 1
    assert marks[0].exists() and marks[2].exists()  # a failure does not stop the others
    assert "FAILED (3): -c raise SystemExit(3)" in capsys.readouterr().out
