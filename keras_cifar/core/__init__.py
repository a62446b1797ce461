"""What every layer uses, importing nothing else of keras_cifar: errors (one line, exit 2), files written
whole or not at all, console output (counts, durations, ETA), the plug-in registry, what a run records
(record.py: metrics.json and history.csv rows), the backend's set-up (backend.py), and the optional
extras (extras.py: a missing one names its extra)."""
