"""Tests for train_util.py: optimizer, schedules, augmentation, batching, evaluation,
data loading, checkpoints, the training engine and the command line.

References: torch.optim.SGD, closed-form schedules, brute force over crop offsets and
torchvision.transforms.functional, hand-built stub models and files written with PIL/numpy.
"""
import contextlib
import copy
import hashlib
import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.transforms.functional as TF

import train_util as tu
from resnet20 import ResNetCIFAR

ROOT = Path(__file__).resolve().parents[1]
# CIFAR-10's classes in label order (the dataset's batches.meta), typed in here.
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck"]
COURSE_MEAN = (0.4914, 0.4822, 0.4465)
COURSE_STD = (0.2023, 0.1994, 0.2010)


# ----------------------------------------------------------------------------- optimizer

@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("momentum,weight_decay", [(0.9, 5e-4), (0.875, 1e-4), (0.9, 0.0)])
def test_sgd_matches_torch_optim(nesterov, momentum, weight_decay):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    ref_model = copy.deepcopy(model)
    lr = 0.1
    ours = tu.SGD(model.parameters(), tu.Recipe(lr=lr, momentum=momentum, nesterov=nesterov,
                                                weight_decay=weight_decay))
    ref = torch.optim.SGD(ref_model.parameters(), lr=lr, momentum=momentum,
                          weight_decay=weight_decay, nesterov=nesterov)
    start = [p.detach().clone() for p in model.parameters()]
    for step in range(6):
        if step == 3:  # a schedule changes the lr between steps
            ours.set_lr(0.03)
            for group in ref.param_groups:
                group["lr"] = 0.03
        grads = [torch.randn_like(p) for p in model.parameters()]
        ours.zero_grad()
        ref.zero_grad()
        for p, q, g in zip(model.parameters(), ref_model.parameters(), grads):
            p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
        for p, q in zip(model.parameters(), ref_model.parameters()):
            torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=1e-6)
    moved = sum((p.detach() - s).abs().sum().item() for p, s in zip(model.parameters(), start))
    assert moved > 0.1


def test_sgd_skips_frozen_parameters():
    model = nn.Linear(3, 3)
    model.bias.requires_grad_(False)
    opt = tu.SGD(model.parameters(), tu.Recipe(lr=0.1))
    assert len(opt.params) == 1 and opt.params[0] is model.weight


# ----------------------------------------------------------------------------- schedules

def test_lr_constant():
    r = tu.Recipe(lr=0.05)
    assert all(r.lr_at(s, 100, 10) == 0.05 for s in range(100))


def test_lr_cosine_closed_form():
    r = tu.Recipe(lr=0.1, schedule="cosine")
    total = 200
    for t in range(total):
        assert r.lr_at(t, total, 10) == pytest.approx(0.5 * 0.1 * (1 + math.cos(math.pi * t / total)))
    assert r.lr_at(0, total, 10) == pytest.approx(0.1)
    assert r.lr_at(total - 1, total, 10) < 1e-4 * 0.1 * 10


def test_lr_multistep():
    r = tu.Recipe(lr=0.2, schedule="multistep")
    total = 100
    lrs = [r.lr_at(t, total, 10) for t in range(total)]
    assert lrs[:50] == pytest.approx([0.2] * 50)
    assert lrs[50:75] == pytest.approx([0.02] * 25)
    assert lrs[75:] == pytest.approx([0.002] * 25)


def test_lr_warmup_then_cosine():
    r = tu.Recipe(lr=0.1, schedule="cosine", warmup_epochs=2)
    spe, total = 10, 100
    warm = 2 * spe
    for t in range(warm):   # linear from lr/warm up to lr
        assert r.lr_at(t, total, spe) == pytest.approx(0.1 * (t + 1) / warm)
    for t in range(warm, total):
        frac = (t - warm) / (total - warm)
        assert r.lr_at(t, total, spe) == pytest.approx(0.05 * (1 + math.cos(math.pi * frac)))
    lrs = [r.lr_at(t, total, spe) for t in range(warm + 1)]
    assert all(a < b for a, b in zip(lrs[:warm - 1], lrs[1:warm]))


