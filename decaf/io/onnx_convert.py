"""ONNX graphs to decaf specs and weights (``onnx_to_net``), and decaf nets to ONNX (``net_to_onnx``).

Both use the ``onnx`` package (imported when called).  ONNX is SSA: every tensor
has one producer, so ONNX tensor names become decaf blob names as they are;
initializers (and ``Constant`` nodes) become parameters or attributes; graph
inputs that are not initializers become net inputs with the per-example shape
``dims[1:]`` (the batch axis may be symbolic, no other axis may).

This module only walks the file. What each operator means is said by the layer module
of the decaf type it becomes, registered with ``@onnx_importer("Op")`` (decaf/interop.py's
``ONNX_IMPORTERS``) and handed an ``OnnxImporter``; writing a layer out is its
``Layer.to_onnx(g)``, handed an ``OnnxWriter``. ``supported_ops()`` lists every operator
the registry holds, with its module and a description: the table's row, or for an operator
added since, the first line of its importer's docstring (so a new layer module documents its own
operators and needs no edit here). The operators this release reads (ONNX -> decaf, and the
module that maps them; tests/io/test_onnx_registry.py checks that no row is stale):

=========================  =============================================================  ==========
Conv                       Convolution: 2-D, pads (asymmetric too), strides, dilations,   conv
                           group, auto_pad SAME_UPPER/SAME_LOWER (pad_mode) / VALID
MaxPool, AveragePool       Pooling: pads, strides, ceil_mode, count_include_pad, auto_pad pool
                           (SAME needs a known input size); no dilation, no Indices output
GlobalAveragePool,         Pooling with global_pooling                                    pool
GlobalMaxPool
LRN                        LRN (size, alpha, beta, bias -> local_size, alpha, beta, k)    lrn
Relu, LeakyRelu            ReLU (negative_slope)                                          activation
Clip                       ReLU6 for [0, 6], ReLU for [0, inf), else Clip; min/max from   activation
                           attributes (opset < 11) or constant inputs
Sigmoid, Tanh              Sigmoid, Tanh                                                  activation
HardSwish                  HardSwish                                                      hardswish
HardSigmoid                HardSigmoid (alpha, beta)                                      hardsigmoid
Swish                      SiLU (alpha); PyTorch's SiLU is Sigmoid then Mul (Eltwise)     silu
Gelu, Erf                  GELU (approximate none or tanh), Erf                           gelu
Mish                       Mish                                                           mish
Elu, Selu                  ELU, SELU                                                      elu
Softplus, Softsign         Softplus, Softsign                                             softplus
PRelu                      PReLU (one slope, or one per channel)                          prelu
LayerNormalization         LayerNorm (axis to the last axis)                              layernorm
LogSoftmax                 LogSoftmax over axis 1                                         logsoftmax
ConvTranspose              Deconvolution                                                  deconv
Gemm                       InnerProduct (transA 0; transB either way; alpha and beta are  linear
                           folded into the weights and bias; C constant, size 1 or N)
MatMul [+ Add]             InnerProduct for a 2-D input times a constant matrix; a        linear
                           following Add of a constant vector becomes its bias; an N-D
                           (N, ..., C) input: Transpose, 1x1 Convolution, Transpose
Flatten, Reshape,          Flatten (axis 1) or Reshape to the exact per-example shape,    shape
Squeeze, Unsqueeze         worked out at two batch sizes; the target may be a constant
                           or a folded shape computation; refused if the batch moves
Concat                     Concat (a non-batch axis; negative counts from the end)        shape
Add, Sum, Sub, Mul, Div    Eltwise (sum, coeff -1 for Sub, prod for Mul) for tensors of   eltwise
                           one shape; with a per-channel constant: Scale (weight, bias);
                           any other broadcast: Arithmetic; Mul(x, x) that starts
                           PyTorch's LocalResponseNorm chain (Pad, 3-D AveragePool, Pow,
                           Div): one LRN
Pow, Sqrt, Reciprocal,     Arithmetic (pow by a constant exponent, 1 / x, -1 * x)         arith
Neg
Max, Min, Mean             Eltwise max / sum with 1/n for tensors of one shape; else two  eltwise
                           operands: Arithmetic max, min
Transpose                  Transpose (perm keeps the batch axis first)                    transpose
ReduceMean, ReduceMax,     Reduce over non-batch axes (axes as attribute or input,        reduce
ReduceSum                  keepdims)
Slice, Split               Slice (one per Split output); starts/ends/axes/steps or split  slice
                           as attributes or constant inputs by opset
Gather                     Slice (+ Reshape for one index) for constant consecutive       slice
                           indices along a non-batch axis of a computed tensor
Pad                        Pad (constant, reflect, edge; a zero Pad read only by a Conv   pad
                           becomes the Conv's pads)
Resize, Upsample           Resize (nearest, linear; scales or sizes; half_pixel,          resize
                           pytorch_half_pixel, align_corners, asymmetric)
Dropout                    Dropout (ratio; inference mode only)                           dropout
BatchNormalization         BatchNorm (affine, eps, momentum; inference mode only)         norm
Softmax                    Softmax over axis 1                                            softmax
Constant, Identity         a constant, or the same blob (graph-level, no layer)           (here)
=========================  =============================================================  ==========

Shape computations are evaluated at import (io/onnx_fold.py: Shape, Size, Gather, Unsqueeze,
Squeeze, Concat, Slice, ConstantOfShape, Cast, Range, Reshape, Expand, Transpose, Where, the
arithmetic and comparison ops, ... when every input is a constant or a shape). They run at two
batch sizes (``OnnxImporter.probe_batches``), so a value that follows the batch size
(``x.size(0)``) is told apart from a constant and a dynamic-batch export imports like a static one.

Anything else is refused by name: ``DecafFormatError("model.onnx: ONNX op 'Hardmax'
(node 'up1') is not supported by decaf")``; an importer's unforeseen failure is a
DecafFormatError naming the node and its op too.

``net_to_onnx(net, path)`` writes a decaf net as an ONNX model (opset 13): every
layer type above the other way round (Eltwise max as Max, Scale as Mul [+ Add]);
loss layers and types without a ``to_onnx`` are refused.  In-place layers get
versioned tensor names (``relu6:1``); the last version of a blob keeps its plain
name, so the graph outputs have decaf's names.
"""
import numpy as np

