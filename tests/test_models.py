"""The ResNet-18 builder, the preprocessing layers and the losses, on every backend."""

import keras
import numpy as np
import pytest

from keras_cifar import build_resnet18
from keras_cifar.data.augment import CIFAR_MEAN, CIFAR_STD, Normalize, RandomCropFlip
from keras_cifar.nn.losses import MultiMarginLoss, get_loss
from tests.helpers import WIDTH, as_numpy

pytestmark = pytest.mark.backend


def _layer_types(model):
    return [type(layer).__name__ for layer in model.layers]


def test_width_64_has_the_pytorch_parameter_count():
    model = build_resnet18()
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 11_173_962
    assert _layer_types(model).count("Conv2D") == 17 + 3  # 17 convs + 3 projection shortcuts
    assert _layer_types(model).count("Add") == 8


def test_flags_remove_bn_and_shortcuts_and_set_activation():
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    plain = build_resnet18(width=WIDTH, batch_norm=False, shortcut=False, activation="tanh", num_classes=7)
    types = _layer_types(plain)
    assert not any("BatchNorm" in name for name in types) and "Add" not in types
    assert types.count("Conv2D") == 17
    assert {layer.get_config()["activation"] for layer in plain.layers if type(layer).__name__ == "Activation"} == {"tanh"}
    assert as_numpy(plain(x)).shape == (2, 7)
    assert all(layer.use_bias for layer in plain.layers if type(layer).__name__ == "Conv2D")


def test_initial_weights_follow_the_seed_and_differ_between_layers():
    def conv_kernels(seed):
        keras.utils.set_random_seed(seed)
        model = build_resnet18(width=WIDTH)
        return [as_numpy(model.get_layer(n).kernel) for n in ("stage1_block1_1_conv", "stage1_block2_1_conv")]

    first, again, other = conv_kernels(0), conv_kernels(0), conv_kernels(1)
    np.testing.assert_array_equal(first[0], again[0])  # same seed, same weights
    assert not np.array_equal(first[0], first[1])  # two layers of one shape start apart
    assert not np.array_equal(first[0], other[0])
    fan_in = 3 * 3 * WIDTH
    assert np.std(first[0]) == pytest.approx((1 / (3 * fan_in)) ** 0.5, rel=0.15)  # PyTorch's default scale


def test_initial_weights_are_numpys_draws_so_equal_on_every_backend():
    keras.utils.set_random_seed(3)
    stem = as_numpy(build_resnet18(width=WIDTH).get_layer("stem_conv").kernel)
    bound = 1 / np.sqrt(3 * 3 * 3)  # fan_in of the 3x3 stem on RGB
    np.random.seed(3)
    np.testing.assert_allclose(stem, np.random.uniform(-bound, bound, (3, 3, 3, WIDTH)), rtol=1e-6)


def test_layer_names_are_deterministic():
    names = [layer.name for layer in build_resnet18(width=WIDTH).layers]
    keras.backend.clear_session()
    assert names == [layer.name for layer in build_resnet18(width=WIDTH).layers]
    assert "stage4_block2_add" in names and names[-1] == "logits"


def test_random_crop_flip_gives_shifted_or_flipped_crops_and_is_identity_at_inference():
    x = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3)).astype("uint8")
    layer = RandomCropFlip(seed=1)
    out = as_numpy(layer(x, training=True))
    padded = np.pad(x.astype("float32"), ((0, 0), (4, 4), (4, 4), (0, 0)))
    crops = [[padded[i, dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)] for i in range(16)]
    for i in range(16):
        assert any(np.array_equal(out[i], c) or np.array_equal(out[i], c[:, ::-1]) for c in crops[i])
    assert not np.array_equal(out, x)  # something moved
    np.testing.assert_array_equal(as_numpy(layer(x, training=False)), x)
    state = as_numpy(layer.seed_generator.state).copy()
    assert not np.array_equal(as_numpy(layer(x, training=True)), out)  # the next step draws anew
    assert not np.array_equal(as_numpy(layer.seed_generator.state), state)  # and a checkpoint records where
    np.testing.assert_array_equal(as_numpy(RandomCropFlip(seed=1)(x, training=True)), out)  # a seed repeats


def test_normalize_uses_cifar_statistics():
    x = np.full((1, 32, 32, 3), 255 * np.array(CIFAR_MEAN) + 255 * np.array(CIFAR_STD), "float32")
    np.testing.assert_allclose(as_numpy(Normalize()(x)), 1.0, rtol=1e-5)


def test_multi_margin_matches_hand_computed_pytorch_values():
    logits = np.array([[0.1, 0.2, 0.4, 0.8], [3.0, -1.0, 0.5, 0.0]], "float32")
    labels = np.array([3, 0])
    # row 0: y=3 (0.8): max(0,1-0.8+0.1)+max(0,1-0.8+0.2)+max(0,1-0.8+0.4) = 0.3+0.4+0.6 = 1.3 -> /4 = 0.325
    # row 1: y=0 (3.0): every margin 1-3+x < 0 -> 0
    per_sample = as_numpy(MultiMarginLoss().call(labels, logits))
    np.testing.assert_allclose(per_sample, [0.325, 0.0], rtol=1e-6)
    np.testing.assert_allclose(float(as_numpy(MultiMarginLoss()(labels, logits))), 0.1625, rtol=1e-6)


def test_losses_serialize_and_cross_entropy_takes_logits():
    restored = keras.losses.deserialize(keras.losses.serialize(MultiMarginLoss(margin=2.0)))
    assert isinstance(restored, MultiMarginLoss) and restored.margin == 2.0
    logits, labels = np.zeros((3, 10), "float32"), np.array([1, 2, 3])
    np.testing.assert_allclose(float(as_numpy(get_loss("cross_entropy")(labels, logits))), np.log(10), rtol=1e-5)
