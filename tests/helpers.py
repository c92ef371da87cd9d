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
