"""SqueezeNet 1.0 and 1.1 (Iandola et al. 2016), torchvision's layout.

``features``: a stem conv (1.0: 7x7/2, 96; 1.1: 3x3/2, 64) + ReLU, max pools 3/2 rounding up
(ceil mode), and Fire modules ``features.i``: ``squeeze`` 1x1 + ReLU, then ``expand1x1`` 1x1 and
``expand3x3`` 3x3 (pad 1), each + ReLU, concatenated. ``classifier``: Dropout(0.5), a 1x1 conv
``classifier.1`` to the classes (the classifier layer), ReLU, global average pool.
"""
from .torchlayout import Builder, zoo_spec

# index in features -> "M" (max pool) or a Fire's (squeeze, expand1x1, expand3x3)
FIRES = {"squeezenet1_0": [("conv", 96, 7), "M", (16, 64, 64), (16, 64, 64), (32, 128, 128), "M", (32, 128, 128),
                           (48, 192, 192), (48, 192, 192), (64, 256, 256), "M", (64, 256, 256)],
         "squeezenet1_1": [("conv", 64, 3), "M", (16, 64, 64), (16, 64, 64), "M", (32, 128, 128), (32, 128, 128),
                           "M", (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256)]}


def squeezenet_builder(arch="squeezenet1_0", num_classes=1000, input_size=224, width=1.0, dropout=0.5):
    b = Builder(arch, input_size)
    scale = lambda c: max(1, int(c * width))        # noqa: E731
    x, i = "data", 0
    for item in FIRES[arch]:
        if item == "M":
            x = b.pool(x, f"features_{i}", "max", 3, 2, ceil=True)
        elif item[0] == "conv":
            x = b.act(b.conv(x, "features.0", scale(item[1]), item[2], 2, pad=0, bias=True), "relu")
            i += 1      # (the ReLU's index)
        else:
            key = f"features.{i}"
            s = b.act(b.conv(x, f"{key}.squeeze", scale(item[0]), 1, bias=True), "relu")
            e1 = b.act(b.conv(s, f"{key}.expand1x1", scale(item[1]), 1, bias=True), "relu")
            e3 = b.act(b.conv(s, f"{key}.expand3x3", scale(item[2]), 3, bias=True), "relu")
            x = b.concat([e1, e3], f"features_{i}")
        i += 1
    x = b.dropout(x, "classifier_0", dropout)
    x = b.act(b.conv(x, "classifier.1", num_classes, 1, bias=True), "relu")
    b.logits = b.flatten(b.global_pool(x, "classifier_3"), "logits")
    return b


BUILDERS = {arch: (lambda arch=arch, **kw: squeezenet_builder(arch, **kw)) for arch in FIRES}
ZOO = {arch: zoo_spec(arch, BUILDERS[arch]) for arch in FIRES}
CLASSIFIERS = {arch: "classifier.1" for arch in FIRES}
