"""Fold BatchNorm (and a following Scale) into the Convolution or InnerProduct before it.

At test time a BatchNorm is a per-channel affine map, so a conv followed by it is
one conv with rescaled weights and a new bias.  For output channel k::

    s_k   = gamma_k / sqrt(var_k + eps)          (gamma = 1, beta = 0 without affine)
    W'_k  = s_k * W_k
    b'_k  = s_k * (b_k - mean_k) + beta_k         (b = 0 if the conv had no bias)

and a Scale layer (g, h) right after the BatchNorm folds in the same way:
W'' = g W', b'' = g b' + h.

A BatchNorm is folded when (1) its bottom is the top of a Convolution or
InnerProduct, (2) nothing else reads that blob (no other layer, no in-place
layer), (3) it does not force batch statistics (``use_global_stats`` false).  A
Scale is folded along when it is the only reader of the BatchNorm's output.

The layers answer the type questions (decaf/layer.py): ``normalises`` marks what a fold
starts from (BatchNorm), ``affine_at_inference`` and ``inference_affine`` say whether and how
a layer is y_c = s_c x_c + t_c at test time (BatchNorm, Scale), and ``absorbs_channel_affine`` marks a layer whose weight has the output channels on
axis 0 and whose bias is optional (Convolution, InnerProduct).

The conv then writes straight to the *last folded layer's top* (the BatchNorm's,
or the Scale's) and the BatchNorm/Scale layers disappear, so every blob that
still exists keeps its name and its values; only the conv's raw output blob,
which no longer exists as such, disappears.  (The alternative, renaming the
consumers to read the conv's top, would leave a blob called ``conv1`` holding
BatchNorm outputs.)  The arithmetic is done in float64.  The folded net's
outputs equal the original's at test time to float32 rounding; a folded net is
for inference: training it no longer normalises with batch statistics.
"""
import copy

import numpy as np

from ..layer import LAYERS, Layer
from ..optimize import fold_channel_affines

__all__ = ["fold_batchnorm"]


def _names(value):
    return [value] if isinstance(value, str) else list(value)


def fold_batchnorm(spec, arrays):
    """(new spec, new arrays) with foldable BatchNorm (+ Scale) layers merged into their conv.

    ``spec`` and ``arrays`` are not modified; untouched arrays are shared with the
    input dict (not copied).
    """
    import decaf.layers  # noqa: F401  (registers the layer types)

    spec = copy.deepcopy(spec)
    out = dict(arrays)
    layers = spec["layers"]
    while True:
        done = _fold_one(layers, out)
        if not done:
            break
    return spec, out


def _cls(layer):
    return LAYERS.get(layer["type"], Layer)


def _params(layer):
    """The layer's spec with its type's defaults filled in."""
    return {**_cls(layer).PARAMS, **layer}


def _readers(layers, blob):
    return [layer for layer in layers if blob in _names(layer.get("bottom", []))]


def _affine(layer, arrays):
    """(s, t) of a layer that is a per-channel affine at test time."""
    return _cls(layer).inference_affine(_params(layer), lambda pname: _get(arrays, layer, pname))


def _fold_one(layers, arrays):
    producers = {}
    for layer in layers:
        for top in _names(layer.get("top", [])):
            if top not in _names(layer.get("bottom", [])):
                producers[top] = layer
    for bn in layers:
        if not (_cls(bn).normalises and _cls(bn).affine_at_inference(_params(bn))):
            continue
        bottoms = _names(bn["bottom"])
        if len(bottoms) != 1:
            continue
        conv = producers.get(bottoms[0])
        if conv is None or not _cls(conv).absorbs_channel_affine:
            continue
        readers = _readers(layers, bottoms[0])
        if _names(conv["top"]) != bottoms or len(readers) != 1 or readers[0] is not bn:
            continue
        bn_top = _names(bn["top"])[0]
        # a per-channel affine right after (Caffe's Scale), if it is the only reader of the BatchNorm's output
        scale = None
        readers = _readers(layers, bn_top)
        if (len(readers) == 1 and not _cls(readers[0]).normalises and _names(readers[0]["top"])[0] != bn_top
                and _cls(readers[0]).affine_at_inference(_params(readers[0]))):
            scale = readers[0]
        _fold(conv, bn, scale, arrays)
        final = _names(scale["top"])[0] if scale is not None else bn_top
        conv["top"] = final
        layers.remove(bn)
        if scale is not None:
            layers.remove(scale)
        return True
    return False


def _get(arrays, layer, pname):
    key = f"{layer['name']}.{pname}"
    if key not in arrays:
        raise KeyError(f"fold_batchnorm: no array {key!r} for layer {layer['name']!r}")
    return np.asarray(arrays[key], np.float64)


def _fold(conv, bn, scale, arrays):
    w = _get(arrays, conv, "weight")
    k = w.shape[0]
    has_bias = _params(conv)["bias_term"]
    b = _get(arrays, conv, "bias") if has_bias else None
    affines = [_affine(bn, arrays)] + ([_affine(scale, arrays)] if scale is not None else [])
    if np.shape(affines[0][0]) != (k,):
        raise ValueError(f"fold_batchnorm: layer {bn['name']!r} has {np.shape(affines[0][0])} statistics for the "
                         f"{k} outputs of {conv['name']!r}")
    new_w, new_b = fold_channel_affines(w, b, affines)      # the graph optimizer's arithmetic, in float64
    arrays[f"{conv['name']}.weight"] = new_w.astype(np.float32)
    arrays[f"{conv['name']}.bias"] = new_b.astype(np.float32)
    conv["bias_term"] = True
    for layer in (bn, scale):
        if layer is None:
            continue
        for pname in ("mean", "var", "weight", "bias"):
            arrays.pop(f"{layer['name']}.{pname}", None)
