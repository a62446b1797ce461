"""The commands beside training: tune.py and trials.py (KerasTuner searches), landscape.py (loss and
accuracy landscapes), export.py (export in four formats), serving.py (load each in its own runtime,
predict, evaluate, test-time augmentation around any of them), server.py (serve: TensorFlow Serving's
REST API), bench.py and torch_reference.py (speed on each backend, against plain PyTorch)."""
