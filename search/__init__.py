"""Creates and drives Optuna studies.

- cli.py, cli_options.py: the `kmnist-search` command line.
- study.py: creating, resuming and driving studies; the sampler and pruners; what a study
  stores about itself (its search settings, the re-evaluated pick).
- launch.py, worker.py: `start` and `worker`; the loop every worker process runs.
- progress.py: live progress and leaderboards.
- replay.py: the documented experiments replayed and their claims judged.
- learning_curve/: the learning-curve audit (`replay --learning-curve`).
- reevaluate.py, retrain.py, export.py, front.py: cross-validating the top trials,
  retraining a pick, exporting configurations, accuracy against cost.
- run_folder.py: a retrained run's folder, its files and the checks made before training.
- dashboard.py, evidence.py, figure_style.py: the dashboard, its per-trial evidence, figures.
- report_format.py: how audits and notes write values, differences and paths.

The training loop is objectives/training.py; the deployment budget objectives/budget.py;
the gRPC storage proxy storage/proxy.py.
"""