from .. import layers as _layers  # noqa: F401  (importing the layer modules fills ONNX_IMPORTERS)
from ..errors import ShapeError, SpecError
from ..interop import ONNX_IMPORTERS
from .errors import DecafFormatError
from .onnx_fold import FOLDERS, NotFoldable, axes_arg, fold
from .transposes import remove_transposes

__all__ = ["onnx_to_net", "net_to_onnx", "OnnxImporter", "OnnxWriter", "supported_ops"]


def _import_onnx():
    try:
        import onnx
        from onnx import numpy_helper  # noqa: F401
    except ImportError:
        raise ImportError("reading and writing ONNX files needs the 'onnx' package: pip install onnx") from None
    return onnx


# =====================================================================================
# ONNX -> decaf
# =====================================================================================
class OnnxImporter:
    """The context an ``@onnx_importer`` function gets (``imp``), reading one ONNX graph.

    For the node at hand: ``attrs(node)``, ``const(tensor)`` (an initializer, Constant or folded
    value that does not follow the batch, else None), ``scalar(tensor)`` (such a value holding one
    number, as a float), ``need_const(node, index, what)``,
    ``axes(node, since, index)`` (an attribute before opset ``since``, an input from it),
    ``has_input(node, index)``, ``shape(tensor)`` and ``rank(tensor, node, what)`` (the batch axis
    is ``static_batch``, None for a dynamic one), ``only_first_output(node)``, ``opset``. For shape
    computations that follow the batch size: ``probe_batches``, ``value_at(tensor, batch)`` and
    ``shape_at(tensor, batch)`` (a computed tensor's shape at that batch size). To emit: ``add(node, decaf_type, bottoms, top, params, **spec)`` adds one decaf
    layer; ``same_as(tensor, source)`` makes a tensor another name for ``source``;
    ``sole_consumer(tensor, op)``, ``consumers(tensor)``, ``is_graph_output(tensor)`` and ``absorb(node)``
    let one layer take over the nodes after it (MatMul + Add, PyTorch's LRN chain). To refuse: ``raise imp.fail(message)``, with ``label(node)`` naming the node.
    """

    # Shape computations are evaluated at these two batch sizes: a value equal at both is a
    # constant, one that differs follows the batch size (``value_at``).
    probe_batches = (7, 13)

    def __init__(self, model, source):
        import onnx
        from onnx import numpy_helper

        self._onnx, self._numpy_helper = onnx, numpy_helper
        self.source = source
        self._graph = model.graph
        self.opset = 1
        for imp in model.opset_import:
            if imp.domain in ("", "ai.onnx"):
                self.opset = imp.version
        self._consts = {}
        for init in self._graph.initializer:
            self._consts[init.name] = self._array(init, f"initializer {init.name!r}")
        self._shapes = self._infer_shapes(model)
        self._batch_values = {}      # tensor -> {probe batch: value} for folded values that follow the batch
        self._tracked = {}           # tensor -> its shape at batch 1, from the decaf layers made so far
        self.static_batch = None     # the graph inputs' fixed batch size, if they have one
        self._alias = {}
        self.layers, self.arrays = [], {}
        self._layer_names = set()
        self._absorbed = set()       # first outputs of nodes another node's layer took over
        self._consumers = {}
        for node in self._graph.node:
            for t in node.input:
                if t:
                    self._consumers.setdefault(t, []).append(node)
        self._graph_outputs = {o.name for o in self._graph.output}

    def fail(self, message):
        """The error to raise: a DecafFormatError naming the file."""
        return DecafFormatError(f"{self.source}: {message}")

    def _array(self, tensor, what):
        # external data (a path, offset and length in the tensor) would be read relative to the
        # current directory: a downloaded model could copy any local file into its weights. Every
        # tensor (initializers, Constant values, tensor attributes) comes through here, and none may.
        if tensor.data_location == 1 or len(tensor.external_data):
            raise self.fail(f"{what} refers to external data ({', '.join(e.key + '=' + e.value for e in tensor.external_data)[:200] or 'no location'}): "
                            "decaf reads only tensors stored inside the .onnx file")
        try:
            return self._numpy_helper.to_array(tensor)
        except Exception as exc:    # a malformed tensor: onnx raises many kinds
            raise self.fail(f"{what} cannot be read: {exc}") from exc

    def _infer_shapes(self, model):
        try:
            model = self._onnx.shape_inference.infer_shapes(model)
        except Exception:            # shape inference is a help, not a requirement
            pass
        shapes = {}
        for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
            t = vi.type.tensor_type
            if t.HasField("shape"):
                shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
        return shapes

    # ---- what a node's tensors are --------------------------------------------
    def _resolve(self, tensor):
        while tensor in self._alias:
            tensor = self._alias[tensor]
        return tensor

    def const(self, tensor):
        """The value of a constant tensor (initializer, Constant output or a folded computation on
        constants and shapes that does not follow the batch size), else None."""
        return self._consts.get(self._resolve(tensor)) if tensor else None

    def scalar(self, tensor):
        """The value of a constant tensor holding one value, as a float (a chain's epsilon, exponent or
        factor), else None."""
        v = self.const(tensor)
        return None if v is None or v.size != 1 else float(v.reshape(-1)[0])

    def value_at(self, tensor, batch):
        """The value of a folded tensor when the batch size is ``batch`` (one of ``probe_batches``):
        a constant, or a shape computation that follows the batch size; None for a computed tensor."""
        tensor = self._resolve(tensor) if tensor else tensor
        if tensor in self._consts:
            return self._consts[tensor]
        return self._batch_values.get(tensor, {}).get(batch)

    def shape(self, tensor):
        """The tensor's shape (a tuple; the batch axis is the graph's static batch size or None),
        or None when unknown: from the decaf layers made so far, else ONNX shape inference."""
        tensor = self._resolve(tensor)
        if tensor in self._tracked:
            return (self.static_batch,) + self._tracked[tensor][1:]
        if tensor in self._consts:
            return tuple(self._consts[tensor].shape)
        return self._shapes.get(tensor)

    def shape_at(self, tensor, batch):
        """The shape of a computed tensor (batch axis first) when the batch size is ``batch``, or None."""
        tracked = self._tracked.get(self._resolve(tensor))
        return None if tracked is None else (batch,) + tracked[1:]

    def axes(self, node, since, index=1):
        """A node's ``axes``: an attribute before opset ``since``, a constant input ``index`` from it on
        (None when not given)."""
        if self.opset >= since and self.has_input(node, index):
            self.need_const(node, index, "the axes")
        inputs = [self.const(t) for t in node.input]
        return axes_arg(inputs, self.attrs(node), self.opset, since, index)

    def rank(self, tensor, node, what):
        """The number of axes of ``tensor``; refuses the node if it is unknown (``what`` needed it)."""
        shape = self.shape(tensor)
        if shape is None:
            raise self.fail(f"node {self.label(node)}: the rank of {tensor!r} is unknown, needed for {what}")
        return len(shape)

    @staticmethod
    def label(node):
        """How an error names a node: ``'conv1' (Conv)``."""
        return f"'{node.name or node.output[0]}' ({node.op_type})"

    def attrs(self, node):
        """The node's attributes as a dict of Python values (strings decoded)."""
        out = {}
        for a in node.attribute:
            out[a.name] = self._onnx.helper.get_attribute_value(a)
            if isinstance(out[a.name], bytes):
                out[a.name] = out[a.name].decode("utf-8", "replace")
        return out

    @staticmethod
    def has_input(node, index):
        """Whether the optional input ``index`` is given (ONNX leaves it out or names it '')."""
        return len(node.input) > index and bool(node.input[index])

    def need_const(self, node, index, what):
        """The constant value of input ``index``; refuses the node if it is missing or computed."""
        if not self.has_input(node, index):
            raise self.fail(f"node {self.label(node)}: missing {what}")
        value = self.const(node.input[index])
        if value is None and self._resolve(node.input[index]) in self._batch_values:
            raise self.fail(f"node {self.label(node)}: {what} ({node.input[index]!r}) follows the batch size; "
                            f"decaf needs it to be the same for every batch")
        if value is None:
            raise self.fail(f"node {self.label(node)}: {what} ({node.input[index]!r}) must be a constant "
                            f"(an initializer), decaf has no layer for a computed one")
        return value

    def only_first_output(self, node):
        """Refuse the node if any output but its first is read (decaf layers have one top)."""
        for extra in node.output[1:]:
            if extra and (extra in self._consumers or extra in self._graph_outputs):
                raise self.fail(f"node {self.label(node)}: its output {extra!r} is used; only the first "
                                f"output is supported")

    def consumers(self, tensor):
        """The nodes reading ``tensor`` as an explicit input (a list, maybe empty)."""
        return list(self._consumers.get(tensor, []))

    def is_graph_output(self, tensor):
        return tensor in self._graph_outputs

    def sole_consumer(self, tensor, op=None):
        """The one node reading ``tensor`` (of op type ``op`` when given), or None if it has several
        readers, is a graph output or its reader is of another type."""
        users = self._consumers.get(tensor, [])
        if len(users) != 1 or tensor in self._graph_outputs or (op is not None and users[0].op_type != op):
            return None
        return users[0]

    # ---- what the graph becomes -----------------------------------------------
    def _layer_name(self, node):
        return self._unique_name(node.name or (node.output[0] if node.output else node.op_type))

    def _unique_name(self, base):
        name, i = base, 1
        while name in self._layer_names:
            i += 1
            name = f"{base}_{i}"
        self._layer_names.add(name)
        return name

    def add(self, node, ltype, bottoms, top, params=None, **kw):
        """Add a decaf layer of type ``ltype`` for ``node``: ``params`` maps short names ("weight") to
        arrays, ``kw`` is the rest of its spec. Returns the spec dict."""
        name = self._layer_name(node)
        bottoms = [self._resolve(b) for b in bottoms]
        layer = {"name": name, "type": ltype, "bottom": bottoms[0] if len(bottoms) == 1 else bottoms, "top": top}
        layer.update(kw)
        self.layers.append(layer)
        for pname, value in (params or {}).items():
            self.arrays[f"{name}.{pname}"] = np.array(value, np.float32, order="C")   # (0-d stays 0-d)
        self._track(node, layer, bottoms)
        return layer

    def _track(self, node, layer, bottoms):
        """Record the top shapes of the layer just added (at batch 1), asking the decaf layer
        itself; a spec or shape the layer refuses is refused here, naming the node."""
        from ..layer import create_layer
        shapes = [self._tracked.get(b) for b in bottoms]
        if any(s is None for s in shapes):
            return
        try:
            made = create_layer(layer)
            made.setup(shapes, None)
            tops = made.reshape(shapes)
        except (SpecError, ShapeError, ValueError, IndexError) as exc:
            raise self.fail(f"node {self.label(node)}: {exc}") from exc
        tops_names = [layer["top"]] if isinstance(layer["top"], str) else layer["top"]
        for t, shape in zip(tops_names, tops):
            self._tracked[t] = tuple(int(d) for d in shape)

    def same_as(self, tensor, source):
        """Make ``tensor`` another name for ``source`` (a constant stays a constant)."""
        if self.const(source) is not None:
            self._consts[tensor] = self.const(source)
        elif self._resolve(source) in self._batch_values:
            self._batch_values[tensor] = self._batch_values[self._resolve(source)]
        else:
            self._alias[tensor] = source

    def absorb(self, node):
        """Mark ``node`` as done by the layer just added (the walk skips it)."""
        self._absorbed.add(node.output[0])

    # ---- inputs -----------------------------------------------------------------
    def _inputs(self):
        inputs, batches = {}, []
        for vi in self._graph.input:
            if vi.name in self._consts:
                continue
            t = vi.type.tensor_type
            if not vi.type.HasField("tensor_type") or not t.HasField("shape"):
                raise self.fail(f"graph input {vi.name!r} has no tensor shape")
            if t.elem_type not in (1, 10, 11):   # float, float16, double
                raise self.fail(f"graph input {vi.name!r} has element type {t.elem_type}, decaf takes float")
            dims = list(t.shape.dim)
            if not dims:
                raise self.fail(f"graph input {vi.name!r} is a scalar; decaf inputs have a batch axis")
            shape = []
            batches.append(int(dims[0].dim_value) if dims[0].HasField("dim_value") and dims[0].dim_value > 0
                           else None)
            for axis, d in enumerate(dims[1:], start=1):
                if not d.HasField("dim_value") or d.dim_value < 1:
                    what = d.dim_param or "unknown"
                    raise self.fail(f"graph input {vi.name!r} has a symbolic dimension {what!r} at axis {axis}; "
                                    f"decaf needs fixed per-example shapes")
                shape.append(int(d.dim_value))
            inputs[vi.name] = shape
            self._tracked[vi.name] = (1,) + tuple(shape)
        if not inputs:
            raise self.fail("the graph has no inputs besides its initializers")
        if len(set(batches)) == 1:
            self.static_batch = batches[0]
        return inputs

    # ---- the walk ---------------------------------------------------------------
    def _fold_constants(self):
        """Fold, before the walk, every node computing on constants alone (not on shapes), so an
        importer that looks ahead along the graph (PyTorch's LRN chain) sees their values."""
        done = set()
        for node in self._graph.node:
            if node.domain not in ("", "ai.onnx") or node.op_type in ("Shape", "Size"):
                continue
            if node.op_type == "Constant":
                self._constant(node)
                done.add(id(node))
            elif (node.op_type in FOLDERS and all(not t or t in self._consts for t in node.input)
                  and self._fold(node)):
                done.add(id(node))
        return done

    def run(self):
        inputs = self._inputs()
        folded = self._fold_constants()
        for node in self._graph.node:
            if id(node) in folded or node.output and node.output[0] in self._absorbed:
                continue
            if node.domain not in ("", "ai.onnx"):
                raise self.fail(f"ONNX op '{node.domain}.{node.op_type}' (node {node.name!r}) is not supported "
                                f"by decaf")
            handler = _GRAPH_OPS.get(node.op_type)
            if handler is not None:
                handler(self, node)
                continue
            if self._fold(node) or self._pad_into_conv(node):
                continue
            handler = ONNX_IMPORTERS.get(node.op_type)
            if handler is None:
                raise self.fail(f"ONNX op {node.op_type!r} (node {node.name or node.output[0]!r}) is not "
                                f"supported by decaf")
            self._check_data_inputs(node)
            try:
                handler(self, node)
            except DecafFormatError:
                raise
            except Exception as exc:       # an importer's unforeseen case: still one error naming the node
                raise self.fail(f"node {self.label(node)} cannot be imported: {type(exc).__name__}: {exc}") from exc
        remove_transposes(self.layers, self.arrays, self._tracked,
                          keep={self._resolve(o.name) for o in self._graph.output})
        for o in self._graph.output:
            if self.const(o.name) is not None:
                raise self.fail(f"graph output {o.name!r} is a constant")
            if self._resolve(o.name) in self._batch_values:
                raise self.fail(f"graph output {o.name!r} is computed from shapes only (no layer computes it)")
            source = self._resolve(o.name)
            if source != o.name:                 # the same tensor as another one (Identity, a no-op)
                if source not in self._tracked:
                    raise self.fail(f"graph output {o.name!r} is another name for {source!r}")
                self.layers.append({"name": self._unique_name(o.name), "type": "Reshape", "bottom": source,
                                    "top": o.name, "shape": list(self._tracked[source][1:])})
        name = self._graph.name or "onnx_net"
        return {"name": name, "inputs": inputs, "layers": self.layers}, self.arrays

    # ---- graph-level operators (no decaf layer) ----------------------------------
    def _constant(self, node):
        a = self.attrs(node)
        tensor = next((att.t for att in node.attribute if att.name == "value"), None)
        if tensor is not None:
            value = self._array(tensor, f"Constant {node.output[0]!r}")
        elif "value_float" in a:
            value = np.array(a["value_float"], np.float32)
        elif "value_floats" in a:
            value = np.array(a["value_floats"], np.float32)
        elif "value_int" in a:
            value = np.array(a["value_int"], np.int64)
        elif "value_ints" in a:
            value = np.array(a["value_ints"], np.int64)
        else:
            raise self.fail(f"node {self.label(node)}: unsupported Constant attribute {sorted(a)}")
        self._consts[node.output[0]] = value

    def _identity(self, node):
        self.same_as(node.output[0], node.input[0])

    def _fold(self, node):
        """Evaluate ``node`` now if it computes on constants and shapes only (onnx_fold.py), at each
        probe batch size; True when done."""
        op = node.op_type
        if op not in FOLDERS:
            return False
        args = []                       # per input: a function of the batch size
        for i, t in enumerate(node.input):
            r = self._resolve(t) if t else t
            if not t:
                args.append(lambda b: None)
            elif r in self._consts:
                args.append(lambda b, v=self._consts[r]: v)
            elif r in self._batch_values:
                args.append(lambda b, v=self._batch_values[r]: v[b])
            elif op in ("Shape", "Size") and i == 0 and r in self._tracked:
                # the shape without the data: a zero-stride view costs no memory
                args.append(lambda b, s=self._tracked[r]: np.broadcast_to(np.float32(0), (b,) + s[1:]))
            elif op in ("Shape", "Size") and i == 0:
                raise self.fail(f"node {self.label(node)}: the shape of {t!r} is not known")
            else:
                return False
        attrs = {k: (self._array(v, f"attribute {k!r} of node {self.label(node)}")
                     if isinstance(v, self._onnx.TensorProto) else v) for k, v in self.attrs(node).items()}
        results = {}
        for b in self.probe_batches:
            try:
                results[b] = fold(op, [f(b) for f in args], attrs, self.opset)
            except NotFoldable:
                return False
            except (ValueError, IndexError, KeyError, TypeError) as exc:
                raise self.fail(f"node {self.label(node)}: {exc}") from exc
        first, second = (results[b] for b in self.probe_batches)
        for k, out in enumerate(node.output):
            if not out:
                continue
            a, b = first[k], second[k]
            if a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b):
                self._consts[out] = a
            else:
                self._batch_values[out] = {bb: results[bb][k] for bb in self.probe_batches}
        return True

    def _pad_into_conv(self, node):
        """A zero constant Pad of the spatial axes read only by a Conv with explicit pads becomes
        part of the Conv's pads (the Conv node is rewritten); True when done."""
        if node.op_type != "Pad" or self.opset < 11:
            return False
        conv = self.sole_consumer(node.output[0])
        if conv is None or conv.op_type != "Conv" or conv.input[0] != node.output[0]:
            return False
        a, ca = self.attrs(node), self.attrs(conv)
        pads = self.const(node.input[1]) if self.has_input(node, 1) else None
        value = self.const(node.input[2]) if self.has_input(node, 2) else np.zeros(1)
        axes = self.const(node.input[3]) if self.has_input(node, 3) else None
        if (a.get("mode", "constant") != "constant" or pads is None or value is None or np.any(value != 0)
                or axes is not None or ca.get("auto_pad", "NOTSET") not in ("NOTSET", "")):
            return False
        pads = [int(p) for p in pads.reshape(-1)]
        if len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)) or min(pads) < 0:
            return False
        old = list(ca.get("pads", [0, 0, 0, 0]))
        new = [old[0] + pads[2], old[1] + pads[3], old[2] + pads[6], old[3] + pads[7]]
        for att in list(conv.attribute):
            if att.name == "pads":
                conv.attribute.remove(att)
        conv.attribute.append(self._onnx.helper.make_attribute("pads", new))
        self.same_as(node.output[0], node.input[0])
        return True

    # ONNX ops whose every input is data: none of them may be a value that follows the batch size
    _DATA_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Sum", "Max", "Min", "Mean", "Concat", "Where"})

    def _check_data_inputs(self, node):
        for i, t in enumerate(node.input):
            if t and (i == 0 or node.op_type in self._DATA_OPS) and self._resolve(t) in self._batch_values:
                raise self.fail(f"node {self.label(node)}: its input {t!r} is computed from the batch size; "
                                f"decaf layers take only tensors whose per-example shape is fixed")


