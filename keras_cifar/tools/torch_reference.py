"""The PyTorch reference that ``keras-cifar bench --reference`` measures keras-cifar against: the same
ResNet-18, recipe and data, in a plain PyTorch training loop. A benchmark only: keras-cifar never
trains with it, and only ``bench`` imports it (it needs PyTorch, not Keras).

Same as ``run``: the CIFAR ResNet-18 at the recipe's width, BN, shortcuts and activation (PyTorch's
default initialization, which keras-cifar copies), pad-4 random crop and horizontal flip on the
device where ``data.augment`` asks for them (as keras-cifar's model does), per-channel
normalization, SGD with momentum and coupled weight decay, the learning rate annealed per step
(cosine or constant), cross-entropy or multi-margin loss, the training images in keras-cifar's epoch
order (full batches, pipelines.epoch_order), validation and test scored every epoch at 1,000 images
a step. One difference is left, and bench's table says so on a GPU: the reference keeps the training
set on the device and gathers each batch there, where keras-cifar's pipelines gather it on the host
and copy it over. Modes: fp32 (TensorFloat-32 on GPUs that have it, as keras-cifar's three backends
compute float32 there) and bf16 (autocast); channels-last memory (as Keras on PyTorch's convolutions
use) and cudnn.benchmark, as keras-cifar sets it for Keras on PyTorch.

Run as ``python -m keras_cifar.tools.torch_reference SETTINGS.json RESULT.json`` (bench does this); SETTINGS
may name the ``modes`` to train (default: fp32, and bf16 where it is faster).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from keras_cifar.config import Config
from keras_cifar.core.errors import ConfigError
from keras_cifar.core.files import write_json
from keras_cifar.data import sources as data_lib
from keras_cifar.data.formats import CIFAR_MEAN, CIFAR_STD
from keras_cifar.data.pipelines import epoch_order

SCHEDULES = ("cosine", "constant")


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, batch_norm: bool, shortcut: bool, act: nn.Module) -> None:
        super().__init__()
        norm = (lambda c: nn.BatchNorm2d(c, momentum=0.1, eps=1e-5)) if batch_norm else (lambda c: nn.Identity())
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=not batch_norm)
        self.bn1 = norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=not batch_norm)
        self.bn2 = norm(cout)
        self.act = act
        self.shortcut: nn.Module | None = None
        if shortcut:
            self.shortcut = nn.Identity()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=not batch_norm), norm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))
        return self.act(y + self.shortcut(x) if self.shortcut is not None else y)


class ResNet18(nn.Module):
    def __init__(self, width: int, batch_norm: bool, shortcut: bool, activation: str, num_classes: int = 10) -> None:
        super().__init__()
        act = {"relu": nn.ReLU(), "tanh": nn.Tanh(), "sigmoid": nn.Sigmoid()}[activation]
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, 1, 1, bias=not batch_norm)]
        layers += [nn.BatchNorm2d(width, eps=1e-5)] if batch_norm else []
        layers.append(act)
        cin = width
        for stage, mult in enumerate((1, 2, 4, 8)):
            for block in range(2):
                stride = 2 if stage and not block else 1
                layers.append(Block(cin, width * mult, stride, batch_norm, shortcut, act))
                cin = width * mult
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def check(config: Config) -> None:
    """Refuse a recipe the reference does not implement, naming what it does."""
    if config.model.name != "resnet18":
        raise ConfigError("the PyTorch reference implements the resnet18 network only")
    if config.model.activation not in ("relu", "tanh", "sigmoid"):
        raise ConfigError("the PyTorch reference implements relu, tanh and sigmoid activations")
    if config.optimizer.name != "sgd" or config.schedule.name not in SCHEDULES:
        raise ConfigError(f"the PyTorch reference implements SGD with a {' or '.join(SCHEDULES)} schedule")
    if config.schedule.warmup_epochs:
        raise ConfigError("the PyTorch reference has no learning-rate warm-up")


def _nchw(images: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float NCHW."""
    return images.permute(0, 3, 1, 2).float()


