"""Files: atomic writes, checkpoints (with clear errors for what cannot be loaded), hashes
and the environment record written beside every result."""
import hashlib
import json
import os
import pickle
import platform
import zipfile
from pathlib import Path

import numpy as np
import torch

def atomic_write_bytes(path, write):
    """Write a file through a temporary sibling and os.replace, so an interrupted run
    never leaves a truncated file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)  # the previous file, if any, is still intact
        raise
    os.replace(tmp, path)
    return path


def save_checkpoint(net, path):
    """Save net's state dict (float32, contiguous: the course's layout) atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    return atomic_write_bytes(path, lambda tmp: torch.save(state, tmp))


def save_json(obj, path):
    return atomic_write_bytes(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=1)))


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


MISSING_CHECKPOINT_HELP = """No checkpoint at {path}.
Get one of:
  - the course's pretrained_model.pt (from HW4.zip), copied to {path};
  - the kit's own, trained on the CPU: python train_util.py pretrain --epochs 200 --out {path}
    (CIFAR-10 needed; about 3 hours on 2 cores; it resumes per epoch, so an interrupted run,
    or the committed resume state next to {path}, continues where it stopped)."""

# Keys under which training scripts commonly nest the state dict beside optimizer state etc.
STATE_DICT_WRAPPERS = ("state_dict", "model_state_dict", "net", "model")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded; the message names the file and what to do."""


def read_state_dict(path):
    """The state dict stored in `path`, on the CPU, unwrapped from the common containers
    ({'state_dict': ...}, {'net': ...}, {'model': ...}) and from DataParallel's `module.`
    prefix. Only tensors are unpickled (weights_only): a checkpoint cannot run code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(MISSING_CHECKPOINT_HELP.format(path=path))
    state = _torch_load(path)
    for key in STATE_DICT_WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict "
                              f"(a dict of tensors); save one with torch.save(net.state_dict(), path)")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _torch_load(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # a readable archive that weights_only refuses holds pickled code objects
        if "Weights only load failed" in str(err) and zipfile.is_zipfile(path):
            raise CheckpointError(
                f"{path} holds a whole pickled object (e.g. a model saved with torch.save(net)), "
                f"not a state dict. Where it was saved, run torch.save(net.state_dict(), path) "
                f"and use that file.") from None
        raise _corrupt(path, err) from err
    except Exception as err:  # noqa: BLE001 - zip, EOF and key errors all mean a damaged file
        raise _corrupt(path, err) from err


def _corrupt(path, err):
    return CheckpointError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt? "
                           f"{type(err).__name__}: {str(err)[:120]}). Download or copy it again, "
                           f"or retrain it.")


def load_checkpoint(net, path="checkpoints/pretrained_model.pt"):
    """Load a checkpoint saved by the course or by this kit (on a GPU or a CPU) into `net`,
    strictly; a file for another architecture gets an error naming what differs."""
    state = read_state_dict(path)
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or reshaped:
        raise CheckpointError(
            f"{path} is not a checkpoint of this {type(net).__name__} "
            f"({len(expected)} tensors expected, e.g. {next(iter(expected))}): "
            + "; ".join(f"{what} {len(keys)}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                        for what, keys in (("missing", missing), ("unexpected", unexpected),
                                           ("other shapes", reshaped)) if keys)
            + ". Use a ResNet-20 state dict like the course's pretrained_model.pt.")
    net.load_state_dict(state, strict=True)
    return net


def environment():
    """Versions and device, for logs."""
    import torchvision
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"
    return {"device": device, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version(), "numpy": np.__version__}
