"""Plain-PyTorch definitions of the ImageNet CNN families, torchvision-style but tiny (a few
channels, 32x32 or 64x64 inputs): the structure is the point, not the size. Written here from the
papers' and torchvision's block descriptions, so the tests need no torchvision.

``FAMILIES`` maps a name to (builder, input shape without the batch axis). Every model has
random weights and random BatchNorm statistics (so a wrong normalisation shows) and is in eval mode.
"""
import torch
from torch import nn
from torch.nn import functional as F


def conv_bn(cin, cout, k=3, stride=1, groups=1, act=nn.ReLU, padding=None, eps=1e-5):
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2 if padding is None else padding, groups=groups,
                        bias=False), nn.BatchNorm2d(cout, eps=eps)]
    if act is not None:
        layers.append(act(inplace=True) if act in (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU) else act())
    return nn.Sequential(*layers)


class Head(nn.Sequential):
    """Global average pool, flatten, (dropout,) linear."""

    def __init__(self, cin, classes=10, dropout=0.2):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Dropout(dropout), nn.Linear(cin, classes))


# ---- AlexNet, VGG ----------------------------------------------------------------------------------
class AlexNet(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(8, 16, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(16, 24, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(24, 16, 3, padding=1),
            nn.ReLU(inplace=True), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((3, 3))
        self.classifier = nn.Sequential(nn.Dropout(), nn.Linear(16 * 9, 32), nn.ReLU(inplace=True), nn.Dropout(),
                                        nn.Linear(32, 32), nn.ReLU(inplace=True), nn.Linear(32, classes))

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(x.view(x.size(0), -1))          # the dynamic-batch view chain


def vgg(cfg, classes=10, bn=False):
    layers, c = [], 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1)] + ([nn.BatchNorm2d(v)] if bn else []) + [nn.ReLU(inplace=True)]
            c = v
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(1), nn.Linear(c, 32), nn.ReLU(True),
                         nn.Dropout(), nn.Linear(32, classes))


# ---- ResNet, ResNeXt, Wide ResNet --------------------------------------------------------------
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, width, stride=1, groups=1, base_width=64):
        super().__init__()
        self.conv1, self.conv2 = conv_bn(cin, width, 3, stride), conv_bn(width, width, 3, act=None)
        self.down = conv_bn(cin, width, 1, stride, act=None) if stride != 1 or cin != width else None

    def forward(self, x):
        identity = x if self.down is None else self.down(x)
        return F.relu(self.conv2(self.conv1(x)) + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride=1, groups=1, base_width=64):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        out = planes * self.expansion
        self.body = nn.Sequential(conv_bn(cin, width, 1), conv_bn(width, width, 3, stride, groups=groups),
                                  conv_bn(width, out, 1, act=None))
        self.down = conv_bn(cin, out, 1, stride, act=None) if stride != 1 or cin != out else None

    def forward(self, x):
        return F.relu(self.body(x) + (x if self.down is None else self.down(x)))


class ResNet(nn.Module):
    def __init__(self, block, layers, widths=(8, 16, 32, 64), groups=1, base_width=64, classes=10):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, widths[0], 7, 2), nn.MaxPool2d(3, 2, 1))
        stages, c = [], widths[0]
        for i, (n, w) in enumerate(zip(layers, widths)):
            for j in range(n):
                stages.append(block(c, w, 2 if j == 0 and i > 0 else 1, groups, base_width))
                c = w * block.expansion
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ---- DenseNet ---------------------------------------------------------------------------------------
class DenseLayer(nn.Module):
    def __init__(self, cin, growth, bn_size=2):
        super().__init__()
        self.f = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, bn_size * growth, 1, bias=False),
                               nn.BatchNorm2d(bn_size * growth), nn.ReLU(),
                               nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False))

    def forward(self, features):
        return self.f(torch.cat(features, 1))


