"""A CPU-sized check, on real CIFAR-10, that Lab 2 and Lab 3 behave as they should: what the
tests on synthetic data cannot show. The model is a briefly trained ResNet-20 and each
finetuning is one epoch on a subset, so the numbers are a sanity check, never results.

    python train_util.py pretrain --epochs 2 --out .dev/cpu_pretrained.pt    # ~6 min, 2 cores
    python benchmarks/real_data_check.py --checkpoint .dev/cpu_pretrained.pt --json .dev/check.json

Expected, and printed as PASS/FAIL: per-layer pruning leaves q zeros in every layer and costs
more accuracy as q grows; 6-bit weights cost little, 2-bit ones a lot; one epoch of masked
finetuning (faithful and improved recipes) recovers accuracy of the 80 %-pruned model and keeps
its zeros; one epoch of 2-bit quantization-aware finetuning recovers accuracy.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train_util as tu  # noqa: E402
from resnet20 import ResNetCIFAR  # noqa: E402


def loaded(checkpoint, nbits=None):
    return tu.load_checkpoint(ResNetCIFAR(num_layers=20, Nbits=nbits), checkpoint)


def accuracy(net, data):
    return tu.evaluate(tu.prepare_for_device(net, data.device), data)[0]


def pruning(checkpoint, data):
    rows = {"0": {"acc": accuracy(loaded(checkpoint), data), "min_zeros": 0.0, "max_zeros": 0.0}}
    for q in (40.0, 60.0, 80.0):  # percent, as the course starter
        net = loaded(checkpoint)
        tu.prune_layers_by_percentage(net, q)
        zeros = tu.layer_zeros(net).values()
        rows[f"{q:g}"] = {"acc": accuracy(net, data), "min_zeros": min(zeros), "max_zeros": max(zeros)}
    return rows


def quantization(checkpoint, data):
    return {str(n): accuracy(loaded(checkpoint, n), data) for n in (6, 5, 4, 3, 2)}


def finetuning(checkpoint, data, teacher):
    runs = {}
    for recipe_name, recipe in (("faithful", tu.FAITHFUL), ("improved", tu.IMPROVED)):
        net = loaded(checkpoint)
        masks = tu.prune_layers_by_percentage(net, 80.0)
        pruned = tu.fit(net, data, 1, recipe, masks=masks, teacher=teacher, desc=f"prune {recipe_name}")
        net2 = loaded(checkpoint, 2)
        quantized = tu.fit(net2, data, 1, recipe, teacher=teacher, desc=f"2-bit {recipe_name}")
        runs[recipe_name] = {"pruned_80_acc": pruned["final_acc"], "pruned_80_zeros": tu.sparsity(net),
                             "2bit_acc": quantized["final_acc"]}
    return runs


def checks(result):
    p, q, f = result["pruning"], result["quantization"], result["finetuning"]
    dense = p["0"]["acc"]
    yield "per-layer pruning leaves q zeros in every layer", all(
        abs(r["min_zeros"] - float(k)) < 0.5 and abs(r["max_zeros"] - float(k)) < 0.5  # k: percent
        for k, r in p.items())
    yield "accuracy falls as q grows", dense >= p["40"]["acc"] >= p["60"]["acc"] >= p["80"]["acc"]
    yield "6-bit within 2 points of float", abs(q["6"] - dense) <= 2.0
    yield "2-bit at least 10 points below float", q["2"] <= dense - 10
    for name, run in f.items():
        yield f"{name}: masked finetuning recovers and keeps 80 % zeros", (
            run["pruned_80_acc"] > p["80"]["acc"] and abs(run["pruned_80_zeros"] - 80) < 0.5)
        yield f"{name}: 2-bit finetuning recovers", run["2bit_acc"] > q["2"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--train-images", type=int, default=20000, help="finetuning subset")
    parser.add_argument("--json", default=None)
    parser.add_argument("--synthetic", action="store_true", help="smoke test of this script only")
    args = parser.parse_args()
    start = time.perf_counter()
    if args.synthetic:
        full = tu.synthetic_cifar(n_train=args.train_images, n_test=128)
    else:
        full = tu.load_cifar10(args.data_dir, download=False, device=tu.default_device())
    data = full.subset(args.train_images, full.n_test)
    teacher = tu.prepare_for_device(loaded(args.checkpoint), data.device).eval()
    result = {"data": data.describe(), "checkpoint": args.checkpoint,
              "checkpoint_sha256": tu.sha256(args.checkpoint),
              "pruning": pruning(args.checkpoint, data), "quantization": quantization(args.checkpoint, data),
              "finetuning": finetuning(args.checkpoint, data, teacher)}
    result["checks"] = dict(checks(result))
    result["wall_s"] = time.perf_counter() - start
    result["environment"] = tu.environment()
    print(json.dumps({k: result[k] for k in ("data", "pruning", "quantization", "finetuning")}, indent=1))
    for name, ok in result["checks"].items():
        print("PASS" if ok else "FAIL", name)
    if args.json:
        tu.save_json(result, args.json)
    sys.exit(0 if all(result["checks"].values()) else 1)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
