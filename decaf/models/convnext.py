"""ConvNeXt (Liu et al. 2022), torchvision's layout.

``features.0``: 4x4/4 conv (bias) + LayerNorm over the channels (eps 1e-6; keys .0, .1); stages
``features.1, 3, 5, 7`` of CNBlocks; between them ``features.2, 4, 6``: LayerNorm (.0) + 2x2/2 conv
(.1). CNBlock ``features.S.i``: ``block.0`` depthwise 7x7 (bias), channels-last ``block.2``
LayerNorm, ``block.3`` Linear (4x) GELU ``block.5`` Linear back, times ``layer_scale`` (C, 1, 1),
plus the input. Here the channels-last Linears are 1x1 convolutions (the same weights, reshaped)
and the LayerNorms normalise axis 1 of (N, C, H, W), so no permute is needed. Head: global average
pool, ``classifier.0`` LayerNorm, ``classifier.2`` Linear.
"""
from .torchlayout import Builder, zoo_spec

VARIANTS = {"convnext_tiny": ((96, 192, 384, 768), (3, 3, 9, 3)),
            "convnext_small": ((96, 192, 384, 768), (3, 3, 27, 3)),
            "convnext_base": ((128, 256, 512, 1024), (3, 3, 27, 3))}


def convnext_builder(arch="convnext_tiny", num_classes=1000, input_size=224, dims=None, depths=None):
    dims, depths = dims or VARIANTS[arch][0], depths or VARIANTS[arch][1]
    b = Builder(arch, input_size)
    x = b.layernorm(b.conv("data", "features.0.0", dims[0], 4, 4, pad=0, bias=True), "features.0.1")
    for s, (dim, n) in enumerate(zip(dims, depths)):
        f = 2 * s + 1
        if s:
            x = b.layernorm(x, f"features.{f - 1}.0")
            x = b.conv(x, f"features.{f - 1}.1", dim, 2, 2, pad=0, bias=True)
        for i in range(n):
            key = f"features.{f}.{i}"
            h = b.conv(x, f"{key}.block.0", dim, 7, pad=3, group=dim, bias=True)
            h = b.layernorm(h, f"{key}.block.2")
            h = b.act(b.linear_as_conv(h, f"{key}.block.3", 4 * dim, dim), "gelu")
            h = b.linear_as_conv(h, f"{key}.block.5", dim, 4 * dim)
            h = b.scale(h, f"{key}.layer_scale", (dim, 1, 1))
            x = b.sum(x, h, f"features_{f}_{i}")
    x = b.layernorm(b.global_pool(x), "classifier.0")
    b.logits = b.fc(x, "classifier.2", num_classes)
    return b


BUILDERS = {arch: (lambda arch=arch, **kw: convnext_builder(arch, **kw)) for arch in VARIANTS}
ZOO = {arch: zoo_spec(arch, BUILDERS[arch]) for arch in VARIANTS}
CLASSIFIERS = {arch: "classifier.2" for arch in VARIANTS}
