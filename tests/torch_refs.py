"""Independent PyTorch builds of the zoo nets, for cross-checks (written with torch.nn, not decaf)."""


def build_lite0(torch, state):
    """EfficientNet-Lite0 in plain torch.nn, loading a lukemelas-style state dict."""
    nn, F = torch.nn, torch.nn.functional

    def same_pad(x, k, s):
        h, w = x.shape[-2:]
        ph = max((-(-h // s) - 1) * s + k - h, 0)
        pw = max((-(-w // s) - 1) * s + k - w, 0)
        return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))

    class ConvBN(nn.Module):
        def __init__(self, cin, cout, k, s=1, groups=1, act=True):
            super().__init__()
            self.k, self.s, self.act = k, s, act
            self.conv = nn.Conv2d(cin, cout, k, s, 0, groups=groups, bias=False)
            self.bn = nn.BatchNorm2d(cout, eps=1e-3)

        def forward(self, x):
            y = self.bn(self.conv(same_pad(x, self.k, self.s)))
            return F.relu6(y) if self.act else y

    stages = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
              (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]

    class Block(nn.Module):
        def __init__(self, e, k, s, cin, cout):
            super().__init__()
            hid = cin * e
            self.expand = ConvBN(cin, hid, 1) if e != 1 else None
            self.dw = ConvBN(hid, hid, k, s, groups=hid)
            self.project = ConvBN(hid, cout, 1, act=False)
            self.skip = s == 1 and cin == cout

        def forward(self, x):
            h = self.expand(x) if self.expand is not None else x
            h = self.project(self.dw(h))
            return h + x if self.skip else h

    class Lite0(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = ConvBN(3, 32, 3, 2)
            blocks = []
            for r, k, s, e, cin, cout in stages:
                for i in range(r):
                    blocks.append(Block(e, k, s if i == 0 else 1, cin if i == 0 else cout, cout))
            self.blocks = nn.Sequential(*blocks)
            self.head = ConvBN(320, 1280, 1)
            self.fc = nn.Linear(1280, 1000)

        def forward(self, x):
            x = self.head(self.blocks(self.stem(x)))
            return self.fc(x.mean(dim=(2, 3)))

    model = Lite0().eval()

    def copy_bn(bn, key):
        bn.weight.data[:] = state[f"{key}.weight"]
        bn.bias.data[:] = state[f"{key}.bias"]
        bn.running_mean[:] = state[f"{key}.running_mean"]
        bn.running_var[:] = state[f"{key}.running_var"]

    model.stem.conv.weight.data[:] = state["_conv_stem.weight"]
    copy_bn(model.stem.bn, "_bn0")
    for i, block in enumerate(model.blocks):
        key = f"_blocks.{i}"
        if block.expand is not None:
            block.expand.conv.weight.data[:] = state[f"{key}._expand_conv.weight"]
            copy_bn(block.expand.bn, f"{key}._bn0")
        block.dw.conv.weight.data[:] = state[f"{key}._depthwise_conv.weight"]
        copy_bn(block.dw.bn, f"{key}._bn1")
        block.project.conv.weight.data[:] = state[f"{key}._project_conv.weight"]
        copy_bn(block.project.bn, f"{key}._bn2")
    model.head.conv.weight.data[:] = state["_conv_head.weight"]
    copy_bn(model.head.bn, "_bn1")
    model.fc.weight.data[:] = state["_fc.weight"]
    model.fc.bias.data[:] = state["_fc.bias"]
    return model


def build_caffenet(torch, params, lrn_first=False):
    """CaffeNet / AlexNet in plain torch.nn.functional from decaf-named arrays (numpy).

    ``forward.pool_indices`` holds the max-pool argmaxes of the last call (pool1, pool2, pool5)."""
    F = torch.nn.functional
    p = {k: torch.from_numpy(v.copy()) for k, v in params.items()}

    indices = []   # argmax of every max pool of the last forward, for tie checks

    def pool(x):
        y, i = F.max_pool2d(x, 3, 2, ceil_mode=True, return_indices=True)
        indices.append(i.detach().numpy())
        return y

    def lrn(x):
        return F.local_response_norm(x, 5, alpha=1e-4, beta=0.75, k=1.0)

    def forward(x):
        indices.clear()
        for i, (stride, pad, groups) in enumerate([(4, 0, 1), (1, 2, 2)], start=1):
            x = F.relu(F.conv2d(x, p[f"conv{i}.weight"], p[f"conv{i}.bias"], stride, pad, groups=groups))
            x = pool(lrn(x)) if lrn_first else lrn(pool(x))
        x = F.relu(F.conv2d(x, p["conv3.weight"], p["conv3.bias"], 1, 1))
        x = F.relu(F.conv2d(x, p["conv4.weight"], p["conv4.bias"], 1, 1, groups=2))
        x = F.relu(F.conv2d(x, p["conv5.weight"], p["conv5.bias"], 1, 1, groups=2))
        x = pool(x).flatten(1)
        x = F.relu(F.linear(x, p["fc6.weight"], p["fc6.bias"]))
        x = F.relu(F.linear(x, p["fc7.weight"], p["fc7.bias"]))
        return F.linear(x, p["fc8.weight"], p["fc8.bias"])

    forward.pool_indices = indices
    return forward, p
