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


def _cfg(name, divide):
    from decaf.models.vgg import CFGS
    return [v if v == "M" else v // divide for v in CFGS[name]]


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
    "vgg11": ("vgg11:width=0.125,hidden=32", lambda: tf.VGG(_cfg("vgg11", 8), False, CLASSES, 32), 224,
              "features.0.weight"),
    "vgg16_bn": ("vgg16_bn:width=0.0625,hidden=16", lambda: tf.VGG(_cfg("vgg16", 16), True, CLASSES, 16), 224,
                 "features.0.weight"),
    "alexnet": ("alexnet:width=0.125,hidden=32", lambda: tf.AlexNet(CLASSES, (8, 24, 48, 32, 32), 32), 224,
                "features.0.weight"),
    "squeezenet1_0": ("squeezenet1_0:width=0.125", lambda: tf.SqueezeNet("1_0", CLASSES, 8), 64, "features.0.weight"),
    "squeezenet1_1": ("squeezenet1_1:width=0.125", lambda: tf.SqueezeNet("1_1", CLASSES, 8), 64, "features.0.weight"),
    "densenet121": ("densenet121:growth=4,blocks=(2,2,2,2),init=8", lambda: tf.DenseNet(4, (2, 2, 2, 2), 8, 4, CLASSES),
                    64, "features.conv0.weight"),
    "mobilenet_v2": ("mobilenet_v2:width_mult=0.25", lambda: tf.MobileNetV2(CLASSES, 0.25), 64, "features.0.0.weight"),
    "mobilenet_v3_large": ("mobilenet_v3_large:width_mult=0.25", lambda: tf.MobileNetV3(True, CLASSES, 0.25), 64,
                           "features.0.0.weight"),
    "mobilenet_v3_small": ("mobilenet_v3_small:width_mult=0.25", lambda: tf.MobileNetV3(False, CLASSES, 0.25), 64,
                           "features.0.0.weight"),
    "shufflenet_v2_x1_0": ("shufflenet_v2_x1_0:channels=(8,16,32,64,64),repeats=(2,3,2)",
                           lambda: tf.ShuffleNetV2((2, 3, 2), (8, 16, 32, 64, 64), CLASSES), 64, "conv1.0.weight"),
    "mnasnet1_0": ("mnasnet1_0:alpha=0.25", lambda: tf.MNASNet(0.25, CLASSES), 64, "layers.0.weight"),
    "efficientnet_b0": ("efficientnet_b0:width=0.25,depth=0.5", lambda: tf.EfficientNet(0.25, 0.5, CLASSES), 64,
                        "features.0.0.weight"),
    "regnet_x_400mf": ("regnet_x_400mf:stages=((8,1,8),(16,2,8),(24,2,8),(32,1,8)),stem=8",
                       lambda: tf.RegNet(((8, 1, 8), (16, 2, 8), (24, 2, 8), (32, 1, 8)), None, 8, CLASSES), 64,
                       "stem.0.weight"),
    "regnet_y_400mf": ("regnet_y_400mf:stages=((8,1,8),(16,2,8),(24,2,8),(32,1,8)),stem=8",
                       lambda: tf.RegNet(((8, 1, 8), (16, 2, 8), (24, 2, 8), (32, 1, 8)), 0.25, 8, CLASSES), 64,
                       "stem.0.weight"),
    "convnext_tiny": ("convnext_tiny:dims=(8,16,24,32),depths=(1,1,2,1)",
                      lambda: tf.ConvNeXt((8, 16, 24, 32), (1, 1, 2, 1), CLASSES), 64, "features.0.0.weight"),
}


def _tame(model, classifier, size):
    """Scale the classifier so the largest logit is about 8: the cross-entropy stays away from decaf's
    (Caffe's) clamp of the probability at FLT_MIN, so the losses compare."""
    with torch.no_grad():
        top = model(torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(5))).abs().max()
        params = dict(model.named_parameters())
        params[classifier + ".weight"].mul_(8 / top)
        params[classifier + ".bias"].mul_(8 / top)
    return model


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
    """d(mean cross-entropy)/d(first conv weight), decaf vs autograd, both in eval mode and float64
    (in float32 the two forwards differ by rounding, which flips a few ReLU6 / max-pool decisions
    in a random deep net and moves the gradient by a few per cent)."""
    labels = np.arange(len(x)) % CLASSES
    model = model.double()
    model.zero_grad()
    logits = model(torch.from_numpy(x).double())
    loss = F.cross_entropy(logits, torch.from_numpy(labels))
    loss.backward()
    want = dict(model.named_parameters())[first_conv].grad.numpy()
    train = Net(training_spec(net.spec), phase="test", init=False)
    train.load_params(net.param_arrays())
    train.astype(np.float64)
    train.forward(data=x.astype(np.float64), label=labels.astype(np.float64))
    assert abs(train.loss() - loss.item()) <= 1e-6 * max(1.0, logits.abs().max().item())
    train.backward()
    got = train.params[first_conv.rsplit(".", 1)[0].replace(".", "_") + ".weight"].diff
    assert np.abs(got - want).max() <= 1e-6 * np.abs(want).max()


@pytest.mark.parametrize("case", sorted(CASES))
def test_family_converts_exactly(tmp_path, case):
    arch, make, size, first_conv = CASES[case]
    model = _tame(tf.randomize(make()), TORCH_FAMILIES[arch.partition(":")[0]][1], size)
    net = _convert(tmp_path, model, f"{arch}{',' if ':' in arch else ':'}input_size={size}")
    assert net.meta["preprocess"]["crop"] == size
    x = _check_logits(net, model, size)
    _check_gradient(net, model, x, first_conv)
