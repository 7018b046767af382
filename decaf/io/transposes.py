"""Drop the transposes around stretches of a net that can run in the layout before them.

PyTorch writes ConvNeXt's blocks channels-last: depthwise conv (NCHW), Permute to NHWC,
LayerNorm over the last axis, Linear, GELU, Linear, Permute back. The importer turns each Linear
on NHWC into a transpose to NCHW, a 1x1 convolution and a transpose back, so one block moves
every value through six transposes. A transpose by ``perm`` followed by layers that would compute
the same values on the tensor before it, up to transposes by the inverse permutation, is removed
with those transposes; the layers in between are rewritten to work in the earlier layout::

    x -> Transpose(P) -> f -> g -> Transpose(P^-1) -> y      becomes      x -> f' -> g' -> y

The layers answer the type questions (decaf/layer.py): ``axis_permutation`` marks a transpose
(Transpose); ``permuted`` says whether and how a layer computes its values in another layout:
pointwise layers (activations, GELU, Eltwise, Arithmetic on tensors) as they are, a Scale by one
constant refilled to the new channel count, Arithmetic's constant permuted with the tensor, a
LayerNorm over perm's axes over the matching axes of x (NHWC's last axis is NCHW's channels). A stretch is taken whole or not at all: every reader of each value in it is a layer
of the stretch or an inverse transpose, no value in it is an output of the net, and every
tensor entering it comes through a transpose by P. A transpose directly followed by its inverse
is the empty stretch.

After it, ConvNeXt's block is depthwise conv -> LayerNorm (channels) -> 1x1 conv -> GELU ->
1x1 conv -> layer scale -> add, which the graph optimizer (decaf/optimize.py) folds further
(the layer scale into the convolution, the add into its epilogue). The layers compute the same
sums as before, in the same order, so the values are unchanged.
"""
import numpy as np

from ..layer import LAYERS

__all__ = ["remove_transposes"]


def _names(value):
    return [value] if isinstance(value, str) else list(value)


def _inverse(perm):
    return [int(i) for i in np.argsort(perm)]


def _permutation(layer):
    """The axis permutation ``layer`` (a spec) applies, if that is all it does (a Transpose)."""
    cls = LAYERS.get(layer["type"])
    return None if cls is None else cls.axis_permutation(_defaults(cls, layer))


def _is_transpose(layer, perm=None):
    found = _permutation(layer)
    return found is not None and (perm is None or found == perm)


def _defaults(cls, layer):
    p = {k: v for k, v in cls.PARAMS.items()}
    p.update({k: v for k, v in layer.items() if k in cls.PARAMS})
    return p


def remove_transposes(layers, arrays, shapes, keep=()):
    """Rewrite ``layers`` (a spec's layer list, in order) and ``arrays`` ({"layer.param": array}) in
    place, removing every stretch between a transpose and its inverses that the layers in it can
    run without (see the module docstring). ``shapes``: {blob: shape at batch 1} for every blob the
    layers read or write (the importer's); ``keep``: blob names that must keep their values (the
    net's outputs). For an imported graph, where no layer works in place. Returns the number of
    transposes removed."""
    removed = 0
    while True:
        for layer in layers:
            if _is_transpose(layer):
                done = _remove_around(layer, layers, arrays, shapes, set(keep))
                if done:
                    removed += done
                    break
        else:
            return removed


def _readers(layers):
    out = {}
    for layer in layers:
        for b in _names(layer["bottom"]):
            out.setdefault(b, []).append(layer)
    return out


def _remove_around(first, layers, arrays, shapes, keep):
    """Remove the stretch starting at transpose ``first`` if it can go; the number of transposes
    removed (0 when it cannot)."""
    perm = _permutation(first)
    back = _inverse(perm)
    readers = _readers(layers)
    producer = {t: layer for layer in layers for t in _names(layer["top"])}
    entries, exits, members = [first], [], []
    permuted = [_names(first["top"])[0]]        # blobs holding x.transpose(perm) values
    seen = set(permuted)
    i = 0
    while i < len(permuted):
        blob = permuted[i]
        i += 1
        users = readers.get(blob, [])
        if blob in keep or not users:           # an output of the net keeps its layout
            return 0
        for user in users:
            if any(user is m for m in members + exits):
                continue
            if _is_transpose(user, back):
                exits.append(user)
                continue
            if _is_transpose(user) or user["type"] not in LAYERS:
                return 0
            members.append(user)
            for b in _names(user["bottom"]):    # an input from outside enters through a transpose by P
                source = producer.get(b)
                if b not in seen and source is not None and _is_transpose(source, perm):
                    entries.append(source)
                    seen.add(b)
                    permuted.append(b)
            for t in _names(user["top"]):
                if t not in seen:
                    seen.add(t)
                    permuted.append(t)
    if not exits or any(b not in seen for m in members for b in _names(m["bottom"])):
        return 0                                # (an input written by a member or an entry only)
    # each member's new spec, before anything changes (all or nothing)
    unpermuted = {}
    for blob in permuted:
        if blob not in shapes or len(shapes[blob]) != len(perm):
            return 0
        s = shapes[blob]
        unpermuted[blob] = tuple(s[back[j]] for j in range(len(s)))
    rewritten = []
    for m in members:
        cls = LAYERS[m["type"]]
        prefix = m["name"] + "."                 # (short names have no dot: not another layer's "name.x.w")
        params = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix) and "." not in k[len(prefix):]}
        p = _defaults(cls, m)
        bottoms = _names(m["bottom"])
        out = cls.permuted(p, params, perm, [unpermuted[b] for b in bottoms])
        if out is None:
            return 0
        rewritten.append(out)
    for exit_ in exits:                         # (an unread top is an output of the net too)
        top = _names(exit_["top"])[0]
        if top in keep or not readers.get(top):
            return 0
    # apply: members read x where they read x.transpose(perm); the exits' readers read the members'
    rename = {_names(e["top"])[0]: _names(e["bottom"])[0] for e in entries}
    for e in exits:
        source = _names(e["bottom"])[0]
        rename[_names(e["top"])[0]] = rename.get(source, source)
    for m, (p, params) in zip(members, rewritten):
        cls = LAYERS[m["type"]]
        for k, v in p.items():
            if k in m or v != cls.PARAMS.get(k):
                m[k] = v
        for k, v in params.items():
            arrays[f"{m['name']}.{k}"] = np.ascontiguousarray(v, np.float32)
        for t in _names(m["top"]):
            shapes[t] = unpermuted[t]
    gone = {id(x) for x in entries + exits}
    layers[:] = [layer for layer in layers if id(layer) not in gone]
    for layer in layers:
        bottoms = [rename.get(b, b) for b in _names(layer["bottom"])]
        layer["bottom"] = bottoms[0] if len(bottoms) == 1 else bottoms
    return len(entries) + len(exits)
