"""Preprocessing layers that run inside the model, on the accelerator, written with keras.ops.

Keras's RandomCrop/RandomFlip layers inside a compiled JAX model took about 0.8 s per batch on an H200
(measured by this project on 2026-11-26; the whole 391-batch epoch without them took 2.4 s); these
jit-friendly layers do the same work with two small batched matmuls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from keras_cifar.data.formats import CIFAR_MEAN, CIFAR_STD
from keras_cifar.data.tta import TTA_VIEWS


@keras.saving.register_keras_serializable("keras_cifar")
class RandomCropFlip(keras.layers.Layer):
    """Training only: zero-pad by `pad`, crop back at a random offset per image, flip half the images
    (unless `flip` is false: data.flip alternating, where the input pipeline mirrors them).

    Outside training it only casts to float32. Input: images [B, H, W, C] of any dtype, pixel scale.
    """

    def __init__(self, pad: int = 4, seed: int | None = None, flip: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pad = pad
        self.seed = seed
        self.flip = flip
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._torch_generator: Any = None  # a torch.Generator (PyTorch)
        self._torch_state: list[int] | None = None  # the seed generator's state as this process's host counts it (PyTorch)

    def call(self, images: Any, training: bool = False) -> Any:
        images = ops.cast(images, "float32")
        if not training:
            return images
        h, w = images.shape[1], images.shape[2]
        p = self.pad
        padded = ops.pad(images, [[0, 0], [p, p], [p, p], [0, 0]])
        offsets, flip = self._draw(ops.shape(images)[0])
        # One-hot selection matrices: rows[b, i, r] = 1 where r == offset_y[b] + i (and likewise columns).
        rows = ops.one_hot(offsets[:, :1] + ops.arange(h)[None, :], h + 2 * p)
        cols = ops.one_hot(offsets[:, 1:] + ops.arange(w)[None, :], w + 2 * p)
        crops = ops.einsum("bir,brsc->bisc", rows, padded)
        crops = ops.einsum("bjs,bisc->bijc", cols, crops)
        return ops.where(flip, ops.flip(crops, axis=2), crops) if self.flip else crops

    def _draw(self, batch: Any) -> tuple[Any, Any]:
        """Per image: the crop's offsets [batch, 2] and whether it is flipped [batch, 1, 1, 1]."""
        backend = keras.backend.backend()
        if backend == "torch":
            return self._draw_torch(batch)
        replicas, replica = _replica() if backend == "tensorflow" else (1, 0)
        # Under TensorFlow's MirroredStrategy every replica sees the same seed: each draws for the global
        # batch and keeps its own part, so the images are augmented as on one device.
        offsets = keras.random.randint((batch * replicas, 2), 0, 2 * self.pad + 1, seed=self.seed_generator)
        flip = keras.random.uniform((batch * replicas, 1, 1, 1), seed=self.seed_generator) < 0.5
        mine = slice(replica * batch, (replica + 1) * batch)
        return (offsets[mine], flip[mine]) if replicas > 1 else (offsets, flip)

    def _draw_torch(self, batch: int) -> tuple[Any, Any]:
        """The same draws from a torch.Generator on the device. Keras's PyTorch random functions make a new
        generator from the seed at every call, reading the seed back to the host, so every training step
        would wait for the GPU twice. Here the host reads the seed generator's state [seed, steps] once
        (at its first draw in a process: for a resumed run, the state its checkpoint saved) and counts
        the steps itself; each step's draws come from a generator seeded with (seed, step), so a resumed
        run draws what the uninterrupted one drew. The state still advances on the device every step, for
        the checkpoints."""
        import torch

        state = self.seed_generator.state.value
        if self._torch_state is None:
            self._torch_state = [int(v) for v in state.tolist()]
            self._torch_generator = torch.Generator(device=state.device)
        seed, step = self._torch_state
        self._torch_generator.manual_seed((seed & 0xFFFFFFFF) << 32 | (step & 0xFFFFFFFF))
        self._torch_state[1] += 1
        self.seed_generator.next()
        offsets = torch.randint(0, 2 * self.pad + 1, (batch, 2), device=state.device, generator=self._torch_generator)
        return offsets, torch.rand((batch, 1, 1, 1), device=state.device, generator=self._torch_generator) < 0.5

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "pad": self.pad, "seed": self.seed, "flip": self.flip}


def _replica() -> tuple[int, int]:
    """(replicas, this one's index) under a TensorFlow distribution strategy; (1, 0) outside one."""
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return 1, 0
    return context.num_replicas_in_sync, context.replica_id_in_sync_group


@keras.saving.register_keras_serializable("keras_cifar")
class Normalize(keras.layers.Layer):
    """Pixel values in [0, 255] -> per-channel standardized floats (CIFAR-10 statistics)."""

    def __init__(self, mean: Sequence[float] = CIFAR_MEAN, std: Sequence[float] = CIFAR_STD, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mean = tuple(mean)
        self.std = tuple(std)

    def call(self, images: Any) -> Any:
        images = ops.cast(images, self.compute_dtype)
        mean = ops.convert_to_tensor([255.0 * m for m in self.mean], self.compute_dtype)
        std = ops.convert_to_tensor([255.0 * s for s in self.std], self.compute_dtype)
        return (images - mean) / std

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mean": list(self.mean), "std": list(self.std)}


# Test-time augmentation (eval.tta): the views of tta.TTA_VIEWS as layers (tta.view is the same in numpy)
@keras.saving.register_keras_serializable("keras_cifar")
class View(keras.layers.Layer):
    """One fixed view of each image: mirrored left-right if `mirrored`, then its content moved `shift`
    pixels down and right (up and left if negative), the border filled by reflection. Keeps the dtype."""

    def __init__(self, mirrored: bool = False, shift: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mirrored, self.shift = mirrored, shift

    def call(self, images: Any) -> Any:
        x = ops.flip(images, axis=2) if self.mirrored else images
        if not self.shift:
            return x
        s, (h, w) = abs(self.shift), images.shape[1:3]
        padded = ops.pad(ops.cast(x, "float32"), [[0, 0], [s, s], [s, s], [0, 0]], mode="reflect")
        at = s - self.shift  # the crop's first row and column
        return ops.cast(padded[:, at : at + h, at : at + w, :], images.dtype)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mirrored": self.mirrored, "shift": self.shift}


@keras.saving.register_keras_serializable("keras_cifar")
class WeightedMean(keras.layers.Layer):
    """The weighted sum of its inputs (logits of several views), in float32."""

    def __init__(self, weights: Sequence[float] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.view_weights = tuple(weights)

    def call(self, inputs: Sequence[Any]) -> Any:
        return sum(w * ops.cast(x, "float32") for w, x in zip(self.view_weights, inputs))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape[0]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "weights": list(self.view_weights)}


def with_tta(model: keras.Model, mode: str) -> keras.Model:
    """`model` (images -> logits) evaluated with test-time augmentation `mode` (a key of TTA_VIEWS): its
    logits are the weighted mean of its logits on each view. Shares `model`'s weights; `model` itself
    for "none"."""
    if mode == "none":
        return model
    views = TTA_VIEWS[mode]
    images = keras.Input(model.input.shape[1:], dtype=model.input.dtype, name=model.input.name)
    logits = [model(View(mirrored, shift)(images)) for _, mirrored, shift in views]
    return keras.Model(images, WeightedMean([w for w, _, _ in views])(logits), name=f"{model.name}_tta")
