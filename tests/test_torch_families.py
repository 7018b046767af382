"""decaf convert model.pth --arch NAME for torchvision's ImageNet families: each family is defined in
plain PyTorch with torchvision's module names (tests/torch_families.py), built small (few channels,
low resolution: the structure is the point), given random weights and BatchNorm statistics, saved
with torch.save and converted by the CLI. The logits must match PyTorch's (to 1e-4 of the largest,
top-5 identical), and the gradient of the cross-entropy with respect to the first convolution must
match autograd's (eval mode: BatchNorm with its running statistics, no dropout), which is what
fine-tuning the converted net runs on. The full-size variants are in the slow run."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import decaf  # noqa: E402
from decaf.cli import main  # noqa: E402
from decaf.io.errors import DecafFormatError  # noqa: E402
from decaf.models import TORCH_FAMILIES  # noqa: E402
from decaf.net import Net  # noqa: E402
from decaf.train import finetune_net, training_spec  # noqa: E402

import torch_families as tf  # noqa: E402

CLASSES = 10
# id -> (arch with builder options, the reference module's constructor, input size, first conv's key)
CASES = {
    "resnet18": ("resnet18:widths=(8,16,16,32)", lambda: tf.ResNet(tf.BasicBlock, [2, 2, 2, 2], CLASSES,
                                                                     (8, 16, 16, 32)), 64, "conv1.weight"),
    "resnet50": ("resnet50:widths=(4,8,8,16),layers=(1,2,1,1)",
                 lambda: tf.ResNet(tf.Bottleneck, [1, 2, 1, 1], CLASSES, (4, 8, 8, 16)), 64, "conv1.weight"),
    "resnext50_32x4d": ("resnext50_32x4d:widths=(16,16,32,32),layers=(1,1,1,1),groups=4",
                        lambda: tf.ResNet(tf.Bottleneck, [1, 1, 1, 1], CLASSES, (16, 16, 32, 32), groups=4,
                                          width_per_group=4), 64, "conv1.weight"),
    "wide_resnet50_2": ("wide_resnet50_2:widths=(4,8,8,8),layers=(1,1,1,1)",
                        lambda: tf.ResNet(tf.Bottleneck, [1, 1, 1, 1], CLASSES, (4, 8, 8, 8), width_per_group=128),
                        64, "conv1.weight"),
}


def _convert(tmp_path, model, arch, save=None):
    pth, out = tmp_path / "model.pth", tmp_path / "model.decaf"
    torch.save(save(model) if save else model.state_dict(), pth)
    assert main(["convert", str(pth), "--arch", arch, "-o", str(out)]) == 0
    return decaf.load(out)


def _logits_blob(net):
    return next(layer for layer in net.spec["layers"] if layer["name"] == "prob")["bottom"]


def _check_logits(net, model, size, batch=2, seed=1):
    x = np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    blob = _logits_blob(net)
    got = net.forward(outputs=[blob], data=x)[blob].reshape(want.shape)
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 1e-4 * scale, np.abs(got - want).max() / scale
    k = min(5, want.shape[1])
    assert (np.argsort(-got, 1)[:, :k] == np.argsort(-want, 1)[:, :k]).all()
    return x


def _check_gradient(net, model, x, first_conv):
    """d(mean cross-entropy)/d(first conv weight), decaf vs autograd, both in eval mode."""
    labels = np.arange(len(x)) % CLASSES
    model.zero_grad()
    logits = model(torch.from_numpy(x))
    loss = F.cross_entropy(logits, torch.from_numpy(labels))
    loss.backward()
    want = dict(model.named_parameters())[first_conv].grad.numpy()
    train = Net(training_spec(net.spec), phase="test", init=False)
    train.load_params(net.param_arrays())
    train.forward(data=x, label=labels.astype(np.float32))
    assert abs(train.loss() - loss.item()) <= 1e-4 * max(1.0, logits.abs().max().item())
    train.backward()
    got = train.params[first_conv.rsplit(".", 1)[0].replace(".", "_") + ".weight"].diff
    assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max() + 1e-6


@pytest.mark.parametrize("case", sorted(CASES))
def test_family_converts_exactly(tmp_path, case):
    arch, make, size, first_conv = CASES[case]
    model = tf.randomize(make())
    net = _convert(tmp_path, model, f"{arch}{',' if ':' in arch else ':'}input_size={size}")
    assert net.meta["preprocess"]["crop"] == size
    x = _check_logits(net, model, size)
    _check_gradient(net, model, x, first_conv)
