"""ShuffleNetV2 (Ma et al. 2018), torchvision's layout.

``conv1``: 3x3/2 conv (24) + BN + ReLU (keys .0, .1), 3x3/2 max pool (pad 1); stages ``stage2..4``
of blocks ``stageS.i``; ``conv5`` 1x1 + BN + ReLU; the mean over H, W; ``fc``.
A block with stride 2: ``branch1`` (0 depthwise 3x3/2, 1 BN, 2 1x1, 3 BN, ReLU) on the input and
``branch2`` (0 1x1, 1 BN, ReLU, 3 depthwise 3x3/s, 4 BN, 5 1x1, 6 BN, ReLU) on the input,
concatenated; with stride 1: the input's channels are split in halves, the first kept and the
second through ``branch2``. Then a channel shuffle with 2 groups: (N, 2, C/2, H, W) transposed to
(N, C/2, 2, H, W), back to (N, C, H, W).
"""
from .torchlayout import Builder, zoo_spec

VARIANTS = {"shufflenet_v2_x0_5": [24, 48, 96, 192, 1024], "shufflenet_v2_x1_0": [24, 116, 232, 464, 1024],
            "shufflenet_v2_x1_5": [24, 176, 352, 704, 1024], "shufflenet_v2_x2_0": [24, 244, 488, 976, 2048]}
REPEATS = (4, 8, 4)


def shufflenet_v2_builder(arch="shufflenet_v2_x1_0", num_classes=1000, input_size=224, channels=None,
                          repeats=REPEATS):
    widths = list(channels or VARIANTS[arch])
    b = Builder(arch, input_size)
    x = b.seq_conv_bn("data", "conv1", widths[0], 3, 2)
    x = b.pool(x, "maxpool", "max", 3, 2, pad=1)
    cin = widths[0]
    size = (int(input_size) - 1) // 2 + 1
    size = (size - 1) // 2 + 1         # (after conv1 and the max pool: 3x3/2, pad 1)
    for s, (n, cout) in enumerate(zip(repeats, widths[1:4])):
        half = cout // 2
        for i in range(n):
            key, name = f"stage{s + 2}.{i}", f"stage{s + 2}_{i}"
            if i == 0:
                left = b.seq_conv_bn(x, f"{key}.branch1", cin, 3, 2, group=cin, act=None)
                left = b.conv_bn(left, f"{key}.branch1.2", f"{key}.branch1.3", half, 1)
                right, stride = x, 2
                size = (size - 1) // 2 + 1
            else:
                left = b.add({"name": f"{name}_x1", "type": "Slice", "bottom": x, "top": f"{name}_x1", "axes": [1],
                              "starts": [0], "ends": [half]})
                right = b.add({"name": f"{name}_x2", "type": "Slice", "bottom": x, "top": f"{name}_x2",
                               "axes": [1], "starts": [half], "ends": [cout]})
                stride = 1
            right = b.conv_bn(right, f"{key}.branch2.0", f"{key}.branch2.1", half, 1)
            right = b.conv_bn(right, f"{key}.branch2.3", f"{key}.branch2.4", half, 3, stride, group=half, act=None)
            right = b.conv_bn(right, f"{key}.branch2.5", f"{key}.branch2.6", half, 1)
            x = _shuffle(b, b.concat([left, right], f"{name}_cat"), name, cout, size)
            cin = cout
    x = b.seq_conv_bn(x, "conv5", widths[4], 1)
    b.logits = b.fc(b.global_pool(x, "mean"), "fc", num_classes)
    return b


def _shuffle(b, x, name, c, size):
    """channel_shuffle(x, 2) on (N, c, size, size)."""
    x = b.add({"name": f"{name}_split", "type": "Reshape", "bottom": x, "top": f"{name}_split",
               "shape": [2, c // 2, size, size]})
    x = b.add({"name": f"{name}_transpose", "type": "Transpose", "bottom": x, "top": f"{name}_transpose",
               "perm": [0, 2, 1, 3, 4]})
    return b.add({"name": f"{name}_shuffle", "type": "Reshape", "bottom": x, "top": f"{name}_shuffle",
                  "shape": [c, size, size]})


BUILDERS = {arch: (lambda arch=arch, **kw: shufflenet_v2_builder(arch, **kw)) for arch in VARIANTS}
ZOO = {arch: zoo_spec(arch, BUILDERS[arch]) for arch in VARIANTS}
CLASSIFIERS = {arch: "fc" for arch in VARIANTS}
