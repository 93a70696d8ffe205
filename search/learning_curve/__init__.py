"""The learning-curve audit (`kmnist-search replay --learning-curve`): the reports' test
accuracies judged against learning curves.

Each documented experiment is trained at several training-set sizes (nested stratified
subsets of the training split, one order per seed) and tested on the test set; a curve
fitted to those runs is extrapolated to the size the report trained on. No verdict is
written by hand: each comes from `audit.claim_verdict`.

- runs.py: the training runs, trials of studies `curve-<space>-<dataset>`, so a stopped
  audit resumes where it stopped.
- fit.py: the curve, its extrapolation with a prediction interval, and the check that
  extrapolating validates (numpy and scipy only).
- audit.py: the verdict on every claim; `audit_by_curves` runs the whole audit.
- report.py: audit.md, audit.csv, curve-runs.csv and audit-curves.png, written and read back.
"""
