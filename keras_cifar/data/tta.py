"""Test-time augmentation (eval.tta, ``--tta``): the views of each image whose logits are averaged.

TTA_VIEWS is the one definition: Keras builds it into a model with augment.with_tta (training's scores,
``export --tta``), and ``view`` takes the same views in numpy for ``predict`` and ``evaluate``, whose
ONNX, LiteRT and SavedModel runtimes run without Keras (tests/test_serving.py holds the two equal).
"""

from __future__ import annotations

import numpy as np

# Each mode's views as (weight, mirrored, shift in pixels down and right). flip_translate is airbench's
# tta_level 2 (KellerJordan/cifar10-airbench): half the weight on the image and its mirror, half on both
# moved one pixel up-left and down-right (reflect-padded), each with its mirror. Each mode's first view is
# the image itself: `evaluate` reports its logits as the plain scores beside the mode's.
TTA_VIEWS: dict[str, tuple[tuple[float, bool, int], ...]] = {
    "none": ((1.0, False, 0),),
    "flip": ((0.5, False, 0), (0.5, True, 0)),
    "flip_translate": (
        (0.25, False, 0), (0.25, True, 0),
        (0.125, False, -1), (0.125, True, -1), (0.125, False, 1), (0.125, True, 1),
    ),
}  # fmt: skip


def view(images: np.ndarray, mirrored: bool, shift: int) -> np.ndarray:
    """augment.View in numpy: images [N, H, W, C] mirrored left-right if `mirrored`, then their content
    moved `shift` pixels down and right (up and left if negative), the border filled by reflection."""
    x = images[:, :, ::-1] if mirrored else images
    if not shift:
        return x
    s, (h, w) = abs(shift), images.shape[1:3]
    padded = np.pad(x, [(0, 0), (s, s), (s, s), (0, 0)], mode="reflect")
    at = s - shift  # the crop's first row and column
    return padded[:, at : at + h, at : at + w]
