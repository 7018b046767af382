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

Mapping (Caffe type -> decaf layer).  Each layer module owns its type's mapping: reading is an
importer registered with ``@caffe_importer(caffe_type)`` (decaf/interop.py), which gets a
``CaffeReader`` and the Caffe layer; writing is the layer class's ``to_caffe(p, w)`` with a
``CaffeWriter``.  This module keeps the file format: the message schemas, the V1 <-> V2 type
names, in-place renaming, phases, inputs and the weight matching.  Today's mappings:

* Convolution (pad/kernel/stride/dilation as one value, [h, w] or *_h/*_w; group;
  bias_term), InnerProduct (transpose), Pooling (MAX/AVE, global_pooling,
  round_mode), LRN (ACROSS_CHANNELS), ReLU (negative_slope), Sigmoid, TanH ->
  Tanh, Softmax (axis 1), SoftmaxWithLoss (ignore_label), EuclideanLoss,
  Dropout, Concat, Eltwise (SUM/PROD/MAX, coeff), BatchNorm, Scale (one bottom),
  Flatten (axis 1), Reshape (batch axis kept), PReLU (channel_shared),
  Deconvolution (convolution_param as for Convolution).
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
  'pow1' has type 'Power', which decaf does not support ...")``.

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

from ..interop import CAFFE_IMPORTERS
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
PRELU = M("PReLUParameter", [F(1, "filler", "message", message=FILLER), F(2, "channel_shared", "bool")], strict=True)
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
    "scale_param": (142, None, SCALE), "input_param": (143, None, INPUT), "prelu_param": (131, None, PRELU),
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


# ---- what a layer's importer may ask (decaf/layers/*.py register them with @caffe_importer) -------
def _fail(source, layer, message):
    return DecafFormatError(f"{source}: layer {layer.name!r} ({layer.type}): {message}")


class CaffeReader:
    """The context a Caffe importer gets for one layer: ``fn(ctx, layer)``.

    ``layer`` is the Caffe layer (V1 or V2 alike): ``name``, ``type`` (the V2 type name),
    ``bottom``, ``top`` and ``param("convolution_param")`` (that message as a dict, {} if absent).
    The importer returns the decaf layer as a dict with its "type" and parameters (not name,
    bottom or top: the converter wires those), and declares the Caffe blobs with ``weights``.
    Errors are raised as ``raise ctx.fail("...")`` so that they name the file and the layer.
    """

    def __init__(self, source, layer):
        self.source, self.layer = source, layer
        self.blob_names, self.transposed, self.convert = [], (), None

    def fail(self, message):
        """A DecafFormatError naming the file, the layer and its type."""
        return _fail(self.source, self.layer, message)

    def hw(self, p, key, default):
        """An int or [h, w] from Caffe's ``key`` (one value or two) or its ``*_h``/``*_w`` pair
        (kernel_size: kernel_h/kernel_w); ``default`` when absent (None: required)."""
        key_h, key_w = (key.split("_")[0] + suffix for suffix in ("_h", "_w"))
        values = p.get(key)
        values = [] if values is None else (list(values) if isinstance(values, list) else [values])
        if key_h in p or key_w in p:
            if values:
                raise self.fail(f"give either {key} or {key_h}/{key_w}, not both")
            h, w = p.get(key_h, default), p.get(key_w, default)
            if h is None or w is None:
                raise self.fail(f"{key_h} and {key_w} must both be given")
        elif not values:
            if default is None:
                raise self.fail(f"{key} is required")
            h = w = default
        elif len(values) == 1:
            h = w = values[0]
        elif len(values) == 2:
            h, w = values
        else:
            raise self.fail(f"{key} has {len(values)} values: only 2-D layers are supported")
        return int(h) if h == w else [int(h), int(w)]

    def axis_one(self, value, what="axis"):
        """Refuse an axis other than 1 (decaf's layers work on the channel axis)."""
        if value is not None and value != 1:
            raise self.fail(f"{what} {value} is not supported (decaf works on axis 1)")

    def positive(self, p, key):
        """``p[key]``, which must be given and non-zero (num_output)."""
        if not p.get(key):
            raise self.fail(f"{key} is missing or 0")
        return p[key]

    def multipliers(self):
        """lr_mult/decay_mult for the decaf spec, from the Caffe param specs (V1: blobs_lr,
        weight_decay); for a layer whose Caffe blobs are its decaf parameters in order."""
        out = {}
        if self.layer.lr_mult:
            out["lr_mult"] = [float(x) for x in self.layer.lr_mult]
        if self.layer.decay_mult:
            out["decay_mult"] = [float(x) for x in self.layer.decay_mult]
        return out

    def weights(self, names, transposed=(), convert=None):
        """Declare the layer's Caffe blobs: ``names`` gives the decaf parameter for each blob in
        order (None: a blob decaf drops). ``transposed``: parameters stored as the transpose of
        decaf's shape. ``convert(arrays, fail)``: maps the blobs' float32 arrays (one per name) to
        the values decaf keeps, ``fail(message)`` making an error that names the caffemodel."""
        self.blob_names, self.transposed, self.convert = list(names), tuple(transposed), convert


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
    """(spec, plan) from a NetParameter; plan lists (decaf layer, Caffe layer, its CaffeReader)."""
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
        if t not in CAFFE_IMPORTERS:
            supported = sorted(set(CAFFE_IMPORTERS) | set(INPUT_TYPES) | {"Split"} | set(DROPPED_TYPES))
            raise DecafFormatError(f"{source}: layer {layer.name!r} has type {t!r}, which decaf does not "
                                   f"support (supported: {', '.join(supported)})")
        ctx = CaffeReader(source, layer)
        d = CAFFE_IMPORTERS[t](ctx, layer)
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
        if layer.loss_weight and LAYERS[entry["type"]].is_loss:
            entry["loss_weight"] = float(layer.loss_weight[0])
        spec_layers.append(entry)
        plan.append((entry, layer, ctx))
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
    for entry, layer, ctx in plan:
        pnames = ctx.blob_names
        if not pnames:
            continue
        src = by_name.get(layer.name)
        if src is None:
            raise DecafFormatError(f"{model_source}: has no weights for layer {layer.name!r} "
                                   f"(it has layers {sorted(by_name)[:8]}{'...' if len(by_name) > 8 else ''})")
        if len(src.blobs) != len(pnames):
            raise DecafFormatError(f"{model_source}: layer {layer.name!r} has {len(src.blobs)} blob(s), "
                                   f"expected {len(pnames)} for a {layer.type} layer")
        arrays = [_blob_array(b, model_source, f"layer {layer.name!r} blob {i}")[0] for i, b in enumerate(src.blobs)]
        if ctx.convert is not None:
            def fail(message, layer=layer):
                return DecafFormatError(f"{model_source}: layer {layer.name!r}: {message}")
            arrays = ctx.convert(arrays, fail)
        for pname, array in zip(pnames, arrays):
            if pname is not None:
                raw[f"{entry['name']}.{pname}"] = (array, pname in ctx.transposed, layer)
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
class CaffeWriter:
    """The context a layer's ``to_caffe(p, w)`` gets to write one decaf layer (``p``: its spec with
    every parameter, defaults filled in) as one or more Caffe layers (V2 form; V1 is derived).

    ``w.add(caffe_type, blobs, multipliers, **fields)`` appends a Caffe layer named and wired like
    the decaf layer (``name``/``bottom``/``top`` override that, for a second layer); ``fields``
    are its ``*_param`` messages as dicts. ``blobs``: the decaf parameter names (``"weight"``) or
    constant arrays written as the layer's blobs in order; ``multipliers``: those blobs are the
    layer's parameters in order, so the spec's lr_mult/decay_mult become its ``param`` entries.
    ``w.hw`` and ``w.symmetric_pads`` write geometry; ``raise w.refuse("...")`` names the layer.
    """

    def __init__(self, spec_layer):
        self.spec = spec_layer
        self.name = spec_layer["name"]
        self.bottom = _names(spec_layer.get("bottom", []))
        self.top = _names(spec_layer.get("top", []))
        self.layers = []       # [(Caffe layer dict, [decaf parameter name or constant array])]

    def refuse(self, message):
        return ValueError(f"layer {self.name!r}: {message}")

    def add(self, caffe_type, blobs=(), multipliers=False, name=None, bottom=None, top=None, **fields):
        c = {"name": name or self.name, "bottom": list(self.bottom if bottom is None else bottom),
             "top": list(self.top if top is None else top), "type": caffe_type}
        c.update(fields)
        lr, decay = self.spec.get("lr_mult"), self.spec.get("decay_mult")
        if multipliers and blobs and (lr is not None or decay is not None):
            c["param"] = [{"lr_mult": _pick(lr, i, 1.0), "decay_mult": _pick(decay, i, 1.0)}
                          for i in range(len(blobs))]
        self.layers.append((c, list(blobs)))
        return c

    @staticmethod
    def hw(p, key, value, skip=None, repeated=False):
        """Set ``p[key]`` (a list when ``repeated``) to an int or [h, w] value, or its ``*_h``/``*_w``
        pair when h != w (kernel_size: kernel_h/kernel_w); nothing when both equal ``skip``."""
        from ..layer import as_pair
        h, w = as_pair(value, key)
        if h == w:
            if h != skip:
                p[key] = [h] if repeated else h
        else:
            base = key.split("_")[0]
            p[f"{base}_h"], p[f"{base}_w"] = h, w

    def symmetric_pads(self, value):
        """(h, w) pads from decaf's pad value; Caffe pads are symmetric, anything else is refused."""
        from ..layer import as_pads
        t, left, b, r = as_pads(value)
        if t != b or left != r:
            raise self.refuse(f"Caffe pads are symmetric; pads {(t, left, b, r)} cannot be written")
        return t, left


def _names(value):
    return [value] if isinstance(value, str) else list(value)


def _pick(values, i, default):
    if values is None:
        return default
    if isinstance(values, (int, float)):
        return float(values)
    return float(values[i]) if i < len(values) else default


def _caffe_layers(layer, arrays):
    """(Caffe layer dicts (V2 form), blob arrays for each) for one decaf layer, by its to_caffe."""
    from ..layer import LAYERS
    import decaf.layers  # noqa: F401  (registers the layer types)

    t = layer["type"]
    if t not in LAYERS:
        raise ValueError(f"layer {layer.get('name')!r}: unknown decaf type {t!r}")
    w = CaffeWriter(layer)
    LAYERS[t].to_caffe({**LAYERS[t].PARAMS, **layer}, w)
    if not w.layers:
        raise ValueError(f"layer {w.name!r}: decaf type {t!r} wrote no Caffe layer")
    if "loss_weight" in layer:
        w.layers[0][0]["loss_weight"] = [float(layer["loss_weight"])]

    def value(blob):
        if not isinstance(blob, str):
            return np.asarray(blob, np.float32)
        key = f"{w.name}.{blob}"
        if key not in arrays:
            raise KeyError(f"layer {w.name!r}: no array {key!r} to write")
        return np.asarray(arrays[key], np.float32)

    msgs = [c for c, _ in w.layers]
    blobs = [[value(b) for b in names] if arrays is not None else [] for _, names in w.layers]
    return msgs, blobs


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
    if "concat_param" in out:     # the 2014 field name of Concat's axis
        out["concat_param"] = {"concat_dim": out["concat_param"]["axis"]}
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
        msgs, blobs = _caffe_layers(layer, arrays)
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
