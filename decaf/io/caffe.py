"""Caffe nets (``.prototxt`` + ``.caffemodel``) to decaf specs and weights, and back.

Reading::

    spec, arrays, labels = caffe_to_net("deploy.prototxt", "bvlc_reference_caffenet.caffemodel")
    net = decaf.Net(spec, init=False); net.load_params(arrays)

Both files are Caffe ``NetParameter`` messages: the prototxt in protobuf text
format, the caffemodel in the binary wire format (decoded by decaf's own codec,
:mod:`decaf.io.protobuf`, with the schema below: field numbers are Caffe's
``caffe.proto``).  Either may use the current layout (``layer``, string types) or
the legacy V1 layout of 2014 files (``layers``, enum types); the structure comes
from the prototxt and the weights are matched to it by layer name, as Caffe's
``CopyTrainedLayersFrom`` does.

Mapping (Caffe type -> decaf layer):

* Convolution (pad/kernel/stride/dilation as one value, [h, w] or *_h/*_w; group;
  bias_term), InnerProduct (transpose), Pooling (MAX/AVE, global_pooling,
  round_mode), LRN (ACROSS_CHANNELS), ReLU (negative_slope), Sigmoid, TanH ->
  Tanh, Softmax (axis 1), SoftmaxWithLoss (ignore_label), EuclideanLoss,
  Dropout, Concat, Eltwise (SUM/PROD/MAX, coeff), BatchNorm, Scale (one bottom),
  Flatten (axis 1), Reshape (batch axis kept).
* BatchNorm's three blobs are (sum of means, sum of variances, scale factor): decaf
  gets mean and variance divided by the factor (0 stays 0, as in Caffe).
* Input, Data, ImageData, MemoryData, DummyData, WindowData layers and the
  NetParameter ``input`` + ``input_shape``/``input_dim`` become net inputs with the
  per-example shape (the batch axis is dropped).  Data/ImageData/WindowData give
  no shape unless a ``crop_size`` (or ImageData's ``new_height``/``new_width``) is
  set; they are taken as 3-channel (1 with ``is_color: false``) images, and their
  label top as a scalar per example.
* Split layers are dropped (decaf inserts its own); Accuracy and Silence layers
  are dropped (they do not change any other blob).  Layers are filtered for the
  TEST phase (``include``/``exclude`` rules), like Caffe's deploy nets.
* In-place layers (top == bottom) stay in place when decaf allows it (ReLU,
  Dropout, Sigmoid, ...); otherwise (BatchNorm, Scale, ...) their top gets a new
  name (the layer's name) and later readers are pointed at it.
* Anything else is refused by name: ``DecafFormatError("deploy.prototxt: layer
  'conv1_up' has type 'Deconvolution', which decaf does not support ...")``.

Weights are copied as they are: Caffe and decaf share the layouts (conv
(K, C/group, kh, kw), inner product (out, in)); legacy 4-D blob shapes such as
(1, 1, out, in) are reshaped to decaf's.  Channels are not reordered: a Caffe net
still expects BGR input.  Caffe files hold no class names; ``labels`` is the
list from a ``synset_words.txt`` beside the caffemodel (or prototxt) when there is
one with as many lines as the last layer has outputs, else None.

Writing (tests, and users who want their nets in Caffe): ``write_prototxt(path,
spec, v1=False)`` and ``write_caffemodel(path, spec, arrays, v1=False)``.  decaf
layers Caffe cannot express (ReLU6, Clip, SAME padding, asymmetric pads, average
pooling that skips padding; BatchNorm/Scale/Reshape in V1) raise ValueError.
"""
import math
import os

import numpy as np

from .errors import DecafFormatError
from .protobuf import Field as F
from .protobuf import Message as M
from .protobuf import decode, encode_chunks, format_text, parse_text

__all__ = ["caffe_to_net", "write_caffemodel", "write_prototxt", "read_caffemodel", "read_prototxt",
           "read_mean_binaryproto", "NET_PARAMETER"]

# ---- the schema (field numbers from Caffe's caffe.proto) -------------------------------------
PHASE = {"TRAIN": 0, "TEST": 1}
ENGINE = {"DEFAULT": 0, "CAFFE": 1, "CUDNN": 2}

BLOB_SHAPE = M("BlobShape", [F(1, "dim", "int64", repeated=True, packed=True)], strict=True)
BLOB_PROTO = M("BlobProto", [
    F(7, "shape", "message", message=BLOB_SHAPE),
    F(5, "data", "float", repeated=True, packed=True, array=True),
    F(6, "diff", "float", repeated=True, packed=True, array=True),
    F(8, "double_data", "double", repeated=True, packed=True, array=True),
    F(9, "double_diff", "double", repeated=True, packed=True, array=True),
    F(1, "num", "int32"), F(2, "channels", "int32"), F(3, "height", "int32"), F(4, "width", "int32")],
    strict=True)
FILLER = M("FillerParameter", [
    F(1, "type", "string"), F(2, "value", "float"), F(3, "min", "float"), F(4, "max", "float"),
    F(5, "mean", "float"), F(6, "std", "float"), F(7, "sparse", "int32"),
    F(8, "variance_norm", "enum", enum={"FAN_IN": 0, "FAN_OUT": 1, "AVERAGE": 2})], strict=True)
PARAM_SPEC = M("ParamSpec", [
    F(1, "name", "string"), F(2, "share_mode", "enum", enum={"STRICT": 0, "PERMISSIVE": 1}),
    F(3, "lr_mult", "float"), F(4, "decay_mult", "float")], strict=True)
NET_STATE_RULE = M("NetStateRule", [
    F(1, "phase", "enum", enum=PHASE), F(2, "min_level", "int32"), F(3, "max_level", "int32"),
    F(4, "stage", "string", repeated=True), F(5, "not_stage", "string", repeated=True)], strict=True)
NET_STATE = M("NetState", [F(1, "phase", "enum", enum=PHASE), F(2, "level", "int32"),
                           F(3, "stage", "string", repeated=True)], strict=True)
TRANSFORM = M("TransformationParameter", [
    F(1, "scale", "float"), F(2, "mirror", "bool"), F(3, "crop_size", "uint32"), F(4, "mean_file", "string"),
    F(5, "mean_value", "float", repeated=True), F(6, "force_color", "bool"), F(7, "force_gray", "bool")])
LOSS = M("LossParameter", [
    F(1, "ignore_label", "int32"), F(2, "normalize", "bool"),
    F(3, "normalization", "enum", enum={"FULL": 0, "VALID": 1, "BATCH_SIZE": 2, "NONE": 3})], strict=True)
