"""Tuning the improved recipe of one hw4 stage on a validation split, never on test images.

The improved recipe (engine.IMPROVED) is the same for every hw4 stage. Where it misses the
team's target, the issue's rule is: compare candidate recipes on a validation split carved
from the training images (the last 5,000), keep the best, and retrain on all 50k (hw4.ipynb
does that: the stage's key holds its recipe). This module runs that comparison for the
global iterative pruning of Lab 2 (e) and writes the decision with its evidence:

    .venv/bin/python tuning.py --data-dir data        # resumes per epoch

Our pretrained model trained on all 50k images and scores 99.9 % on the last 5,000: a
validation split it has memorised would favour whichever candidate moves least from it.
So the comparison starts from a base model pretrained like ours on the first 45,000 images
only (half the epochs, to save CPU time: the question is the finetuning recipe), which is
also the candidates' distillation teacher. Each candidate then trains as hw4.ipynb's stage
does (same pruning schedule, epochs, seed) on the same 45,000 images and is scored on the
held-out 5,000 by its final-epoch accuracy (what Lab 2 (e) asks for).
"""
from __future__ import annotations

import argparse
import copy
import json
from dataclasses import asdict, replace
from pathlib import Path

import torch

import train_util as tu
from resnet20 import ResNetCIFAR

BASE = Path("checkpoints/tuning/pretrained_45k.pt")
BASE_EPOCHS = 100
VAL_IMAGES = 5000
# Lab 2 (e) with IMPROVED lost 20 points in its first epoch (lr 0.05 on a pretrained model
# whose weights are only 8 % pruned) and ended below the per-layer run (d): a lower peak lr
# is the one knob compared, against the recipe as it is.
LAB2E_CANDIDATES = {f"lr{lr:g}": replace(tu.IMPROVED, lr=lr) for lr in (0.05, 0.01)}


def frozen(net):
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def load(path):
    net = ResNetCIFAR(num_layers=20)
    tu.load_checkpoint(net, path)
    return net


def base_model(train, val, path=BASE, epochs=BASE_EPOCHS, seed=0):
    """The pretrained model of the comparison, trained (once; resumes per epoch) on `train`
    only, with our pretraining recipe; its record is saved next to it."""
    path = Path(path)
    log = path.with_suffix(".json")
    if not (path.is_file() and log.is_file()):
        torch.manual_seed(seed)
        net = ResNetCIFAR(num_layers=20)
        resume = tu.resume_path_of(path)
        record = tu.fit(net, val, epochs, tu.PRETRAIN, seed=seed, desc="pretrain (45k)", resume=resume)
        tu.save_checkpoint(net, path)
        tu.save_json({"recipe": asdict(tu.PRETRAIN), "epochs": epochs, "seed": seed,
                      "train_images": len(train.y_train), "validation": val.test_label,
                      "record": record, "sha256": tu.sha256(path)}, log)
        resume.unlink(missing_ok=True)
    return load(path)


def global_iterative(recipe, data, base, resume, epochs=20, prune_epochs=10):
    """Lab 2 (e) as hw4.ipynb runs it, from `base` (also the teacher): global pruning to
    80 % over `prune_epochs` epochs."""
    net, teacher = copy.deepcopy(base), frozen(copy.deepcopy(base))
    return tu.iterative_prune(net, 80.0, prune_epochs, epochs, use_global=True, data=data,
                              recipe=recipe, teacher=teacher, resume=resume)


def choose(scores):
    """The candidate with the highest validation accuracy (ties: the first listed)."""
    return max(scores, key=lambda name: (scores[name], -list(scores).index(name)))


def tune(data, candidates, out_dir, train_fn=global_iterative, val_images=VAL_IMAGES,
         base_epochs=BASE_EPOCHS, **train_kwargs):
    """Train every candidate on data's training images minus the last `val_images` from a
    base model pretrained on those same images, score it on the held-out ones, and return
    {"chosen", "scores", "runs", ...}. Finished candidates reload from out_dir/<name>.json;
    an interrupted one (or the base) resumes from its per-epoch state."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train, val = data.split_validation(val_images)
    base = base_model(train, val, out_dir / BASE.name, base_epochs)
    base_sha = tu.sha256(out_dir / BASE.name)
    runs = {}
    for name, recipe in candidates.items():
        done = out_dir / f"{name}.json"
        inputs = {"recipe": asdict(recipe), "base_sha256": base_sha}
        if done.is_file() and all(json.loads(done.read_text()).get(k) == v for k, v in inputs.items()):
            runs[name] = json.loads(done.read_text())
            continue
        resume = out_dir / f"{name}.resume.pt"
        record = train_fn(recipe, val, base, resume, **train_kwargs)
        runs[name] = {**inputs, "record": record}
        tu.save_json(runs[name], done)
        resume.unlink(missing_ok=True)
    scores = {name: r["record"]["final_acc"] for name, r in runs.items()}
    base_log = json.loads((out_dir / BASE.name).with_suffix(".json").read_text())
    return {"chosen": choose(scores), "scores": scores, "score": "final-epoch accuracy",
            "train_images": len(train.y_train), "validation": val.test_label,
            "base": {"epochs": base_log["epochs"], "sha256": base_log["sha256"],
                     "final_acc": base_log["record"]["final_acc"]},
            "runs": runs}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 folder (default: $HW4_DATA_DIR or data)")
    parser.add_argument("--out", default="report/tuning.json")
    parser.add_argument("--runs", default="checkpoints/tuning", help="per-candidate records and resume state")
    args = parser.parse_args(argv)
    data = tu.load_cifar10(args.data_dir, download=False)
    result = tune(data, LAB2E_CANDIDATES, args.runs)
    result = {"lab2e_improved": result}
    tu.save_json(result, args.out)
    scores = result["lab2e_improved"]["scores"]
    print(f"Lab 2 (e) improved, final accuracy on {result['lab2e_improved']['validation']}: "
          + ", ".join(f"{k} {v:.2f}" for k, v in scores.items())
          + f" -> {result['lab2e_improved']['chosen']}")


if __name__ == "__main__":
    main()
