"""CIFAR-10 from disk to fit: sources.py (--data sources, the cache, the 10:1:1 split), formats.py (the
FORMATS registry of local copies), pipelines.py (the training order and fit's input), augment.py (crop,
flip and normalization layers inside the model, with_tta), tta.py (test-time augmentation's views)."""
