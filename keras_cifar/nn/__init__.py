"""The networks and what compiles them: networks.py (the MODELS registry), resnet.py (ResNet-18 and the
trained classifier), losses.py, optim.py and schedules.py (the LOSSES, OPTIMIZERS and SCHEDULES
registries), custom_objects.py (the Keras classes a saved model refers to)."""
