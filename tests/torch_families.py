"""Plain-PyTorch definitions of torchvision's ImageNet families, with torchvision's module names
(so their state dicts have torchvision's keys), written for the tests of ``decaf convert --arch``
(tests/test_torch_families.py). Widths, depths and resolutions are arguments, so the tests can
build small versions with the same structure. ``randomize(model)`` gives random weights and
random BatchNorm statistics."""
import math

import torch
from torch import nn
import torch.nn.functional as F


def randomize(model, seed=0):
    """Random weights (scaled to keep activations O(1)) and BatchNorm statistics; eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) * 0.8 + 0.4)
            elif name.endswith("running_mean") or name.endswith(".bias"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif t.dim() == 1:      # BatchNorm / LayerNorm weight
                t.copy_(torch.rand(t.shape, generator=g) * 0.6 + 0.7)
            else:
                fan_in = t[0].numel() if t.dim() > 1 else 1
                t.copy_(torch.randn(t.shape, generator=g) * math.sqrt(2.0 / fan_in))
    return model.eval()


def calibrate(model, size, seed=0):
    """BatchNorm statistics measured on a random batch (then moved by up to ~25 % at random), so that a
    deep random net keeps its activations O(1) as a trained one does; eval mode."""
    g = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None           # the cumulative average: here, the one batch's statistics
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, size, size, generator=g))
        for m in norms:
            m.running_var.mul_(torch.rand(m.running_var.shape, generator=g) * 0.45 + 0.8)
            m.running_mean.add_(0.1 * m.running_var.sqrt() * torch.randn(m.running_mean.shape, generator=g))
    return model.eval()


def conv_norm_act(cin, cout, k=3, stride=1, groups=1, act=nn.ReLU, eps=1e-5):
    """torchvision's Conv2dNormActivation: keys .0 (conv) and .1 (BatchNorm)."""
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout, eps=eps)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


# ---- ResNet / ResNeXt / Wide ResNet ---------------------------------------------------------------
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1, downsample=None, groups=1, base_width=64):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride=1, downsample=None, groups=1, base_width=64):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000, widths=(64, 128, 256, 512), groups=1, width_per_group=64):
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for i, (w, n) in enumerate(zip(widths, layers)):
            setattr(self, f"layer{i + 1}", self._make_layer(block, w, n, 1 if i == 0 else 2, groups, width_per_group))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3] * block.expansion, num_classes)

    def _make_layer(self, block, planes, n, stride, groups, base_width):
        down = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            down = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                 nn.BatchNorm2d(planes * block.expansion))
        blocks = [block(self.inplanes, planes, stride, down, groups, base_width)]
        self.inplanes = planes * block.expansion
        blocks += [block(self.inplanes, planes, 1, None, groups, base_width) for _ in range(1, n)]
        return nn.Sequential(*blocks)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ---- VGG / AlexNet --------------------------------------------------------------------------------
class VGG(nn.Module):
    def __init__(self, cfg, bn=False, num_classes=1000, hidden=4096):
        super().__init__()
        layers, c = [], 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1)] + ([nn.BatchNorm2d(v)] if bn else []) + [nn.ReLU(True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(nn.Linear(c * 49, hidden), nn.ReLU(True), nn.Dropout(),
                                        nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(),
                                        nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class AlexNet(nn.Module):
    def __init__(self, num_classes=1000, w=(64, 192, 384, 256, 256), hidden=4096):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, w[0], 11, 4, 2), nn.ReLU(True), nn.MaxPool2d(3, 2),
            nn.Conv2d(w[0], w[1], 5, padding=2), nn.ReLU(True), nn.MaxPool2d(3, 2),
            nn.Conv2d(w[1], w[2], 3, padding=1), nn.ReLU(True), nn.Conv2d(w[2], w[3], 3, padding=1), nn.ReLU(True),
            nn.Conv2d(w[3], w[4], 3, padding=1), nn.ReLU(True), nn.MaxPool2d(3, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(nn.Dropout(), nn.Linear(w[4] * 36, hidden), nn.ReLU(True), nn.Dropout(),
                                        nn.Linear(hidden, hidden), nn.ReLU(True), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# ---- SqueezeNet -----------------------------------------------------------------------------------
class Fire(nn.Module):
    def __init__(self, cin, s, e1, e3):
        super().__init__()
        self.squeeze, self.squeeze_activation = nn.Conv2d(cin, s, 1), nn.ReLU(True)
        self.expand1x1, self.expand1x1_activation = nn.Conv2d(s, e1, 1), nn.ReLU(True)
        self.expand3x3, self.expand3x3_activation = nn.Conv2d(s, e3, 3, padding=1), nn.ReLU(True)

    def forward(self, x):
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)),
                          self.expand3x3_activation(self.expand3x3(x))], 1)