ACCURACY = M("AccuracyParameter", [F(1, "top_k", "uint32"), F(2, "axis", "int32"), F(3, "ignore_label", "int32")])
CONV = M("ConvolutionParameter", [
    F(1, "num_output", "uint32"), F(2, "bias_term", "bool"), F(3, "pad", "uint32", repeated=True),
    F(4, "kernel_size", "uint32", repeated=True), F(5, "group", "uint32"), F(6, "stride", "uint32", repeated=True),
    F(7, "weight_filler", "message", message=FILLER), F(8, "bias_filler", "message", message=FILLER),
    F(9, "pad_h", "uint32"), F(10, "pad_w", "uint32"), F(11, "kernel_h", "uint32"), F(12, "kernel_w", "uint32"),
    F(13, "stride_h", "uint32"), F(14, "stride_w", "uint32"), F(15, "engine", "enum", enum=ENGINE),
    F(16, "axis", "int32"), F(17, "force_nd_im2col", "bool"), F(18, "dilation", "uint32", repeated=True)],
    strict=True)
POOL = M("PoolingParameter", [
    F(1, "pool", "enum", enum={"MAX": 0, "AVE": 1, "STOCHASTIC": 2}), F(2, "kernel_size", "uint32"),
    F(3, "stride", "uint32"), F(4, "pad", "uint32"), F(5, "kernel_h", "uint32"), F(6, "kernel_w", "uint32"),
    F(7, "stride_h", "uint32"), F(8, "stride_w", "uint32"), F(9, "pad_h", "uint32"), F(10, "pad_w", "uint32"),
    F(11, "engine", "enum", enum=ENGINE), F(12, "global_pooling", "bool"),
    F(13, "round_mode", "enum", enum={"CEIL": 0, "FLOOR": 1})], strict=True)
LRN = M("LRNParameter", [
    F(1, "local_size", "uint32"), F(2, "alpha", "float"), F(3, "beta", "float"),
    F(4, "norm_region", "enum", enum={"ACROSS_CHANNELS": 0, "WITHIN_CHANNEL": 1}), F(5, "k", "float"),
    F(6, "engine", "enum", enum=ENGINE)], strict=True)
INNER_PRODUCT = M("InnerProductParameter", [
    F(1, "num_output", "uint32"), F(2, "bias_term", "bool"), F(3, "weight_filler", "message", message=FILLER),
    F(4, "bias_filler", "message", message=FILLER), F(5, "axis", "int32"), F(6, "transpose", "bool")], strict=True)
DROPOUT = M("DropoutParameter", [F(1, "dropout_ratio", "float")], strict=True)
RELU = M("ReLUParameter", [F(1, "negative_slope", "float"), F(2, "engine", "enum", enum=ENGINE)], strict=True)
SIGMOID = M("SigmoidParameter", [F(1, "engine", "enum", enum=ENGINE)], strict=True)
TANH = M("TanHParameter", [F(1, "engine", "enum", enum=ENGINE)], strict=True)
SOFTMAX = M("SoftmaxParameter", [F(1, "engine", "enum", enum=ENGINE), F(2, "axis", "int32")], strict=True)
CONCAT = M("ConcatParameter", [F(1, "concat_dim", "uint32"), F(2, "axis", "int32")], strict=True)
ELTWISE = M("EltwiseParameter", [
    F(1, "operation", "enum", enum={"PROD": 0, "SUM": 1, "MAX": 2}), F(2, "coeff", "float", repeated=True),
    F(3, "stable_prod_grad", "bool")], strict=True)
FLATTEN = M("FlattenParameter", [F(1, "axis", "int32"), F(2, "end_axis", "int32")], strict=True)
BATCH_NORM = M("BatchNormParameter", [
    F(1, "use_global_stats", "bool"), F(2, "moving_average_fraction", "float"), F(3, "eps", "float")], strict=True)
SCALE = M("ScaleParameter", [
    F(1, "axis", "int32"), F(2, "num_axes", "int32"), F(3, "filler", "message", message=FILLER),
    F(4, "bias_term", "bool"), F(5, "bias_filler", "message", message=FILLER)], strict=True)
INPUT = M("InputParameter", [F(1, "shape", "message", repeated=True, message=BLOB_SHAPE)], strict=True)
RESHAPE = M("ReshapeParameter", [
    F(1, "shape", "message", message=BLOB_SHAPE), F(2, "axis", "int32"), F(3, "num_axes", "int32")], strict=True)
DATA = M("DataParameter", [
    F(1, "source", "string"), F(2, "scale", "float"), F(3, "mean_file", "string"), F(4, "batch_size", "uint32"),
    F(5, "crop_size", "uint32"), F(6, "mirror", "bool"), F(7, "rand_skip", "uint32"),
    F(8, "backend", "enum", enum={"LEVELDB": 0, "LMDB": 1})])
IMAGE_DATA = M("ImageDataParameter", [
    F(1, "source", "string"), F(2, "scale", "float"), F(3, "mean_file", "string"), F(4, "batch_size", "uint32"),
    F(5, "crop_size", "uint32"), F(6, "mirror", "bool"), F(7, "rand_skip", "uint32"), F(8, "shuffle", "bool"),
    F(9, "new_height", "uint32"), F(10, "new_width", "uint32"), F(11, "is_color", "bool"),
    F(12, "root_folder", "string")])
MEMORY_DATA = M("MemoryDataParameter", [
    F(1, "batch_size", "uint32"), F(2, "channels", "uint32"), F(3, "height", "uint32"), F(4, "width", "uint32")])
DUMMY_DATA = M("DummyDataParameter", [
    F(1, "data_filler", "message", repeated=True, message=FILLER), F(2, "num", "uint32", repeated=True),
    F(3, "channels", "uint32", repeated=True), F(4, "height", "uint32", repeated=True),
    F(5, "width", "uint32", repeated=True), F(6, "shape", "message", repeated=True, message=BLOB_SHAPE)])
WINDOW_DATA = M("WindowDataParameter", [
    F(1, "source", "string"), F(2, "scale", "float"), F(3, "mean_file", "string"), F(4, "batch_size", "uint32"),
    F(5, "crop_size", "uint32"), F(6, "mirror", "bool")])

# the *_param fields shared (by name) by LayerParameter and V1LayerParameter: name -> (V2 no., V1 no., schema)
LAYER_PARAMS = {
    "transform_param": (100, 36, TRANSFORM), "loss_param": (101, 42, LOSS), "accuracy_param": (102, 27, ACCURACY),
    "concat_param": (104, 9, CONCAT), "convolution_param": (106, 10, CONV), "data_param": (107, 11, DATA),
    "dropout_param": (108, 12, DROPOUT), "dummy_data_param": (109, 26, DUMMY_DATA),
    "eltwise_param": (110, 24, ELTWISE), "image_data_param": (115, 15, IMAGE_DATA),
    "inner_product_param": (117, 17, INNER_PRODUCT), "lrn_param": (118, 18, LRN),
    "memory_data_param": (119, 22, MEMORY_DATA), "pooling_param": (121, 19, POOL), "relu_param": (123, 30, RELU),
    "sigmoid_param": (124, 38, SIGMOID), "softmax_param": (125, 39, SOFTMAX), "tanh_param": (127, 37, TANH),
    "window_data_param": (129, 20, WINDOW_DATA), "reshape_param": (133, None, RESHAPE),
    "flatten_param": (135, None, FLATTEN), "batch_norm_param": (139, None, BATCH_NORM),
    "scale_param": (142, None, SCALE), "input_param": (143, None, INPUT),
}

