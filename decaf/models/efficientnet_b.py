"""EfficientNet-B0..B4 (Tan & Le 2019), torchvision's layout (SiLU, squeeze-excitation).

``features.0``: 3x3/2 conv + BN + SiLU (keys .0, .1); stages ``features.1..7`` of MBConv blocks
``features.S.i.block``: [expand 1x1 + BN + SiLU (block.0)], depthwise kxk/s + BN + SiLU,
squeeze-excitation (pool, ``fc1`` 1x1 to max(1, in // 4), SiLU, ``fc2`` 1x1, sigmoid, times x),
project 1x1 + BN (no activation); plus the input when stride 1 and in == out (stochastic depth is
the identity at inference). ``features.8``: 1x1 to 4x the last stage's channels + BN + SiLU;
global average pool; ``classifier`` Dropout, Linear (``classifier.1``). BatchNorm eps 1e-5
(PyTorch's default, as torchvision's B0-B7). Channels scale by ``width`` (make_divisible, 8),
repeats by ``depth`` (rounded up).
"""
import math

from .torchlayout import Builder, make_divisible, zoo_spec

# (expand, kernel, stride, in, out, repeats)
STAGES = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
          (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]
VARIANTS = {"efficientnet_b0": (1.0, 1.0, 0.2), "efficientnet_b1": (1.0, 1.1, 0.2),
            "efficientnet_b2": (1.1, 1.2, 0.3), "efficientnet_b3": (1.2, 1.4, 0.3), "efficientnet_b4": (1.4, 1.8, 0.4)}


def efficientnet_b_builder(arch="efficientnet_b0", num_classes=1000, input_size=224, width=None, depth=None,
                           dropout=None, eps=1e-5):
    w0, d0, drop0 = VARIANTS[arch]
    width, depth = w0 if width is None else width, d0 if depth is None else depth
    dropout = drop0 if dropout is None else dropout
    adjust = lambda c: make_divisible(c * width)        # noqa: E731
    b = Builder(arch, input_size)
    x = b.seq_conv_bn("data", "features.0", adjust(32), 3, 2, act="silu", eps=eps)
    for s, (expand, k, stride, cin, cout, n) in enumerate(STAGES, start=1):
        cin, cout = adjust(cin), adjust(cout)
        for i in range(int(math.ceil(n * depth))):
            key, st, j, h = f"features.{s}.{i}.block", stride if i == 0 else 1, 0, x
            hidden = make_divisible(cin * expand)
            if hidden != cin:
                h, j = b.seq_conv_bn(h, f"{key}.0", hidden, 1, act="silu", eps=eps), 1
            h = b.seq_conv_bn(h, f"{key}.{j}", hidden, k, st, group=hidden, act="silu", eps=eps)
            h = b.squeeze_excitation(h, f"{key}.{j + 1}", hidden, max(1, cin // 4), act="silu")
            h = b.seq_conv_bn(h, f"{key}.{j + 2}", cout, 1, act=None, eps=eps)
            x = b.sum(x, h, f"features_{s}_{i}") if st == 1 and cin == cout else h
            cin = cout
    x = b.seq_conv_bn(x, "features.8", 4 * cin, 1, act="silu", eps=eps)
    x = b.dropout(b.global_pool(x), "classifier_0", dropout)
    b.logits = b.fc(x, "classifier.1", num_classes)
    return b


BUILDERS = {arch: (lambda arch=arch, **kw: efficientnet_b_builder(arch, **kw)) for arch in VARIANTS}
ZOO = {arch: zoo_spec(arch, BUILDERS[arch]) for arch in VARIANTS}
CLASSIFIERS = {arch: "classifier.1" for arch in VARIANTS}
