"""PyTorch checkpoints -> decaf nets, by mapping state-dict names onto a zoo spec.

Each supported architecture has a function that maps every decaf parameter
name to the checkpoint key it comes from. Weight layouts are the same in
both frameworks (conv (K, C/g, kh, kw), linear (out, in)), so values are
copied, never permuted (a Linear read as a 1x1 convolution is reshaped). Buffers decaf does
not use (``num_batches_tracked``) are ignored; any other key left over, or missing, is an error.

Architectures: the EfficientNet-Lite0/1/2 checkpoints of lukemelas' layout (``ARCHS``) and the
torchvision families (``decaf.models.TORCH_FAMILIES``: resnet18, vgg16_bn, mobilenet_v3_large, ...),
whose zoo builders name their layers after torchvision's module paths. An architecture may carry
builder options after a colon, Python literals: ``resnet18:widths=(8,16,32,64),input_size=64``.
The number of classes is read from the checkpoint's classifier unless given. The checkpoint may
be a bare state dict or a dict holding one (``state_dict``, ``model``, ``module.`` prefixes...).
"""
import ast
import re

import numpy as np

from ..models import TORCH_FAMILIES, get_spec
from ..models.efficientnet import VARIANTS, block_names
from .errors import DecafFormatError
from .torch_reader import read_torch_checkpoint