LAYER_PARAMETER = M("LayerParameter", [
    F(1, "name", "string"), F(2, "type", "string"), F(3, "bottom", "string", repeated=True),
    F(4, "top", "string", repeated=True), F(10, "phase", "enum", enum=PHASE),
    F(5, "loss_weight", "float", repeated=True), F(6, "param", "message", repeated=True, message=PARAM_SPEC),
    F(7, "blobs", "message", repeated=True, message=BLOB_PROTO), F(11, "propagate_down", "bool", repeated=True),
    F(8, "include", "message", repeated=True, message=NET_STATE_RULE),
    F(9, "exclude", "message", repeated=True, message=NET_STATE_RULE)]
    + [F(v2, name, "message", message=schema) for name, (v2, _, schema) in LAYER_PARAMS.items()])

V1_TYPES = {
    "NONE": 0, "ABSVAL": 35, "ACCURACY": 1, "ARGMAX": 30, "BNLL": 2, "CONCAT": 3, "CONTRASTIVE_LOSS": 37,
    "CONVOLUTION": 4, "DATA": 5, "DECONVOLUTION": 39, "DROPOUT": 6, "DUMMY_DATA": 32, "EUCLIDEAN_LOSS": 7,
    "ELTWISE": 25, "EXP": 38, "FLATTEN": 8, "HDF5_DATA": 9, "HDF5_OUTPUT": 10, "HINGE_LOSS": 28, "IM2COL": 11,
    "IMAGE_DATA": 12, "INFOGAIN_LOSS": 13, "INNER_PRODUCT": 14, "LRN": 15, "MEMORY_DATA": 29,
    "MULTINOMIAL_LOGISTIC_LOSS": 16, "MVN": 34, "POOLING": 17, "POWER": 26, "RELU": 18, "SIGMOID": 19,
    "SIGMOID_CROSS_ENTROPY_LOSS": 27, "SILENCE": 36, "SOFTMAX": 20, "SOFTMAX_LOSS": 21, "SPLIT": 22,
    "SLICE": 33, "TANH": 23, "WINDOW_DATA": 24, "THRESHOLD": 31}
# V1 enum name -> the V2 type string (Caffe's UpgradeV1LayerType)
V1_TO_V2 = {
    "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL", "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution", "DATA": "Data",
    "DECONVOLUTION": "Deconvolution", "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output", "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData", "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss", "MVN": "MVN",
    "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence", "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice", "TANH": "TanH",
    "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold"}
V2_TO_V1 = {v: k for k, v in V1_TO_V2.items()}

V0_LAYER = M("V0LayerParameter", [F(1, "name", "string"), F(2, "type", "string")])
V1_LAYER_PARAMETER = M("V1LayerParameter", [
    F(4, "name", "string"), F(5, "type", "enum", enum=V1_TYPES), F(2, "bottom", "string", repeated=True),
    F(3, "top", "string", repeated=True), F(32, "include", "message", repeated=True, message=NET_STATE_RULE),
    F(33, "exclude", "message", repeated=True, message=NET_STATE_RULE),
    F(6, "blobs", "message", repeated=True, message=BLOB_PROTO), F(1001, "param", "string", repeated=True),
    F(7, "blobs_lr", "float", repeated=True), F(8, "weight_decay", "float", repeated=True),
    F(35, "loss_weight", "float", repeated=True), F(1, "layer", "message", message=V0_LAYER)]
    + [F(v1, name, "message", message=schema) for name, (_, v1, schema) in LAYER_PARAMS.items() if v1])

NET_PARAMETER = M("NetParameter", [
    F(1, "name", "string"), F(3, "input", "string", repeated=True),
    F(8, "input_shape", "message", repeated=True, message=BLOB_SHAPE), F(4, "input_dim", "int32", repeated=True),
    F(5, "force_backward", "bool"), F(6, "state", "message", message=NET_STATE), F(7, "debug_info", "bool"),
    F(100, "layer", "message", repeated=True, message=LAYER_PARAMETER),
    F(2, "layers", "message", repeated=True, message=V1_LAYER_PARAMETER)])

INPUT_TYPES = ("Input", "Data", "ImageData", "MemoryData", "DummyData", "WindowData", "HDF5Data")
DROPPED_TYPES = ("Accuracy", "Silence")


# ---- reading files ----------------------------------------------------------------------------
def _read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None


def read_caffemodel(path):
    """The NetParameter in a binary ``.caffemodel`` as plain data (see :mod:`decaf.io.protobuf`)."""
    data = _read_bytes(path)
    if not data:
        raise DecafFormatError(f"{path}: empty file: not a caffemodel")
    net = decode(NET_PARAMETER, data, str(path))
    if not net.get("layer") and not net.get("layers"):
        raise DecafFormatError(f"{path}: no layers: not a Caffe NetParameter (caffemodel) file")
    return net


def read_prototxt(path):
    """The NetParameter in a text ``.prototxt`` as plain data."""
    net = parse_text(NET_PARAMETER, _read_bytes(path), str(path))
    if not net.get("layer") and not net.get("layers"):
        raise DecafFormatError(f"{path}: no layers: not a Caffe net definition")
    return net


def read_mean_binaryproto(path):
    """The mean image in a Caffe ``.binaryproto`` (a BlobProto) as a float32 (C, H, W) array."""
    blob = decode(BLOB_PROTO, _read_bytes(path), str(path))
    array, shape = _blob_array(blob, str(path), "the mean blob")
    if array.size == 0:
        raise DecafFormatError(f"{path}: holds no data: not a mean .binaryproto")
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    return array.reshape(shape)


