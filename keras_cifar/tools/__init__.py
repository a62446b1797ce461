"""The commands beside training: tune.py and trials.py (KerasTuner searches), landscape.py (loss and
accuracy landscapes), serving.py (export, load, predict, evaluate), bench.py and torch_reference.py
(speed on each backend, against plain PyTorch)."""