class DenseNet(nn.Module):
    def __init__(self, growth=4, blocks=(2, 2, 2), init=8, classes=10):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, init, 7, 2), nn.MaxPool2d(3, 2, 1))
        self.blocks, self.trans, c = nn.ModuleList(), nn.ModuleList(), init
        for i, n in enumerate(blocks):
            layers = nn.ModuleList()
            for _ in range(n):
                layers.append(DenseLayer(c, growth))
                c += growth
            self.blocks.append(layers)
            if i != len(blocks) - 1:
                self.trans.append(nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False),
                                                nn.AvgPool2d(2, 2)))
                c //= 2
        self.norm, self.fc = nn.BatchNorm2d(c), nn.Linear(c, classes)

    def forward(self, x):
        x = self.stem(x)
        for i, layers in enumerate(self.blocks):
            features = [x]
            for layer in layers:
                features.append(layer(features))
            x = torch.cat(features, 1)
            if i < len(self.trans):
                x = self.trans[i](x)
        x = F.relu(self.norm(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1))


# ---- SqueezeNet ----------------------------------------------------------------------------------
class Fire(nn.Module):
    def __init__(self, cin, squeeze, e1, e3):
        super().__init__()
        self.s = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU(inplace=True))
        self.e1 = nn.Sequential(nn.Conv2d(squeeze, e1, 1), nn.ReLU(inplace=True))
        self.e3 = nn.Sequential(nn.Conv2d(squeeze, e3, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, x):
        x = self.s(x)
        return torch.cat([self.e1(x), self.e3(x)], 1)


def squeezenet(version="1_0", classes=10):
    pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
    if version == "1_0":
        feats = [nn.Conv2d(3, 16, 7, 2), nn.ReLU(inplace=True), pool(), Fire(16, 4, 8, 8), Fire(16, 4, 8, 8),
                 pool(), Fire(16, 8, 16, 16), pool(), Fire(32, 8, 16, 16)]
    else:
        feats = [nn.Conv2d(3, 16, 3, 2), nn.ReLU(inplace=True), pool(), Fire(16, 4, 8, 8), Fire(16, 4, 8, 8),
                 pool(), Fire(16, 8, 16, 16), pool(), Fire(32, 8, 16, 16)]
    return nn.Sequential(*feats, nn.Dropout(0.5), nn.Conv2d(32, classes, 1), nn.ReLU(inplace=True),
                         nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(1))


# ---- GoogLeNet, Inception-v3 -----------------------------------------------------------------------
def basic(cin, cout, k, **kw):
    """torchvision's BasicConv2d: conv (no bias), BatchNorm eps 0.001, ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, bias=False, **kw), nn.BatchNorm2d(cout, eps=0.001), nn.ReLU(True))


class Inception(nn.Module):
    """GoogLeNet's block: 1x1 | 1x1-3x3 | 1x1-3x3 | maxpool-1x1, concatenated."""

    def __init__(self, cin, c1, r3, c3, r5, c5, pp):
        super().__init__()
        self.b1 = basic(cin, c1, 1)
        self.b2 = nn.Sequential(basic(cin, r3, 1), basic(r3, c3, 3, padding=1))
        self.b3 = nn.Sequential(basic(cin, r5, 1), basic(r5, c5, 3, padding=1))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), basic(cin, pp, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class GoogLeNet(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(basic(3, 8, 7, stride=2, padding=3), nn.MaxPool2d(3, 2, ceil_mode=True),
                                  basic(8, 16, 3, padding=1), nn.MaxPool2d(3, 2, ceil_mode=True))
        self.i3a, self.i3b = Inception(16, 4, 4, 8, 2, 4, 4), Inception(20, 8, 8, 8, 4, 4, 4)
        self.pool, self.i4a = nn.MaxPool2d(3, 2, ceil_mode=True), Inception(24, 8, 4, 8, 2, 4, 4)
        self.fc = nn.Linear(24, classes)

    def forward(self, x):
        x = self.i4a(self.pool(self.i3b(self.i3a(self.stem(x)))))
        return self.fc(nn.functional.dropout(torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1), 0.2, False))


class InceptionV3(nn.Module):
    """Inception-v3's A block (avg-pool branch) and C block (factorised 1x7 / 7x1 convolutions)."""

    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(basic(3, 8, 3, stride=2), basic(8, 16, 3, padding=1), nn.MaxPool2d(3, 2))
        self.a1, self.a5 = basic(16, 8, 1), nn.Sequential(basic(16, 4, 1), basic(4, 8, 5, padding=2))
        self.a3 = nn.Sequential(basic(16, 8, 1), basic(8, 8, 3, padding=1), basic(8, 8, 3, padding=1))
        self.ap = basic(16, 4, 1)
        self.c1 = basic(28, 8, 1)
        self.c7 = nn.Sequential(basic(28, 4, 1), basic(4, 4, (1, 7), padding=(0, 3)), basic(4, 8, (7, 1), padding=(3, 0)))
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([self.a1(x), self.a5(x), self.a3(x), self.ap(F.avg_pool2d(x, 3, 1, 1))], 1)
        x = torch.cat([self.c1(x), self.c7(x)], 1)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ---- MobileNetV2 / V3, MnasNet, EfficientNet ---------------------------------------------------
class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand, k=3, act=nn.ReLU6, se=None):
        super().__init__()
        mid = cin * expand
        layers = [conv_bn(cin, mid, 1, act=act)] if expand != 1 else []
        layers.append(conv_bn(mid, mid, k, stride, groups=mid, act=act))
        if se is not None:
            layers.append(se(mid))
        layers.append(conv_bn(mid, cout, 1, act=None))
        self.block, self.residual = nn.Sequential(*layers), stride == 1 and cin == cout

    def forward(self, x):
        return x + self.block(x) if self.residual else self.block(x)


