"""PyTorch side of the search.

- training.py: the training loop every model family shares, and evaluation.
- objective.py: the Optuna objective (space -> model -> training loop -> validation accuracy).
- models.py, augment.py: model builders and on-device augmentation.
- datasets.py, data.py, tensor_files.py: the datasets, their tensors on the device, safe files.
- cost.py: what a model costs to deploy (parameters, FLOPs, CPU latency).
- budget.py: the deployment budget, from its limits to the budget stored on a study
  (importable without torch).
- cross_validation.py: one configuration trained once per fold.
- schema.py, errors.py: checks of values read back, and the errors users see.
"""
