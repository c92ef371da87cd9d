"""Seconds per epoch of ResNet-20 training, side by side in one run:

  A  starter-style loop: a torch Dataset of PIL images with torchvision transforms
     (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize), a DataLoader
     with --workers worker processes, torch.optim.SGD (momentum 0.875, wd 1e-4, the course's
     finetuning settings), eager fp32, a .item() per batch, a test pass per epoch;
  B  this kit's engine: train_util.fit (data on the device, batched crop/flip, bf16 autocast,
     CUDA graph on a GPU ("auto"), same optimiser settings), a test pass per epoch.

Both train the same initial weights on the same uint8 images at the same batch size. An
epoch is timed from its first batch to the end of its test pass. With more than one epoch
the first is reported separately and left out of the mean (warm-up: worker start-up,
cuDNN autotuning, graph capture). A runs first, with PyTorch's default cuDNN settings;
B switches cudnn.benchmark on, as train_util does.

    python benchmarks/epoch_time.py --synthetic 1024 --epochs 2          # CPU smoke test
    python benchmarks/epoch_time.py --data-dir data --epochs 5 --json out.json   # GPU
"""
import argparse
import copy
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train_util as tu  # noqa: E402
from resnet20 import ResNetCIFAR  # noqa: E402


class ImageDataset(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per item: HWC uint8 -> PIL -> transform."""

    def __init__(self, x_nchw, y, transform):
        self.images = x_nchw.permute(0, 2, 3, 1).cpu().numpy()
        self.targets = y.cpu().tolist()
        self.transform = transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        from PIL import Image
        return self.transform(Image.fromarray(self.images[i])), self.targets[i]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def starter_loop(net, data, epochs, batch_size, workers, device):
    """(A) The course's training loop; returns the seconds of each epoch and final accuracy."""
    normalize = T.Normalize(tu.CIFAR_MEAN, tu.CIFAR_STD)
    train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(),
                          T.ToTensor(), normalize])
    test_tf = T.Compose([T.ToTensor(), normalize])
    loader_kw = dict(num_workers=workers, pin_memory=device.type == "cuda")
    train_loader = torch.utils.data.DataLoader(
        ImageDataset(data.x_train, data.y_train, train_tf), batch_size=batch_size,
        shuffle=True, **loader_kw)
    test_loader = torch.utils.data.DataLoader(
        ImageDataset(data.x_test, data.y_test, test_tf), batch_size=100, shuffle=False,
        **loader_kw)
    r = tu.FAITHFUL
    net.to(device)
    opt = torch.optim.SGD(net.parameters(), lr=r.lr, momentum=r.momentum,
                          weight_decay=r.weight_decay)
    times, acc = [], 0.0
    for _ in range(epochs):
        sync(device)
        start = time.perf_counter()
        net.train()
        train_loss, correct, seen = 0.0, 0, 0
        for inputs, targets in train_loader:
            inputs, targets = inputs.to(device), targets.to(device)
            opt.zero_grad()
            outputs = net(inputs)
            loss = F.cross_entropy(outputs, targets)
            loss.backward()
            opt.step()
            train_loss += loss.item()
            correct += (outputs.argmax(1) == targets).sum().item()
            seen += len(targets)
        net.eval()
        correct = total = 0
        with torch.no_grad():
            for inputs, targets in test_loader:
                inputs, targets = inputs.to(device), targets.to(device)
                correct += (net(inputs).argmax(1) == targets).sum().item()
                total += len(targets)
        acc = 100.0 * correct / total
        sync(device)
        times.append(time.perf_counter() - start)
    return times, acc


def engine_loop(net, data, epochs, batch_size, device):
    """(B) train_util.fit; epochs are timed through its before_epoch hook."""
    marks = []

    def before_epoch(epoch, masks):
        sync(device)  # fit's evaluate() already waited for the GPU; be explicit anyway
        marks.append(time.perf_counter())

    recipe = replace(tu.FAITHFUL, batch_size=batch_size)
    record = tu.fit(net, data.to(device), epochs, recipe, before_epoch=before_epoch,
                    graph="auto", progress=False, desc="engine")
    sync(device)
    marks.append(time.perf_counter())
    return [b - a for a, b in zip(marks, marks[1:])], record["final_acc"]