# ---- normalising V1 and V2 layers -------------------------------------------------------------
class _Layer:
    """One Caffe layer, V1 or V2, in one shape."""

    def __init__(self, msg, index, v1, source):
        self.msg = msg
        self.v1 = v1
        self.name = msg.get("name") or f"layer{index}"
        if v1:
            if "layer" in msg:
                raise DecafFormatError(f"{source}: layer {self.name!r} uses the V0 layout (a 'layer' inside "
                                       f"'layers'), which decaf does not read: upgrade it with Caffe's "
                                       f"upgrade_net_proto_text/binary first")
            t = msg.get("type", "NONE")
            self.type = V1_TO_V2.get(t, f"V1 type {t}") if isinstance(t, str) else f"V1 type {t}"
            self.lr_mult = msg.get("blobs_lr") or None
            self.decay_mult = msg.get("weight_decay") or None
        else:
            self.type = msg.get("type", "")
            specs = msg.get("param") or []
            self.lr_mult = [s.get("lr_mult", 1.0) for s in specs] or None
            self.decay_mult = [s.get("decay_mult", 1.0) for s in specs] or None
        self.bottom = list(msg.get("bottom", []))
        self.top = list(msg.get("top", []))
        self.blobs = msg.get("blobs", [])
        self.loss_weight = msg.get("loss_weight") or None

    def param(self, name):
        return self.msg.get(name) or {}


def _layers(net, source):
    if net.get("layer") and net.get("layers"):
        raise DecafFormatError(f"{source}: has both 'layer' (V2) and 'layers' (V1) entries")
    if net.get("layers"):
        return [_Layer(m, i, True, source) for i, m in enumerate(net["layers"])]
    return [_Layer(m, i, False, source) for i, m in enumerate(net.get("layer", []))]


def _meets(rule, phase):
    """Caffe's StateMeetsRule for a net state with this phase, level 0 and no stages."""
    if "phase" in rule and rule["phase"] != phase:
        return False
    if "min_level" in rule and 0 < rule["min_level"]:
        return False
    if "max_level" in rule and 0 > rule["max_level"]:
        return False
    if rule.get("stage"):
        return False
    return True


def _included(layer, phase):
    include, exclude = layer.msg.get("include", []), layer.msg.get("exclude", [])
    if include:
        return any(_meets(r, phase) for r in include)
    return not any(_meets(r, phase) for r in exclude)


# ---- geometry helpers -------------------------------------------------------------------------
def _fail(source, layer, message):
    return DecafFormatError(f"{source}: layer {layer.name!r} ({layer.type}): {message}")


def _hw(source, layer, p, key, key_h, key_w, default):
    """An int or [h, w] from Caffe's 'key' (one value, or h and w) or 'key_h'/'key_w'."""
    values = p.get(key)
    values = [] if values is None else (list(values) if isinstance(values, list) else [values])
    if key_h in p or key_w in p:
        if values:
            raise _fail(source, layer, f"give either {key} or {key_h}/{key_w}, not both")
        h, w = p.get(key_h, default), p.get(key_w, default)
        if h is None or w is None:
            raise _fail(source, layer, f"{key_h} and {key_w} must both be given")
    elif not values:
        if default is None:
            raise _fail(source, layer, f"{key} is required")
        h = w = default
    elif len(values) == 1:
        h = w = values[0]
    elif len(values) == 2:
        h, w = values
    else:
        raise _fail(source, layer, f"{key} has {len(values)} values: only 2-D layers are supported")
    return int(h) if h == w else [int(h), int(w)]


def _axis_one(source, layer, value, what):
    if value is not None and value != 1:
        raise _fail(source, layer, f"{what} {value} is not supported (decaf works on axis 1)")


# ---- layer converters: Caffe layer -> (decaf layer dict, [param names in blob order]) -------------
def _c_conv(source, layer):
    p = layer.param("convolution_param")
    _axis_one(source, layer, p.get("axis"), "axis")
    if not p.get("num_output"):
        raise _fail(source, layer, "num_output is missing or 0")
    d = {"type": "Convolution", "num_output": p["num_output"],
         "kernel_size": _hw(source, layer, p, "kernel_size", "kernel_h", "kernel_w", None),
         "stride": _hw(source, layer, p, "stride", "stride_h", "stride_w", 1),
         "pad": _hw(source, layer, p, "pad", "pad_h", "pad_w", 0),
         "group": p.get("group", 1) or 1,
         "dilation": _hw(source, layer, p, "dilation", "dilation_h", "dilation_w", 1)}
    bias = p.get("bias_term", True)
    if not bias:
        d["bias_term"] = False
    return d, ["weight", "bias"] if bias else ["weight"]


def _c_ip(source, layer):
    p = layer.param("inner_product_param")
    _axis_one(source, layer, p.get("axis"), "axis")
    if not p.get("num_output"):
        raise _fail(source, layer, "num_output is missing or 0")
    d = {"type": "InnerProduct", "num_output": p["num_output"]}
    bias = p.get("bias_term", True)
    if not bias:
        d["bias_term"] = False
    return d, ["weight", "bias"] if bias else ["weight"]


def _c_pool(source, layer):
    p = layer.param("pooling_param")
    pool = p.get("pool", "MAX")
    if pool not in ("MAX", "AVE"):
        raise _fail(source, layer, f"pool method {pool} is not supported (MAX or AVE)")
    d = {"type": "Pooling", "pool": pool.lower()}
    if p.get("global_pooling"):
        d["global_pooling"] = True
    else:
        d["kernel_size"] = _hw(source, layer, p, "kernel_size", "kernel_h", "kernel_w", None)
        d["stride"] = _hw(source, layer, p, "stride", "stride_h", "stride_w", 1)
        d["pad"] = _hw(source, layer, p, "pad", "pad_h", "pad_w", 0)
    d["round_mode"] = "floor" if p.get("round_mode") == "FLOOR" else "ceil"
    return d, []


def _c_lrn(source, layer):
    p = layer.param("lrn_param")
    if p.get("norm_region", "ACROSS_CHANNELS") != "ACROSS_CHANNELS":
        raise _fail(source, layer, "norm_region WITHIN_CHANNEL is not supported")
    return {"type": "LRN", "local_size": p.get("local_size", 5), "alpha": p.get("alpha", 1.0),
            "beta": p.get("beta", 0.75), "k": p.get("k", 1.0)}, []


def _c_relu(source, layer):
    slope = layer.param("relu_param").get("negative_slope", 0.0)
    return ({"type": "ReLU", "negative_slope": slope} if slope else {"type": "ReLU"}), []


def _c_softmax(source, layer):
    _axis_one(source, layer, layer.param("softmax_param").get("axis"), "softmax axis")
    return {"type": "Softmax"}, []


def _c_softmax_loss(source, layer):
    _axis_one(source, layer, layer.param("softmax_param").get("axis"), "softmax axis")
    loss = layer.param("loss_param")
    if loss.get("normalization") == "NONE" or ("normalization" not in loss and loss.get("normalize") is False):
        raise _fail(source, layer, "loss normalization other than VALID/FULL is not supported")
    d = {"type": "SoftmaxWithLoss"}
    if "ignore_label" in loss:
        d["ignore_label"] = loss["ignore_label"]
    return d, []


