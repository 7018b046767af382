"""The Layer base class and the layer registry.

A layer is declared by a subclass with:

* ``type_name``: the name used in net specs (``"Convolution"``);
* ``PARAMS``: every parameter the layer accepts with its default
  (``REQUIRED`` for none). This dict is the single documented source of the
  layer's parameters: an unknown or misspelt key in a spec is an error;
* ``setup(bottom_shapes)``: create parameter blobs (called once);
* ``reshape(bottom_shapes) -> top_shapes``: check shapes, size buffers;
* ``forward(bottom, top)`` and ``backward(top, propagate_down, bottom)``.

``forward`` fills ``top[i].data``; ``backward`` reads ``top[i].diff`` and
*assigns* ``bottom[i].diff`` (where ``propagate_down[i]``) and every
parameter's ``diff``. Fan-out is handled by the net with Split layers, so a
layer never needs to accumulate into a bottom diff.
"""
import numpy as np

from .errors import ShapeError, SpecError
from .param_schema import charge_param, check_params

REQUIRED = object()
LAYERS = {}

# Keys every layer accepts besides its own PARAMS.
COMMON_KEYS = {"name", "type", "bottom", "top", "lr_mult", "decay_mult", "loss_weight"}


def register(cls):
    """Class decorator: make a layer type available to net specs."""
    LAYERS[cls.type_name] = cls
    return cls


def create_layer(spec):
    """Instantiate the layer described by one spec dict."""
    name = spec.get("name", "?")
    type_name = spec.get("type")
    if type_name not in LAYERS:
        known = ", ".join(sorted(LAYERS))
        raise SpecError(f"layer {name!r}: unknown type {type_name!r} (known types: {known})")
    return LAYERS[type_name](spec)


def as_pair(value, what):
    """An int or a 2-sequence as an (h, w) pair of ints."""
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise SpecError(f"{what} must be an int or [h, w], got {value}")
    return value