class SqueezeExcitation(nn.Module):
    """torchvision's: pool, 1x1 conv, activation, 1x1 conv, gate, times the input."""

    def __init__(self, c, squeeze, act=nn.ReLU, gate=nn.Sigmoid):
        super().__init__()
        self.fc1, self.fc2, self.act, self.gate = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1), act(), gate()

    def forward(self, x):
        s = self.gate(self.fc2(self.act(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return s * x


def mobilenet_v2(classes=10):
    cfg = [(1, 8, 1, 1), (6, 12, 2, 2), (6, 16, 2, 2), (6, 24, 1, 2)]     # t, c, n, s
    layers, c = [conv_bn(3, 8, 3, 2, act=nn.ReLU6)], 8
    for t, cout, n, s in cfg:
        for i in range(n):
            layers.append(InvertedResidual(c, cout, s if i == 0 else 1, t))
            c = cout
    layers.append(conv_bn(c, 64, 1, act=nn.ReLU6))
    return nn.Sequential(*layers, Head(64, classes))


def mobilenet_v3(large=True, classes=10):
    se = lambda c: SqueezeExcitation(c, max(c // 4, 8), nn.ReLU, nn.Hardsigmoid)  # noqa: E731
    HS, RE = nn.Hardswish, nn.ReLU
    cfg = ([(3, 1, 8, False, RE, 1), (3, 4, 12, False, RE, 2), (5, 3, 16, True, RE, 2), (3, 6, 16, True, HS, 1),
            (5, 6, 24, True, HS, 2)] if large else
           [(3, 1, 8, True, RE, 2), (3, 4, 12, False, RE, 2), (5, 4, 16, True, HS, 2), (5, 3, 16, True, HS, 1)])
    layers, c = [conv_bn(3, 8, 3, 2, act=HS)], 8
    for k, e, cout, use_se, act, s in cfg:
        layers.append(InvertedResidual(c, cout, s, e, k, act, se if use_se else None))
        c = cout
    layers.append(conv_bn(c, 6 * c, 1, act=HS))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(6 * c, 48), HS(inplace=True),
                         nn.Dropout(0.2), nn.Linear(48, classes))


class MnasNet(nn.Module):
    """MnasNet-style: separable stem, 3x3 and 5x5 inverted residuals, and the x.mean([2, 3]) head."""

    def __init__(self, classes=10):
        super().__init__()
        layers = [conv_bn(3, 8, 3, 2), conv_bn(8, 8, 3, groups=8), conv_bn(8, 8, 1, act=None)]
        c = 8
        for k, e, cout, s in [(3, 3, 12, 2), (5, 3, 16, 2), (5, 6, 16, 1), (3, 6, 24, 2)]:
            layers.append(InvertedResidual(c, cout, s, e, k, nn.ReLU))
            c = cout
        self.layers = nn.Sequential(*layers, conv_bn(c, 64, 1))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, classes))

    def forward(self, x):
        return self.classifier(self.layers(x).mean([2, 3]))


def efficientnet_b0(classes=10):
    """MBConv with SiLU and a SiLU/Sigmoid squeeze-excitation (squeeze = input channels / 4)."""
    layers, c = [conv_bn(3, 8, 3, 2, act=nn.SiLU)], 8
    for e, k, s, cout in [(1, 3, 1, 8), (6, 3, 2, 12), (6, 5, 2, 16), (6, 3, 1, 16), (6, 5, 2, 24)]:
        squeeze = max(1, c // 4)
        se = lambda mid, sq=squeeze: SqueezeExcitation(mid, sq, nn.SiLU, nn.Sigmoid)  # noqa: E731
        layers.append(InvertedResidual(c, cout, s, e, k, nn.SiLU, se))
        c = cout
    layers.append(conv_bn(c, 64, 1, act=nn.SiLU))
    return nn.Sequential(*layers, Head(64, classes))


# ---- RegNet --------------------------------------------------------------------------------------
class RegNetBlock(nn.Module):
    """X: 1x1, grouped 3x3 (group width g), 1x1, residual; Y: with squeeze-excitation (ratio 1/4)."""

    def __init__(self, cin, cout, stride, group_width=4, se=False):
        super().__init__()
        layers = [conv_bn(cin, cout, 1), conv_bn(cout, cout, 3, stride, groups=cout // group_width)]
        if se:
            layers.append(SqueezeExcitation(cout, max(1, cin // 4)))
        layers.append(conv_bn(cout, cout, 1, act=None))
        self.f = nn.Sequential(*layers)
        self.proj = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else None

    def forward(self, x):
        return F.relu(self.f(x) + (x if self.proj is None else self.proj(x)))


def regnet(se=False, classes=10):
    layers, c = [conv_bn(3, 8, 3, 2)], 8
    for cout, n in [(8, 1), (16, 2), (32, 2)]:
        for i in range(n):
            layers.append(RegNetBlock(c, cout, 2 if i == 0 else 1, se=se))
            c = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(1), nn.Linear(c, classes))


# ---- ShuffleNetV2 --------------------------------------------------------------------------------
def channel_shuffle(x, groups):
    batchsize, num_channels, height, width = x.size()
    x = x.view(batchsize, groups, num_channels // groups, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batchsize, -1, height, width)


class ShuffleUnit(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        half = cout // 2
        self.stride = stride
        if stride > 1:
            self.branch1 = nn.Sequential(conv_bn(cin, cin, 3, stride, groups=cin, act=None), conv_bn(cin, half, 1))
        c = cin if stride > 1 else half
        self.branch2 = nn.Sequential(conv_bn(c, half, 1), conv_bn(half, half, 3, stride, groups=half, act=None),
                                     conv_bn(half, half, 1))

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 8, 3, 2), nn.MaxPool2d(3, 2, 1))
        units, c = [], 8
        for cout, n in [(16, 2), (32, 2)]:
            for i in range(n):
                units.append(ShuffleUnit(c, cout, 2 if i == 0 else 1))
                c = cout
        self.units, self.conv5, self.fc = nn.Sequential(*units), conv_bn(c, 64, 1), nn.Linear(64, classes)

    def forward(self, x):
        return self.fc(self.conv5(self.units(self.stem(x))).mean([2, 3]))


# ---- ConvNeXt ------------------------------------------------------------------------------------
class LayerNorm2d(nn.LayerNorm):
    def forward(self, x):
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


class CNBlock(nn.Module):
    def __init__(self, dim, layer_scale=1e-6):
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm, self.fc1 = nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(F.gelu(self.fc1(self.norm(y)))).permute(0, 3, 1, 2)
        return x + self.layer_scale * y


class ConvNeXt(nn.Module):
    def __init__(self, dims=(8, 16), depths=(1, 1), classes=10):
        super().__init__()
        layers = [nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0], eps=1e-6))]
        for i, (d, n) in enumerate(zip(dims, depths)):
            if i:
                layers.append(nn.Sequential(LayerNorm2d(dims[i - 1], eps=1e-6), nn.Conv2d(dims[i - 1], d, 2, 2)))
            layers += [CNBlock(d, layer_scale=0.5) for _ in range(n)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(LayerNorm2d(dims[-1], eps=1e-6), nn.Flatten(1), nn.Linear(dims[-1], classes))

    def forward(self, x):
        return self.head(F.adaptive_avg_pool2d(self.features(x), 1))


FAMILIES = {
    "AlexNet": (AlexNet, (3, 127, 127)),
    "VGG-11": (lambda: vgg([8, "M", 16, "M", 32, 32, "M", 32, 32, "M"]), (3, 32, 32)),
    "VGG-16 (BN)": (lambda: vgg([8, 8, "M", 16, 16, "M", 16, 16, 16, "M", 32, 32, 32, "M"], bn=True), (3, 32, 32)),
    "ResNet-18": (lambda: ResNet(BasicBlock, [2, 2, 2, 2]), (3, 64, 64)),
    "ResNet-50": (lambda: ResNet(Bottleneck, [1, 2, 1, 1], widths=(4, 8, 16, 16)), (3, 64, 64)),
    "ResNeXt-50": (lambda: ResNet(Bottleneck, [1, 1, 1, 1], widths=(4, 8, 16, 16), groups=4, base_width=16),
                   (3, 64, 64)),
    "Wide-ResNet-50": (lambda: ResNet(Bottleneck, [1, 1, 1, 1], widths=(4, 8, 16, 16), base_width=128),
                       (3, 64, 64)),
    "SqueezeNet 1.0": (lambda: squeezenet("1_0"), (3, 64, 64)),
    "SqueezeNet 1.1": (lambda: squeezenet("1_1"), (3, 64, 64)),
    "DenseNet-121": (DenseNet, (3, 64, 64)),
    "GoogLeNet": (GoogLeNet, (3, 64, 64)),
    "Inception-v3": (InceptionV3, (3, 64, 64)),
    "MobileNetV2": (mobilenet_v2, (3, 64, 64)),
    "MobileNetV3-Large": (lambda: mobilenet_v3(True), (3, 64, 64)),
    "MobileNetV3-Small": (lambda: mobilenet_v3(False), (3, 64, 64)),
    "ShuffleNetV2": (ShuffleNetV2, (3, 64, 64)),
    "MnasNet": (MnasNet, (3, 64, 64)),
    "EfficientNet-B0": (efficientnet_b0, (3, 64, 64)),
    "RegNetX": (lambda: regnet(se=False), (3, 32, 32)),
    "RegNetY": (lambda: regnet(se=True), (3, 32, 32)),
    "ConvNeXt-T": (ConvNeXt, (3, 32, 32)),
}


def build(name, seed=0):
    """The family's model with random weights and BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    builder, shape = FAMILIES[name]
    model = builder()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0, 0.2, generator=gen)
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0, 0.2, generator=gen)
    return model.eval(), shape