def _c_dropout(source, layer):
    return {"type": "Dropout", "dropout_ratio": layer.param("dropout_param").get("dropout_ratio", 0.5)}, []


def _c_concat(source, layer):
    p = layer.param("concat_param")
    axis = p["axis"] if "axis" in p else p.get("concat_dim", 1)
    if axis < 1:
        raise _fail(source, layer, f"concatenation along axis {axis} is not supported (axis >= 1)")
    return {"type": "Concat", "axis": axis}, []


def _c_eltwise(source, layer):
    p = layer.param("eltwise_param")
    d = {"type": "Eltwise", "operation": p.get("operation", "SUM").lower()}
    if p.get("coeff"):
        if d["operation"] != "sum":
            raise _fail(source, layer, "coeff is only allowed with operation SUM")
        d["coeff"] = [float(c) for c in p["coeff"]]
    return d, []


def _c_flatten(source, layer):
    p = layer.param("flatten_param")
    if p.get("axis", 1) != 1 or p.get("end_axis", -1) != -1:
        raise _fail(source, layer, "only Flatten with axis 1 and end_axis -1 is supported")
    return {"type": "Flatten"}, []


def _c_reshape(source, layer):
    p = layer.param("reshape_param")
    if p.get("axis", 0) != 0 or p.get("num_axes", -1) != -1:
        raise _fail(source, layer, "only Reshape with axis 0 and num_axes -1 is supported")
    dims = list(p.get("shape", {}).get("dim", []))
    if not dims or dims[0] not in (0, -1) or (dims[0] == -1 and -1 in dims[1:]):
        raise _fail(source, layer, f"reshape to {dims}: the first (batch) dimension must be 0 or -1")
    return {"type": "Reshape", "shape": [int(d) for d in dims[1:]]}, []


def _c_batchnorm(source, layer):
    p = layer.param("batch_norm_param")
    d = {"type": "BatchNorm", "eps": p.get("eps", 1e-5), "momentum": p.get("moving_average_fraction", 0.999)}
    if "use_global_stats" in p:
        d["use_global_stats"] = p["use_global_stats"]
    return d, ["mean", "var", None]          # None: Caffe's scale factor blob


def _c_scale(source, layer):
    p = layer.param("scale_param")
    if len(layer.bottom) != 1:
        raise _fail(source, layer, "Scale with a second bottom (the scale as an input) is not supported")
    _axis_one(source, layer, p.get("axis"), "axis")
    if p.get("num_axes", 1) != 1:
        raise _fail(source, layer, f"num_axes {p['num_axes']} is not supported (1)")
    bias = bool(p.get("bias_term", False))
    return {"type": "Scale", "bias_term": bias}, ["weight", "bias"] if bias else ["weight"]


def _simple(decaf_type):
    return lambda source, layer: ({"type": decaf_type}, [])


CONVERTERS = {
    "Convolution": _c_conv, "InnerProduct": _c_ip, "Pooling": _c_pool, "LRN": _c_lrn, "ReLU": _c_relu,
    "Sigmoid": _simple("Sigmoid"), "TanH": _simple("Tanh"), "Softmax": _c_softmax,
    "SoftmaxWithLoss": _c_softmax_loss, "EuclideanLoss": _simple("EuclideanLoss"), "Dropout": _c_dropout,
    "Concat": _c_concat, "Eltwise": _c_eltwise, "Flatten": _c_flatten, "Reshape": _c_reshape,
    "BatchNorm": _c_batchnorm, "Scale": _c_scale,
}
LEARNABLE = ("Convolution", "InnerProduct", "Scale")


# ---- inputs -------------------------------------------------------------------------------
def _per_example(source, what, dims):
    dims = [int(d) for d in dims]
    if not dims:
        raise DecafFormatError(f"{source}: {what} has an empty shape")
    if any(d < 1 for d in dims[1:]) or dims[0] < 0:
        raise DecafFormatError(f"{source}: {what} has shape {dims}: every dimension must be positive")
    return dims[1:]


def _data_layer_shapes(source, layer):
    """Per-example shapes for the tops of an input/data layer."""
    t, tops = layer.type, layer.top
    if t == "Input":
        shapes = layer.param("input_param").get("shape", [])
        if len(shapes) == 1:
            shapes = shapes * len(tops)
        if len(shapes) != len(tops):
            raise _fail(source, layer, f"{len(shapes)} input shapes for {len(tops)} tops")
        return [_per_example(source, f"input {top!r}", s.get("dim", [])) for top, s in zip(tops, shapes)]
    if t == "MemoryData":
        p = layer.param("memory_data_param")
        if not all(p.get(k) for k in ("channels", "height", "width")):
            raise _fail(source, layer, "channels, height and width are required")
        return [[p["channels"], p["height"], p["width"]], []][:len(tops)]
    if t == "DummyData":
        p = layer.param("dummy_data_param")
        if p.get("shape"):
            shapes = [s.get("dim", []) for s in p["shape"]]
        else:
            lists = [p.get(k, []) for k in ("num", "channels", "height", "width")]
            shapes = [list(x) for x in zip(*lists)]
        if len(shapes) == 1:
            shapes = shapes * len(tops)
        if len(shapes) != len(tops):
            raise _fail(source, layer, f"{len(shapes)} shapes for {len(tops)} tops")
        return [_per_example(source, f"input {top!r}", s) for top, s in zip(tops, shapes)]
    if t in ("Data", "ImageData", "WindowData"):
        key = {"Data": "data_param", "ImageData": "image_data_param", "WindowData": "window_data_param"}[t]
        p = layer.param(key)
        crop = layer.param("transform_param").get("crop_size") or p.get("crop_size")
        channels = 1 if p.get("is_color", True) is False else 3
        if crop:
            hw = [crop, crop]
        elif t == "ImageData" and p.get("new_height") and p.get("new_width"):
            hw = [p["new_height"], p["new_width"]]
        else:
            raise _fail(source, layer, "a data layer without crop_size does not say its image size: "
                                       "convert the deploy prototxt (with an Input layer) instead")
        return [[channels] + hw, []][:len(tops)]
    raise _fail(source, layer, "the input shape is stored in the data files: convert the deploy prototxt "
                               "(with an Input layer) instead")


