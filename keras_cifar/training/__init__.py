"""Training runs: train.py (compile, fit and record one run), callbacks.py (what records it), runs.py (run
folders, their only reader and writer), decisions.py (skip, reuse, resume or train), locks.py (one
process per run), sweep.py (a recipe's runs in this process), parallel.py (--parallel), cluster.py
(devices, processes, --shard), signals.py (stopping safely), tracking.py (TensorBoard, MLflow)."""