def test_bad_recipes_raise():
    with pytest.raises(ValueError):
        tu.Recipe(schedule="step")
    with pytest.raises(ValueError):
        tu.Recipe(lr=0.0)
    with pytest.raises(ValueError):
        tu.Recipe(batch_size=0)
    with pytest.raises(ValueError):
        tu.Recipe(distill=1.5)


# ----------------------------------------------------------------------------- augmentation

def test_random_crop_is_a_window_of_the_padded_image():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8, generator=g)
    out = tu.random_crop(x, 4, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = F.pad(x, (4, 4, 4, 4))                                    # zeros
    windows = padded.unfold(2, 32, 1).unfold(3, 32, 1)                 # (n, 3, 9, 9, 32, 32)
    match = (windows == out[:, :, None, None]).all(-1).all(-1).all(1)  # (n, 9, 9)
    offsets = set()
    for i in range(len(x)):
        found = match[i].nonzero().tolist()
        assert len(found) == 1, f"image {i}: offsets {found}"
        dy, dx = found[0]
        # torchvision's RandomCrop(32, padding=4) = crop of the zero-padded image
        assert torch.equal(out[i], TF.crop(TF.pad(x[i], [4]), dy, dx, 32, 32))
        offsets.add((dy, dx))
    assert len(offsets) > 5


def test_random_crop_offsets_are_uniform_over_9x9():
    # channel 0 holds the row index + 1, channel 1 the column index + 1: the centre pixel
    # of a crop (always inside the original image) tells the offset.
    n = 4000
    rows = torch.arange(1, 33).view(32, 1).expand(32, 32)
    cols = torch.arange(1, 33).view(1, 32).expand(32, 32)
    img = torch.stack([rows, cols, torch.zeros(32, 32, dtype=torch.int64)]).to(torch.uint8)
    out = tu.random_crop(img.expand(n, 3, 32, 32).contiguous(), 4, torch.Generator().manual_seed(2))
    dy = out[:, 0, 16, 16].long() - 1 - 16 + 4
    dx = out[:, 1, 16, 16].long() - 1 - 16 + 4
    counts = torch.bincount(dy * 9 + dx, minlength=81)
    assert len(counts) == 81 and (counts > 0).all()
    assert counts.min() > 15 and counts.max() < 100  # expected 49 each


def test_random_flip_identity_or_mirror():
    x = torch.randint(0, 256, (200, 3, 32, 32), dtype=torch.uint8)
    out = tu.random_flip(x, torch.Generator().manual_seed(3))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    assert (same | mirrored).all()
    assert not (same & mirrored).any()   # random images are not symmetric
    assert 0.35 < mirrored.float().mean() < 0.65


def test_normalize_course_constants():
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    mean = np.array(COURSE_MEAN).reshape(1, 3, 1, 1)
    std = np.array(COURSE_STD).reshape(1, 3, 1, 1)
    expected = (x.numpy().astype(np.float64) / 255 - mean) / std
    out = tu.normalize(x)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- batching

def indexed_data(n_train, n_test=4):
    """CifarData whose labels are the image indices, so batches reveal what they hold."""
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, 256, (n_train, 3, 32, 32), dtype=torch.uint8, generator=g)
    xt = torch.randint(0, 256, (n_test, 3, 32, 32), dtype=torch.uint8, generator=g)
    return tu.CifarData(x, torch.arange(n_train), xt, torch.arange(n_test), "test")


