"""The course's hw4 notebook cells, run unchanged against the kit's modules (their own
definitions of finetune_after_prune / prune_by_percentage / global_prune_by_percentage
deleted): torchvision DataLoaders, q in percent, one-epoch finetune_after_prune inside the
notebook's own loop, finetune() then torch.load("quantized_net_after_finetune.pt").
Synthetic data, CPU."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.optim as optim
import torchvision.transforms as transforms

import train_util as tu
from FP_layers import *  # noqa: F403 - exactly what the course notebook does
from resnet20 import ResNetCIFAR


class ImageList(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 hands a transform: HWC uint8 images as PIL."""

    def __init__(self, data, transform):
        self.images = data.x_train.permute(0, 2, 3, 1).numpy()
        self.targets = data.y_train.tolist()
        self.transform = transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        from PIL import Image
        return self.transform(Image.fromarray(self.images[i])), self.targets[i]


@pytest.fixture(scope="module")
def data():
    return tu.synthetic_cifar(n_train=64, n_test=32, device="cpu")


@pytest.fixture
def trainloader(data):
    # the course notebook's transforms and loader
    transform_train = transforms.Compose([
        transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(tu.CIFAR_MEAN, tu.CIFAR_STD)])
    return torch.utils.data.DataLoader(ImageList(data, transform_train), batch_size=16,
                                       shuffle=True, num_workers=0)


def pretrained():
    torch.manual_seed(0)
    return ResNetCIFAR(num_layers=20)


def test_star_import_gives_the_starter_names():
    assert STE and FP_Conv and FP_Linear  # noqa: F405
    assert device in ("cpu", "cuda")  # noqa: F405


def test_course_pruning_cells_run_with_q_in_percent():
    net = pretrained()
    for name, layer in net.named_modules():  # the course's loop: every conv but shortcuts, and FC
        if (isinstance(layer, nn.Conv2d) and "id_mapping" not in name) or isinstance(layer, nn.Linear):
            tu.prune_by_percentage(layer, q=80.0)
    assert tu.sparsity(net) == pytest.approx(80.0, abs=0.01)
    net = pretrained()
    tu.global_prune_by_percentage(net, q=80.0)
    assert tu.sparsity(net) == pytest.approx(80.0, abs=0.01)


def test_one_shot_loop_keeps_zeros_and_matches_the_kit(trainloader, data):
    """Lab 2 (c) as the course notebook writes it, against the kit's own fast path."""
    net = pretrained()
    for name, layer in tu.prunable_layers(net).items():
        tu.prune_by_percentage(layer, q=80.0)
    kit_net = pretrained()
    kit_masks = tu.prune_layers_by_percentage(kit_net, 80.0)
    start_masks = tu.masks_from_zeros(net)
    assert all(torch.equal(start_masks[n], kit_masks[n]) for n in kit_masks)  # same masks

    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(net.parameters(), lr=0.2, momentum=0.9, weight_decay=5e-4)
    for epoch in range(2):
        loss, acc = tu.finetune_after_prune(net, trainloader, criterion, optimizer, prune=True)
        assert np.isfinite(loss) and 0 <= acc <= 100
    layers = tu.prunable_layers(net)
    for name, mask in start_masks.items():
        w = layers[name].weight.detach()
        assert torch.all(w[mask == 0] == 0), name      # pruned stayed zero under momentum + wd
        assert torch.any(w[mask == 1] != 0), name      # the rest trained
    tu.finetune_masked(kit_net, 1, data=data, recipe=tu.Recipe(lr=0.2, momentum=0.9, batch_size=16),
                       masks=kit_masks, progress=False)
    assert tu.sparsity(net) == pytest.approx(tu.sparsity(kit_net)) == pytest.approx(80.0, abs=0.01)


def test_iterative_loop_regrows_before_the_last_step(trainloader):
    """Lab 2 (d) as the course notebook writes it: q = 8 * (epoch + 1), prune=False before
    the last pruning step (weights may regrow), prune=True from then on."""
    net = pretrained()
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(net.parameters(), lr=0.2, momentum=0.9, weight_decay=5e-4)
    for epoch in range(3):
        if epoch < 2:
            q = 40 * (epoch + 1)
            for name, layer in tu.prunable_layers(net).items():
                tu.prune_by_percentage(layer, q=q)
        zeros_before = tu.sparsity(net)
        tu.finetune_after_prune(net, trainloader, criterion, optimizer, prune=epoch >= 1)
        if epoch == 0:
            assert tu.sparsity(net) < zeros_before  # prune=False: pruned weights regrew
        else:
            assert tu.sparsity(net) == pytest.approx(80.0, abs=0.01)


def test_finetune_saves_the_best_epoch_where_the_notebook_loads_it(tmp_path, monkeypatch, data):
    monkeypatch.chdir(tmp_path)  # the starter writes into the working folder
    net = ResNetCIFAR(num_layers=20, Nbits=4)
    record = tu.finetune(net, 2, 16, 0.05, 1e-4, data=data, progress=False)
    net.load_state_dict(torch.load("quantized_net_after_finetune.pt"))  # the course's next cell
    acc, _ = tu.test(net, data)
    assert acc == record["best_acc"]


def test_train_saves_pretrained_model_pt(tmp_path, monkeypatch, data):
    monkeypatch.chdir(tmp_path)
    net = ResNetCIFAR(num_layers=20)
    record = tu.train(net, 2, 16, 0.05, 5e-4, data=data, progress=False)
    best = tu.load_checkpoint(ResNetCIFAR(num_layers=20), tmp_path / "pretrained_model.pt")
    assert tu.evaluate(best, data)[0] == record["best_acc"]


def test_gpu_saved_checkpoint_loads_on_cpu(tmp_path):
    """torch.save on a GPU stores cuda tensors; the kit maps them to the CPU. Simulated by
    the storage location tag the file carries (no GPU here)."""
    path = tmp_path / "gpu.pt"
    state = ResNetCIFAR(20).state_dict()
    torch.save(state, path)
    loaded = torch.load(path, map_location=lambda storage, loc: storage, weights_only=True)
    net = tu.load_checkpoint(ResNetCIFAR(20), path)
    assert all(torch.equal(net.state_dict()[k], loaded[k]) for k in state)


def test_best_path_as_fit_names_it_overrides_save_best(tmp_path, monkeypatch, data):
    monkeypatch.chdir(tmp_path)  # a stage passes fit's best_path=; it used to collide with save_best
    record = tu.finetune(ResNetCIFAR(num_layers=20), 1, 16, 0.05, 1e-4, data=data, progress=False,
                         best_path=tmp_path / "stage_best.pt")
    assert (tmp_path / "stage_best.pt").is_file()
    assert not (tmp_path / "quantized_net_after_finetune.pt").exists()
    best = tu.load_checkpoint(ResNetCIFAR(num_layers=20), tmp_path / "stage_best.pt")
    assert tu.evaluate(best, data)[0] == record["best_acc"]