# ONNX ops that are bookkeeping of the graph rather than a layer
_GRAPH_OPS = {"Constant": OnnxImporter._constant, "Identity": OnnxImporter._identity}
GRAPH_OPS = frozenset(_GRAPH_OPS)


def _table_rows():
    """{op: (module, description)} from the operator table of this module's docstring: an entry is
    a row naming its module and the rows after it that don't (their ops and text continue it)."""
    import re
    lines = __doc__.split("\n")
    edges = [i for i, line in enumerate(lines) if re.fullmatch(r"=+( +=+)+", line)]
    columns = [m.start() for m in re.finditer("=+", lines[edges[0]])]
    entries = []                                   # [module, [ops], [text pieces]]
    for row in lines[edges[0] + 1:edges[1]]:
        if row[columns[2]:].strip():
            entries.append([row[columns[2]:].strip(), [], []])
        entries[-1][1] += re.findall(r"\b[A-Z][A-Za-z]+\b", re.sub(r"\[.*?\]", "", row[:columns[1]]))
        entries[-1][2].append(row[columns[1]:columns[2]].strip())
    return {op: (module, " ".join(t for t in text if t)) for module, ops, text in entries for op in ops}


def supported_ops():
    """{ONNX op: (decaf module, description)} for every operator decaf reads: the registry
    (``ONNX_IMPORTERS``, filled by the layer modules) and the graph-level ops handled here."""
    rows = _table_rows()
    out = {}
    for op, importer in sorted(ONNX_IMPORTERS.items()):
        module = importer.__module__.rsplit(".", 1)[-1]
        doc = (importer.__doc__ or "").strip().split("\n")[0]
        out[op] = (module, rows.get(op, (module, doc))[1] or doc)
    for op in sorted(GRAPH_OPS):
        out[op] = ("(here)", rows.get(op, ("(here)", ""))[1])
    return out