def unnormalize(x):
    mean = torch.tensor(COURSE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(COURSE_STD).view(1, 3, 1, 1)
    return torch.round((x * std + mean) * 255).clamp(0, 255).to(torch.uint8)


def test_train_batches_cover_each_index_once_and_drop_last_partial():
    data = indexed_data(70)
    gen = torch.Generator().manual_seed(0)
    orders = []
    for _ in range(2):
        batches = list(tu.train_batches(data, 16, gen))
        assert len(batches) == 4                        # 70 // 16, the partial 6 dropped
        ys = torch.cat([y for _, y in batches])
        assert all(x.shape == (16, 3, 32, 32) and y.shape == (16,) for x, y in batches)
        assert len(set(ys.tolist())) == 64               # no index twice
        assert ys.min() >= 0 and ys.max() < 70
        orders.append(ys.tolist())
        # each image is an augmented (crop + flip) copy of the training image it is labelled with
        x = unnormalize(batches[0][0])
        for img, idx in zip(x[:6], batches[0][1][:6]):
            padded = F.pad(data.x_train[idx], (4, 4, 4, 4))
            windows = padded.unfold(1, 32, 1).unfold(2, 32, 1)          # (3, 9, 9, 32, 32)
            hit = ((windows == img[:, None, None]).all(-1).all(-1).all(0).any()
                   or (windows == img.flip(-1)[:, None, None]).all(-1).all(-1).all(0).any())
            assert hit
    assert orders[0] != orders[1]                        # reshuffled every epoch


def test_train_batches_smaller_dataset_than_batch():
    data = indexed_data(10)
    batches = list(tu.train_batches(data, 16, torch.Generator().manual_seed(0)))
    assert len(batches) == 1
    assert sorted(batches[0][1].tolist()) == list(range(10))


# ----------------------------------------------------------------------------- evaluation

class LookupNet(nn.Module):
    """Reads the code written into each test image's pixels and predicts table[code]."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def forward(self, x):
        code = torch.round((x[:, 0, 0, 0] * COURSE_STD[0] + COURSE_MEAN[0]) * 255).long()
        return logits_for(self.table[code])


def logits_for(pred):
    return 2.5 * F.one_hot(pred, 10).float() + 0.1 * pred.float().unsqueeze(1)


@pytest.mark.parametrize("batch_size", [1000, 3])
def test_evaluate_exact_accuracy_and_loss(batch_size):
    labels = torch.tensor([3, 1, 4, 1, 5, 9, 2])
    predictions = torch.tensor([3, 1, 0, 1, 5, 8, 2])     # 5 of 7 right
    codes = torch.arange(10, 17)
    x_test = codes.view(-1, 1, 1, 1).expand(7, 3, 32, 32).to(torch.uint8).contiguous()
    table = torch.zeros(256, dtype=torch.int64)
    table[codes] = predictions
    data = tu.CifarData(x_test[:2], labels[:2], x_test, labels, "stub")
    net = LookupNet(table).train()
    acc, loss = tu.evaluate(net, data, batch_size=batch_size)
    assert acc == pytest.approx(100.0 * 5 / 7)
    assert loss == pytest.approx(F.cross_entropy(logits_for(predictions), labels).item(), rel=1e-5)
    assert net.training                                   # mode restored


def test_evaluate_three_of_four():
    labels = torch.tensor([0, 1, 2, 3])
    x_test = torch.arange(4).view(-1, 1, 1, 1).expand(4, 3, 32, 32).to(torch.uint8).contiguous()
    table = torch.zeros(256, dtype=torch.int64)
    table[:4] = torch.tensor([0, 1, 2, 7])
    data = tu.CifarData(x_test, labels, x_test, labels, "stub")
    acc, _ = tu.evaluate(LookupNet(table).eval(), data)
    assert acc == 75.0


class Tf32Probe(nn.Module):
    """Records whether cuDNN could use TF32 while the network ran."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(torch.backends.cudnn.allow_tf32)
        return torch.zeros(len(x), 10)


def test_evaluate_runs_convolutions_in_exact_float32():
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default
    data = tu.synthetic_cifar(n_train=4, n_test=5)
    probe = Tf32Probe()
    tu.evaluate(probe, data, batch_size=2)
    assert probe.seen == [False, False, False]
    assert torch.backends.cudnn.allow_tf32   # the caller's setting is back


# ----------------------------------------------------------------------------- data loading

@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("HW4_DATA_DIR", raising=False)
    import torchvision

    def no_network(*args, **kwargs):
        raise AssertionError("a test tried to use torchvision's CIFAR10 (download)")
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", no_network)


def write_image_tree(root, per_class):
    from PIL import Image
    rng = np.random.default_rng(0)
    expected = {}
    for split in ("train", "test"):
        items = []
        for label, name in enumerate(CIFAR_CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(per_class):
                img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(img).save(folder / f"{k:04d}.png")
                items.append((label, img))
        expected[split] = items
    return expected


def as_items(x, y):
    """[(label, HWC uint8 array)] from NCHW tensors."""
    return [(int(l), img.permute(1, 2, 0).numpy()) for img, l in zip(x, y)]


def same_items(got, want):
    key = lambda item: (item[0], item[1].tobytes())
    return sorted(map(key, got)) == sorted(map(key, want))


def test_load_image_tree(tmp_path, no_env):
    expected = write_image_tree(tmp_path, per_class=2)
    data = tu.load_cifar10(tmp_path, download=False, device="cpu")
    assert data.x_train.shape == (20, 3, 32, 32) and data.x_train.dtype == torch.uint8
    assert data.x_test.shape == (20, 3, 32, 32)
    assert data.y_train.dtype == torch.int64
    assert sorted(data.y_train.tolist()) == sorted([l for l, _ in expected["train"]])
    assert same_items(as_items(data.x_train, data.y_train), expected["train"])
    assert same_items(as_items(data.x_test, data.y_test), expected["test"])
    assert data.test_label == "CIFAR-10 test[0:20]"


def test_load_npz(tmp_path, no_env):
    rng = np.random.default_rng(1)
    arrays = {"x_train": rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8),
              "y_train": rng.integers(0, 10, 6), "x_test": rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
              "y_test": rng.integers(0, 10, 4)}
    np.savez(tmp_path / "cifar10.npz", **arrays)
    data = tu.load_cifar10(tmp_path, download=False, device="cpu")
    for split in ("train", "test"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        assert x.dtype == torch.uint8 and x.shape[1:] == (3, 32, 32)
        # NCHW: x[i, c, h, w] == array[i, h, w, c]
        np.testing.assert_array_equal(x.numpy(), arrays[f"x_{split}"].transpose(0, 3, 1, 2))
        np.testing.assert_array_equal(y.numpy(), arrays[f"y_{split}"])


def test_load_from_env_dir(tmp_path, no_env, monkeypatch):
    sub = tmp_path / "elsewhere"
    sub.mkdir()
    x = np.zeros((2, 32, 32, 3), np.uint8)
    np.savez(sub / "c.npz", x_train=x, y_train=[1, 2], x_test=x, y_test=[3, 4])
    monkeypatch.setenv("HW4_DATA_DIR", str(sub))
    data = tu.load_cifar10(download=False, device="cpu")  # no root given: the variable decides
    assert data.y_test.tolist() == [3, 4]
    with pytest.raises(tu.DataNotFoundError):  # an explicit root wins over the variable
        tu.load_cifar10(tmp_path / "missing", download=False, device="cpu")


def test_missing_data_raises_with_help(tmp_path, no_env):
    with pytest.raises(tu.DataNotFoundError) as info:
        tu.load_cifar10(tmp_path, download=False, device="cpu")
    assert isinstance(info.value, FileNotFoundError)
    msg = str(info.value)
    assert "torchvision" in msg and "download" in msg           # 1. download
    assert "cifar-10-batches-py" in msg                         # 2. existing download
    assert "train/<class>" in msg and "test/<class>" in msg     # 3. image tree
    assert str(tmp_path) in msg


def test_failed_download_raises_with_help(tmp_path, monkeypatch):
    import urllib.error
    import torchvision
    monkeypatch.delenv("HW4_DATA_DIR", raising=False)
    calls = []

    def offline(root, train, download):
        calls.append(download)
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(tu.DataNotFoundError) as info:
        tu.load_cifar10(tmp_path, download=True, device="cpu")
    assert calls == [True]
    assert "no network" in str(info.value) and "cifar-10-batches-py" in str(info.value)


def test_test_label():
    x = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    full = tu.CifarData(x.expand(50000, 3, 32, 32), torch.zeros(50000, dtype=torch.int64),
                        x.expand(10000, 3, 32, 32), torch.zeros(10000, dtype=torch.int64), "fake")
    assert full.test_label == "CIFAR-10 test (all 10000 images)"
    assert full.subset(5000, 1000).test_label == "CIFAR-10 test[0:1000]"
    assert tu.synthetic_cifar(20, 10, device="cpu").test_label == "synthetic test[0:10]"


def test_validation_split_holds_out_the_last_training_images():
    data = tu.synthetic_cifar(20, 10, device="cpu")
    train, val = data.split_validation(5)
    assert torch.equal(train.x_train, data.x_train[:15]) and torch.equal(train.y_train, data.y_train[:15])
    assert torch.equal(val.x_test, data.x_train[15:]) and torch.equal(val.y_test, data.y_train[15:])
    assert torch.equal(train.x_test, data.x_test)  # the training part still reports on the test images
    assert val.test_label == "synthetic train[15:20] (validation, held out of training)"
    assert train.test_label == data.test_label == "synthetic test[0:10]"
    for bad in (0, 20):
        with pytest.raises(ValueError, match="0 < n_val < 20"):
            data.split_validation(bad)


# ----------------------------------------------------------------------------- checkpoints

def states_equal(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_save_checkpoint_roundtrip(tmp_path):
    net = ResNetCIFAR(8)
    path = tmp_path / "sub" / "m.pt"
    assert tu.save_checkpoint(net, path) == path
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]        # no .tmp left
    assert states_equal(torch.load(path, weights_only=True), net.state_dict())
    other = ResNetCIFAR(8)
    tu.load_checkpoint(other, path)
    assert states_equal(other.state_dict(), net.state_dict())
    with pytest.raises(tu.CheckpointError):
        tu.load_checkpoint(ResNetCIFAR(20), path)                      # strict


def interrupted_save(monkeypatch):
    real_save = torch.save

    def broken_save(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:       # part of a file, then the "crash"
            fh.write(b"PK\x03\x04 truncated")
        raise RuntimeError("disk full")
    monkeypatch.setattr(torch, "save", broken_save)
    return real_save


def test_interrupted_save_keeps_previous_file(tmp_path, monkeypatch):
    net = ResNetCIFAR(8)
    path = tmp_path / "m.pt"
    tu.save_checkpoint(net, path)
    saved_state = copy.deepcopy(net.state_dict())
    before = path.read_bytes()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    interrupted_save(monkeypatch)
    with pytest.raises(RuntimeError, match="disk full"):
        tu.save_checkpoint(net, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    restored = tu.load_checkpoint(ResNetCIFAR(8), path)                # still a valid checkpoint
    assert states_equal(restored.state_dict(), saved_state)


def test_interrupted_save_leaves_no_partial_tmp(tmp_path, monkeypatch):
    # atomic_write_bytes promises that "an interrupted run never leaves a truncated file
    # behind"; an exception inside the write must not leave the partial m.pt.tmp either.
    net = ResNetCIFAR(8)
    path = tmp_path / "m.pt"
    tu.save_checkpoint(net, path)
    interrupted_save(monkeypatch)
    with pytest.raises(RuntimeError, match="disk full"):
        tu.save_checkpoint(net, path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_load_checkpoint_missing_says_how_to_get_one(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError) as info:
        tu.load_checkpoint(ResNetCIFAR(20), path)
    assert "train_util.py pretrain" in str(info.value)
    assert str(path) in str(info.value)


# ----------------------------------------------------------------------------- engine

@pytest.fixture(scope="module")
def small_data():
    return tu.synthetic_cifar(n_train=128, n_test=64, device="cpu")


def test_fit_smoke(small_data):
    torch.manual_seed(0)
    net = ResNetCIFAR(20)
    recipe = replace(tu.FAITHFUL, batch_size=32)
    record = tu.fit(net, small_data, 2, recipe, progress=False)
    history = record["history"]
    for key in ("epoch", "train_loss", "train_acc", "test_acc", "test_loss", "lr"):
        assert len(history[key]) == 2, key
    assert history["epoch"] == [1, 2]
    assert record["epochs"] == 2
    assert record["best_acc"] == max(history["test_acc"])
    assert record["best_epoch"] == history["test_acc"].index(record["best_acc"]) + 1
    assert record["final_acc"] == history["test_acc"][-1]
    assert history["lr"] == [recipe.lr, recipe.lr]
    assert all(math.isfinite(v) for v in history["train_loss"])
    assert record["wall_s"] > 0
    # the model is left as trained after the final epoch
    acc, loss = tu.evaluate(net, small_data)
    assert acc == record["final_acc"] and loss == pytest.approx(history["test_loss"][-1])
    with pytest.raises(ValueError):
        tu.fit(net, small_data, 0, recipe, progress=False)


def test_run_record_keeps_final_and_best_apart():
    history = {"epoch": [1, 2, 3], "test_acc": [50.0, 70.0, 60.0]}
    record = tu.run_record(history, 12.5)
    assert record["final_acc"] == 60.0
    assert record["best_acc"] == 70.0 and record["best_epoch"] == 2
    assert record["epochs"] == 3 and record["wall_s"] == 12.5 and record["history"] is history


def test_run_record_best_only_from_a_given_epoch():
    history = {"epoch": [1, 2, 3], "test_acc": [90.0, 50.0, 60.0]}
    record = tu.run_record(history, 1.0, best_from_epoch=2)
    assert record["best_acc"] == 60.0 and record["best_epoch"] == 3
    assert record["final_acc"] == 60.0 and record["best_from_epoch"] == 2


def test_image_tree_is_read_in_file_order_across_classes(tmp_path, no_env):
    """prepare.py names files by their official index: test[0:n] must be the first n files,
    whatever their classes, so a quick-mode subset is not all airplanes."""
    from PIL import Image
    labels = [3, 0, 9, 3, 1, 0]
    for split in ("train", "test"):
        for name in CIFAR_CLASSES:
            (tmp_path / split / name).mkdir(parents=True)
        for index, label in enumerate(labels):
            img = np.full((32, 32, 3), index, np.uint8)
            Image.fromarray(img).save(tmp_path / split / CIFAR_CLASSES[label] / f"{index:05d}.png")
    data = tu.load_cifar10(tmp_path, download=False, device="cpu")
    assert data.y_test.tolist() == labels
    assert data.x_test[:, 0, 0, 0].tolist() == list(range(len(labels)))


def test_fit_is_reproducible_on_cpu(small_data):
    torch.manual_seed(1)
    a = ResNetCIFAR(8)
    b = copy.deepcopy(a)
    recipe = tu.Recipe(lr=0.05, momentum=0.9, batch_size=32)
    ra = tu.fit(a, small_data, 1, recipe, seed=3, progress=False)
    rb = tu.fit(b, small_data, 1, recipe, seed=3, progress=False)
    assert ra["history"]["train_loss"] == rb["history"]["train_loss"]
    assert states_equal(a.state_dict(), b.state_dict())


def test_pretrain_cli(tmp_path):
    out = tmp_path / "m.pt"
    proc = subprocess.run([sys.executable, "train_util.py", "pretrain", "--synthetic",
                           "--epochs", "1", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = json.loads(out.with_suffix(".json").read_text())
    for key in ("recipe", "seed", "history", "wall_s", "environment", "sha256"):
        assert key in log, key
    assert log["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert log["seed"] == 0 and len(log["history"]["test_acc"]) == 1
    assert log["recipe"]["lr"] == tu.PRETRAIN.lr
    assert log["test_label"] == "synthetic test[0:256]"
    assert "torch" in log["environment"]
    tu.load_checkpoint(ResNetCIFAR(20), out)
    assert not list(tmp_path.glob("*.tmp"))


# ----------------------------------------------------------------------------- CUDA graph

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (graph capture)")
def test_cuda_graph_matches_eager():
    data = tu.synthetic_cifar(n_train=512, n_test=256, device="cuda")
    torch.manual_seed(0)
    base = ResNetCIFAR(20)
    tu.prune_layers_by_percentage(base, 50.0)
    masks = tu.masks_from_zeros(base)
    recipe = tu.Recipe(lr=0.02, momentum=0.9, nesterov=True, weight_decay=5e-4, batch_size=64)
    start = copy.deepcopy(base.state_dict())
    nets, records = {}, {}
    for graph in (True, False):
        net = copy.deepcopy(base)
        own_masks = {n: m.clone() for n, m in masks.items()}
        records[graph] = tu.fit(net, data, 1, recipe, masks=own_masks, graph=graph, seed=0,
                                progress=False)
        nets[graph] = net
    g_state, e_state = nets[True].state_dict(), nets[False].state_dict()
    moved = 0.0
    for key, e in e_state.items():
        g = g_state[key]
        if not e.is_floating_point():
            assert torch.equal(g.cpu(), e.cpu()), key     # num_batches_tracked: same steps
            continue
        g, e = g.float().cpu(), e.float().cpu()
        # bf16 autocast, cuDNN algorithm choice: close, not bitwise
        assert (g - e).norm() <= 1e-2 * e.norm() + 1e-6, key
        torch.testing.assert_close(g, e, rtol=1e-2, atol=1e-2 * e.abs().max().item() + 1e-6)
        moved += (e - start[key].float()).abs().sum().item()
    assert moved > 0   # training happened, so the comparison means something
    for name, layer in tu.prunable_layers(nets[True]).items():
        w = layer.weight.detach()
        assert torch.equal(w[masks[name].to(w.device) == 0].cpu(),
                           torch.zeros(int((masks[name] == 0).sum())))
    for key in ("train_loss", "test_loss"):
        assert records[True]["history"][key][0] == pytest.approx(records[False]["history"][key][0], rel=2e-2)


class _FakeStream:
    """Stands in for a CUDA stream so that the capture path's warm-up runs on the CPU."""

    def __init__(self, fail=False):
        self.fail = fail

    def wait_stream(self, other):
        if self.fail:
            raise RuntimeError("CUDA error (simulated)")


def _no_graph():
    raise RuntimeError("capture not supported (simulated)")


@pytest.mark.parametrize("fail_at", ["after warm-up", "capture"])
def test_failed_graph_capture_falls_back_to_the_eager_step(monkeypatch, fail_at):
    # The warm-up really runs (three SGD steps on the CPU); then the capture path fails, as it
    # could on an unsupported GPU. The step taken must be exactly the eager one, so the
    # warm-up's updates must have been undone.
    torch.manual_seed(0)
    base = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 30 * 30, 10))
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    recipe = tu.Recipe(lr=0.05, momentum=0.9, batch_size=8)
    eager_net, graph_net = copy.deepcopy(base), copy.deepcopy(base)
    tu.TrainStep(eager_net, tu.SGD(eager_net.parameters(), recipe), recipe)(x, y)

    step = tu.TrainStep(graph_net, tu.SGD(graph_net.parameters(), recipe), recipe)
    step.graph = True  # as on a GPU
    monkeypatch.setattr(torch.cuda, "Stream", _FakeStream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: _FakeStream(fail_at == "after warm-up"))
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", _no_graph)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)  # nothing is queued on a CPU
    with pytest.warns(UserWarning, match="HW4_CUDA_GRAPH=0"):
        step(x, y)
    assert not step.graph
    for (key, g), e in zip(graph_net.state_dict().items(), eager_net.state_dict().values()):
        torch.testing.assert_close(g, e, rtol=0, atol=0, msg=key)
    with torch.no_grad():  # the step reports the accuracy of the network before its update
        start_acc = 100.0 * (base.train()(x).argmax(1) == y).float().mean().item()
    assert step.stats()[1] == pytest.approx(start_acc)


def test_graph_is_opt_in(monkeypatch):
    """Eager is the default on CUDA until the graph has been measured on a GPU."""
    monkeypatch.delenv(tu.GRAPH_ENV, raising=False)
    assert not tu.graph_enabled("cuda") and not tu.graph_enabled("cpu")
    monkeypatch.setenv(tu.GRAPH_ENV, "1")
    assert tu.graph_enabled("cuda") and not tu.graph_enabled("cpu")
    monkeypatch.setenv(tu.GRAPH_ENV, "0")
    assert not tu.graph_enabled("cuda")