def summarize(times):
    steady = times[1:] if len(times) > 1 else times
    return {"epoch_s": times, "first_epoch_s": times[0], "mean_epoch_s": float(np.mean(steady)),
            "mean_excludes_first": len(times) > 1}


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main(argv=None):
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=16 if cuda else 2,
                   help="DataLoader workers of the starter loop (default: 16 on CUDA, 2 on CPU)")
    p.add_argument("--synthetic", type=int, nargs="?", const=2048, default=None, metavar="N",
                   help="synthetic_cifar with N training images (N/5 test, at least 256) "
                        "instead of CIFAR-10; --synthetic alone means 2048")
    p.add_argument("--data-dir", default="data", help="CIFAR-10 for train_util.load_cifar10")
    p.add_argument("--no-download", action="store_true")
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write a JSON summary here")
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error("--epochs must be >= 1")

    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    if args.synthetic is not None:
        data = tu.synthetic_cifar(n_train=args.synthetic, n_test=max(256, args.synthetic // 5),
                                  seed=args.seed, device="cpu")
    else:
        data = tu.load_cifar10(args.data_dir, download=not args.no_download, device="cpu")
    n_train = len(data.y_train)
    print(f"device: {device_name(device)}; torch {torch.__version__}, "
          f"torchvision {torchvision.__version__}, python {platform.python_version()}")
    print(f"data: {n_train} training / {data.n_test} test images ({data.source}); "
          f"ResNet-20, batch {args.batch_size}, {args.epochs} epoch(s), each with a test pass")

    net_a = ResNetCIFAR(20)
    net_b = copy.deepcopy(net_a)
    print(f"A starter loop ({args.workers} DataLoader workers, torchvision transforms, fp32) ...",
          flush=True)
    times_a, acc_a = starter_loop(net_a, data, args.epochs, args.batch_size, args.workers, device)
    print("B train_util.fit (graph auto) ...", flush=True)
    times_b, acc_b = engine_loop(net_b, data, args.epochs, args.batch_size, device)

    a, b = summarize(times_a), summarize(times_b)
    ratio = a["mean_epoch_s"] / b["mean_epoch_s"]
    which = "epochs 2.." if a["mean_excludes_first"] else "the only epoch, warm-up included"
    print(f"\n{'':28s} {'first epoch s':>14s} {'mean epoch s':>13s} {'images/s':>10s}")
    for name, s in (("A starter loop", a), ("B train_util.fit", b)):
        print(f"{name:28s} {s['first_epoch_s']:14.2f} {s['mean_epoch_s']:13.2f} "
              f"{n_train / s['mean_epoch_s']:10.0f}")
    print(f"per-epoch seconds A: {', '.join(f'{t:.2f}' for t in times_a)}")
    print(f"per-epoch seconds B: {', '.join(f'{t:.2f}' for t in times_b)}")
    print(f"speed-up A/B (mean over {which}): {ratio:.2f}x")
    print(f"sanity only, not a result: final test accuracy A {acc_a:.1f}%, B {acc_b:.1f}% "
          f"({data.test_label})")

    summary = {"device": device_name(device), "torch": torch.__version__,
               "torchvision": torchvision.__version__, "python": platform.python_version(),
               "data": data.source, "n_train": n_train, "n_test": data.n_test,
               "epochs": args.epochs, "batch_size": args.batch_size, "workers": args.workers,
               "starter": {**a, "final_acc": acc_a}, "engine": {**b, "final_acc": acc_b},
               "ratio_a_over_b": ratio, "command": " ".join(sys.argv)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1))
        print(f"wrote {args.json}")
    return summary


if __name__ == "__main__":
    main()