def as_pads(value, what="pad"):
    """An int, [h, w] or [top, left, bottom, right] as a 4-tuple."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * 4
    value = tuple(int(v) for v in value)
    if len(value) == 2:
        return value[0], value[1], value[0], value[1]
    if len(value) == 4:
        return value
    raise SpecError(f"{what} must be an int, [h, w] or [top, left, bottom, right], got {value}")


class Layer:
    type_name = None
    PARAMS = {}
    n_bottom = 1          # an int, or (min, max) with max None for "any number"
    n_top = 1
    inplace_ok = False    # may top be the same blob as bottom?
    is_loss = False

    def __init__(self, spec):
        self.name = spec.get("name")
        if not self.name or not isinstance(self.name, str):
            raise SpecError(f"a {self.type_name} layer has no name")
        self.bottom_names = _names(spec.get("bottom", []))
        self.top_names = _names(spec.get("top", []))
        self._check_counts("bottom", self.bottom_names, self.n_bottom)
        self._check_counts("top", self.top_names, self.n_top)
        unknown = set(spec) - COMMON_KEYS - set(self.PARAMS)
        if unknown:
            raise SpecError(
                f"layer {self.name!r} ({self.type_name}): unknown parameter(s) {sorted(unknown)}; "
                f"accepted: {sorted(self.PARAMS)}")
        self.p = {}
        for key, default in self.PARAMS.items():
            if key in spec:
                self.p[key] = spec[key]
            elif default is REQUIRED:
                raise SpecError(f"layer {self.name!r} ({self.type_name}): missing required parameter {key!r}")
            else:
                self.p[key] = default
        check_params(self, {key: spec[key] for key in self.PARAMS if key in spec})   # types and ranges
        self.lr_mult = spec.get("lr_mult")
        self.decay_mult = spec.get("decay_mult")
        self.loss_weight = float(spec.get("loss_weight", 1.0 if self.is_loss else 0.0))
        self.blobs = []            # parameter blobs (decaf.blob.Param), in a fixed order
        self.phase = "test"
        self.rng = np.random.default_rng(0)
        self.validate()

    def _check_counts(self, what, names, expected):
        lo, hi = (expected, expected) if isinstance(expected, int) else expected
        if len(names) < lo or (hi is not None and len(names) > hi):
            want = lo if lo == hi else f"{lo}..{hi if hi is not None else 'any'}"
            raise SpecError(f"layer {self.name!r} ({self.type_name}): expects {want} {what} blob(s), "
                            f"got {len(names)}: {names}")

    # ---- hooks for subclasses -------------------------------------------------
    def validate(self):
        """Check parameter values (called at construction)."""

    def setup(self, bottom_shapes, fill_rng):
        """Create parameter blobs; ``fill_rng`` seeds their fillers."""

    def reshape(self, bottom_shapes):
        raise NotImplementedError

    def forward(self, bottom, top):
        raise NotImplementedError

    def backward(self, top, propagate_down, bottom):
        raise NotImplementedError

    def infer(self, bottom, top):
        """The forward the graph optimizer's steps run (decaf/optimize.py: test phase, no backward
        forced, parameters written only through ``Param.data``): the same values as ``forward``,
        but the layer may reuse what it derived from its parameters on an earlier call while their
        ``touched`` counts say nobody looked at them (Convolution: its packed weights)."""
        self.forward(bottom, top)

    # ---- what the rest of decaf asks a layer ----------------------------------
    # Code outside decaf/layers/ never branches on a type name: it asks the layer through these.
    group = "other"        # decaf profile's Figure 3 group: conv, fc, pool, neuron, LRN, norm or other
    # What generic code may rely on, as a set of words:
    #   "probabilities"   the top is a distribution over classes (Softmax): what classify reads
    #   "classifier_loss" bottoms are (scores, integer labels) (SoftmaxWithLoss)
    #   "classifier"      num_output sets the number of classes a head predicts (InnerProduct, Convolution)
    #   "train_only"      the identity at test time (Dropout)
    #   "rectifier"       a ReLU-like activation (what "after ReLU" means for a feature)
    #   "split"           the fan-out the net inserts: its tops share the bottom's data
    roles = frozenset()

    # Parameters whose neutral value is 1 (a per-channel scale), by their short name ("weight")
    unit_params = ()
    # (params, bottom shapes) that ``decaf gradcheck TYPE`` uses when the command line gives none:
    # small enough to check every element, large enough that pads, strides and windows all matter
    gradcheck_case = None

    def summary(self):
        """A few words about the parameters (decaf draw's boxes, layer tables): "3×3, 64, /2"."""
        return ""

    def macs(self, bottom_shapes, top_shapes):
        """Multiply-accumulates per image (shapes include the batch axis)."""
        return 0

    def ops(self, bottom_shapes, top_shapes):
        """Other arithmetic per image, an estimate (FLOPs = 2 MACs + ops)."""
        return 0

    def bytes_moved(self, bottoms, tops):
        """Bytes read and written per batch: parameters + bottoms + tops (a lower bound)."""
        return (sum(p.data.nbytes for p in self.blobs) + sum(b.data.nbytes for b in bottoms)
                + sum(t.data.nbytes for t in tops))

    fused = False          # set by the net when the producer applies this layer's epilogue

    def epilogue(self):
        """For an activation a producer can apply as it writes its output: an ``Epilogue``; else None."""
        return None

    def fuse_epilogue(self, epilogue, in_place, out_blob):
        """Asked by the net for the activation reading this layer's top (``out_blob``: that
        activation's top when it is a new blob). Return True when this layer will apply it."""
        return False

    def sums_bottoms(self):
        """Is the top bottom 0 + bottom 1, two bottoms of the top's shape, at inference (Eltwise sum,
        Arithmetic add)? The graph optimizer then lets the producer of one add the other as it
        writes (``fuse_residual``)."""
        return False

    def multiplies_bottoms(self):
        """Is the top bottom 0 times bottom 1, two bottoms of the top's shape (Eltwise prod,
        Arithmetic mul)? The graph optimizer then reads x times sigmoid(x) as one SiLU."""
        return False

    def means_of_bottom(self):
        """Is the top each channel's mean over the bottom's plane, (N, C, H, W) -> (N, C, 1, 1), at
        inference (global average pooling: squeeze-excitation blocks)? The graph optimizer then lets
        the producer of the bottom compute it as it writes (``fuse_channel_means``)."""
        return False

    def fuse_channel_means(self, blob):
        """Asked by the graph optimizer, on its own copy of this layer: also write into ``blob``
        ((N, C, 1, 1)) each channel's mean of the output this layer writes last (after the fused
        activation, if any), as global average pooling would. Return True when this layer will."""
        return False

    def fuse_residual(self, blob):
        """Asked by the graph optimizer, on its own copy of this layer (``copy.copy``: the same
        parameters): add ``blob`` (shaped like the top, already computed) to the output before the
        activation fused later, if any. Return True when this layer will; its step then gets
        ``blob`` as one more bottom (for the optimizer's bookkeeping), which forward ignores."""
        return False

    def identity_at_inference(self):
        """Is this layer y = x at test time (one bottom, one top of the same shape)? The graph
        optimizer (decaf/optimize.py) then removes it. Train-only layers (Dropout) are."""
        return "train_only" in self.roles

    def bottom_slices(self):
        """For a layer whose top is its bottoms side by side (Concat), after ``reshape``: for each
        bottom, the index of the top that holds it; else None. The graph optimizer then lets the
        producers write into the top (zero-copy concatenation)."""
        return None

    def view_of_bottom(self, array, top_shape):
        """For a layer whose one top is some of its one bottom's values in another shape (Reshape,
        Flatten, a Slice), after ``reshape``: the top's values (of shape ``top_shape``) as a
        C-contiguous view of ``array`` (the bottom's data), or None when they are not one (a slice
        across images). The graph optimizer then makes the top that view (no copy)."""
        return None

    def reads_images_apart(self):
        """Whether ``forward``, ``infer`` and ``backward`` take a bottom whose images are not side by
        side: each image's values contiguous, the next image further on (a run of channels of a
        wider tensor, x[:, c0:c1] at batch > 1). The graph optimizer then makes a DenseNet
        concatenation's top such a prefix of the chain's last one instead of a copy."""
        return False

    def to_onnx(self, g):
        """Write this layer into the ONNX graph being built (``g``: io/onnx_convert.py's writer)."""
        raise ValueError(f"layer {self.name!r}: decaf type {self.type_name!r} cannot be exported to ONNX")

    @classmethod
    def to_caffe(cls, p, w):
        """Write a layer of this type as Caffe layer(s): ``p`` is its spec with every parameter
        (defaults filled in), ``w`` io/caffe.py's CaffeWriter (``w.add(caffe_type, ...)``).
        Reading Caffe is an importer registered with ``@caffe_importer`` (decaf/interop.py)."""
        raise ValueError(f"layer {p.get('name')!r}: decaf type {cls.type_name!r} has no Caffe equivalent")

    @classmethod
    def axis_permutation(cls, p):
        """For a layer whose top is its bottom with the axes permuted (Transpose), with spec ``p``:
        the permutation (a list, y = x.transpose(perm)); else None."""
        return None

    # any_layout: a pointwise layer (activations, Eltwise), the same in any axis order (permuted)
    any_layout = False

    @classmethod
    def permuted(cls, p, params, perm, shapes):
        """For a layer with spec ``p`` (defaults filled in) and parameters ``params`` ({short name:
        array}) whose bottoms are ``x.transpose(perm)`` for tensors x of ``shapes`` (at batch 1):
        ``(p, params)`` of a layer of this type that computes the same values from the x themselves,
        its tops in the x's axis order (the old tops transposed back), or None when there is none.
        An ``any_layout`` layer returns its own; a per-axis one renames its axes. io/transposes.py
        then drops the transposes around such layers (ConvNeXt's channels-last stretches)."""
        return (p, params) if cls.any_layout else None

    # Folding at inference (io/fold.py merges a per-channel affine into the layer before it):
    # absorbs_channel_affine: the parameters are a weight with the output channels on axis 0 and
    #   a bias (absent when bias_term is false), so y_c = s_c (W_c x + b_c) + t_c is one such layer
    # normalises: normalises its input by statistics (BatchNorm), what fold_batchnorm starts from
    absorbs_channel_affine = False
    normalises = False

    @classmethod
    def affine_at_inference(cls, p):
        """At test time, is a layer with spec ``p`` (defaults filled in) y_c = s_c x_c + t_c along axis 1?"""
        return False

    @classmethod
    def inference_affine(cls, p, get):
        """For such a layer, (s, t) as float64 arrays; ``get(pname)``: its parameter as float64."""
        raise NotImplementedError(f"decaf type {cls.type_name!r} is not a per-channel affine")

    # ---- helpers --------------------------------------------------------------
    def add_param(self, pname, shape, index, learnable=True):
        """Create a parameter blob; its lr/decay multipliers come from the spec lists."""
        from .blob import Param
        lr = _pick(self.lr_mult, index, 1.0 if learnable else 0.0)
        decay = _pick(self.decay_mult, index, 1.0 if learnable else 0.0)
        charge_param(self, pname, shape)      # the net's parameter-bytes budget, before allocating
        param = Param(shape, f"{self.name}.{pname}", lr, decay, learnable)
        self.blobs.append(param)
        return param

    def shape_error(self, message, expected=None, actual=None):
        detail = f" (expected {expected}, got {actual})" if expected is not None else ""
        return ShapeError(f"layer {self.name!r} ({self.type_name}): {message}{detail}")

    def image_shape(self, shape):
        """``shape``, the first bottom's, if it is 4-D (N, C, H, W); else a ShapeError saying so."""
        if len(shape) != 4:
            raise self.shape_error(f"bottom {self.bottom_names[0]!r} must be 4-D (N, C, H, W)", "4-D", shape)
        return shape

    def __repr__(self):
        return f"{self.type_name}({self.name!r}, {self.bottom_names} -> {self.top_names})"


class Epilogue:
    """An activation applied while the producer writes its output (csrc/activation.h): kind "clamp"
    y = min(max(x, lo), hi) (ReLU: lo 0, hi inf; ReLU6: lo 0, hi 6; Clip), "leaky" (slope alpha),
    "hardswish", "silu" (x sigmoid(alpha x)), "sigmoid", "hardsigmoid" (min(max(alpha x + lo, 0),
    hi)) or "gelu" (exact: x (1 + erf(x / sqrt 2)) / 2). ``act``: the tuple the kernels take."""

    KINDS = ("clamp", "leaky", "hardswish", "silu", "sigmoid", "hardsigmoid", "gelu")

    def __init__(self, kind, lo=0.0, hi=float("inf"), alpha=0.0):
        if kind not in self.KINDS:
            raise ValueError(f"unknown epilogue kind {kind!r}; choose one of {self.KINDS}")
        self.kind, self.lo, self.hi, self.alpha = kind, float(lo), float(hi), float(alpha)

    @property
    def act(self):
        return (self.kind, self.lo, self.hi, self.alpha)

    def __repr__(self):
        return f"Epilogue({self.kind!r}, lo={self.lo}, hi={self.hi}, alpha={self.alpha})"


def pair_text(value):
    """3 -> "3×3", [3, 5] -> "3×5", [2, 2] -> "2"."""
    if isinstance(value, (list, tuple)):
        return "×".join(map(str, value)) if len(set(value)) > 1 else str(value[0])
    return f"{value}×{value}"


def per_image(shape):
    """Elements per example of a blob shape (batch axis first; 1 for a per-example scalar)."""
    return int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1


def _names(value):
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _pick(values, index, default):
    if values is None:
        return default
    if isinstance(values, (int, float)):
        return float(values)
    return float(values[index]) if index < len(values) else default
