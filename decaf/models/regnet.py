"""RegNetX / RegNetY (Radosavovic et al. 2020), torchvision's layout.

``stem``: 3x3/2 conv (32) + BN + ReLU (keys .0, .1); stages ``trunk_output.blockS`` of blocks
``trunk_output.blockS.blockS-i``: ``proj`` (1x1/s conv + BN, when the stride or width changes)
plus ``f``: ``a`` 1x1 + BN + ReLU, ``b`` 3x3/s grouped (group width g) + BN + ReLU, [``se``: pool,
``fc1`` 1x1 to round(0.25 * block input), ReLU, ``fc2``, sigmoid, times x (RegNetY)], ``c`` 1x1 +
BN; the sum, ReLU. Global average pool, ``fc``. The stage widths and depths come from the
quantised linear rule (depth d, w_0, w_a, w_m; widths multiples of 8, made divisible by the
group width), as in the paper and torchvision.
"""
import math

from .torchlayout import Builder, make_divisible, zoo_spec

# arch -> (depth, w_0, w_a, w_m, group width, squeeze-excitation ratio)
PARAMS = {"regnet_x_400mf": (22, 24, 24.48, 2.54, 16, None), "regnet_x_800mf": (16, 56, 35.73, 2.28, 16, None),
          "regnet_x_1_6gf": (18, 80, 34.01, 2.25, 24, None), "regnet_x_3_2gf": (25, 88, 26.31, 2.25, 48, None),
          "regnet_y_400mf": (16, 48, 27.89, 2.09, 8, 0.25), "regnet_y_800mf": (14, 56, 38.84, 2.4, 16, 0.25),
          "regnet_y_1_6gf": (27, 48, 20.71, 2.65, 24, 0.25), "regnet_y_3_2gf": (21, 80, 42.63, 2.66, 24, 0.25)}


def stage_params(depth, w_0, w_a, w_m, group_width, quant=8):
    """[(width, depth, group width)] of each stage from the linear parameterisation."""
    widths = []
    for i in range(depth):
        cont = i * w_a + w_0
        block_cap = round(math.log(cont / w_0) / math.log(w_m))
        widths.append(int(round(w_0 * w_m ** block_cap / quant) * quant))
    stages = []
    for w in widths:
        if stages and stages[-1][0] == w:
            stages[-1][1] += 1
        else:
            stages.append([w, 1])
    out = []
    for w, d in stages:
        g = min(group_width, w)
        out.append((make_divisible(w, g), d, g))
    return out


def regnet_builder(arch="regnet_y_400mf", num_classes=1000, input_size=224, stages=None, stem=32, se_ratio="arch"):
    """``stages``: [(width, depth, group width)] overrides the arch's (tiny test versions)."""
    p = PARAMS[arch]
    stages = stages or stage_params(*p[:5])
    se_ratio = p[5] if se_ratio == "arch" else se_ratio
    b = Builder(arch, input_size)
    x = b.seq_conv_bn("data", "stem", stem, 3, 2)
    cin = stem
    for s, (w, d, g) in enumerate(stages, start=1):
        for i in range(d):
            key, stride = f"trunk_output.block{s}.block{s}-{i}", 2 if i == 0 else 1
            short = x
            if cin != w or stride != 1:
                short = b.seq_conv_bn(x, f"{key}.proj", w, 1, stride, act=None)
            h = b.seq_conv_bn(x, f"{key}.f.a", w, 1)
            h = b.seq_conv_bn(h, f"{key}.f.b", w, 3, stride, group=w // g)
            if se_ratio:
                h = b.squeeze_excitation(h, f"{key}.f.se", w, int(round(se_ratio * cin)))
            h = b.seq_conv_bn(h, f"{key}.f.c", w, 1, act=None)
            x = b.act(b.sum(short, h, f"trunk_output_block{s}_block{s}_{i}"), "relu")
            cin = w
    b.logits = b.fc(b.global_pool(x), "fc", num_classes)
    return b


BUILDERS = {arch: (lambda arch=arch, **kw: regnet_builder(arch, **kw)) for arch in PARAMS}
ZOO = {arch: zoo_spec(arch, BUILDERS[arch]) for arch in PARAMS}
CLASSIFIERS = {arch: "fc" for arch in PARAMS}