class SqueezeNet(nn.Module):
    def __init__(self, version="1_0", num_classes=1000, d=1):
        super().__init__()
        pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)       # noqa: E731
        f = lambda cin, s, e: Fire(cin // d, s // d, e // d, e // d)     # noqa: E731
        if version == "1_0":
            self.features = nn.Sequential(nn.Conv2d(3, 96 // d, 7, 2), nn.ReLU(True), pool(), f(96, 16, 64),
                                          f(128, 16, 64), f(128, 32, 128), pool(), f(256, 32, 128), f(256, 48, 192),
                                          f(384, 48, 192), f(384, 64, 256), pool(), f(512, 64, 256))
        else:
            self.features = nn.Sequential(nn.Conv2d(3, 64 // d, 3, 2), nn.ReLU(True), pool(), f(64, 16, 64),
                                          f(128, 16, 64), pool(), f(128, 32, 128), f(256, 32, 128), pool(),
                                          f(256, 48, 192), f(384, 48, 192), f(384, 64, 256), f(512, 64, 256))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(512 // d, num_classes, 1), nn.ReLU(True),
                                        nn.AdaptiveAvgPool2d((1, 1)))

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


# ---- DenseNet -------------------------------------------------------------------------------------
class DenseLayer(nn.Module):
    def __init__(self, cin, growth, bn_size):
        super().__init__()
        self.norm1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU(True)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2, self.relu2 = nn.BatchNorm2d(bn_size * growth), nn.ReLU(True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, feats):
        x = self.conv1(self.relu1(self.norm1(torch.cat(feats, 1))))
        return self.conv2(self.relu2(self.norm2(x)))


class DenseBlock(nn.ModuleDict):
    def __init__(self, n, cin, growth, bn_size):
        super().__init__()
        for i in range(n):
            self.add_module(f"denselayer{i + 1}", DenseLayer(cin + i * growth, growth, bn_size))

    def forward(self, x):
        feats = [x]
        for layer in self.values():
            feats.append(layer(feats))
        return torch.cat(feats, 1)


class DenseNet(nn.Module):
    def __init__(self, growth=32, blocks=(6, 12, 24, 16), init=64, bn_size=4, num_classes=1000):
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(3, init, 7, 2, 3, bias=False))
        self.features.add_module("norm0", nn.BatchNorm2d(init))
        self.features.add_module("relu0", nn.ReLU(True))
        self.features.add_module("pool0", nn.MaxPool2d(3, 2, 1))
        c = init
        for i, n in enumerate(blocks):
            self.features.add_module(f"denseblock{i + 1}", DenseBlock(n, c, growth, bn_size))
            c += n * growth
            if i != len(blocks) - 1:
                t = nn.Sequential()
                t.add_module("norm", nn.BatchNorm2d(c))
                t.add_module("relu", nn.ReLU(True))
                t.add_module("conv", nn.Conv2d(c, c // 2, 1, bias=False))
                t.add_module("pool", nn.AvgPool2d(2, 2))
                self.features.add_module(f"transition{i + 1}", t)
                c //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(c))
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(F.relu(self.features(x)), 1)
        return self.classifier(torch.flatten(x, 1))


# ---- MobileNetV2 / V3 -----------------------------------------------------------------------------
def make_divisible(v, divisor=8):
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class InvertedResidualV2(nn.Module):
    def __init__(self, cin, cout, stride, t):
        super().__init__()
        hidden = int(round(cin * t))
        self.use_res = stride == 1 and cin == cout
        layers = [conv_norm_act(cin, hidden, 1, act=nn.ReLU6)] if t != 1 else []
        layers += [conv_norm_act(hidden, hidden, 3, stride, hidden, nn.ReLU6), nn.Conv2d(hidden, cout, 1, bias=False),
                   nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes=1000, width_mult=1.0):
        super().__init__()
        cin, last = make_divisible(32 * width_mult), make_divisible(1280 * max(1.0, width_mult))
        layers = [conv_norm_act(3, cin, 3, 2, act=nn.ReLU6)]
        for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                           (6, 320, 1, 1)]:
            cout = make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidualV2(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers.append(conv_norm_act(cin, last, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


class SqueezeExcitation(nn.Module):
    def __init__(self, c, squeeze, activation=nn.ReLU, scale_activation=nn.Sigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1)
        self.activation, self.scale_activation = activation(), scale_activation()

    def forward(self, x):
        return x * self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))


class InvertedResidualV3(nn.Module):
    def __init__(self, cin, k, exp, cout, se, act, stride):
        super().__init__()
        act = nn.Hardswish if act == "HS" else nn.ReLU
        self.use_res = stride == 1 and cin == cout
        layers = [conv_norm_act(cin, exp, 1, act=act, eps=1e-3)] if exp != cin else []
        layers.append(conv_norm_act(exp, exp, k, stride, exp, act, eps=1e-3))
        if se:
            layers.append(SqueezeExcitation(exp, make_divisible(exp // 4), scale_activation=nn.Hardsigmoid))
        layers.append(conv_norm_act(exp, cout, 1, act=None, eps=1e-3))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.block(x) if self.use_res else self.block(x)


V3_LARGE = [(16, 3, 16, 16, 0, "RE", 1), (16, 3, 64, 24, 0, "RE", 2), (24, 3, 72, 24, 0, "RE", 1),
            (24, 5, 72, 40, 1, "RE", 2), (40, 5, 120, 40, 1, "RE", 1), (40, 5, 120, 40, 1, "RE", 1),
            (40, 3, 240, 80, 0, "HS", 2), (80, 3, 200, 80, 0, "HS", 1), (80, 3, 184, 80, 0, "HS", 1),
            (80, 3, 184, 80, 0, "HS", 1), (80, 3, 480, 112, 1, "HS", 1), (112, 3, 672, 112, 1, "HS", 1),
            (112, 5, 672, 160, 1, "HS", 2), (160, 5, 960, 160, 1, "HS", 1), (160, 5, 960, 160, 1, "HS", 1)]
V3_SMALL = [(16, 3, 16, 16, 1, "RE", 2), (16, 3, 72, 24, 0, "RE", 2), (24, 3, 88, 24, 0, "RE", 1),
            (24, 5, 96, 40, 1, "HS", 2), (40, 5, 240, 40, 1, "HS", 1), (40, 5, 240, 40, 1, "HS", 1),
            (40, 5, 120, 48, 1, "HS", 1), (48, 5, 144, 48, 1, "HS", 1), (48, 5, 288, 96, 1, "HS", 2),
            (96, 5, 576, 96, 1, "HS", 1), (96, 5, 576, 96, 1, "HS", 1)]


class MobileNetV3(nn.Module):
    def __init__(self, large=True, num_classes=1000, width_mult=1.0):
        super().__init__()
        cfg, last = (V3_LARGE, 1280) if large else (V3_SMALL, 1024)
        adj = lambda c: make_divisible(c * width_mult)        # noqa: E731
        layers = [conv_norm_act(3, adj(16), 3, 2, act=nn.Hardswish, eps=1e-3)]
        for cin, k, exp, cout, se, act, s in cfg:
            layers.append(InvertedResidualV3(adj(cin), k, adj(exp), adj(cout), se, act, s))
        lastconv = 6 * adj(cfg[-1][3])
        layers.append(conv_norm_act(adj(cfg[-1][3]), lastconv, 1, act=nn.Hardswish, eps=1e-3))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(lastconv, adj(last)), nn.Hardswish(), nn.Dropout(0.2),
                                        nn.Linear(adj(last), num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# ---- ShuffleNetV2 ---------------------------------------------------------------------------------
def channel_shuffle(x, groups):
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


class ShuffleBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride, bf = stride, cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                                         nn.Conv2d(cin, bf, 1, bias=False), nn.BatchNorm2d(bf), nn.ReLU(True))
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(nn.Conv2d(cin if stride > 1 else bf, bf, 1, bias=False), nn.BatchNorm2d(bf),
                                     nn.ReLU(True), nn.Conv2d(bf, bf, 3, stride, 1, groups=bf, bias=False),
                                     nn.BatchNorm2d(bf), nn.Conv2d(bf, bf, 1, bias=False), nn.BatchNorm2d(bf),
                                     nn.ReLU(True))

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, repeats=(4, 8, 4), channels=(24, 116, 232, 464, 1024), num_classes=1000):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, channels[0], 3, 2, 1, bias=False), nn.BatchNorm2d(channels[0]),
                                   nn.ReLU(True))
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = channels[0]
        for i, (n, cout) in enumerate(zip(repeats, channels[1:4])):
            setattr(self, f"stage{i + 2}", nn.Sequential(ShuffleBlock(cin, cout, 2),
                                                          *[ShuffleBlock(cout, cout, 1) for _ in range(n - 1)]))
            cin = cout
        self.conv5 = nn.Sequential(nn.Conv2d(cin, channels[4], 1, bias=False), nn.BatchNorm2d(channels[4]),
                                   nn.ReLU(True))
        self.fc = nn.Linear(channels[4], num_classes)

    def forward(self, x):
        x = self.stage4(self.stage3(self.stage2(self.maxpool(self.conv1(x)))))
        return self.fc(self.conv5(x).mean([2, 3]))


# ---- MnasNet --------------------------------------------------------------------------------------
class MnasResidual(nn.Module):
    def __init__(self, cin, cout, k, stride, exp):
        super().__init__()
        mid = cin * exp
        self.apply_residual = cin == cout and stride == 1
        self.layers = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid, momentum=0.0003),
                                    nn.ReLU(True), nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False),
                                    nn.BatchNorm2d(mid, momentum=0.0003), nn.ReLU(True),
                                    nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout, momentum=0.0003))

    def forward(self, x):
        return x + self.layers(x) if self.apply_residual else self.layers(x)


