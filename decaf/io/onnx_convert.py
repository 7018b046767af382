"""ONNX graphs to decaf specs and weights (``onnx_to_net``), and decaf nets to ONNX (``net_to_onnx``).

Both use the ``onnx`` package (imported when called).  ONNX is SSA: every tensor
has one producer, so ONNX tensor names become decaf blob names as they are;
initializers (and ``Constant`` nodes) become parameters or attributes; graph
inputs that are not initializers become net inputs with the per-example shape
``dims[1:]`` (the batch axis may be symbolic, no other axis may).

Operators (ONNX -> decaf):

=========================  =============================================================
Conv                       Convolution: 2-D, pads (asymmetric too), strides, dilations,
                           group, auto_pad SAME_UPPER/SAME_LOWER (pad_mode) / VALID
MaxPool, AveragePool       Pooling: pads, strides, ceil_mode, count_include_pad, auto_pad
                           (SAME needs a known input size); no dilation, no Indices output
GlobalAveragePool/MaxPool  Pooling with global_pooling
LRN                        LRN (size, alpha, beta, bias -> local_size, alpha, beta, k)
Relu, LeakyRelu            ReLU (negative_slope)
Clip                       ReLU6 for [0, 6], ReLU for [0, inf), else Clip; min/max from
                           attributes (opset < 11) or constant inputs
Sigmoid, Tanh              Sigmoid, Tanh
Gemm                       InnerProduct (transA 0; transB either way; alpha and beta are
                           folded into the weights and bias; C constant, size 1 or N)
MatMul [+ Add]             InnerProduct for a 2-D input times a constant matrix; a
                           following Add of a constant vector becomes its bias
Flatten                    Flatten (axis 1)
Reshape                    Reshape with a constant shape whose first entry keeps the batch
Concat                     Concat (axis >= 1)
Add, Sum, Sub, Mul, Div    Eltwise (sum, coeff -1 for Sub, prod for Mul) for tensors of
                           one shape; with a per-channel constant: Scale (weight, bias)
Dropout                    Dropout (ratio); Identity: the same blob
BatchNormalization         BatchNorm (affine, eps, momentum; inference mode only)
Softmax                    Softmax over axis 1
=========================  =============================================================

Anything else is refused by name: ``DecafFormatError("model.onnx: ONNX op 'Resize'
(node 'up1') is not supported by decaf")``.

``net_to_onnx(net, path)`` writes a decaf net as an ONNX model (opset 13): every
layer type above the other way round, plus Scale and Eltwise; loss layers are
refused.  In-place layers get versioned tensor names (``relu6:1``); the last
version of a blob keeps its plain name, so the graph outputs have decaf's names.
"""
import numpy as np

from .errors import DecafFormatError

__all__ = ["onnx_to_net", "net_to_onnx"]