BN_FIELDS = {"weight": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def _bn(mapping, layer, key):
    for ours, theirs in BN_FIELDS.items():
        mapping[f"{layer}.{ours}"] = f"{key}.{theirs}"


def efficientnet_lite_names(variant="efficientnet_lite0"):
    """decaf parameter name -> key in lukemelas-style EfficientNet-Lite0/1/2 state dicts."""
    width, depth, _ = VARIANTS[variant]
    m = {"stem.weight": "_conv_stem.weight"}
    _bn(m, "stem_bn", "_bn0")
    for i, expand, *_ in block_names(width, depth):
        key = f"_blocks.{i}"
        if expand != 1:
            m[f"b{i}_expand.weight"] = f"{key}._expand_conv.weight"
            _bn(m, f"b{i}_expand_bn", f"{key}._bn0")
        m[f"b{i}_dw.weight"] = f"{key}._depthwise_conv.weight"
        _bn(m, f"b{i}_dw_bn", f"{key}._bn1")
        m[f"b{i}_project.weight"] = f"{key}._project_conv.weight"
        _bn(m, f"b{i}_project_bn", f"{key}._bn2")
    m["head.weight"] = "_conv_head.weight"
    _bn(m, "head_bn", "_bn1")
    m["fc.weight"], m["fc.bias"] = "_fc.weight", "_fc.bias"
    return m


def efficientnet_lite0_names():
    return efficientnet_lite_names("efficientnet_lite0")


ARCHS = {v: (lambda v=v: get_spec(v), lambda v=v: efficientnet_lite_names(v)) for v in VARIANTS}
IGNORED_SUFFIXES = ("num_batches_tracked",)

# torchvision's ImageNet evaluation: shorter side 256 (bilinear), centre crop 224, RGB in [0, 1],
# ImageNet's mean and std.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# old DenseNet checkpoints: "denselayer1.norm.1.weight" for "denselayer1.norm1.weight"
_DENSENET_LEGACY = re.compile(r"(denselayer\d+\.(?:norm|relu|conv))\.(?=[12]\.(?:weight|bias|running_mean|running_var|"
                              r"num_batches_tracked)$)")


def known_archs():
    return sorted(set(ARCHS) | set(TORCH_FAMILIES))


def parse_arch(arch):
    """("name", {option: value}) from "name" or "name:key=value,key=value" (values Python literals)."""
    name, _, text = str(arch).partition(":")
    name = name.strip()
    if name not in ARCHS and name not in TORCH_FAMILIES:
        raise ValueError(f"unknown architecture {name!r} for a PyTorch checkpoint; known: {known_archs()}")
    if not text.strip():
        return name, {}
    try:
        call = ast.parse(f"f({text})", mode="eval").body
        if not isinstance(call, ast.Call) or call.args or any(k.arg is None for k in call.keywords):
            raise ValueError("options must be key=value")
        options = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except (SyntaxError, ValueError) as exc:
        raise ValueError(f"architecture options {text!r}: expected key=value pairs of Python literals, "
                         f"e.g. resnet18:widths=(8,16,32,64),input_size=64 ({exc})") from None
    if name in ARCHS:
        raise ValueError(f"{name} takes no options (got {text!r})")
    return name, options


def arch_recipe(arch):
    """The preprocessing recipe the weights of ``arch`` were trained with, or None."""
    from dataclasses import replace

    from ..pretrained import PRETRAINED
    from ..recipe import Recipe
    try:
        name, options = parse_arch(arch)
    except ValueError:
        return None
    if name in PRETRAINED:
        return PRETRAINED[name][3]
    if name not in TORCH_FAMILIES:
        return None
    recipe = Recipe(crop=224, resize_shorter=256, resample="bilinear", channels="RGB", scale=1 / 255.0,
                    mean=IMAGENET_MEAN, std=IMAGENET_STD)
    if name.startswith("efficientnet_b"):
        return replace(recipe, resample="bicubic")
    if name == "inception_v3":
        recipe = replace(recipe, crop=299, resize_shorter=342)
    if name in ("googlenet", "inception_v3") and options.get("transform_input", True):
        # torchvision's transform_input (on with its pretrained weights) maps ImageNet-normalised
        # pixels to (x - 0.5) / 0.5: the same as normalising that way in the first place
        recipe = replace(recipe, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    return recipe


def _find_prefix(state, first_key, path, name):
    """The prefix the state dict's keys carry ("" for a bare state dict, "state_dict.", "model.module."...)."""
    if first_key in state:
        return ""
    found = sorted((k[:-len(first_key)] for k in state if k.endswith("." + first_key)), key=len)
    if not found:
        raise DecafFormatError(f"{path}: not a {name} checkpoint: no key {first_key!r} (alone or after a prefix "
                               f"such as 'state_dict.'); the file's keys begin {sorted(state)[:5]}")
    return found[0]


def _build(name, arch, options):
    try:
        return TORCH_FAMILIES[name][0](**options)
    except (TypeError, IndexError, ZeroDivisionError) as exc:       # an option the builder does not take
        raise ValueError(f"architecture {arch!r}: {exc}") from None


def _family_names(name, arch, options, state, path):
    """(spec, names, the state dict's key prefix, key prefixes to skip) for a torchvision family; the
    number of classes, unless given, is the classifier's in the checkpoint."""
    probe = _build(name, arch, options)
    first = next(iter(v if isinstance(v, str) else v[0] for v in probe.names.values()))
    prefix = _find_prefix(state, first, path, name)
    classifier = prefix + TORCH_FAMILIES[name][1] + ".weight"
    if "num_classes" not in options and classifier in state:
        probe = _build(name, arch, dict(options, num_classes=int(state[classifier].shape[0])))
    return probe.spec(), probe.names, prefix, getattr(probe, "ignored_prefixes", ())


def torch_to_net(path, arch):
    """(spec, arrays) for checkpoint ``path`` read as architecture ``arch`` (a name, with options)."""
    name, options = parse_arch(arch)
    state = read_torch_checkpoint(path)
    if name in ARCHS:
        make_spec, make_names = ARCHS[name]
        spec, names, ignored = make_spec(), make_names(), ()
        prefix = _find_prefix(state, next(iter(names.values())), path, name)
    else:
        spec, names, prefix, ignored = _family_names(name, arch, options, state, path)
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if name.startswith("densenet"):
        state = {_DENSENET_LEGACY.sub(r"\1", k): v for k, v in state.items()}
    keys = {ours: theirs if isinstance(theirs, str) else theirs[0] for ours, theirs in names.items()}
    missing = [v for v in keys.values() if v not in state]
    if missing:
        raise DecafFormatError(f"{path}: not a {name} checkpoint: missing {len(missing)} key(s), "
                               f"e.g. {missing[:3]}")
    used = set(keys.values())
    extra = sorted(k for k in state if k not in used and not k.endswith(IGNORED_SUFFIXES)
                   and not k.startswith(ignored))      # (auxiliary classifiers: training only)
    if extra:
        raise DecafFormatError(f"{path}: unexpected key(s) for {name}: {extra[:5]}"
                               f"{f' and {len(extra) - 5} more' if len(extra) > 5 else ''}")
    arrays = {}
    for ours, theirs in names.items():
        value = np.ascontiguousarray(state[keys[ours]], np.float32)
        if not isinstance(theirs, str):
            if value.size != int(np.prod(theirs[1])):
                raise DecafFormatError(f"{path}: {theirs[0]} has shape {list(value.shape)}, {name} expects "
                                       f"{list(theirs[1])}")
            value = value.reshape(theirs[1])
        arrays[ours] = value
    if name not in ARCHS:
        _check_shapes(spec, arrays, keys, name, path)
    return spec, arrays


def _check_shapes(spec, arrays, keys, name, path):
    """Every array has the shape the spec's parameter has (else the checkpoint is another width)."""
    from ..net import Net
    net = Net(spec, init=False)
    for ours, param in net.params.items():
        if tuple(param.data.shape) != arrays[ours].shape:
            raise DecafFormatError(f"{path}: {keys[ours]} has shape {list(arrays[ours].shape)} but {name} "
                                   f"expects {list(param.data.shape)} (another width or variant? builder options "
                                   f"go after the name: --arch '{name}:key=value')")
