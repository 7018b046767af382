"""ResNet (He et al. 2016, torchvision's "v1.5": the stride in the 3x3 conv), ResNeXt and Wide ResNet.

Layout and state-dict keys as torchvision's: stem ``conv1`` 7x7/2 (no bias) + ``bn1`` + ReLU +
3x3/2 max pool (pad 1); stages ``layer1..4`` of blocks ``layerS.i``; global average pool; ``fc``.

BasicBlock (ResNet-18/34):  conv1 3x3/s + bn1 + relu, conv2 3x3 + bn2, + identity, relu
Bottleneck (50/101/152):    conv1 1x1 (width) + bn1 + relu, conv2 3x3/s (groups) + bn2 + relu,
                            conv3 1x1 (4 planes) + bn3, + identity, relu
width = planes * width_per_group / 64 * groups (ResNeXt-50 32x4d: groups 32, width_per_group 4;
Wide ResNet-50-2: width_per_group 128). The identity is ``downsample`` (0: 1x1/s conv, 1: BN)
when the stride or the channel count changes.
"""
from .torchlayout import Builder, zoo_spec

DEPTHS = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet34": ("basic", (3, 4, 6, 3)),
          "resnet50": ("bottleneck", (3, 4, 6, 3)), "resnet101": ("bottleneck", (3, 4, 23, 3)),
          "resnet152": ("bottleneck", (3, 8, 36, 3))}
# arch -> (depth name, groups, width_per_group)
VARIANTS = {name: (name, 1, 64) for name in DEPTHS}
VARIANTS.update({"resnext50_32x4d": ("resnet50", 32, 4), "resnext101_32x8d": ("resnet101", 32, 8),
                 "wide_resnet50_2": ("resnet50", 1, 128), "wide_resnet101_2": ("resnet101", 1, 128)})


def resnet_builder(arch="resnet50", num_classes=1000, input_size=224, widths=(64, 128, 256, 512), stem=None,
                   groups=None, width_per_group=None, layers=None):
    """The Builder of ``arch`` (a VARIANTS name); ``widths`` (the stages' planes), ``stem``, ``layers``
    (blocks per stage), ``groups`` and ``width_per_group`` override it (tiny test versions)."""
    depth, g, wpg = VARIANTS[arch]
    kind, repeats = DEPTHS[depth]
    groups, width_per_group = groups or g, width_per_group or wpg
    repeats = layers or repeats
    expansion = 4 if kind == "bottleneck" else 1
    b = Builder(arch, input_size)
    stem = stem or widths[0]
    x = b.conv_bn("data", "conv1", "bn1", stem, 7, stride=2)
    x = b.pool(x, "maxpool", "max", 3, 2, pad=1)
    cin = stem
    for s, (planes, n) in enumerate(zip(widths, repeats)):
        for i in range(n):
            key = f"layer{s + 1}.{i}"
            stride = 2 if s > 0 and i == 0 else 1
            if kind == "basic":
                h = b.conv_bn(x, f"{key}.conv1", f"{key}.bn1", planes, 3, stride)
                h = b.conv_bn(h, f"{key}.conv2", f"{key}.bn2", planes, 3, act=None)
            else:
                width = int(planes * (width_per_group / 64.0)) * groups
                h = b.conv_bn(x, f"{key}.conv1", f"{key}.bn1", width, 1)
                h = b.conv_bn(h, f"{key}.conv2", f"{key}.bn2", width, 3, stride, group=groups)
                h = b.conv_bn(h, f"{key}.conv3", f"{key}.bn3", planes * expansion, 1, act=None)
            short = x
            if stride != 1 or cin != planes * expansion:
                short = b.conv_bn(x, f"{key}.downsample.0", f"{key}.downsample.1", planes * expansion, 1, stride,
                                  act=None, pad=0)
            x = b.act(b.sum(h, short, f"{key.replace('.', '_')}_add"), "relu")
            cin = planes * expansion
    b.logits = b.fc(b.global_pool(x), "fc", num_classes)
    return b


BUILDERS = {arch: (lambda arch=arch, **kw: resnet_builder(arch, **kw)) for arch in VARIANTS}
ZOO = {arch: zoo_spec(arch, BUILDERS[arch]) for arch in VARIANTS}
CLASSIFIERS = {arch: "fc" for arch in VARIANTS}
