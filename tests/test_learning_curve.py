"""Learning curves: the fit on synthetic curves, nested subsets, verdicts, and `replay --learning-curve`."""

import csv

import numpy as np
import optuna
import pytest

from objectives.data import nested_stratified_order
from search.learning_curve.audit import VERDICTS, claim_verdict
from search.learning_curve.fit import Curve, CurveFitError, extrapolate, fit_curve, local_slopes, validate
from search.learning_curve.runs import CurveRun, enqueue_run
from spaces.documented import R002_EXP1, R002_EXP2, R002_EXP3
from spaces.mlp_regularisation import MLP_REGULARISATION
from tests.conftest import make_synthetic_root, run_cli, run_main

TRUE = Curve(e_inf=0.06, b=0.25, c=0.45)  # about a KMNIST MLP: 61% at 500 images, 80% at 5,842
SIZES = [500, 750, 1000, 1500, 2000, 3000, 4000, 5842]


def noisy_runs(sizes, seeds, noise=0.005, rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    x = np.repeat(sizes, seeds).astype(float)
    return x, TRUE.accuracy(x) + rng.normal(0, noise, len(x))


def test_a_known_power_law_is_recovered():
    x = np.array(SIZES, dtype=float)
    fitted = fit_curve(x, TRUE.accuracy(x))
    assert fitted.e_inf == pytest.approx(TRUE.e_inf, abs=1e-4)
    assert fitted.b == pytest.approx(TRUE.b, rel=1e-3)
    assert fitted.c == pytest.approx(TRUE.c, rel=1e-3)


def test_the_extrapolation_of_noisy_runs_covers_the_true_accuracy():
    sizes, accuracies = noisy_runs(SIZES, seeds=5)
    predicted = extrapolate(sizes, accuracies, 48_000, level=0.9, replicates=200)
    truth = float(TRUE.accuracy(48_000))
    assert predicted.contains(truth)
    assert predicted.low < predicted.accuracy < predicted.high
    assert abs(predicted.accuracy - truth) < 0.01
    assert predicted.replicates >= 100 and predicted.noise > 0


def mean_width(sizes, seeds, draws=5):
    """Interval width averaged over several noise draws: one draw's spread estimate is itself noisy."""
    widths = []
    for draw in range(draws):
        predicted = extrapolate(*noisy_runs(sizes, seeds, rng_seed=draw), 48_000, replicates=200)
        widths.append(predicted.high - predicted.low)
    return float(np.mean(widths))


def test_the_interval_widens_with_fewer_points():
    many = mean_width(SIZES, seeds=5)
    assert mean_width([500, 1000, 2000, 5842], seeds=5) > many  # fewer sizes
    assert mean_width(SIZES, seeds=2) > many  # fewer seeds


def test_a_higher_level_gives_a_wider_interval():
    runs = noisy_runs(SIZES, seeds=4)
    narrow, wide = (extrapolate(*runs, 48_000, level=level, replicates=200) for level in (0.5, 0.95))
    assert wide.low < narrow.low and wide.high > narrow.high


def test_three_sizes_are_too_few_for_three_parameters():
    with pytest.raises(CurveFitError, match="4 or more training-set sizes"):
        fit_curve(*noisy_runs([1000, 2000, 4000], seeds=5))


def test_validation_passes_on_power_laws_and_fails_when_the_held_out_size_breaks_the_curve():
    curves = [noisy_runs(SIZES, seeds=4, rng_seed=i) for i in range(6)]
    passed = validate(curves, up_to=2000, replicates=200)
    assert passed.passed and passed.experiments == 6 and passed.runs == 24 and passed.target == 5842
    broken = []
    for sizes, accuracies in curves:  # the largest size falls 5 points below the curve
        broken.append((sizes, np.where(sizes == 5842, accuracies - 0.05, accuracies)))
    failed = validate(broken, up_to=2000, replicates=200)
    assert not failed.passed and failed.coverage == 0.0 and "NOT validated" in failed.describe()
    assert failed.bias == pytest.approx(passed.bias - 0.05, abs=0.005)


def test_nested_stratified_subsets():
    labels = np.repeat(np.arange(10), [60, 50, 70, 55, 65, 58, 62, 51, 69, 60])
    order = nested_stratified_order(labels, seed=3)
    assert sorted(order) == list(range(len(labels)))
    shares = np.bincount(labels) / len(labels)
    for n in (50, 100, 333, 600):
        counts = np.bincount(labels[order[:n]], minlength=10)
        assert np.all(np.abs(counts - shares * n) <= 1.0), (n, counts)
    assert not np.array_equal(order, nested_stratified_order(labels, seed=4))


def verdict(claimed, *, metric="test_accuracy", validation_failed="", full_protocol=False):
    sizes, accuracies = noisy_runs(SIZES, seeds=3)
    runs = [CurveRun("002/x", int(n), 0, float(a), float(a), 1, 101_770, i)
            for i, (n, a) in enumerate(zip(sizes, accuracies, strict=True))]
    fit = extrapolate(sizes, accuracies, 48_000, replicates=100)
    return fit, claim_verdict(metric, claimed, runs, fit, full_protocol, validation_failed, 101_770, 0.01)


def test_verdicts_from_the_interval():
    fit, (inside, why) = verdict(float(TRUE.accuracy(48_000)))
    assert inside == "consistent with the extrapolation" and "inside the 90% interval" in why
    _, (above, why) = verdict(fit.high + 0.05)
    assert above == "outside the extrapolated interval" and "5.00 pts above" in why
    _, (below, why) = verdict(fit.low - 0.02)
    assert below == "outside the extrapolated interval" and "2.00 pts below" in why
    _, (untrusted, why) = verdict(fit.high + 0.05, validation_failed="coverage 40%")
    assert untrusted == "not comparable" and why.startswith("extrapolation did not validate")
    _, (other, why) = verdict(0.95, metric="val_accuracy")
    assert other == "not comparable" and "only test accuracy" in why
    _, (count, _) = verdict(101_770, metric="param_count")
    assert count == "reproduced"
    # the full protocol is measured, not extrapolated: the largest size's runs are judged
    _, (full, _) = verdict(float(TRUE.accuracy(5842)), full_protocol=True)
    assert full == "reproduced"


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def curve_trials(storage):
    """Every run of the learning-curve studies (one study per space replaying the experiments)."""
    names = [n for n in optuna.study.get_all_study_names(storage) if n.startswith("curve-")]
    return [t for n in names for t in optuna.load_study(study_name=n, storage=storage).trials]


@pytest.mark.slow
def test_replay_learning_curve_on_synthetic_data_resumes_and_refuses_other_settings(tmp_path):
    root = make_synthetic_root(tmp_path / "data", n_train=360, n_test=100)  # 300 training after validation
    db = f"sqlite:///{tmp_path / 'c.db'}"
    command = ["replay", "--all", "--report", "002", "--learning-curve", "--sizes", "40,80,120,200,all",
               "--curve-seeds", "2", "--max-epochs", "1", "--bootstrap", "40", "--validate-up-to", "200",
               "--threads", "1", "--storage", db, "--data-dir", str(root), "-o", str(tmp_path / "audit")]
    result = run_cli(*command, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    experiments = (R002_EXP1, R002_EXP2, R002_EXP3)
    runs = read_rows(tmp_path / "audit" / "curve-runs.csv")
    assert sorted({int(r["size"]) for r in runs}) == [40, 80, 120, 200, 300]
    assert len(runs) == len(experiments) * 5 * 2
    assert all(0.0 <= float(r["test_accuracy"]) <= 1.0 and r["epochs_run"] == "1" for r in runs)
    claims = read_rows(tmp_path / "audit" / "audit.csv")
    assert len(claims) == sum(len(e.claims) for e in experiments)
    assert all(c["verdict"] in VERDICTS for c in claims)
    tested = [c for c in claims if c["metric"] == "test_accuracy"]
    assert all(c["target_images"] == "60000" and float(c["curve_c"]) > 0 for c in tested)
    assert all(float(c["interval_low"]) <= float(c["extrapolated"]) <= float(c["interval_high"])
               for c in tested)
    assert all(c["verdict"] == "reproduced" for c in claims if c["metric"] == "param_count")
    markdown = (tmp_path / "audit" / "audit.md").read_text()
    assert "fit on sizes up to 200, predict 300" in markdown and "| report | experiment |" in markdown
    assert (tmp_path / "audit" / "audit-curves.png").stat().st_size > 0
    trials = curve_trials(db)
    assert len(trials) == 30 and {t.user_attrs["source"] for t in trials} == {"learning-curve"}

    # one more seed trains only that seed's runs, one of them queued by an interrupted audit
    queued = optuna.load_study(study_name="curve-mlp_regularisation-kmnist", storage=db)
    enqueue_run(queued, MLP_REGULARISATION, R002_EXP1, 40, 2)
    again = run_main(*command[:command.index("--curve-seeds") + 1], "3",  # `main` in this process
                     *command[command.index("--curve-seeds") + 2:], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(curve_trials(db)) == 45
    assert {t.state for t in curve_trials(db)} == {optuna.trial.TrialState.COMPLETE}
    assert len(read_rows(tmp_path / "audit" / "curve-runs.csv")) == 45

    other = run_main(*[("2" if a == "1" and command[i - 1] == "--max-epochs" else a)
                       for i, a in enumerate(command)], cwd=tmp_path)
    assert other.returncode == 2 and "made with max_epochs 1 (now 2)" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_replay_learning_curve_says_why_mnist_experiments_did_not_run(tmp_path):
    root = make_synthetic_root(tmp_path / "data", n_train=120, n_test=40)
    result = run_main("replay", "--space", "cnn_regularisation", "--learning-curve", "--storage",
                      f"sqlite:///{tmp_path / 'c.db'}", "--data-dir", str(root), "--out", str(tmp_path / "a"),
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    claims = read_rows(tmp_path / "a" / "audit.csv")
    assert {c["dataset"] for c in claims} == {"mnist", "mnist-merged4"}
    assert all(c["verdict"] == "not comparable" and "mnist files missing" in c["reason"] for c in claims)


@pytest.mark.slow
def test_sizes_beyond_the_training_split_get_one_line(tmp_path):
    root = make_synthetic_root(tmp_path / "data", n_train=120, n_test=40)
    result = run_cli("replay", "--all", "--report", "002", "--learning-curve", "--sizes", "50,5000",
                     "--storage", f"sqlite:///{tmp_path / 'c.db'}", "--data-dir", str(root), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == ("kmnist-search replay: error: --sizes 5,000 exceeds the 100 training "
                                     "images of kmnist left after the validation split: use sizes up to 100 "
                                     "or 'all'")


def test_local_slopes_flatten_on_a_saturating_curve_and_match_a_pure_power_law():
    x = np.array(SIZES, dtype=float)
    slopes = [s for _, _, s in local_slopes(x, TRUE.accuracy(x))]
    assert all(s < 0 for s in slopes) and all(b > a for a, b in zip(slopes, slopes[1:], strict=False))
    pure = Curve(0.0, 0.3, 0.4)
    assert all(s == pytest.approx(-0.4) for _, _, s in local_slopes(x, pure.accuracy(x)))
