"""PyTorch checkpoints -> decaf nets, by mapping state-dict names onto a zoo spec.

Each supported architecture has a function that maps every decaf parameter
name to the checkpoint key it comes from. Weight layouts are the same in
both frameworks (conv (K, C/g, kh, kw), linear (out, in)), so values are
copied, never permuted. Buffers decaf does not use (``num_batches_tracked``)
are ignored; any other key left over, or missing, is an error.
"""
import numpy as np

from ..models import get_spec
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


def torch_to_net(path, arch):
    """(spec, arrays) for checkpoint ``path`` read as architecture ``arch``."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r} for a PyTorch checkpoint; known: {sorted(ARCHS)}")
    state = read_torch_checkpoint(path)
    for prefix in ("module.", "model."):      # DataParallel / wrapped checkpoints
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    make_spec, make_names = ARCHS[arch]
    names = make_names()
    missing = sorted(v for v in names.values() if v not in state)
    if missing:
        raise DecafFormatError(f"{path}: not an {arch} checkpoint: missing {len(missing)} key(s), "
                               f"e.g. {missing[:3]}")
    used = set(names.values())
    extra = sorted(k for k in state if k not in used and not k.endswith(IGNORED_SUFFIXES))
    if extra:
        raise DecafFormatError(f"{path}: unexpected key(s) for {arch}: {extra[:5]}")
    arrays = {ours: np.ascontiguousarray(state[theirs], np.float32) for ours, theirs in names.items()}
    return make_spec(), arrays
