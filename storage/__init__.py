"""Where studies and their results live.

- urls.py: storage URLs, and opening Optuna RDB storages safely.
- resilient.py: a worker's storage, which rides out outages, beats through the gRPC proxy
  and requeues the trials of dead workers.
- proxy.py: the gRPC storage proxy server (`kmnist-search proxy`) and its dead-worker reaper.
- optuna_private.py: the private names of Optuna and optuna-dashboard relied on.
- artifacts.py, configs.py: per-trial artifacts and exported configurations.
"""
