"""Is the 45k tuning base a faithful proxy for our pretrained model in 3-bit QAT?

The measurement behind tuning.py's stability check (see its docstring). It prints, for our
pretrained model and for tuning.py's base model:
  - the squared norm of the conv weights and the 3-bit accuracy without finetuning on
    train[45000:50000];
  - the training loss (the improved recipe's: cross-entropy and distillation from the float
    model, half each) of the 3-bit model before finetuning, on 11,520 training images
    without augmentation, then its mean over each of the first four 45-step epochs of QAT
    with the improved recipe (lr 0.05, cosine over 20 such epochs) on those images, for
    seeds 0 and 1, and the accuracy on train[45000:46000] after each.
Training images only, never test images. About 5 min on 2 cores. The output is committed
as report/qat_proxy_check.txt:

    .venv/bin/python scripts/qat_proxy_check.py --data-dir data > report/qat_proxy_check.txt
"""
import argparse
import copy
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import train_util as tu  # noqa: E402
import tuning  # noqa: E402

MODELS = {"ours": tuning.START, "base45k": tuning.BASE}
EPOCHS_SHOWN, STEPS_PER_EPOCH = 4, 45


class Stop(Exception):
    """Ends a 20-epoch run after EPOCHS_SHOWN epochs (its schedule stays the 20-epoch one)."""


def quantized(net):
    return tuning.quantized(net, 3)


@torch.no_grad()
def loss_before(net, data, recipe=tu.IMPROVED):
    """The recipe's training loss of `net` at 3 bits on data's training images, eval mode."""
    student, teacher = quantized(net).eval(), net.eval()
    x, y = tu.normalize(data.x_train), data.y_train
    return tu.training_loss(student(x), y, recipe, teacher(x)).item()


def first_epochs(net, data, seed, state):
    def stop(epoch, masks):
        if epoch > EPOCHS_SHOWN:
            raise Stop
    try:
        tu.fit(quantized(net), data, 20, tu.IMPROVED, teacher=tu.frozen(copy.deepcopy(net)), seed=seed,
               before_epoch=stop, progress=False, resume=state)
    except Stop:
        pass
    return torch.load(state, weights_only=True)["history"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    _, val = tu.load_cifar10(args.data_dir, download=False).split_validation(tuning.VAL_IMAGES)
    small = val.subset(STEPS_PER_EPOCH * tu.IMPROVED.batch_size, 1000)
    for name, path in MODELS.items():
        net = tuning.load(path)
        sq = sum(p.pow(2).sum().item() for p in net.parameters() if p.dim() == 4)
        seen = "seen in its training" if path == tuning.START else "held out of its training"
        print(f"{name}: conv weights' squared norm {sq:.1f}; 3-bit without finetuning "
              f"{tu.evaluate(quantized(net), val)[0]:.2f} % on train[45000:50000] ({seen}); "
              f"training loss before QAT {loss_before(net, small):.2f}")
        for seed in (0, 1):
            with tempfile.TemporaryDirectory() as tmp:
                h = first_epochs(net, small, seed, Path(tmp) / "state.pt")
            print(f"  seed {seed}: training loss per {STEPS_PER_EPOCH}-step epoch "
                  f"{[round(x, 2) for x in h['train_loss']]}, accuracy on train[45000:46000] {h['test_acc']}")


if __name__ == "__main__":
    main()
