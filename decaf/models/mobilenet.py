"""MobileNetV2 (Sandler et al. 2018) and MobileNetV3 small/large (Howard et al. 2019), torchvision's layouts.

V2: ``features.0`` conv 3x3/2 + BN + ReLU6 (keys .0, .1); inverted residuals ``features.i.conv``:
[expand 1x1 + BN + ReLU6 (conv.0)] depthwise 3x3/s + BN + ReLU6, project 1x1 (conv.N) + BN (conv.N+1),
plus the input when stride 1 and in == out; ``features.18`` 1x1 to 1280 + BN + ReLU6; global average
pool; ``classifier`` Dropout(0.2), Linear (``classifier.1``). Channels: c * width_mult rounded by
make_divisible (multiples of 8).
V3: stem 3x3/2 + BN + Hardswish; blocks ``features.i.block``: [expand 1x1 (block.0)], depthwise kxk/s,
[squeeze-excitation: pool, fc1 1x1, ReLU, fc2 1x1, Hardsigmoid, times x], project 1x1 (no
activation), each a conv + BN (eps 1e-3) numbered in order; ReLU or Hardswish per block; last
1x1 conv to 6x channels + Hardswish; pool; ``classifier`` Linear (0) Hardswish Dropout Linear (3).
"""
from .torchlayout import Builder, make_divisible, zoo_spec

V2_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1)]      # expand t, out c, repeats n, stride s
# (in, kernel, expanded, out, squeeze-excitation, activation, stride)
V3_LARGE = [(16, 3, 16, 16, False, "relu", 1), (16, 3, 64, 24, False, "relu", 2), (24, 3, 72, 24, False, "relu", 1),
            (24, 5, 72, 40, True, "relu", 2), (40, 5, 120, 40, True, "relu", 1), (40, 5, 120, 40, True, "relu", 1),
            (40, 3, 240, 80, False, "hardswish", 2), (80, 3, 200, 80, False, "hardswish", 1),
            (80, 3, 184, 80, False, "hardswish", 1), (80, 3, 184, 80, False, "hardswish", 1),
            (80, 3, 480, 112, True, "hardswish", 1), (112, 3, 672, 112, True, "hardswish", 1),
            (112, 5, 672, 160, True, "hardswish", 2), (160, 5, 960, 160, True, "hardswish", 1),
            (160, 5, 960, 160, True, "hardswish", 1)]
V3_SMALL = [(16, 3, 16, 16, True, "relu", 2), (16, 3, 72, 24, False, "relu", 2), (24, 3, 88, 24, False, "relu", 1),
            (24, 5, 96, 40, True, "hardswish", 2), (40, 5, 240, 40, True, "hardswish", 1),
            (40, 5, 240, 40, True, "hardswish", 1), (40, 5, 120, 48, True, "hardswish", 1),
            (48, 5, 144, 48, True, "hardswish", 1), (48, 5, 288, 96, True, "hardswish", 2),
            (96, 5, 576, 96, True, "hardswish", 1), (96, 5, 576, 96, True, "hardswish", 1)]
V3 = {"mobilenet_v3_large": (V3_LARGE, 1280), "mobilenet_v3_small": (V3_SMALL, 1024)}


def mobilenet_v2_builder(num_classes=1000, input_size=224, width_mult=1.0, dropout=0.2):
    b = Builder("mobilenet_v2", input_size)
    cin = make_divisible(32 * width_mult)
    last = make_divisible(1280 * max(1.0, width_mult))
    x = b.seq_conv_bn("data", "features.0", cin, 3, 2, act="relu6")
    i = 1
    for t, c, n, s in V2_SETTINGS:
        cout = make_divisible(c * width_mult)
        for r in range(n):
            stride, key, j = s if r == 0 else 1, f"features.{i}.conv", 0
            hidden = int(round(cin * t))
            h = x
            if t != 1:
                h, j = b.seq_conv_bn(h, f"{key}.0", hidden, 1, act="relu6"), 1
            h = b.seq_conv_bn(h, f"{key}.{j}", hidden, 3, stride, group=hidden, act="relu6")
            h = b.conv_bn(h, f"{key}.{j + 1}", f"{key}.{j + 2}", cout, 1, act=None)
            x = b.sum(x, h, f"features_{i}") if stride == 1 and cin == cout else h
            cin, i = cout, i + 1
    x = b.seq_conv_bn(x, f"features.{i}", last, 1, act="relu6")
    x = b.dropout(b.global_pool(x), "classifier_0", dropout)
    b.logits = b.fc(x, "classifier.1", num_classes)
    return b


def mobilenet_v3_builder(arch="mobilenet_v3_large", num_classes=1000, input_size=224, width_mult=1.0, dropout=0.2):
    settings, last = V3[arch]
    adjust = lambda c: make_divisible(c * width_mult)       # noqa: E731
    b = Builder(arch, input_size)
    eps = 1e-3
    x = b.seq_conv_bn("data", "features.0", adjust(16), 3, 2, act="hardswish", eps=eps)
    for i, (cin, k, exp, cout, se, act, stride) in enumerate(settings, start=1):
        cin, exp, cout = adjust(cin), adjust(exp), adjust(cout)
        key, j, h = f"features.{i}.block", 0, x
        if exp != cin:
            h, j = b.seq_conv_bn(h, f"{key}.0", exp, 1, act=act, eps=eps), 1
        h = b.seq_conv_bn(h, f"{key}.{j}", exp, k, stride, group=exp, act=act, eps=eps)
        j += 1
        if se:
            h = b.squeeze_excitation(h, f"{key}.{j}", exp, make_divisible(exp // 4), gate="hardsigmoid")
            j += 1
        h = b.seq_conv_bn(h, f"{key}.{j}", cout, 1, act=None, eps=eps)
        x = b.sum(x, h, f"features_{i}") if stride == 1 and cin == cout else h
    i = len(settings) + 1
    lastconv = 6 * adjust(settings[-1][3])
    x = b.seq_conv_bn(x, f"features.{i}", lastconv, 1, act="hardswish", eps=eps)
    x = b.act(b.fc(b.global_pool(x), "classifier.0", adjust(last)), "hardswish")
    x = b.dropout(x, "classifier_2", dropout)
    b.logits = b.fc(x, "classifier.3", num_classes)
    return b


BUILDERS = {"mobilenet_v2": mobilenet_v2_builder}
BUILDERS.update({arch: (lambda arch=arch, **kw: mobilenet_v3_builder(arch, **kw)) for arch in V3})
ZOO = {arch: zoo_spec(arch, build) for arch, build in BUILDERS.items()}
CLASSIFIERS = {"mobilenet_v2": "classifier.1", "mobilenet_v3_large": "classifier.3",
               "mobilenet_v3_small": "classifier.3"}