def _round_to_multiple_of(val, divisor=8, bias=0.9):
    new_val = max(divisor, int(val + divisor / 2) // divisor * divisor)
    return new_val if new_val >= bias * val else new_val + divisor


class MNASNet(nn.Module):
    def __init__(self, alpha=1.0, num_classes=1000):
        super().__init__()
        d = [_round_to_multiple_of(v * alpha) for v in (32, 16, 24, 40, 80, 96, 192, 320)]
        layers = [nn.Conv2d(3, d[0], 3, 2, 1, bias=False), nn.BatchNorm2d(d[0]), nn.ReLU(True),
                  nn.Conv2d(d[0], d[0], 3, 1, 1, groups=d[0], bias=False), nn.BatchNorm2d(d[0]), nn.ReLU(True),
                  nn.Conv2d(d[0], d[1], 1, bias=False), nn.BatchNorm2d(d[1])]
        for i, (k, s, e, n) in enumerate([(3, 2, 3, 3), (5, 2, 3, 3), (5, 2, 6, 3), (3, 1, 6, 2), (5, 2, 6, 4),
                                          (3, 1, 6, 1)]):
            cin, cout = d[i + 1], d[i + 2]
            layers.append(nn.Sequential(MnasResidual(cin, cout, k, s, e),
                                        *[MnasResidual(cout, cout, k, 1, e) for _ in range(n - 1)]))
        layers += [nn.Conv2d(d[7], 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU(True)]
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        return self.classifier(self.layers(x).mean([2, 3]))


# ---- EfficientNet-B -------------------------------------------------------------------------------
class MBConv(nn.Module):
    def __init__(self, cin, cout, k, stride, expand):
        super().__init__()
        hidden = make_divisible(cin * expand)
        self.use_res = stride == 1 and cin == cout
        layers = [conv_norm_act(cin, hidden, 1, act=nn.SiLU)] if hidden != cin else []
        layers += [conv_norm_act(hidden, hidden, k, stride, hidden, nn.SiLU),
                   SqueezeExcitation(hidden, max(1, cin // 4), activation=nn.SiLU),
                   conv_norm_act(hidden, cout, 1, act=None)]
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.block(x) if self.use_res else self.block(x)


class EfficientNet(nn.Module):
    def __init__(self, width=1.0, depth=1.0, num_classes=1000):
        super().__init__()
        adj = lambda c: make_divisible(c * width)        # noqa: E731
        layers = [conv_norm_act(3, adj(32), 3, 2, act=nn.SiLU)]
        for e, k, s, cin, cout, n in [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2),
                                      (6, 3, 2, 40, 80, 3), (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4),
                                      (6, 3, 1, 192, 320, 1)]:
            cin, cout = adj(cin), adj(cout)
            stage = []
            for i in range(int(math.ceil(n * depth))):
                stage.append(MBConv(cin if i == 0 else cout, cout, k, s if i == 0 else 1, e))
            layers.append(nn.Sequential(*stage))
        layers.append(conv_norm_act(cout, 4 * cout, 1, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(4 * cout, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# ---- RegNet ---------------------------------------------------------------------------------------
class RegNetBlock(nn.Module):
    def __init__(self, cin, w, stride, g, se_ratio):
        super().__init__()
        self.proj = conv_norm_act(cin, w, 1, stride, act=None) if cin != w or stride != 1 else None
        f = nn.Sequential()
        f.add_module("a", conv_norm_act(cin, w, 1))
        f.add_module("b", conv_norm_act(w, w, 3, stride, w // g))
        if se_ratio:
            f.add_module("se", SqueezeExcitation(w, int(round(se_ratio * cin))))
        f.add_module("c", conv_norm_act(w, w, 1, act=None))
        self.f, self.activation = f, nn.ReLU(True)

    def forward(self, x):
        return self.activation((x if self.proj is None else self.proj(x)) + self.f(x))


class RegNet(nn.Module):
    def __init__(self, stages, se_ratio=None, stem=32, num_classes=1000):
        super().__init__()
        self.stem = conv_norm_act(3, stem, 3, 2)
        trunk, cin = nn.Sequential(), stem
        for s, (w, d, g) in enumerate(stages, start=1):
            stage = nn.Sequential()
            for i in range(d):
                stage.add_module(f"block{s}-{i}", RegNetBlock(cin, w, 2 if i == 0 else 1, g, se_ratio))
                cin = w
            trunk.add_module(f"block{s}", stage)
        self.trunk_output = trunk
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(self.trunk_output(self.stem(x))), 1))


# ---- ConvNeXt -------------------------------------------------------------------------------------
class LayerNorm2d(nn.LayerNorm):
    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


class Permute(nn.Module):
    def __init__(self, dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(*self.dims)


class CNBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(dim, dim, 7, padding=3, groups=dim), Permute([0, 2, 3, 1]),
                                   nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, 4 * dim), nn.GELU(),
                                   nn.Linear(4 * dim, dim), Permute([0, 3, 1, 2]))
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * 1e-6)

    def forward(self, x):
        return self.layer_scale * self.block(x) + x


class ConvNeXt(nn.Module):
    def __init__(self, dims=(96, 192, 384, 768), depths=(3, 3, 9, 3), num_classes=1000):
        super().__init__()
        layers = [nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0], eps=1e-6))]
        for i, (dim, n) in enumerate(zip(dims, depths)):
            if i:
                layers.append(nn.Sequential(LayerNorm2d(dims[i - 1], eps=1e-6), nn.Conv2d(dims[i - 1], dim, 2, 2)))
            layers.append(nn.Sequential(*[CNBlock(dim) for _ in range(n)]))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(LayerNorm2d(dims[-1], eps=1e-6), nn.Flatten(1),
                                        nn.Linear(dims[-1], num_classes))

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)))