# ---- the conversion -------------------------------------------------------------------------
def _to_spec(net, source, phase):
    """(spec, plan) from a NetParameter; plan lists (decaf layer, Caffe layer, param names, extra)."""
    from ..layer import LAYERS
    import decaf.layers  # noqa: F401  (registers the layer types)

    inputs = {}
    names = list(net.get("input", []))
    if names:
        shapes = net.get("input_shape", [])
        dims = net.get("input_dim", [])
        if shapes:
            if len(shapes) != len(names):
                raise DecafFormatError(f"{source}: {len(names)} inputs but {len(shapes)} input_shape entries")
            shapes = [s.get("dim", []) for s in shapes]
        elif dims:
            if len(dims) != 4 * len(names):
                raise DecafFormatError(f"{source}: {len(names)} inputs need {4 * len(names)} input_dim values, "
                                       f"got {len(dims)}")
            shapes = [dims[4 * i:4 * i + 4] for i in range(len(names))]
        else:
            raise DecafFormatError(f"{source}: inputs {names} have no input_shape or input_dim")
        for name, shape in zip(names, shapes):
            inputs[name] = _per_example(source, f"input {name!r}", shape)

    layers = [layer for layer in _layers(net, source) if _included(layer, phase)]
    taken = set(inputs)
    for layer in layers:
        taken.update(layer.bottom)
        taken.update(layer.top)
    current = {name: name for name in inputs}    # Caffe blob name -> decaf blob name (latest version)
    read = set()                                 # decaf blobs some layer has read
    used_layer_names = set()
    spec_layers, plan = [], []

    def fresh(base):
        name, i = base, 1
        while name in taken:
            i += 1
            name = f"{base}_{i}"
        taken.add(name)
        return name

    for layer in layers:
        t = layer.type
        if t == "Split":
            if len(layer.bottom) != 1:
                raise _fail(source, layer, "a Split layer needs one bottom")
            src = _resolve(source, layer, layer.bottom[0], current)
            for top in layer.top:
                current[top] = src
            continue
        if t in DROPPED_TYPES:
            continue
        if t in INPUT_TYPES:
            for top, shape in zip(layer.top, _data_layer_shapes(source, layer)):
                if top in inputs:
                    raise _fail(source, layer, f"input {top!r} is defined twice")
                inputs[top] = shape
                current[top] = top
            continue
        if t not in CONVERTERS:
            supported = sorted(set(CONVERTERS) | set(INPUT_TYPES) | {"Split"} | set(DROPPED_TYPES))
            raise DecafFormatError(f"{source}: layer {layer.name!r} has type {t!r}, which decaf does not "
                                   f"support (supported: {', '.join(supported)})")
        d, pnames = CONVERTERS[t](source, layer)
        bottoms = [_resolve(source, layer, b, current) for b in layer.bottom]
        inplace_ok = LAYERS[d["type"]].inplace_ok
        tops = []
        for top in layer.top:
            if top in layer.bottom:
                here = current[top]
                if inplace_ok and here not in read and here not in inputs:
                    tops.append(here)
                    continue
                new = fresh(layer.name)
            else:
                if top in current and current[top] == top:
                    raise _fail(source, layer, f"top {top!r} is already produced by another layer")
                new = top
            tops.append(new)
        for top, new in zip(layer.top, tops):
            current[top] = new
        read.update(b for b in bottoms if b not in tops)
        name = layer.name
        if name in used_layer_names:
            raise _fail(source, layer, "two layers have this name")
        used_layer_names.add(name)
        entry = {"name": name, "type": d.pop("type"),
                 "bottom": bottoms[0] if len(bottoms) == 1 else bottoms,
                 "top": tops[0] if len(tops) == 1 else tops}
        entry.update(d)
        if t in LEARNABLE and layer.lr_mult:
            entry["lr_mult"] = [float(x) for x in layer.lr_mult]
        if t in LEARNABLE and layer.decay_mult:
            entry["decay_mult"] = [float(x) for x in layer.decay_mult]
        if layer.loss_weight and entry["type"] in ("SoftmaxWithLoss", "EuclideanLoss"):
            entry["loss_weight"] = float(layer.loss_weight[0])
        spec_layers.append(entry)
        plan.append((entry, layer, pnames, bool(layer.param("inner_product_param").get("transpose"))))
    if not inputs:
        raise DecafFormatError(f"{source}: the net has no inputs (no input fields and no Input/Data layer)")
    spec = {"name": net.get("name") or "caffe_net", "inputs": inputs, "layers": spec_layers}
    return spec, plan


def _resolve(source, layer, name, current):
    if name not in current:
        raise _fail(source, layer, f"bottom {name!r} is not produced by an earlier layer or input")
    return current[name]


def _blob_array(blob, source, what):
    """(flat float32 array, shape list) of a BlobProto, checked."""
    if "data" in blob and len(blob["data"]):
        data = blob["data"]
    elif "double_data" in blob and len(blob["double_data"]):
        data = blob["double_data"].astype(np.float32)
    else:
        data = np.zeros(0, np.float32)
    if "shape" in blob:
        shape = [int(d) for d in blob["shape"].get("dim", [])]
    else:
        legacy = [blob.get(k, 0) for k in ("num", "channels", "height", "width")]
        shape = [int(d) for d in legacy] if any(legacy) else [len(data)]
    if any(d < 0 for d in shape):
        raise DecafFormatError(f"{source}: {what} has a negative dimension in shape {shape}")
    if math.prod(shape) != len(data):
        raise DecafFormatError(f"{source}: {what} has shape {shape} ({math.prod(shape)} values) but holds "
                               f"{len(data)} values")
    return np.ascontiguousarray(data, np.float32), shape


def _load_weights(spec, plan, model, model_source):
    """decaf param name -> array (decaf's shapes), from a caffemodel's NetParameter."""
    by_name = {}
    for layer in _layers(model, model_source):   # the last of a name wins, as in Caffe
        by_name[layer.name] = layer
    raw = {}
    for entry, layer, pnames, transpose in plan:
        if not pnames:
            continue
        src = by_name.get(layer.name)
        if src is None:
            raise DecafFormatError(f"{model_source}: has no weights for layer {layer.name!r} "
                                   f"(it has layers {sorted(by_name)[:8]}{'...' if len(by_name) > 8 else ''})")
        if len(src.blobs) != len(pnames):
            raise DecafFormatError(f"{model_source}: layer {layer.name!r} has {len(src.blobs)} blob(s), "
                                   f"expected {len(pnames)} for a {layer.type} layer")
        arrays = [_blob_array(b, model_source, f"layer {layer.name!r} blob {i}") for i, b in enumerate(src.blobs)]
        if entry["type"] == "BatchNorm":
            (mean, _), (var, _), (factor, _) = arrays
            if factor.size != 1:
                raise DecafFormatError(f"{model_source}: layer {layer.name!r}: the BatchNorm scale factor blob "
                                       f"has {factor.size} values, expected 1")
            scale = 0.0 if factor[0] == 0 else 1.0 / float(factor[0])
            arrays = [(mean * np.float32(scale), None), (var * np.float32(scale), None)]
        for pname, (array, _) in zip(pnames, arrays):
            raw[f"{entry['name']}.{pname}"] = (array, transpose and pname == "weight", layer)
    net = _check_net(spec, model_source)
    out = {}
    for name, param in net.params.items():
        if name not in raw:
            raise DecafFormatError(f"{model_source}: no weights for decaf parameter {name!r}")
        array, transpose, layer = raw[name]
        shape = param.shape
        if array.size != math.prod(shape):
            raise DecafFormatError(f"{model_source}: layer {layer.name!r}: blob for {name!r} has {array.size} "
                                   f"values, decaf expects shape {shape} ({math.prod(shape)} values)")
        if transpose:
            array = np.ascontiguousarray(array.reshape(shape[::-1]).T)
        out[name] = array.reshape(shape)
        if not np.all(np.isfinite(out[name])):
            raise DecafFormatError(f"{model_source}: layer {layer.name!r}: {name!r} contains NaN or inf")
    return out


