"""Creates and drives Optuna studies: the CLI, samplers, pruners, replay, progress."""
