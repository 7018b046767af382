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

__all__ = ["fold_batchnorm"]


def _names(value):
    return [value] if isinstance(value, str) else list(value)


def fold_batchnorm(spec, arrays):
    """(new spec, new arrays) with foldable BatchNorm (+ Scale) layers merged into their conv.

    ``spec`` and ``arrays`` are not modified; untouched arrays are shared with the
    input dict (not copied).
    """
    spec = copy.deepcopy(spec)
    out = dict(arrays)
    layers = spec["layers"]
    while True:
        done = _fold_one(layers, out)
        if not done:
            break
    return spec, out


def _readers(layers, blob):
    return [layer for layer in layers if blob in _names(layer.get("bottom", []))]


def _fold_one(layers, arrays):
    producers = {}
    for layer in layers:
        for top in _names(layer.get("top", [])):
            if top not in _names(layer.get("bottom", [])):
                producers[top] = layer
    for bn in layers:
        if bn["type"] != "BatchNorm" or bn.get("use_global_stats") is False:
            continue
        bottoms = _names(bn["bottom"])
        if len(bottoms) != 1:
            continue
        conv = producers.get(bottoms[0])
        if conv is None or conv["type"] not in ("Convolution", "InnerProduct"):
            continue
        readers = _readers(layers, bottoms[0])
        if _names(conv["top"]) != bottoms or len(readers) != 1 or readers[0] is not bn:
            continue
        bn_top = _names(bn["top"])[0]
        # the Scale right after, if it is the only reader of the BatchNorm's output
        scale = None
        readers = _readers(layers, bn_top)
        if len(readers) == 1 and readers[0]["type"] == "Scale" and _names(readers[0]["top"])[0] != bn_top:
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
    has_bias = conv.get("bias_term", True)
    b = _get(arrays, conv, "bias") if has_bias else np.zeros(k)
    mean, var = _get(arrays, bn, "mean"), _get(arrays, bn, "var")
    eps = float(bn.get("eps", 1e-5))
    if bn.get("affine", False):
        gamma, beta = _get(arrays, bn, "weight"), _get(arrays, bn, "bias")
    else:
        gamma, beta = np.ones(k), np.zeros(k)
    if mean.shape != (k,):
        raise ValueError(f"fold_batchnorm: layer {bn['name']!r} has {mean.shape} statistics for the "
                         f"{k} outputs of {conv['name']!r}")
    s = gamma / np.sqrt(var + eps)
    shift = beta - s * mean
    if scale is not None:
        g = _get(arrays, scale, "weight")
        h = _get(arrays, scale, "bias") if scale.get("bias_term", False) else np.zeros(k)
        s, shift = s * g, shift * g + h
    new_w = w * s.reshape((k,) + (1,) * (w.ndim - 1))
    new_b = s * b + shift
    arrays[f"{conv['name']}.weight"] = new_w.astype(np.float32)
    arrays[f"{conv['name']}.bias"] = new_b.astype(np.float32)
    conv["bias_term"] = True
    for layer in (bn, scale):
        if layer is None:
            continue
        for pname in ("mean", "var", "weight", "bias"):
            arrays.pop(f"{layer['name']}.{pname}", None)