def _check_net(spec, source):
    """Build the net (no weights) to check the spec; errors become DecafFormatError."""
    from ..net import Net
    try:
        return Net(spec, init=False)
    except (ValueError, KeyError, TypeError, IndexError, MemoryError) as exc:
        raise DecafFormatError(f"{source}: the converted net is not valid: {exc}") from exc


def _labels_near(paths, spec):
    """Class names from a synset_words.txt beside the model files, if it fits the last layer."""
    last = next((layer for layer in reversed(spec["layers"]) if "num_output" in layer), None)
    for path in paths:
        if not path:
            continue
        candidate = os.path.join(os.path.dirname(os.path.abspath(path)), "synset_words.txt")
        if os.path.isfile(candidate):
            try:
                with open(candidate, encoding="utf-8") as f:
                    labels = [line.strip() for line in f if line.strip()]
            except (OSError, UnicodeDecodeError):
                return None
            if last is not None and len(labels) == last["num_output"]:
                return labels
            return None
    return None


def caffe_to_net(prototxt_path, caffemodel_path=None, phase="test"):
    """(spec, arrays, labels or None) from a Caffe net definition and (optionally) its weights.

    ``prototxt_path`` may be None to take the structure from the caffemodel itself.
    ``arrays`` maps decaf parameter names (``conv1.weight``...) to float32 arrays; it
    is empty without a caffemodel.  ``phase`` ("test" or "train") selects layers by
    their include/exclude rules.  Raises DecafFormatError (naming the file) for
    malformed files and unsupported layers.
    """
    if prototxt_path is None and caffemodel_path is None:
        raise ValueError("caffe_to_net needs a prototxt, a caffemodel or both")
    phase_name = {"test": "TEST", "train": "TRAIN"}.get(phase)
    if phase_name is None:
        raise ValueError(f"phase must be 'test' or 'train', got {phase!r}")
    model = read_caffemodel(caffemodel_path) if caffemodel_path is not None else None
    if prototxt_path is not None:
        net, source = read_prototxt(prototxt_path), str(prototxt_path)
    else:
        net, source = model, str(caffemodel_path)
    spec, plan = _to_spec(net, source, phase_name)
    if model is not None:
        arrays = _load_weights(spec, plan, model, str(caffemodel_path))
    else:
        _check_net(spec, source)
        arrays = {}
    return spec, arrays, _labels_near([caffemodel_path, prototxt_path], spec)


# ---- writing --------------------------------------------------------------------------------
def _pair(value):
    from ..layer import as_pair
    return as_pair(value, "value")


def _set_hw(p, key, key_h, key_w, value, skip=None, repeated=False):
    h, w = _pair(value)
    if h == w:
        if h != skip:
            p[key] = [h] if repeated else h
    else:
        p[key_h], p[key_w] = h, w


def _sym_pads(name, value):
    from ..layer import as_pads
    t, left, b, r = as_pads(value)
    if t != b or left != r:
        raise ValueError(f"layer {name!r}: Caffe pads are symmetric; pads {(t, left, b, r)} cannot be written")
    return t, left


