"""DenseNet (Huang et al. 2017), torchvision's layout.

``features``: ``conv0`` 7x7/2 (no bias) + ``norm0`` + ReLU + 3x3/2 max pool (pad 1); dense blocks
``denseblockB`` of layers ``denselayerL`` (from 1): ``norm1`` ReLU ``conv1`` 1x1 (bn_size *
growth) ``norm2`` ReLU ``conv2`` 3x3 (growth), each layer reading the concatenation of the block
input and every earlier layer's output; between blocks ``transitionB``: ``norm`` ReLU ``conv`` 1x1
(half the channels) and a 2x2/2 average pool; ``norm5``, ReLU, global average pool, ``classifier``.
"""
from .torchlayout import Builder, zoo_spec

CONFIGS = {"densenet121": (32, (6, 12, 24, 16), 64), "densenet161": (48, (6, 12, 36, 24), 96),
           "densenet169": (32, (6, 12, 32, 32), 64), "densenet201": (32, (6, 12, 48, 32), 64)}


def densenet_builder(arch="densenet121", num_classes=1000, input_size=224, growth=None, blocks=None, init=None,
                     bn_size=4):
    g0, blocks0, init0 = CONFIGS[arch]
    growth, blocks, init = growth or g0, blocks or blocks0, init or init0
    b = Builder(arch, input_size)
    x = b.conv_bn("data", "features.conv0", "features.norm0", init, 7, 2)
    x = b.pool(x, "features_pool0", "max", 3, 2, pad=1)
    c = init
    for i, n in enumerate(blocks):
        feats = [x]
        for j in range(n):
            key = f"features.denseblock{i + 1}.denselayer{j + 1}"
            h = feats[0] if len(feats) == 1 else b.concat(feats, f"{key.replace('.', '_')}_in")
            h = b.act(b.bn(h, f"{key}.norm1"), "relu")
            h = b.conv_bn(h, f"{key}.conv1", f"{key}.norm2", bn_size * growth, 1)
            feats.append(b.conv(h, f"{key}.conv2", growth, 3))
        x = b.concat(feats, f"features_denseblock{i + 1}")
        c += n * growth
        if i != len(blocks) - 1:
            key = f"features.transition{i + 1}"
            h = b.act(b.bn(x, f"{key}.norm"), "relu")
            c //= 2
            x = b.pool(b.conv(h, f"{key}.conv", c, 1), f"features_transition{i + 1}_pool", "ave", 2, 2)
    x = b.act(b.bn(x, "features.norm5"), "relu")
    b.logits = b.fc(b.global_pool(x), "classifier", num_classes)
    return b


BUILDERS = {arch: (lambda arch=arch, **kw: densenet_builder(arch, **kw)) for arch in CONFIGS}
ZOO = {arch: zoo_spec(arch, BUILDERS[arch]) for arch in CONFIGS}
CLASSIFIERS = {arch: "classifier" for arch in CONFIGS}
