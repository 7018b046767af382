"""MnasNet (Tan et al. 2019), torchvision's layout (version 2 of its state dicts).

``layers``: 0 conv 3x3/2 (d0) 1 BN 2 ReLU, 3 depthwise 3x3 4 BN 5 ReLU, 6 conv 1x1 (d1) 7 BN, then
stacks ``layers.8`` .. ``layers.13`` of inverted residuals ``layers.S.i.layers``: 0 expand 1x1 1 BN
2 ReLU 3 depthwise kxk/s 4 BN 5 ReLU 6 project 1x1 7 BN (+ the input when stride 1 and in == out),
``layers.14`` 1x1 to 1280, 15 BN, 16 ReLU; the mean over H, W; ``classifier`` Dropout, Linear (1).
BatchNorm momentum differs from PyTorch's default, eps does not (1e-5). Depths d = [32, 16, 24,
40, 80, 96, 192, 320] * alpha, rounded to multiples of 8 (not below 90 %).
"""
from .torchlayout import Builder, make_divisible, zoo_spec

DEPTHS = [32, 16, 24, 40, 80, 96, 192, 320]
# (kernel, stride, expansion, repeats) of the stacks layers.8 .. layers.13
STACKS = [(3, 2, 3, 3), (5, 2, 3, 3), (5, 2, 6, 3), (3, 1, 6, 2), (5, 2, 6, 4), (3, 1, 6, 1)]
ALPHAS = {"mnasnet0_5": 0.5, "mnasnet0_75": 0.75, "mnasnet1_0": 1.0, "mnasnet1_3": 1.3}


def mnasnet_builder(arch="mnasnet1_0", num_classes=1000, input_size=224, alpha=None, dropout=0.2, last=1280):
    alpha = ALPHAS[arch] if alpha is None else alpha
    d = [make_divisible(v * alpha) for v in DEPTHS]
    b = Builder(arch, input_size)
    x = b.conv_bn("data", "layers.0", "layers.1", d[0], 3, 2)
    x = b.conv_bn(x, "layers.3", "layers.4", d[0], 3, group=d[0])
    x = b.conv_bn(x, "layers.6", "layers.7", d[1], 1, act=None)
    cin = d[1]
    for s, (k, stride, exp, n) in enumerate(STACKS):
        cout = d[s + 2]
        for i in range(n):
            key, st, mid = f"layers.{8 + s}.{i}.layers", stride if i == 0 else 1, cin * exp
            h = b.conv_bn(x, f"{key}.0", f"{key}.1", mid, 1)
            h = b.conv_bn(h, f"{key}.3", f"{key}.4", mid, k, st, group=mid)
            h = b.conv_bn(h, f"{key}.6", f"{key}.7", cout, 1, act=None)
            x = b.sum(x, h, f"layers_{8 + s}_{i}") if st == 1 and cin == cout else h
            cin = cout
    x = b.conv_bn(x, "layers.14", "layers.15", last, 1)
    x = b.dropout(b.global_pool(x, "mean"), "classifier_0", dropout)
    b.logits = b.fc(x, "classifier.1", num_classes)
    return b


BUILDERS = {arch: (lambda arch=arch, **kw: mnasnet_builder(arch, **kw)) for arch in ALPHAS}
ZOO = {arch: zoo_spec(arch, BUILDERS[arch]) for arch in ALPHAS}
CLASSIFIERS = {arch: "classifier.1" for arch in ALPHAS}