def _caffe_layer(layer, arrays, v1):
    """(list of Caffe layer dicts (V2 form), list of blob arrays per dict) for one decaf layer."""
    from ..layer import LAYERS
    import decaf.layers  # noqa: F401

    t = layer["type"]
    if t not in LAYERS:
        raise ValueError(f"layer {layer.get('name')!r}: unknown decaf type {t!r}")
    p = {**{k: v for k, v in LAYERS[t].PARAMS.items()}, **layer}
    name = layer["name"]
    bottom = [layer["bottom"]] if isinstance(layer["bottom"], str) else list(layer["bottom"])
    top = [layer["top"]] if isinstance(layer["top"], str) else list(layer["top"])
    c = {"name": name, "bottom": bottom, "top": top}
    pnames = []

    def get(pname):
        if arrays is None:
            return None
        key = f"{name}.{pname}"
        if key not in arrays:
            raise KeyError(f"layer {name!r}: no array {key!r} to write")
        return np.asarray(arrays[key], np.float32)

    if t == "Convolution":
        if p.get("pad_mode"):
            raise ValueError(f"layer {name!r}: Caffe has no SAME padding (pad_mode {p['pad_mode']!r})")
        cp = {"num_output": int(p["num_output"])}
        if not p["bias_term"]:
            cp["bias_term"] = False
        ph, pw = _sym_pads(name, p["pad"])
        _set_hw(cp, "pad", "pad_h", "pad_w", [ph, pw], skip=0, repeated=True)
        _set_hw(cp, "kernel_size", "kernel_h", "kernel_w", p["kernel_size"], repeated=True)
        if p["group"] != 1:
            cp["group"] = int(p["group"])
        _set_hw(cp, "stride", "stride_h", "stride_w", p["stride"], skip=1, repeated=True)
        dh, dw = _pair(p["dilation"])
        if (dh, dw) != (1, 1):
            cp["dilation"] = [dh] if dh == dw else [dh, dw]
        c.update(type="Convolution", convolution_param=cp)
        pnames = ["weight", "bias"] if p["bias_term"] else ["weight"]
    elif t == "InnerProduct":
        ip = {"num_output": int(p["num_output"])}
        if not p["bias_term"]:
            ip["bias_term"] = False
        c.update(type="InnerProduct", inner_product_param=ip)
        pnames = ["weight", "bias"] if p["bias_term"] else ["weight"]
    elif t == "Pooling":
        pp = {"pool": "MAX" if str(p["pool"]).lower() == "max" else "AVE"}
        if p["global_pooling"]:
            pp["global_pooling"] = True
        else:
            _set_hw(pp, "kernel_size", "kernel_h", "kernel_w", p["kernel_size"])
            _set_hw(pp, "stride", "stride_h", "stride_w", p["stride"], skip=1)
            ph, pw = _sym_pads(name, p["pad"])
            _set_hw(pp, "pad", "pad_h", "pad_w", [ph, pw], skip=0)
            if pp["pool"] == "AVE" and (ph or pw) and not p["count_include_pad"]:
                raise ValueError(f"layer {name!r}: Caffe average pooling always counts the padding")
        if p["round_mode"] == "floor":
            pp["round_mode"] = "FLOOR"
        c.update(type="Pooling", pooling_param=pp)
    elif t == "LRN":
        c.update(type="LRN", lrn_param={"local_size": int(p["local_size"]), "alpha": float(p["alpha"]),
                                         "beta": float(p["beta"]), "k": float(p["k"])})
    elif t in ("ReLU", "LeakyReLU"):
        c["type"] = "ReLU"
        if p["negative_slope"]:
            c["relu_param"] = {"negative_slope": float(p["negative_slope"])}
    elif t in ("Sigmoid", "Tanh", "Softmax", "EuclideanLoss"):
        c["type"] = {"Tanh": "TanH"}.get(t, t)
    elif t == "SoftmaxWithLoss":
        c["type"] = "SoftmaxWithLoss"
        if p["ignore_label"] is not None:
            c["loss_param"] = {"ignore_label": int(p["ignore_label"])}
    elif t == "Dropout":
        c.update(type="Dropout", dropout_param={"dropout_ratio": float(p["dropout_ratio"])})
    elif t == "Concat":
        c.update(type="Concat", concat_param={"axis": int(p["axis"])} if not v1 else {"concat_dim": int(p["axis"])})
    elif t == "Eltwise":
        ep = {"operation": p["operation"].upper()}
        if p["coeff"] is not None:
            ep["coeff"] = [float(x) for x in p["coeff"]]
        c.update(type="Eltwise", eltwise_param=ep)
    elif t == "Flatten":
        if p["axis"] != 1:
            raise ValueError(f"layer {name!r}: only Flatten(axis=1) can be written")
        c["type"] = "Flatten"
    elif t == "Reshape":
        c.update(type="Reshape", reshape_param={"shape": {"dim": [0] + [int(d) for d in p["shape"]]}})
    elif t == "BatchNorm":
        bp = {"eps": float(p["eps"])}
        if p["use_global_stats"] is not None:
            bp["use_global_stats"] = bool(p["use_global_stats"])
        c.update(type="BatchNorm", batch_norm_param=bp)
        blobs = [get("mean"), get("var"), np.ones(1, np.float32)] if arrays is not None else []
        out, out_blobs = [c], [blobs]
        if p["affine"]:
            out.append({"name": f"{name}_scale", "type": "Scale", "bottom": list(top), "top": list(top),
                        "scale_param": {"bias_term": True}})
            out_blobs.append([get("weight"), get("bias")] if arrays is not None else [])
        return out, out_blobs
    elif t == "Scale":
        c.update(type="Scale", scale_param={"bias_term": bool(p["bias_term"])})
        pnames = ["weight", "bias"] if p["bias_term"] else ["weight"]
    else:
        raise ValueError(f"layer {name!r}: decaf type {t!r} has no Caffe equivalent")
    if pnames:
        lr, decay = layer.get("lr_mult"), layer.get("decay_mult")
        if lr is not None or decay is not None:
            def at(values, i, default):
                if values is None:
                    return default
                if isinstance(values, (int, float)):
                    return float(values)
                return float(values[i]) if i < len(values) else default
            c["param"] = [{"lr_mult": at(lr, i, 1.0), "decay_mult": at(decay, i, 1.0)} for i in range(len(pnames))]
    if "loss_weight" in layer:
        c["loss_weight"] = [float(layer["loss_weight"])]
    return [c], [[get(n) for n in pnames] if arrays is not None else []]


def _blob_msg(array, v1):
    array = np.asarray(array, np.float32)
    if v1:
        if array.ndim > 4:
            raise ValueError(f"a V1 blob holds at most 4 dimensions, got shape {array.shape}")
        legacy = (1,) * (4 - array.ndim) + array.shape
        return dict(zip(("num", "channels", "height", "width"), legacy), data=array.ravel())
    return {"shape": {"dim": list(array.shape)}, "data": array.ravel()}


def _to_v1(c):
    t = c["type"]
    if t not in V2_TO_V1:
        raise ValueError(f"layer {c['name']!r}: type {t!r} has no V1 (legacy) Caffe type; write with v1=False")
    out = {k: v for k, v in c.items() if k not in ("type", "param")}
    out["type"] = V2_TO_V1[t]
    for k in out:
        if k.endswith("_param") and LAYER_PARAMS[k][1] is None:
            raise ValueError(f"layer {c['name']!r}: {k} has no V1 field")
    if c.get("param"):
        out["blobs_lr"] = [s["lr_mult"] for s in c["param"]]
        out["weight_decay"] = [s["decay_mult"] for s in c["param"]]
    return out


def _net_message(spec, arrays, v1):
    net = {"name": spec.get("name", "net")}
    inputs = {k: [int(d) for d in v] for k, v in spec["inputs"].items()}
    layers = []
    if v1 or not inputs:
        net["input"] = list(inputs)
        if all(len(s) == 3 for s in inputs.values()):
            net["input_dim"] = [d for s in inputs.values() for d in [1] + s]
        else:
            net["input_shape"] = [{"dim": [1] + s} for s in inputs.values()]
    else:
        names = {layer["name"] for layer in spec["layers"]}
        name = "input"
        while name in names:
            name += "_"
        layers.append({"name": name, "type": "Input", "top": list(inputs),
                       "input_param": {"shape": [{"dim": [1] + s} for s in inputs.values()]}})
    for layer in spec["layers"]:
        msgs, blobs = _caffe_layer(layer, arrays, v1)
        for m, b in zip(msgs, blobs):
            if arrays is not None and b:
                m["blobs"] = [_blob_msg(a, v1) for a in b]
            layers.append(_to_v1(m) if v1 else m)
    net["layers" if v1 else "layer"] = layers
    return net


def _atomic_write(path, chunks):
    """Write the byte chunks to ``path`` through a temporary file (the blob file's helper)."""
    from .blobfile import _write_atomically

    def write(stream):
        for chunk in chunks:
            stream.write(chunk)

    _write_atomically(os.fspath(path), write)


def write_caffemodel(path, spec, arrays, v1=False):
    """Write ``spec`` + ``arrays`` as a binary Caffe NetParameter (``layer``, or V1 ``layers``)."""
    net = _net_message(spec, arrays, v1)
    chunks, _ = encode_chunks(NET_PARAMETER, net)
    _atomic_write(path, chunks)


def write_prototxt(path, spec, v1=False):
    """Write ``spec`` as a Caffe text net definition (``layer``, or V1 ``layers``)."""
    net = _net_message(spec, None, v1)
    text = f"# {spec.get('name', 'net')}: written by decaf\n" + format_text(NET_PARAMETER, net) + "\n"
    _atomic_write(path, [text.encode("utf-8")])
