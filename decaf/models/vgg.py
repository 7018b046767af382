"""VGG (Simonyan & Zisserman 2015) and AlexNet (Krizhevsky et al. 2012), torchvision's layouts.

VGG: ``features`` a Sequential of 3x3 convs (pad 1, bias) [+ BatchNorm] + ReLU and 2x2/2 max
pools ("M"), AdaptiveAvgPool2d(7), ``classifier`` Linear(512*49, 4096) ReLU Dropout Linear(4096,
4096) ReLU Dropout Linear(4096, classes) (indices 0, 3, 6). AlexNet: ``features`` conv 11x11/4
pad 2 (64), max 3/2, conv 5x5 pad 2 (192), max 3/2, convs 3x3 384, 256, 256, max 3/2,
AdaptiveAvgPool2d(6), ``classifier`` Dropout Linear(9216, 4096) ReLU Dropout Linear ReLU
Linear(4096, classes) (indices 1, 4, 6). Pools round down (PyTorch's default). The adaptive
pool is an average pooling when the feature map is a multiple of its output (7x7 at 224: nothing).
"""
from .torchlayout import Builder, adaptive_size, zoo_spec

CFGS = {"vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
        "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
        "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
        "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512,
                  "M"]}
VGG_ARCHS = [n for c in CFGS for n in (c, c + "_bn")]


def _adaptive(b, x, size, out, what):
    k = adaptive_size(size, out, what)
    return x if k == 1 else b.pool(x, "avgpool", "ave", k, k)


def _head(b, x, hidden, num_classes, keys, dropout=0.5, dropout_first=False):
    """Linear-ReLU-Dropout twice then the last Linear (AlexNet: Dropout before each of the first two)."""
    for i, key in enumerate(keys[:2]):
        if dropout_first:
            x = b.dropout(x, f"classifier_drop{i}", dropout)
        x = b.act(b.fc(x, key, hidden), "relu")
        if not dropout_first:
            x = b.dropout(x, f"classifier_drop{i}", dropout)
    return b.fc(x, keys[2], num_classes)


def vgg_builder(arch="vgg16", num_classes=1000, input_size=224, width=1.0, hidden=4096, dropout=0.5):
    """torchvision's VGG ``arch`` (e.g. vgg16_bn); ``width`` scales the conv channels, ``hidden`` the fc."""
    bn = arch.endswith("_bn")
    b = Builder(arch, input_size)
    x, i, size, c = "data", 0, int(input_size), 3
    for v in CFGS[arch.replace("_bn", "")]:
        if v == "M":
            x = b.pool(x, f"features_{i}", "max", 2, 2)
            size, i = size // 2, i + 1
            continue
        c = max(1, int(v * width))
        x = b.conv(x, f"features.{i}", c, 3, pad=1, bias=True)
        if bn:
            x = b.bn(x, f"features.{i + 1}")
        x = b.act(x, "relu")
        i += 3 if bn else 2
    x = _adaptive(b, x, size, 7, arch)
    b.logits = _head(b, x, hidden, num_classes, ["classifier.0", "classifier.3", "classifier.6"], dropout)
    return b


def alexnet_builder(num_classes=1000, input_size=224, width=1.0, hidden=4096, dropout=0.5):
    b = Builder("torchvision_alexnet", input_size)
    w = [max(1, int(c * width)) for c in (64, 192, 384, 256, 256)]
    x = b.act(b.conv("data", "features.0", w[0], 11, 4, pad=2, bias=True), "relu")
    x = b.pool(x, "features_2", "max", 3, 2)
    x = b.act(b.conv(x, "features.3", w[1], 5, pad=2, bias=True), "relu")
    x = b.pool(x, "features_5", "max", 3, 2)
    x = b.act(b.conv(x, "features.6", w[2], 3, pad=1, bias=True), "relu")
    x = b.act(b.conv(x, "features.8", w[3], 3, pad=1, bias=True), "relu")
    x = b.act(b.conv(x, "features.10", w[4], 3, pad=1, bias=True), "relu")
    x = b.pool(x, "features_12", "max", 3, 2)
    size = int(input_size)
    size = (size + 4 - 11) // 4 + 1
    for _ in range(3):      # (the 3x3/2 pools; the 5x5 and 3x3 convs keep the size)
        size = (size - 3) // 2 + 1
    x = _adaptive(b, x, size, 6, "alexnet")
    b.logits = _head(b, x, hidden, num_classes, ["classifier.1", "classifier.4", "classifier.6"], dropout,
                     dropout_first=True)
    return b


BUILDERS = {arch: (lambda arch=arch, **kw: vgg_builder(arch, **kw)) for arch in VGG_ARCHS}
BUILDERS["alexnet"] = alexnet_builder
ZOO = {arch: zoo_spec(arch, BUILDERS[arch]) for arch in VGG_ARCHS}
ZOO["torchvision_alexnet"] = zoo_spec("torchvision_alexnet", alexnet_builder)
CLASSIFIERS = {arch: "classifier.6" for arch in BUILDERS}