F32_MAX = float(np.finfo(np.float32).max)


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
class _Importer:
    def __init__(self, model, source):
        import onnx
        from onnx import numpy_helper

        self.onnx, self.numpy_helper = onnx, numpy_helper
        self.source = source
        self.graph = model.graph
        self.opset = 1
        for imp in model.opset_import:
            if imp.domain in ("", "ai.onnx"):
                self.opset = imp.version
        self.consts = {}
        for init in self.graph.initializer:
            self.consts[init.name] = self._array(init, f"initializer {init.name!r}")
        self.shapes = self._infer_shapes(model)
        self.alias = {}
        self.layers, self.arrays = [], {}
        self.layer_names = set()
        self.skip = set()
        self.consumers = {}
        for i, node in enumerate(self.graph.node):
            for t in node.input:
                if t:
                    self.consumers.setdefault(t, []).append(i)
        self.graph_outputs = {o.name for o in self.graph.output}

    def fail(self, message):
        return DecafFormatError(f"{self.source}: {message}")

    def _array(self, tensor, what):
        try:
            return self.numpy_helper.to_array(tensor)
        except Exception as exc:    # a malformed tensor: onnx raises many kinds
            raise self.fail(f"{what} cannot be read: {exc}") from exc

    def _infer_shapes(self, model):
        try:
            model = self.onnx.shape_inference.infer_shapes(model)
        except Exception:            # shape inference is a help, not a requirement
            pass
        shapes = {}
        for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
            t = vi.type.tensor_type
            if t.HasField("shape"):
                shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
        return shapes

    # ---- helpers --------------------------------------------------------------
    def name(self, tensor):
        while tensor in self.alias:
            tensor = self.alias[tensor]
        return tensor

    def const(self, tensor):
        return self.consts.get(tensor) if tensor else None

    def shape(self, tensor):
        return self.shapes.get(tensor)

    def rank(self, tensor, node, what):
        shape = self.shape(tensor)
        if shape is None:
            raise self.fail(f"node {self._label(node)}: the rank of {tensor!r} is unknown, needed for {what}")
        return len(shape)

    @staticmethod
    def _label(node):
        return f"'{node.name or node.output[0]}' ({node.op_type})"

    def attrs(self, node):
        out = {}
        for a in node.attribute:
            out[a.name] = self.onnx.helper.get_attribute_value(a)
            if isinstance(out[a.name], bytes):
                out[a.name] = out[a.name].decode("utf-8", "replace")
        return out

    def layer_name(self, node):
        base = node.name or (node.output[0] if node.output else node.op_type)
        name, i = base, 1
        while name in self.layer_names:
            i += 1
            name = f"{base}_{i}"
        self.layer_names.add(name)
        return name

    def add(self, node, ltype, bottoms, top, params=None, **kw):
        name = self.layer_name(node)
        bottoms = [self.name(b) for b in bottoms]
        layer = {"name": name, "type": ltype, "bottom": bottoms[0] if len(bottoms) == 1 else bottoms, "top": top}
        layer.update(kw)
        self.layers.append(layer)
        for pname, value in (params or {}).items():
            self.arrays[f"{name}.{pname}"] = np.ascontiguousarray(value, np.float32)
        return layer

    def need_const(self, node, index, what):
        if index >= len(node.input) or not node.input[index]:
            raise self.fail(f"node {self._label(node)}: missing {what}")
        value = self.const(node.input[index])
        if value is None:
            raise self.fail(f"node {self._label(node)}: {what} ({node.input[index]!r}) must be a constant "
                            f"(an initializer), decaf has no layer for a computed one")
        return value

    def only_first_output(self, node):
        for extra in node.output[1:]:
            if extra and (extra in self.consumers or extra in self.graph_outputs):
                raise self.fail(f"node {self._label(node)}: its output {extra!r} is used; only the first "
                                f"output is supported")

    # ---- inputs -----------------------------------------------------------------
    def inputs(self):
        inputs = {}
        for vi in self.graph.input:
            if vi.name in self.consts:
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
            for axis, d in enumerate(dims[1:], start=1):
                if not d.HasField("dim_value") or d.dim_value < 1:
                    what = d.dim_param or "unknown"
                    raise self.fail(f"graph input {vi.name!r} has a symbolic dimension {what!r} at axis {axis}; "
                                    f"decaf needs fixed per-example shapes")
                shape.append(int(d.dim_value))
            inputs[vi.name] = shape
        if not inputs:
            raise self.fail("the graph has no inputs besides its initializers")
        return inputs

    # ---- the walk ---------------------------------------------------------------
    def run(self):
        inputs = self.inputs()
        for i, node in enumerate(self.graph.node):
            if i in self.skip:
                continue
            if node.domain not in ("", "ai.onnx"):
                raise self.fail(f"ONNX op '{node.domain}.{node.op_type}' (node {node.name!r}) is not supported "
                                f"by decaf")
            handler = getattr(self, f"op_{node.op_type}", None)
            if handler is None:
                raise self.fail(f"ONNX op {node.op_type!r} (node {node.name or node.output[0]!r}) is not "
                                f"supported by decaf")
            handler(node, i)
        for o in self.graph.output:
            if o.name in self.consts:
                raise self.fail(f"graph output {o.name!r} is a constant")
        name = self.graph.name or "onnx_net"
        return {"name": name, "inputs": inputs, "layers": self.layers}, self.arrays

    # ---- operators ------------------------------------------------------------------
    def op_Constant(self, node, i):
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
            raise self.fail(f"node {self._label(node)}: unsupported Constant attribute {sorted(a)}")
        self.consts[node.output[0]] = value

    def op_Identity(self, node, i):
        self._alias_or_const(node)

    def _alias_or_const(self, node):
        if self.const(node.input[0]) is not None:
            self.consts[node.output[0]] = self.consts[node.input[0]]
        else:
            self.alias[node.output[0]] = node.input[0]

    def op_Conv(self, node, i):
        a = self.attrs(node)
        w = self.need_const(node, 1, "the weight")
        if w.ndim != 4:
            raise self.fail(f"node {self._label(node)}: only 2-D convolution is supported (weight shape {w.shape})")
        b = self.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if len(node.input) > 2 and node.input[2] and b is None:
            raise self.fail(f"node {self._label(node)}: the bias must be a constant")
        kernel = list(a.get("kernel_shape", w.shape[2:]))
        if tuple(kernel) != tuple(w.shape[2:]):
            raise self.fail(f"node {self._label(node)}: kernel_shape {kernel} does not match the weight {w.shape}")
        kw = {"num_output": int(w.shape[0]), "kernel_size": [int(k) for k in kernel],
              "stride": [int(s) for s in a.get("strides", [1, 1])],
              "dilation": [int(d) for d in a.get("dilations", [1, 1])], "group": int(a.get("group", 1)),
              "bias_term": b is not None}
        self._pads(node, a, kw, allow_same_mode=True)
        params = {"weight": w}
        if b is not None:
            params["bias"] = b.reshape(-1)
        self.add(node, "Convolution", [node.input[0]], node.output[0], params, **kw)

    def _pads(self, node, a, kw, allow_same_mode, kernel=None, stride=None):
        auto = a.get("auto_pad", "NOTSET") or "NOTSET"
        if auto == "NOTSET":
            pads = [int(p) for p in a.get("pads", [0, 0, 0, 0])]
            if len(pads) != 4:
                raise self.fail(f"node {self._label(node)}: pads {pads}: only 2-D is supported")
            kw["pad"] = [pads[0], pads[1], pads[2], pads[3]]    # ONNX (begin h, begin w, end h, end w)
        elif auto == "VALID":
            kw["pad"] = 0
        elif auto in ("SAME_UPPER", "SAME_LOWER"):
            if allow_same_mode:
                kw["pad_mode"] = auto.lower()
            else:
                from ..layers.conv import same_pads
                shape = self.shape(node.input[0])
                if shape is None or len(shape) != 4 or None in shape[2:]:
                    raise self.fail(f"node {self._label(node)}: auto_pad {auto} needs the input size, which is "
                                    f"unknown")
                upper = auto == "SAME_UPPER"
                pt, pb = same_pads(shape[2], kernel[0], stride[0], 1, upper)
                pl, pr = same_pads(shape[3], kernel[1], stride[1], 1, upper)
                kw["pad"] = [pt, pl, pb, pr]
        else:
            raise self.fail(f"node {self._label(node)}: unknown auto_pad {auto!r}")

    def _pool(self, node, pool):
        a = self.attrs(node)
        self.only_first_output(node)
        kernel = [int(k) for k in a.get("kernel_shape", [])]
        if len(kernel) != 2:
            raise self.fail(f"node {self._label(node)}: only 2-D pooling is supported (kernel_shape {kernel})")
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            raise self.fail(f"node {self._label(node)}: pooling with dilations is not supported")
        stride = [int(s) for s in a.get("strides", [1, 1])]
        kw = {"pool": pool, "kernel_size": kernel, "stride": stride,
              "round_mode": "ceil" if a.get("ceil_mode", 0) else "floor"}
        if pool == "ave":
            kw["count_include_pad"] = bool(a.get("count_include_pad", 0))
        self._pads(node, a, kw, allow_same_mode=False, kernel=kernel, stride=stride)
        self.add(node, "Pooling", [node.input[0]], node.output[0], **kw)

    def op_MaxPool(self, node, i):
        self._pool(node, "max")

    def op_AveragePool(self, node, i):
        self._pool(node, "ave")

    def op_GlobalAveragePool(self, node, i):
        self.add(node, "Pooling", [node.input[0]], node.output[0], pool="ave", global_pooling=True)

    def op_GlobalMaxPool(self, node, i):
        self.add(node, "Pooling", [node.input[0]], node.output[0], pool="max", global_pooling=True)

    def op_LRN(self, node, i):
        a = self.attrs(node)
        if "size" not in a:
            raise self.fail(f"node {self._label(node)}: LRN without size")
        self.add(node, "LRN", [node.input[0]], node.output[0], local_size=int(a["size"]),
                 alpha=float(a.get("alpha", 1e-4)), beta=float(a.get("beta", 0.75)), k=float(a.get("bias", 1.0)))

    def op_Relu(self, node, i):
        self.add(node, "ReLU", [node.input[0]], node.output[0])

    def op_LeakyRelu(self, node, i):
        self.add(node, "ReLU", [node.input[0]], node.output[0],
                 negative_slope=float(self.attrs(node).get("alpha", 0.01)))

    def op_Sigmoid(self, node, i):
        self.add(node, "Sigmoid", [node.input[0]], node.output[0])

    def op_Tanh(self, node, i):
        self.add(node, "Tanh", [node.input[0]], node.output[0])

    def op_Clip(self, node, i):
        a = self.attrs(node)
        if self.opset < 11:
            lo, hi = float(a.get("min", -F32_MAX)), float(a.get("max", F32_MAX))
        else:
            lo, hi = -F32_MAX, F32_MAX
            if len(node.input) > 1 and node.input[1]:
                lo = float(self.need_const(node, 1, "min").reshape(-1)[0])
            if len(node.input) > 2 and node.input[2]:
                hi = float(self.need_const(node, 2, "max").reshape(-1)[0])
        lo, hi = max(lo, -F32_MAX), min(hi, F32_MAX)
        if lo == 0 and hi == 6:
            self.add(node, "ReLU6", [node.input[0]], node.output[0])
        elif lo == 0 and hi >= F32_MAX:
            self.add(node, "ReLU", [node.input[0]], node.output[0])
        else:
            self.add(node, "Clip", [node.input[0]], node.output[0], min=lo, max=hi)

    def op_Gemm(self, node, i):
        a = self.attrs(node)
        if a.get("transA", 0):
            raise self.fail(f"node {self._label(node)}: Gemm with transA is not supported")
        w = self.need_const(node, 1, "B (the weight)").astype(np.float64)
        if w.ndim != 2:
            raise self.fail(f"node {self._label(node)}: B must be 2-D, got shape {w.shape}")
        if not a.get("transB", 0):
            w = w.T
        w = w * float(a.get("alpha", 1.0))
        n = w.shape[0]
        params = {"weight": w}
        if len(node.input) > 2 and node.input[2]:
            c = self.need_const(node, 2, "C (the bias)").astype(np.float64) * float(a.get("beta", 1.0))
            if c.size not in (1, n) or (c.ndim == 2 and c.shape[0] != 1) or c.ndim > 2:
                raise self.fail(f"node {self._label(node)}: C of shape {c.shape} is not a bias of size {n}")
            params["bias"] = np.broadcast_to(c.reshape(-1), (n,))
        self.add(node, "InnerProduct", [node.input[0]], node.output[0], params, num_output=int(n),
                 bias_term="bias" in params)

    def op_MatMul(self, node, i):
        w = self.need_const(node, 1, "the second operand (the weight)")
        if w.ndim != 2:
            raise self.fail(f"node {self._label(node)}: MatMul by a constant of shape {w.shape}: only 2-D "
                            f"weights are supported")
        if self.rank(node.input[0], node, "MatMul") != 2:
            raise self.fail(f"node {self._label(node)}: MatMul of a {len(self.shape(node.input[0]))}-D input: "
                            f"only 2-D inputs are supported")
        n = w.shape[1]
        params = {"weight": w.T}
        top = node.output[0]
        users = self.consumers.get(top, [])
        if len(users) == 1 and top not in self.graph_outputs:
            nxt = self.graph.node[users[0]]
            if nxt.op_type == "Add" and len(nxt.input) == 2:
                other = nxt.input[1] if nxt.input[0] == top else nxt.input[0]
                c = self.const(other)
                if c is not None and c.size == n and c.ndim <= 2 and c.shape[-1] == n:
                    params["bias"] = c.reshape(-1)
                    self.skip.add(users[0])
                    top = nxt.output[0]
        self.add(node, "InnerProduct", [node.input[0]], top, params, num_output=int(n),
                 bias_term="bias" in params)

    def op_Flatten(self, node, i):
        axis = int(self.attrs(node).get("axis", 1))
        if axis < 0:
            axis += self.rank(node.input[0], node, "a negative axis")
        if axis != 1:
            raise self.fail(f"node {self._label(node)}: Flatten with axis {axis} is not supported (axis 1)")
        self.add(node, "Flatten", [node.input[0]], node.output[0])

    def op_Reshape(self, node, i):
        target = [int(d) for d in self.need_const(node, 1, "the shape").reshape(-1)]
        a = self.attrs(node)
        if a.get("allowzero", 0) and 0 in target:
            raise self.fail(f"node {self._label(node)}: Reshape with allowzero and a 0 in {target}")
        if not target:
            raise self.fail(f"node {self._label(node)}: Reshape to a scalar")
        first, rest = target[0], target[1:]
        in_shape = self.shape(node.input[0])
        batch = in_shape[0] if in_shape else None
        keeps_batch = first == 0 or (first == -1 and -1 not in rest) or (batch is not None and first == batch)
        if not keeps_batch:
            raise self.fail(f"node {self._label(node)}: Reshape to {target} changes the batch axis; decaf needs "
                            f"the first entry to be 0 (or -1 with the rest fixed)")
        self.add(node, "Reshape", [node.input[0]], node.output[0], shape=rest)

    def op_Concat(self, node, i):
        axis = int(self.attrs(node).get("axis", 1))
        if axis < 0:
            axis += self.rank(node.input[0], node, "a negative axis")
        if axis < 1:
            raise self.fail(f"node {self._label(node)}: Concat along the batch axis is not supported")
        for t in node.input:
            if self.const(t) is not None:
                raise self.fail(f"node {self._label(node)}: Concat with a constant input is not supported")
        self.add(node, "Concat", list(node.input), node.output[0], axis=axis)

    def _per_channel(self, node, x, c):
        """A (C,) vector for constant ``c`` broadcast along axis 1 of tensor ``x``, or None."""
        shape = self.shape(x)
        if shape is None or len(shape) < 2 or shape[1] is None:
            return None
        r, channels = len(shape), shape[1]
        if c.ndim > r:
            return None
        cs = (1,) * (r - c.ndim) + c.shape
        if cs[0] != 1 or any(d != 1 for d in cs[2:]) or cs[1] not in (1, channels):
            return None
        return np.broadcast_to(c.reshape(-1).astype(np.float64), (channels,))

    def _binary(self, node, op):
        if len(node.input) == 1 and op in ("Add", "Sum"):
            self.alias[node.output[0]] = node.input[0]
            return
        consts = [self.const(t) for t in node.input]
        if all(c is None for c in consts):
            shapes = [self.shape(t) for t in node.input]
            if all(s is not None for s in shapes) and len({tuple(s) for s in shapes}) > 1:
                raise self.fail(f"node {self._label(node)}: {op} with broadcasting between shapes {shapes} "
                                f"is not supported")
            if op in ("Add", "Sum"):
                self.add(node, "Eltwise", list(node.input), node.output[0], operation="sum")
            elif op == "Sub":
                self.add(node, "Eltwise", list(node.input), node.output[0], operation="sum", coeff=[1.0, -1.0])
            elif op == "Mul":
                self.add(node, "Eltwise", list(node.input), node.output[0], operation="prod")
            else:
                raise self.fail(f"node {self._label(node)}: {op} of two tensors is not supported")
            return
        if len(node.input) != 2 or consts[0] is not None and consts[1] is not None:
            raise self.fail(f"node {self._label(node)}: {op} of constants only is not supported")
        xi = 0 if consts[0] is None else 1
        x, c = node.input[xi], consts[1 - xi]
        v = self._per_channel(node, x, np.asarray(c))
        if v is None:
            raise self.fail(f"node {self._label(node)}: {op} with a constant of shape {np.shape(c)} is not "
                            f"supported (only a per-channel constant is)")
        ones = np.ones_like(v)
        if op in ("Add", "Sum"):
            weight, bias = ones, v
        elif op == "Sub":
            weight, bias = (ones, -v) if xi == 0 else (-ones, v)
        elif op == "Mul":
            weight, bias = v, None
        elif op == "Div" and xi == 0:
            if np.any(v == 0):
                raise self.fail(f"node {self._label(node)}: division by a constant containing 0")
            weight, bias = 1.0 / v, None
        else:
            raise self.fail(f"node {self._label(node)}: {op} of a constant by a tensor is not supported")
        params = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
        self.add(node, "Scale", [x], node.output[0], params, bias_term=bias is not None)

    def op_Add(self, node, i):
        self._binary(node, "Add")

    def op_Sum(self, node, i):
        self._binary(node, "Sum")

    def op_Sub(self, node, i):
        self._binary(node, "Sub")

    def op_Mul(self, node, i):
        self._binary(node, "Mul")

    def op_Div(self, node, i):
        self._binary(node, "Div")

    def op_Dropout(self, node, i):
        self.only_first_output(node)
        a = self.attrs(node)
        ratio = float(a.get("ratio", 0.5))
        if len(node.input) > 1 and node.input[1]:
            ratio = float(self.need_const(node, 1, "ratio").reshape(-1)[0])
        if len(node.input) > 2 and node.input[2]:
            mode = self.const(node.input[2])
            if mode is None or bool(mode.reshape(-1)[0]):
                raise self.fail(f"node {self._label(node)}: Dropout in training mode is not supported")
        self.add(node, "Dropout", [node.input[0]], node.output[0], dropout_ratio=ratio)

    def op_BatchNormalization(self, node, i):
        a = self.attrs(node)
        self.only_first_output(node)
        if a.get("training_mode", 0):
            raise self.fail(f"node {self._label(node)}: BatchNormalization in training mode is not supported")
        if self.opset < 9 and a.get("spatial", 1) == 0:
            raise self.fail(f"node {self._label(node)}: BatchNormalization with spatial=0 is not supported")
        params = {"weight": self.need_const(node, 1, "scale").reshape(-1),
                  "bias": self.need_const(node, 2, "B").reshape(-1),
                  "mean": self.need_const(node, 3, "mean").reshape(-1),
                  "var": self.need_const(node, 4, "var").reshape(-1)}
        self.add(node, "BatchNorm", [node.input[0]], node.output[0], params, eps=float(a.get("epsilon", 1e-5)),
                 momentum=float(a.get("momentum", 0.9)), affine=True)

    def op_Softmax(self, node, i):
        a = self.attrs(node)
        r = self.rank(node.input[0], node, "Softmax")
        axis = int(a.get("axis", 1 if self.opset < 13 else -1))
        if axis < 0:
            axis += r
        shape = self.shape(node.input[0])
        trailing_ones = all(d == 1 for d in shape[2:])
        if axis != 1 or (self.opset < 13 and r > 2 and not trailing_ones):
            raise self.fail(f"node {self._label(node)}: Softmax over axis {a.get('axis')} of a {r}-D input is "
                            f"not supported (decaf takes the softmax over the channel axis 1)")
        self.add(node, "Softmax", [node.input[0]], node.output[0])


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
    spec, arrays = _Importer(model, source).run()
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
def net_to_onnx(net, path, opset=13, extra_outputs=()):
    """Write the decaf ``net`` (its spec and current weights) as an ONNX model at ``path``.

    The graph outputs are the net's outputs, plus the blobs named in ``extra_outputs``
    (e.g. ``["fc7"]`` to read features from ONNX Runtime).  Returns the ModelProto.
    """
    onnx = _import_onnx()
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    inputs = set(net.input_shapes)
    writes = {}
    for layer in net.order:
        if layer.type_name == "Split":
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

    def const(name, value, dtype=np.float32):
        array = np.asarray(value, dtype)     # (not ascontiguousarray: it turns scalars into 1-D arrays)
        inits.append(numpy_helper.from_array(array if array.flags.c_contiguous else array.copy(), name))
        return name

    def node(op, ins, outs, name, **attrs):
        nodes.append(helper.make_node(op, ins, outs, name=name, **attrs))

    for layer in net.order:
        t, p, name = layer.type_name, layer.p, layer.name
        bottoms = net.bottoms[name]
        ins = [current[b.name] for b in bottoms]
        if t == "Split":
            for top in net.tops[name]:
                current[top.name] = ins[0]
            continue
        tops = [out(b.name) for b in net.tops[name]]
        params = {prm.name[len(name) + 1:]: prm.data for prm in layer.blobs}   # "conv1.weight" -> "weight"
        if t == "Convolution":
            args = [ins[0], const(f"{name}.weight", params["weight"])]
            if "bias" in params:
                args.append(const(f"{name}.bias", params["bias"]))
            attrs = {"kernel_shape": list(layer.kernel), "strides": list(layer.stride),
                     "dilations": list(layer.dilation), "group": int(p["group"])}
            if p["pad_mode"]:
                attrs["auto_pad"] = p["pad_mode"].upper()
            else:
                attrs["pads"] = list(layer.fixed_pads)
            node("Conv", args, tops, name, **attrs)
        elif t == "Pooling":
            op = "Max" if p["pool"] == "max" else "Average"
            if p["global_pooling"]:
                node(f"Global{op}Pool", ins, tops, name)
            else:
                attrs = {"kernel_shape": list(layer.kernel), "strides": list(layer.stride),
                         "pads": list(layer.pads), "ceil_mode": int(p["round_mode"] == "ceil")}
                if op == "Average":
                    attrs["count_include_pad"] = int(bool(p["count_include_pad"]))
                node(f"{op}Pool", ins, tops, name, **attrs)
        elif t == "LRN":
            node("LRN", ins, tops, name, size=int(p["local_size"]), alpha=float(p["alpha"]),
                 beta=float(p["beta"]), bias=float(p["k"]))
        elif t in ("ReLU", "LeakyReLU"):
            if p["negative_slope"]:
                node("LeakyRelu", ins, tops, name, alpha=float(p["negative_slope"]))
            else:
                node("Relu", ins, tops, name)
        elif t in ("ReLU6", "Clip"):
            node("Clip", [ins[0], const(f"{name}.min", p["min"]), const(f"{name}.max", p["max"])], tops, name)
        elif t in ("Sigmoid", "Tanh"):
            node(t, ins, tops, name)
        elif t == "InnerProduct":
            x = ins[0]
            if len(bottoms[0].shape) != 2:
                x = f"{name}:flat"
                node("Flatten", ins, [x], f"{name}_flatten", axis=1)
            args = [x, const(f"{name}.weight", params["weight"])]
            if "bias" in params:
                args.append(const(f"{name}.bias", params["bias"]))
            node("Gemm", args, tops, name, transB=1)
        elif t == "Dropout":
            node("Dropout", [ins[0], const(f"{name}.ratio", np.float32(p["dropout_ratio"]))], tops, name)
        elif t == "Softmax":
            node("Softmax", ins, tops, name, axis=1)
        elif t == "Concat":
            node("Concat", ins, tops, name, axis=int(p["axis"]))
        elif t == "Flatten":
            node("Flatten", ins, tops, name, axis=int(p["axis"]))
        elif t == "Reshape":
            node("Reshape", [ins[0], const(f"{name}.shape", [0] + [int(d) for d in p["shape"]], np.int64)],
                 tops, name)
        elif t == "Eltwise":
            op = p["operation"]
            if op == "sum":
                coeff = p["coeff"] or [1.0] * len(ins)
                terms = []
                for k, (x, c) in enumerate(zip(ins, coeff)):
                    if c == 1:
                        terms.append(x)
                    else:
                        scaled = f"{name}:term{k}"
                        node("Mul", [x, const(f"{name}.coeff{k}", np.float32(c))], [scaled], f"{name}_coeff{k}")
                        terms.append(scaled)
                node("Sum", terms, tops, name)
            elif op == "max":
                node("Max", ins, tops, name)
            else:
                acc = ins[0]
                for k, x in enumerate(ins[1:], start=1):
                    res = tops[0] if k == len(ins) - 1 else f"{name}:prod{k}"
                    node("Mul", [acc, x], [res], name if k == len(ins) - 1 else f"{name}_{k}")
                    acc = res
        elif t == "BatchNorm":
            if p["use_global_stats"] is False:
                raise ValueError(f"layer {name!r}: BatchNorm with use_global_stats false cannot be exported")
            c = params["mean"].shape[0]
            scale = params.get("weight", np.ones(c, np.float32))
            bias = params.get("bias", np.zeros(c, np.float32))
            node("BatchNormalization", [ins[0], const(f"{name}.weight", scale), const(f"{name}.bias", bias),
                                        const(f"{name}.mean", params["mean"]), const(f"{name}.var", params["var"])],
                 tops, name, epsilon=float(p["eps"]), momentum=float(p["momentum"]))
        elif t == "Scale":
            nd = len(bottoms[0].shape)
            shape = (-1,) + (1,) * (nd - 2)
            w = const(f"{name}.weight", params["weight"].reshape(shape))
            if "bias" in params:
                mid = f"{name}:scaled"
                node("Mul", [ins[0], w], [mid], f"{name}_mul")
                node("Add", [mid, const(f"{name}.bias", params["bias"].reshape(shape))], tops, name)
            else:
                node("Mul", [ins[0], w], tops, name)
        else:
            raise ValueError(f"layer {name!r}: decaf type {t!r} cannot be exported to ONNX "
                             f"(export a deploy net without loss layers)")

    def info(name, shape):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N"] + [int(d) for d in shape])

    graph_inputs = [info(n, s) for n, s in net.input_shapes.items()]
    for n in extra_outputs:
        if n not in net.blobs:
            raise KeyError(f"net {net.name!r} has no blob {n!r}")
    names = list(net.output_names) + [n for n in extra_outputs if n not in net.output_names]
    graph_outputs = [info(current[n], net.blobs[n].shape[1:]) for n in names]
    graph = helper.make_graph(nodes, net.name, graph_inputs, graph_outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="decaf")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return model
