"""Checkpoint loading: the common wrappers load; what cannot load gets an error that names
the file and says what to do."""
import pytest
import torch

import train_util as tu
from resnet20 import ResNetCIFAR


@pytest.fixture(scope="module")
def state():
    torch.manual_seed(0)
    return ResNetCIFAR(20).state_dict()


def loads_exactly(path, state):
    net = tu.load_checkpoint(ResNetCIFAR(20), path)
    return all(torch.equal(net.state_dict()[k], state[k]) for k in state)


@pytest.mark.parametrize("wrap", [
    lambda s: s,
    lambda s: {"state_dict": s, "epoch": 3},
    lambda s: {"net": s, "acc": 91.0},
    lambda s: {"model": s, "optimizer": {"lr": 0.1}},
    lambda s: {f"module.{k}": v for k, v in s.items()},          # DataParallel
    lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}},
], ids=["plain", "state_dict", "net", "model", "module-prefix", "wrapped+prefix"])
def test_common_wrappers_load(tmp_path, state, wrap):
    path = tmp_path / "ckpt.pt"
    torch.save(wrap(state), path)
    assert loads_exactly(path, state)


def test_whole_pickled_module_says_how_to_resave(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(ResNetCIFAR(20), path)
    with pytest.raises(tu.CheckpointError, match=r"whole pickled object.*state_dict\(\)") as info:
        tu.load_checkpoint(ResNetCIFAR(20), path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("damage", ["truncated", "junk"])
def test_corrupt_file_names_the_file(tmp_path, state, damage):
    good = tmp_path / "good.pt"
    torch.save(state, good)
    data = good.read_bytes()
    path = tmp_path / "bad.pt"
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a checkpoint")
    with pytest.raises(tu.CheckpointError, match="not a readable PyTorch checkpoint") as info:
        tu.load_checkpoint(ResNetCIFAR(20), path)
    assert str(path) in str(info.value)


def test_other_architecture_names_what_differs(tmp_path):
    path = tmp_path / "resnet32.pt"
    torch.save(ResNetCIFAR(32).state_dict(), path)
    with pytest.raises(tu.CheckpointError, match=r"not a checkpoint of this ResNetCIFAR.*unexpected"):
        tu.load_checkpoint(ResNetCIFAR(20), path)
    wide = {k: torch.zeros(2, *v.shape[1:]) if k.endswith("final_fc.linear.weight") else v
            for k, v in ResNetCIFAR(20).state_dict().items()}
    torch.save(wide, path)
    with pytest.raises(tu.CheckpointError, match="other shapes 1: final_fc.linear.weight"):
        tu.load_checkpoint(ResNetCIFAR(20), path)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(tu.CheckpointError, match="not a state dict"):
        tu.load_checkpoint(ResNetCIFAR(20), path)


def test_missing_file_says_where_to_get_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretrain"):
        tu.load_checkpoint(ResNetCIFAR(20), tmp_path / "absent.pt")
