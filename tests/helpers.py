"""Small networks shared by the tests (imported as `helpers`: pytest puts tests/ on sys.path)."""
import torch

from resnet20 import ResNetCIFAR


def randomize_batch_norm(net):
    """Non-trivial batch-norm parameters and statistics (a fresh net has 1s and 0s), so that
    folding, exporting or rebuilding a network cannot pass by leaving batch norm out."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(7)
    return net


def random_resnet(num_layers=8, seed=0):
    """ResNet-`num_layers` with random weights and batch norm, in eval mode."""
    torch.manual_seed(seed)
    return randomize_batch_norm(ResNetCIFAR(num_layers=num_layers)).eval()


def execute_quick(notebook, results_name):
    """Execute `notebook` (a file name in the repository root) top to bottom in quick mode and
    return the JSON it wrote to report/quick/`results_name`, deleted first so that a file of
    an earlier run cannot pass for this run's output."""
    import json
    import os
    from pathlib import Path

    import nbformat
    from nbclient import NotebookClient

    root = Path(__file__).resolve().parents[1]
    os.environ.update(HW4_QUICK="1", MPLBACKEND="Agg")
    path = root / "report" / "quick" / results_name
    path.unlink(missing_ok=True)
    nb = nbformat.read(root / notebook, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(root)}}).execute()
    return json.loads(path.read_text())
