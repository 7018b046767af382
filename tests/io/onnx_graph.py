"""One-graph ONNX models for the importer's tests: input "x", the given nodes and initializers."""
import numpy as np
from onnx import TensorProto, helper, numpy_helper


def model_of(nodes, in_shape, inits, opset, outputs=("y",)):
    """A model of ``nodes`` reading "x" (of ``in_shape``, a symbolic name for a dynamic axis) with
    the initializers ``inits`` ({name: array}), at ``opset``, its outputs named ``outputs``."""
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model