def _augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """uint8 NHWC -> float NCHW, zero-padded by 4, cropped at a random offset per image, half flipped."""
    x = _nchw(images)
    n, c, h, w = x.shape
    x = nn.functional.pad(x, (4, 4, 4, 4))
    offsets = torch.randint(0, 9, (n, 2), device=x.device, generator=generator)
    rows = (offsets[:, :1] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (offsets[:, 1:] + torch.arange(w, device=x.device))[:, None, None, :]
    x = x[
        torch.arange(n, device=x.device)[:, None, None, None], torch.arange(c, device=x.device)[None, :, None, None], rows, cols
    ]
    flip = torch.rand(n, device=x.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


class Reference:
    """One model and optimizer of a recipe's config, on `device`, in `mode` fp32 or bf16."""

    def __init__(self, config: Config, steps_per_epoch: int, device: torch.device, mode: str, seed: int) -> None:
        torch.manual_seed(seed)
        m, opt = config.model, config.optimizer
        self.device, self.mode = device, mode
        self.model = ResNet18(m.width, m.batch_norm, m.shortcut, m.activation).to(device)
        # Channels-last memory everywhere: NCHW convolutions ran 6x slower on the 2-core Xeon CPU (oneDNN).
        self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=opt.learning_rate,
            momentum=opt.momentum,
            nesterov=opt.nesterov,
            weight_decay=opt.weight_decay,
        )
        total = config.train.epochs * steps_per_epoch
        cosine = config.schedule.name == "cosine"
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / total, 1.0))) if cosine else 1.0
        )
        self.loss = nn.CrossEntropyLoss() if config.loss == "cross_entropy" else nn.MultiMarginLoss()
        self.mean = torch.tensor([255 * v for v in CIFAR_MEAN], device=device)[None, :, None, None]
        self.std = torch.tensor([255 * v for v in CIFAR_STD], device=device)[None, :, None, None]
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.augment = config.data.augment
        self.seed = seed

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.mode == "bf16")

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last)

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One training step; returns its loss, on the device (reading it would wait for the step)."""
        self.model.train()
        with self._autocast():
            x = _augment(images, self.generator) if self.augment else _nchw(images)
            logits = self.model(self._input(x))
            loss = self.loss(logits.float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach()

    @torch.no_grad()
    def accuracy(self, images: torch.Tensor, labels: torch.Tensor, batch: int = data_lib.EVAL_BATCH) -> float:
        self.model.eval()
        correct = 0
        for i in range(0, len(labels), batch):
            with self._autocast():
                x = self._input(_nchw(images[i : i + batch]))
                correct += (self.model(x).argmax(1) == labels[i : i + batch]).sum().item()
        return correct / len(labels)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def seconds_per_step(config: Config, splits: data_lib.Splits, device: torch.device, mode: str, steps: int = 3) -> float:
    """A quick probe: seconds per training step in `mode`, after one step of warm-up."""
    x, y = (torch.as_tensor(a[: config.data.batch_size], device=device) for a in splits.train)
    ref = Reference(config, 1, device, mode, seed=0)
    ref.step(x, y.long())
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        ref.step(x, y.long())
    _sync(device)
    return (time.perf_counter() - start) / steps


def train(config: Config, splits: data_lib.Splits, device: torch.device, mode: str, epochs: int) -> list[dict[str, Any]]:
    """Train `epochs` epochs; returns per epoch: seconds (training part, whole epoch), the mean training
    loss (over the images, as Keras reports it), validation and test accuracy."""
    batch = config.data.batch_size
    x_train, y_train = (torch.as_tensor(a, device=device) for a in splits.train)
    val, test = (
        (torch.as_tensor(x, device=device), torch.as_tensor(y, device=device).long()) for x, y in (splits.val, splits.test)
    )
    n = len(y_train)
    ref = Reference(config, math.ceil(n / batch), device, mode, seed=config.train.seeds[0])
    rows: list[dict[str, Any]] = []
    for epoch in range(epochs):
        start = time.perf_counter()
        order = torch.as_tensor(epoch_order(n, batch, ref.seed, epoch), device=device)  # as keras-cifar's
        losses = [ref.step(x_train[idx], y_train[idx].long()) for idx in order.split(batch)]
        loss = float(torch.stack(losses).mean())  # full batches: the mean over images, as Keras's; waits
        trained = time.perf_counter()
        val_acc, test_acc = ref.accuracy(*val), ref.accuracy(*test)
        rows.append(
            {
                "epoch": epoch + 1,
                "train_seconds": trained - start,
                "loss": loss,
                "epoch_seconds": time.perf_counter() - start,
                "val_accuracy": val_acc,
                "test_accuracy": test_acc,
            }
        )
        print(
            f"  pytorch {mode} epoch {epoch + 1}/{epochs}  train {trained - start:.2f}s  "
            f"epoch {rows[-1]['epoch_seconds']:.2f}s  test {test_acc:.2%}",
            flush=True,
        )
    return rows


def main(settings_file: str, result_file: str) -> None:
    settings = json.loads(Path(settings_file).read_text())
    config, epochs = Config.from_dict(settings["config"], settings_file), settings["epochs"]
    check(config)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    cifar = data_lib.load(settings["data"])
    splits = data_lib.split(cifar, config.data.subset, config.data.eval_subset)
    results: dict[str, list[dict[str, Any]]] = {}
    skipped: dict[str, str] = {}
    for mode in settings.get("modes", ("fp32", "bf16")):
        if mode == "bf16" and device.type == "cpu":  # many CPUs emulate bfloat16: only where it is faster
            probe = {m: seconds_per_step(config, splits, device, m) for m in ("fp32", "bf16")}
            if probe["bf16"] >= probe["fp32"]:
                skipped[mode] = f"slower than fp32 on this CPU ({probe['bf16']:.3f} s against {probe['fp32']:.3f} s a step)"
                continue
        results[mode] = train(config, splits, device, mode, epochs)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    tf32 = device.type == "cuda" and torch.cuda.get_device_capability(0)[0] >= 8  # fp32 runs as TensorFloat-32
    write_json(
        result_file,
        {
            "device": name,
            "torch": torch.__version__,
            "images": len(splits.train[1]),
            "modes": results,
            "skipped": skipped,
            "threads": torch.get_num_threads(),
            "tf32": tf32,
        },
    )


if __name__ == "__main__":
    main(*sys.argv[1:3])