# ---- GoogLeNet / Inception-v3 ---------------------------------------------------------------------
class BasicConv2d(nn.Module):
    def __init__(self, cin, cout, k, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    def __init__(self, cin, c1, r3, c3, r5, c5, pp):
        super().__init__()
        self.branch1 = BasicConv2d(cin, c1, 1)
        self.branch2 = nn.Sequential(BasicConv2d(cin, r3, 1), BasicConv2d(r3, c3, 3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(cin, r5, 1), BasicConv2d(r5, c5, 3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), BasicConv2d(cin, pp, 1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class AuxHead(nn.Module):
    """An auxiliary classifier (training only): its keys are in the state dict, and skipped."""
    def __init__(self, cin, num_classes):
        super().__init__()
        self.conv = BasicConv2d(cin, 8, 1)
        self.fc = nn.Linear(8, num_classes)


class GoogLeNet(nn.Module):
    CFG = [("3a", 192, 64, 96, 128, 16, 32, 32), ("3b", 256, 128, 128, 192, 32, 96, 64),
           ("4a", 480, 192, 96, 208, 16, 48, 64), ("4b", 512, 160, 112, 224, 24, 64, 64),
           ("4c", 512, 128, 128, 256, 24, 64, 64), ("4d", 512, 112, 144, 288, 32, 64, 64),
           ("4e", 528, 256, 160, 320, 32, 128, 128), ("5a", 832, 256, 160, 320, 32, 128, 128),
           ("5b", 832, 384, 192, 384, 48, 128, 128)]

    def __init__(self, num_classes=1000, d=1):
        super().__init__()
        self.conv1 = BasicConv2d(3, 64 // d, 7, 2, 3)
        self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = BasicConv2d(64 // d, 64 // d, 1)
        self.conv3 = BasicConv2d(64 // d, 192 // d, 3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        for name, *c in self.CFG:
            setattr(self, f"inception{name}", Inception(*[v // d for v in c]))
        self.maxpool3 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.maxpool4 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.aux1, self.aux2 = AuxHead(512 // d, num_classes), AuxHead(528 // d, num_classes)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(1024 // d, num_classes)

    def forward(self, x):
        x = self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.conv1(x)))))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        for name in ("4a", "4b", "4c", "4d", "4e"):
            x = getattr(self, f"inception{name}")(x)
        x = self.inception5b(self.inception5a(self.maxpool4(x)))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


class InceptionA(nn.Module):
    def __init__(self, cin, pf, d):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64 // d, 1)
        self.branch5x5_1, self.branch5x5_2 = BasicConv2d(cin, 48 // d, 1), BasicConv2d(48 // d, 64 // d, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64 // d, 1)
        self.branch3x3dbl_2 = BasicConv2d(64 // d, 96 // d, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96 // d, 96 // d, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pf, 1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(F.avg_pool2d(x, 3, 1, 1))], 1)


class InceptionB(nn.Module):
    def __init__(self, cin, d):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384 // d, 3, 2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64 // d, 1)
        self.branch3x3dbl_2 = BasicConv2d(64 // d, 96 // d, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96 // d, 96 // d, 3, 2)

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, 2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin, c7, d):
        super().__init__()
        row, col = dict(k=(1, 7), padding=(0, 3)), dict(k=(7, 1), padding=(3, 0))
        self.branch1x1 = BasicConv2d(cin, 192 // d, 1)
        self.branch7x7_1, self.branch7x7_2 = BasicConv2d(cin, c7, 1), BasicConv2d(c7, c7, **row)
        self.branch7x7_3 = BasicConv2d(c7, 192 // d, **col)
        self.branch7x7dbl_1, self.branch7x7dbl_2 = BasicConv2d(cin, c7, 1), BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_3, self.branch7x7dbl_4 = BasicConv2d(c7, c7, **row), BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192 // d, **row)
        self.branch_pool = BasicConv2d(cin, 192 // d, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for i in range(2, 6):
            bd = getattr(self, f"branch7x7dbl_{i}")(bd)
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(F.avg_pool2d(x, 3, 1, 1))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin, d):
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = BasicConv2d(cin, 192 // d, 1), BasicConv2d(192 // d, 320 // d, 3, 2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192 // d, 1)
        self.branch7x7x3_2 = BasicConv2d(192 // d, 192 // d, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192 // d, 192 // d, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192 // d, 192 // d, 3, 2)

    def forward(self, x):
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, 2)], 1)


class InceptionE(nn.Module):
    def __init__(self, cin, d):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 320 // d, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384 // d, 1)
        self.branch3x3_2a = BasicConv2d(384 // d, 384 // d, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384 // d, 384 // d, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448 // d, 1)
        self.branch3x3dbl_2 = BasicConv2d(448 // d, 384 // d, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384 // d, 384 // d, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384 // d, 384 // d, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192 // d, 1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(F.avg_pool2d(x, 3, 1, 1))], 1)


class Inception3(nn.Module):
    def __init__(self, num_classes=1000, d=1):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32 // d, 3, 2)
        self.Conv2d_2a_3x3 = BasicConv2d(32 // d, 32 // d, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32 // d, 64 // d, 3, padding=1)
        self.maxpool1 = nn.MaxPool2d(3, 2)
        self.Conv2d_3b_1x1 = BasicConv2d(64 // d, 80 // d, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80 // d, 192 // d, 3)
        self.maxpool2 = nn.MaxPool2d(3, 2)
        a_out = lambda pf: (64 + 64 + 96) // d + pf // d           # noqa: E731
        self.Mixed_5b = InceptionA(192 // d, 32 // d, d)
        self.Mixed_5c = InceptionA(a_out(32), 64 // d, d)
        self.Mixed_5d = InceptionA(a_out(64), 64 // d, d)
        self.Mixed_6a = InceptionB(a_out(64), d)
        c6 = (384 + 96) // d + a_out(64)
        self.Mixed_6b = InceptionC(c6, 128 // d, d)
        self.Mixed_6c = InceptionC(4 * (192 // d), 160 // d, d)
        self.Mixed_6d = InceptionC(4 * (192 // d), 160 // d, d)
        self.Mixed_6e = InceptionC(4 * (192 // d), 192 // d, d)
        self.AuxLogits = AuxHead(4 * (192 // d), num_classes)
        self.Mixed_7a = InceptionD(4 * (192 // d), d)
        c7 = (320 + 192) // d + 4 * (192 // d)
        self.Mixed_7b = InceptionE(c7, d)
        self.Mixed_7c = InceptionE(320 // d + 4 * (384 // d) + 192 // d, d)
        self.avgpool, self.dropout = nn.AdaptiveAvgPool2d(1), nn.Dropout(0.5)
        self.fc = nn.Linear(320 // d + 4 * (384 // d) + 192 // d, num_classes)

    def forward(self, x):
        x = self.maxpool1(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))))
        x = self.maxpool2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
