"""The server's one door into decaf: loading a model, preprocessing, and running minibatches.

Everything the server needs from the rest of decaf goes through this module (loading, the
preprocessing recipe, the probability and feature blobs, the forward pass), so that a change in
those APIs is a change here only.

A decaf ``Net`` is not thread-safe (its blobs are reused buffers). ``Engine.run`` is therefore
bound to the first thread that calls it -- the batcher's inference thread -- and refuses any
other while that one lives. Everything else here (``info``, ``preprocess``, ``filters``) reads only data copied at
construction, so request threads may call it.
"""
import threading
import time

import numpy as np

from ..classify import prob_blob
from ..exclusive import exclusive
from ..features import default_blob
from ..image import decode, prepare
from ..pipeline import image_input, net_recipe


def load_net(model=None):
    """A net from a pretrained name, a ``.decaf`` path, or the pretrained default (None)."""
    from ..io import load_model         # the one entry point for models
    return load_model(model)


class Engine:
    """One net, its recipe and labels, and a timed forward pass for the inference thread."""

    def __init__(self, net, name=None):
        self.net = net
        meta = getattr(net, "meta", None) or {}
        self.name = name or _model_name(net, meta)
        self.input_name, self.input_shape = image_input(net)
        self.recipe = net_recipe(net)            # a decaf.recipe.Recipe
        self.recipe_dict = self.recipe.to_dict()
        self.labels = meta.get("labels")
        self.prob_blob = prob_blob(net)
        self.feature_blob = default_blob(net)
        self.blob_shapes = {n: tuple(b.shape[1:]) for n, b in net.blobs.items()}
        self.layers = _teaching_layers(net)
        self.filter_layer, self._filters = _first_conv_filters(net, self.input_name)
        self._info = self._describe(meta)
        self._owner = None

    @classmethod
    def load(cls, model=None):
        return cls(load_net(model), name=str(model) if model else None)

    # ---- safe from any thread: data copied at construction -------------------------------
    def info(self):
        return self._info

    def preprocess(self, image, oversample=False):
        """A PIL image as opened -> (1 or 10, C, H, W) float32 crops: decaf's one decoder (EXIF
        orientation, alpha on white, 16-bit, grey) and the model's recipe."""
        return prepare(decode(image, self.recipe.decode_mode), self.recipe, oversample)

    def filters(self):
        """(layer name, (K, C, kh, kw) weights) of the first convolution reading the image."""
        return self.filter_layer, self._filters

    def has_blob(self, name):
        return name in self.blob_shapes

    def top_classes(self, probs, top):
        order = np.argsort(-probs, kind="stable")[:top]
        return [{"index": int(k), "name": self.labels[k] if self.labels else str(k), "prob": float(probs[k])}
                for k in order]

    # ---- the inference thread only -------------------------------------------------------
    def run(self, outputs, x):
        """Forward the crops ``x`` (N, C, H, W) through the layers ``outputs`` need.

        Returns ({blob: (N, ...) copy}, {"forward_ms": .., "by_group": {group: ms}}), each layer
        timed on its own and summed by its profile group (the paper's Figure 3 split).
        """
        me = threading.current_thread()
        if self._owner is None or not self._owner.is_alive():   # a restarted server's new thread may take over
            self._owner = me
        elif self._owner is not me:
            raise RuntimeError("Engine.run called from a second thread: a decaf Net must be driven by one "
                               "thread only (the server's inference thread)")
        net = self.net
        plan = net.forward_steps(list(outputs))     # Net.forward's calls (the optimized graph's)
        clock = time.perf_counter
        start = clock()
        by_group = {}
        with exclusive(net, "forward"):      # what Net.forward holds: anyone else using this net is refused
            net.set_inputs({self.input_name: x})
            for step in plan:
                t0 = clock()
                step()
                by_group[step.layer.group] = by_group.get(step.layer.group, 0.0) + (clock() - t0) * 1e3
            result = {n: net.output_blob(n).data.copy() for n in outputs}
        return result, {"forward_ms": (clock() - start) * 1e3, "by_group": by_group}

    # ---- description -----------------------------------------------------------------------
    def _describe(self, meta):
        net = self.net
        return {"name": self.name, "net": net.name, "input": {"blob": self.input_name, "shape": list(self.input_shape)},
                "outputs": list(net.output_names), "prob_blob": self.prob_blob, "feature_blob": self.feature_blob,
                "recipe": self.recipe_dict, "labels": self.labels, "num_classes": len(self.labels or []) or None,
                "params": int(sum(p.data.size for p in net.params.values())),
                "layers": self.layers, "filters": self.filter_layer, "source": meta.get("source"),
                "spec": net.spec}


def _model_name(net, meta):
    source = meta.get("source") or {}
    return source.get("package") or source.get("file") or net.name


def _teaching_layers(net):
    """One entry per blob the layers write, in run order: the layers that write it (an in-place
    activation joins its producer), their profile group, the per-image shape, and whether it is a
    stack of feature maps (C, H, W) that the page can draw as a grid."""
    entries, by_blob = [], {}
    for layer in net.order:
        if "split" in layer.roles:
            continue
        for top in layer.top_names:
            shape = list(net.blobs[top].shape[1:])
            if top in by_blob:
                by_blob[top]["layers"].append(layer.name)
                continue
            entry = {"blob": top, "layers": [layer.name], "group": layer.group, "shape": shape,
                     "maps": len(shape) == 3 and shape[1] * shape[2] > 1}
            by_blob[top] = entry
            entries.append(entry)
    return entries


def _first_conv_filters(net, input_name):
    for layer in net.order:
        weights = [p for p in layer.blobs if p.data.ndim == 4]
        if layer.group == "conv" and input_name in layer.bottom_names and weights:
            return layer.name, weights[0].data.copy()
    return None, None
