"""The commands beside training: tune.py and trials.py (KerasTuner searches), landscape.py (loss and
accuracy landscapes), serving.py (export in four formats, load each in its own runtime, predict,
evaluate), server.py (serve: TensorFlow Serving's REST API), bench.py and torch_reference.py (speed on
each backend, against plain PyTorch)."""
