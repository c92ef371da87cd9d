"""CIFAR-10 for the training engine: loading (torchvision download, local copies, a
synthetic stand-in) and batched augmentation.

The whole dataset lives as uint8 tensors on the training device; random crop (zero pad 4)
and horizontal flip are batched tensor ops, so there are no DataLoader workers.
"""
import functools
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # the course's normalisation constants
CIFAR_STD = (0.2023, 0.1994, 0.2010)
CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")
NO_DATA_HELP = """CIFAR-10 was not found under {root} and could not be downloaded ({reason}).
Provide it in one of three ways:
  1. with internet: run again; torchvision downloads it to {root}/cifar-10-batches-py;
  2. copy an existing torchvision download (the folder cifar-10-batches-py) into {root}/;
  3. offline: an image tree {root}/train/<class>/*.png and {root}/test/<class>/*.png
     (or a .npz with x_train, y_train, x_test, y_test), e.g. made by the workplace's
     prepare.py; point HW4_DATA_DIR at it if it lives elsewhere."""


class DataNotFoundError(FileNotFoundError):
    """CIFAR-10 is neither on disk nor downloadable; the message lists the ways to provide it."""


@dataclass
class CifarData:
    """Train/test images as uint8 (N, 3, 32, 32) tensors and int64 labels, on one device."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    source: str
    name: str = "CIFAR-10"  # "synthetic" for the CI stand-in
    eval_label: str | None = None  # set when the evaluation images are not the test images

    @property
    def n_test(self):
        return len(self.y_test)

    @property
    def test_label(self):
        """Names the images accuracies are measured on, e.g. "CIFAR-10 test[0:1000]"."""
        if self.eval_label:
            return self.eval_label
        if self.name == "CIFAR-10" and self.n_test == 10000:
            return "CIFAR-10 test (all 10000 images)"
        return f"{self.name} test[0:{self.n_test}]"

    @property
    def device(self):
        return self.x_train.device

    def to(self, device):
        return replace(self, x_train=self.x_train.to(device), y_train=self.y_train.to(device),
                       x_test=self.x_test.to(device), y_test=self.y_test.to(device))

    def subset(self, n_train, n_test):
        """The first n_train training and n_test test images (quick mode)."""
        return replace(self, x_train=self.x_train[:n_train], y_train=self.y_train[:n_train],
                       x_test=self.x_test[:n_test], y_test=self.y_test[:n_test])

    def split_validation(self, n_val, what="validation, held out of training"):
        """(training part, validation part): the last `n_val` training images held out of
        training. The validation part evaluates on them instead of the test images, so
        that a tuning decision never sees a test image; `what` ends its label (a caller
        whose start model saw these images says so there)."""
        n = len(self.y_train)
        if not 0 < n_val < n:
            raise ValueError(f"a validation split needs 0 < n_val < {n} training images, got {n_val}")
        keep = n - n_val
        train = replace(self, x_train=self.x_train[:keep], y_train=self.y_train[:keep])
        val = replace(train, x_test=self.x_train[keep:], y_test=self.y_train[keep:],
                      eval_label=f"{self.name} train[{keep}:{n}] ({what})")
        return train, val

    def describe(self):
        return (f"{len(self.y_train)} training images, {self.n_test} test images "
                f"({self.test_label}) from {self.source}, on {self.device}")


def _make(x_train, y_train, x_test, y_test, source):
    """Build CifarData from NHWC uint8 arrays (the layout of every on-disk format)."""
    to_nchw = lambda x: torch.as_tensor(np.ascontiguousarray(x)).permute(0, 3, 1, 2).contiguous()
    to_labels = lambda y: torch.as_tensor(np.asarray(y), dtype=torch.int64)
    return CifarData(to_nchw(x_train), to_labels(y_train), to_nchw(x_test), to_labels(y_test), source)


def _from_npz(root):
    for path in sorted(root.glob("*.npz")):
        with np.load(path) as z:
            if {"x_train", "y_train", "x_test", "y_test"} <= set(z.files):
                return _make(z["x_train"], z["y_train"], z["x_test"], z["y_test"], f"npz {path}")
    return None


def _read_image_tree(split_dir):
    """Images of split_dir/<class>/*.png in file-name order across classes (prepare.py
    names files by their index in the official order), so that the first n images are
    test[0:n] and a quick-mode subset holds every class."""
    from PIL import Image
    files = sorted((path.name, label, path) for label, name in enumerate(CLASSES)
                   for path in (split_dir / name).glob("*.png"))
    images = [np.asarray(Image.open(path).convert("RGB")) for _, _, path in files]
    return np.stack(images), np.array([label for _, label, _ in files])


def _from_image_tree(root):
    if not all((root / split / CLASSES[0]).is_dir() for split in ("train", "test")):
        return None
    x_train, y_train = _read_image_tree(root / "train")
    x_test, y_test = _read_image_tree(root / "test")
    return _make(x_train, y_train, x_test, y_test, f"image tree {root}")


def _from_torchvision(root, download):
    import torchvision
    kwargs = dict(root=str(root), download=download)
    train = torchvision.datasets.CIFAR10(train=True, **kwargs)
    test = torchvision.datasets.CIFAR10(train=False, **kwargs)
    return _make(train.data, train.targets, test.data, test.targets, f"torchvision {root}")


def load_cifar10(root=None, download=True, device=None):
    """CIFAR-10 as a CifarData on `device` (default: the best available).

    Looks, in order, in `root` (default: $HW4_DATA_DIR, else ./data) and its sub-folders
    for a .npz, an image tree, or torchvision's cifar-10-batches-py; then downloads with
    torchvision. No data and no network raise DataNotFoundError listing the three ways.
    """
    root = Path(root or os.environ.get("HW4_DATA_DIR", "data"))
    candidates = [root] + (sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else [])
    for folder in candidates:
        data = _from_npz(folder) or _from_image_tree(folder)
        if data is not None:
            return data.to(device or default_device())
    if (root / "cifar-10-batches-py").is_dir() or download:
        try:
            return _from_torchvision(root, download).to(device or default_device())
        except (OSError, RuntimeError) as err:  # URLError is an OSError
            raise DataNotFoundError(NO_DATA_HELP.format(root=root, reason=err)) from err
    raise DataNotFoundError(NO_DATA_HELP.format(root=root, reason="download=False"))


def synthetic_cifar(n_train=512, n_test=256, seed=0, device=None):
    """A learnable CIFAR-shaped stand-in for tests and CI: each class is a smooth random
    colour pattern plus per-image noise and a random shift. Not CIFAR-10: never a result."""
    gen = torch.Generator().manual_seed(seed)
    prototypes = F.interpolate(torch.rand(10, 3, 4, 4, generator=gen), size=32,
                               mode="bilinear", align_corners=False) * 255

    def draw(n):
        labels = torch.arange(n) % 10
        images = prototypes[labels] + 60 * torch.randn(n, 3, 32, 32, generator=gen)
        shifts = torch.randint(-3, 4, (2,), generator=gen).tolist()
        images = torch.roll(images, shifts=shifts, dims=(2, 3))
        return images.clamp(0, 255).to(torch.uint8), labels

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    return CifarData(x_train, y_train, x_test, y_test, f"synthetic_cifar(seed={seed})",
                     name="synthetic").to(device or default_device())


def default_device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@functools.lru_cache(maxsize=1)
def default_data():
    """CIFAR-10 from ./data, loaded once; used when a function is called without `data`."""
    return load_cifar10()


@functools.lru_cache(maxsize=None)
def _mean_std(device):
    # Cached so that a GPU step does not copy the constants from the host every batch.
    as_tensor = lambda v: torch.tensor(v, device=device).view(1, 3, 1, 1)
    return as_tensor(CIFAR_MEAN), as_tensor(CIFAR_STD)


def normalize(x_uint8):
    mean, std = _mean_std(x_uint8.device)
    x = (x_uint8.float() / 255 - mean) / std
    # channels_last (NHWC) is the layout oneDNN (CPU) and cuDNN (GPU) convolve fastest
    return x.contiguous(memory_format=torch.channels_last)


def random_crop(x, pad, generator=None):
    """Per-image random crop of a batch after zero padding (torchvision RandomCrop(32, 4))."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n, 1), device=x.device, generator=generator)
    rows = dy + torch.arange(h, device=x.device)  # (n, h) source rows per image
    cols = dx + torch.arange(w, device=x.device)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chans = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[batch, chans, rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]


def random_flip(x, generator=None):
    """Flip each image of a batch left-right with probability 1/2."""
    flip = torch.rand(len(x), device=x.device, generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


def train_batches(data, batch_size, generator):
    """One epoch of augmented, normalised training batches (the last partial batch is
    dropped so every step has the same shape, which a CUDA graph needs)."""
    n = len(data.y_train)
    batch_size = min(batch_size, n)
    order = torch.randperm(n, device=data.device, generator=generator)
    for start in range(0, n - batch_size + 1, batch_size):
        idx = order[start:start + batch_size]
        x = random_flip(random_crop(data.x_train[idx], 4, generator), generator)
        yield normalize(x), data.y_train[idx]