def onnx_to_net(path):
    """(spec, arrays) from an ONNX model file; DecafFormatError (naming the file) if it cannot be used."""
    onnx = _import_onnx()
    source = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{source}: no such file") from None
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:     # the protobuf decoder raises its own DecodeError (and others)
        raise DecafFormatError(f"{source}: not a readable ONNX model: {exc}") from exc
    if not model.HasField("graph") or not model.graph.node:
        raise DecafFormatError(f"{source}: not an ONNX model (no graph nodes)")
    if any(init.data_location == 1 for init in model.graph.initializer):
        raise DecafFormatError(f"{source}: weights stored in external data files are not supported")
    spec, arrays = OnnxImporter(model, source).run()
    from ..net import Net
    try:
        net = Net(spec, init=False)
        net.load_params(arrays)
    except (ValueError, KeyError, TypeError) as exc:
        raise DecafFormatError(f"{source}: the converted net is not valid: {exc}") from exc
    return spec, {k: net.params[k].data.copy() for k in arrays}


# =====================================================================================
# decaf -> ONNX
# =====================================================================================
class OnnxWriter:
    """The context ``Layer.to_onnx(g)`` gets (``g``), building one ONNX graph.

    For the layer being written: ``inputs`` (the ONNX names of its bottoms' current versions),
    ``outputs`` (the names its tops must get), ``input_shapes`` (its bottoms' shapes, batch axis
    first), ``params`` (short name -> array: ``params["weight"]``) and ``opset``. To write:
    ``const(name, value, dtype=float32)`` adds an initializer and returns its name;
    ``node(op, inputs, outputs, name, **attributes)`` adds a node. Intermediate tensors get
    names of the layer's own (``f"{layer.name}:flat"``), which decaf blob names never clash with
    in practice as ':' marks versions here.
    """

    def __init__(self, helper, numpy_helper, opset=13):
        self._helper, self._numpy_helper = helper, numpy_helper
        self.opset = opset           # the opset being written (ops whose attributes became inputs ask)
        self.nodes, self.initializers = [], []
        self.inputs, self.outputs, self.input_shapes, self.params = [], [], [], {}

    def const(self, name, value, dtype=np.float32):
        """Add an initializer ``name`` holding ``value`` as ``dtype``; returns ``name``."""
        array = np.asarray(value, dtype)     # (not ascontiguousarray: it turns scalars into 1-D arrays)
        self.initializers.append(self._numpy_helper.from_array(array if array.flags.c_contiguous else array.copy(),
                                                               name))
        return name

    def node(self, op, inputs, outputs, name, **attributes):
        """Add the ONNX node ``op`` (default domain) reading ``inputs`` and writing ``outputs``."""
        self.nodes.append(self._helper.make_node(op, list(inputs), list(outputs), name=name, **attributes))


def net_to_onnx(net, path, opset=13, extra_outputs=()):
    """Write the decaf ``net`` (its spec and current weights) as an ONNX model at ``path``.

    The graph outputs are the net's outputs, plus the blobs named in ``extra_outputs``
    (e.g. ``["fc7"]`` to read features from ONNX Runtime).  Returns the ModelProto.
    """
    onnx = _import_onnx()
    from onnx import TensorProto, helper, numpy_helper

    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not 1 <= opset <= newest:
        raise ValueError(f"opset {opset!r} is not one this onnx package knows (1 to {newest})")
    g = OnnxWriter(helper, numpy_helper, opset)
    inputs = set(net.input_shapes)
    writes = {}
    for layer in net.order:
        if "split" in layer.roles:       # its tops are its bottom: no ONNX node, no new version
            continue
        for t in net.tops[layer.name]:
            writes[t.name] = writes.get(t.name, 0) + 1
    seen = {}
    current = {name: name for name in net.input_shapes}

    def out(blob_name):
        k = seen.get(blob_name, 0) + 1
        seen[blob_name] = k
        new = blob_name if (k == writes[blob_name] and blob_name not in inputs) else f"{blob_name}:{k}"
        current[blob_name] = new
        return new

    for layer in net.order:
        name = layer.name
        bottoms = net.bottoms[name]
        ins = [current[b.name] for b in bottoms]
        if "split" in layer.roles:
            for top in net.tops[name]:
                current[top.name] = ins[0]
            continue
        if layer.is_loss:
            raise ValueError(f"layer {name!r}: decaf type {layer.type_name!r} is a loss and cannot be exported "
                             f"to ONNX (export a deploy net without loss layers)")
        g.inputs, g.input_shapes = ins, [tuple(b.shape) for b in bottoms]
        g.outputs = [out(b.name) for b in net.tops[name]]
        g.params = {prm.name[len(name) + 1:]: prm.data for prm in layer.blobs}   # "conv1.weight" -> "weight"
        layer.to_onnx(g)

    def info(name, shape):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N"] + [int(d) for d in shape])

    graph_inputs = [info(n, s) for n, s in net.input_shapes.items()]
    for n in extra_outputs:
        if n not in net.blobs:
            raise KeyError(f"net {net.name!r} has no blob {n!r}")
    names = list(net.output_names) + [n for n in extra_outputs if n not in net.output_names]
    graph_outputs = [info(current[n], net.blobs[n].shape[1:]) for n in names]
    graph = helper.make_graph(g.nodes, net.name, graph_inputs, graph_outputs, initializer=g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="decaf")
    model.ir_version = 8
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:    # e.g. an op written with inputs an older opset lacks
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"net {net.name!r} cannot be written at opset {opset}: {first}") from None
    onnx.save(model, str(path))
    return model
